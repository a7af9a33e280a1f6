"""Tests of the sparsity machinery: Top-k, the statistics reducer and their names.

The model-level tests capture the activation map each MlpBlock hands to its `wo` Dense (the map
after the activation and Top-k) with `nn.intercept_methods`, count it again in numpy and compare
with the statistics the model returns in `aux`. Models are shrunk to a few tiny layers by
config.model's size overrides, so every config compiles in about a second.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import sparse_mlp, sparsity, topk
from lazy_jax.errors import InputError
from lazy_jax.models import get_model, model_spec
from lazy_jax.models import mixer as mixer_lib
from lazy_jax.models import mlp as mlp_lib
from lazy_jax.models import vit as vit_lib
from tests.model_helpers import MIXER_TINY, VIT_TINY, random_variables

# Tiny sizes so that each config compiles fast on a 2-core CPU.
BINS = 7  # does not divide d_ff: exercises the bin edges


# ----------------------------------------------------------------------------- helpers


def _capture_wo_inputs(config):
    """jit(apply) that also returns {'<path>': input of every `wo` Dense} (the activation maps)."""
    model = get_model(config)

    def apply(variables, batch):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            if (
                isinstance(context.module, nn.Dense)
                and context.module.name == "wo"
                and context.method_name == "__call__"
            ):
                captured["/".join(context.module.path[:-1])] = args[0]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            logits, aux = model.apply(variables, batch, train=False)
        return logits, aux, captured

    return model, jax.jit(apply)


def _numpy_stats(a, example_mask_B, bins):
    """Independent count: a [B, rows, F], example mask [B] -> the statistics of one layer."""
    a = np.asarray(a, np.float32)
    d_ff = a.shape[-1]
    valid = np.broadcast_to(np.asarray(example_mask_B)[:, None] > 0, a.shape[:-1])
    on_NF = a[valid] > 0  # [valid rows, F]
    count_N = on_NF.sum(-1).astype(np.int64)
    n = on_NF.shape[0]
    hist = np.bincount(np.minimum(count_N * bins // d_ff, bins - 1), minlength=bins)
    return {
        "nonzero_frac": count_N.sum() / (n * d_ff),
        "num_tokens": float(n),
        "neuron_freq": on_NF.mean(0),
        "count_hist": hist / n,
    }


def _assert_layer_stats(aux_stack, captured, keys, example_mask_B):
    for layer, key in enumerate(keys):
        want = _numpy_stats(captured[key], example_mask_B, BINS)
        assert 0.05 < want["nonzero_frac"] < 0.95, "degenerate activations make this test vacuous"
        for name, value in want.items():
            np.testing.assert_allclose(
                np.asarray(aux_stack[name][layer]), value, rtol=1e-6, atol=1e-7, err_msg=f"{name} of {key}"
            )


def _images(seed, n=4, hw=28):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, hw, hw, 1)), jnp.float32)


MASK = np.array([1.0, 0.0, 1.0, 0.0], np.float32)


def _stats_cases(config, stack_keys):
    """Runs the model with and without a padding mask and checks every stack against numpy."""
    model, apply = _capture_wo_inputs(config)
    images = _images(1)
    variables = random_variables(model, {"image": images, "mask": jnp.asarray(MASK)})

    # Without a mask every example counts.
    _, aux, captured = apply(variables, {"image": images})
    for stack, keys in stack_keys.items():
        _assert_layer_stats(aux[stack], captured, keys, np.ones(4))

    # With a mask, padded examples never count ...
    _, aux, captured = apply(variables, {"image": images, "mask": jnp.asarray(MASK)})
    for stack, keys in stack_keys.items():
        _assert_layer_stats(aux[stack], captured, keys, MASK)

    # ... and their pixels do not change the statistics, though they change their activations.
    images2 = images.at[1].set(1.0 - images[1]).at[3].set(0.0)
    _, aux2, captured2 = apply(variables, {"image": images2, "mask": jnp.asarray(MASK)})
    for keys in stack_keys.values():
        for key in keys:
            assert not np.array_equal(np.asarray(captured[key][1]), np.asarray(captured2[key][1]))
            np.testing.assert_array_equal(np.asarray(captured[key][0]), np.asarray(captured2[key][0]))
        # Counted unmasked, the two batches would differ: the statistic is sensitive to them.
        first = keys[0]
        assert (
            _numpy_stats(captured[first], np.ones(4), BINS)["nonzero_frac"]
            != _numpy_stats(captured2[first], np.ones(4), BINS)["nonzero_frac"]
        )
    jax.tree.map(np.testing.assert_array_equal, aux, aux2)


# ----------------------------------------------------------------------------- model statistics


def test_vit_statistics_equal_numpy_count():
    """Every token counts, the class token included (test_models checks the token count)."""
    config = vit_lib.default_model_config("Mu/7")
    config.update(**VIT_TINY, num_classes=5, pool="cls", neuron_freq=True, count_hist_bins=BINS)
    depth = VIT_TINY["depth"]
    _stats_cases(config, {"encoder": [f"encoderblock_{i}/mlp" for i in range(depth)]})


def test_mixer_statistics_equal_numpy_count():
    """token_mlp rows are channels ([B, D, tokens_mlp_dim]); channel_mlp rows are patches."""
    config = mixer_lib.default_model_config("Mu/7")
    config.update(**MIXER_TINY, num_classes=5, neuron_freq=True, count_hist_bins=BINS)
    depth = MIXER_TINY["depth"]
    _stats_cases(
        config,
        {
            "token_mlp": [f"mixerblock_{i}/token_mlp" for i in range(depth)],
            "channel_mlp": [f"mixerblock_{i}/channel_mlp" for i in range(depth)],
        },
    )


def test_mixer_token_mlp_rows_are_channels():
    config = mixer_lib.default_model_config("Mu/7")
    config.update(**MIXER_TINY, num_classes=5, neuron_freq=True, count_hist_bins=BINS)
    model = get_model(config)
    batch = {"image": _images(0), "mask": jnp.asarray(MASK)}
    _, aux = jax.eval_shape(lambda v, b: model.apply(v, b), random_variables(model, batch), batch)
    depth, d_tok, d_ch = MIXER_TINY["depth"], MIXER_TINY["tokens_mlp_dim"], MIXER_TINY["channels_mlp_dim"]
    assert aux["token_mlp"]["neuron_freq"].shape == (depth, d_tok)
    assert aux["channel_mlp"]["neuron_freq"].shape == (depth, d_ch)


def test_two_layer_mlp_statistics_equal_numpy_count():
    config = mlp_lib.default_model_config(d_ff=96)
    config.update(num_classes=5, neuron_freq=True, count_hist_bins=BINS)
    _stats_cases(config, {"encoder": ["mlp"]})


# ----------------------------------------------------------------------------- activation_stats


def test_activation_stats_all_padded_gives_zeros_not_nan():
    a = jnp.ones((2, 3, 8))
    stats = sparsity.activation_stats(a, jnp.zeros((2, 3)), neuron_freq=True, count_hist_bins=4)
    for name, value in stats.items():
        assert np.all(np.asarray(value) == 0), name


def test_activation_stats_bool_mask_and_full_row_in_last_bin():
    a = np.zeros((1, 3, 8), np.float32)
    a[0, 0] = 1.0  # all 8 on: the top edge belongs to the last bin
    a[0, 1, :4] = 1.0
    mask = jnp.asarray([[True, True, False]])
    stats = sparsity.activation_stats(jnp.asarray(a), mask, neuron_freq=True, count_hist_bins=4)
    np.testing.assert_allclose(stats["nonzero_frac"], 12 / 16)
    np.testing.assert_allclose(stats["num_tokens"], 2)
    np.testing.assert_allclose(stats["count_hist"], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(stats["neuron_freq"], [1.0] * 4 + [0.5] * 4)


# ----------------------------------------------------------------------------- Top-k


def _topk_input(seed=0, k=6, d_ff=32):
    """Random floats (no ties) with some rows holding fewer than k positives, one none. d_ff 32:
    'pallas' runs its kernel (interpret mode) at a power-of-two width of 16 or more, not its fallback."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 5, d_ff)).astype(np.float32)
    a[0, 0] = -np.abs(a[0, 0])  # 0 positives
    a[0, 1] = -np.abs(a[0, 1])  # 1 positive
    a[0, 1, 3] = 0.7
    a[1, 2] = -np.abs(a[1, 2])  # k-1 positives
    a[1, 2, : k - 1] = np.abs(a[1, 2, : k - 1])
    a[2, 4] = np.abs(a[2, 4])  # all positive
    assert len(np.unique(a)) == a.size
    return a


@pytest.mark.parametrize("impl", sorted(sparsity.TOPK_IMPLS))
@pytest.mark.parametrize("k", [1, 6, 24])
def test_topk_keeps_min_k_positives_with_top_k_values(k, impl):
    a = _topk_input(k=max(k, 2))
    out = np.asarray(sparsity.topk_mask(jnp.asarray(a), k, impl))
    positives = (a > 0).sum(-1)
    np.testing.assert_array_equal((out != 0).sum(-1), np.minimum(k, positives))
    assert np.any(positives < k) or k == 1
    # Kept entries are unchanged; the rest are exactly zero.
    np.testing.assert_array_equal(out[out != 0], a[out != 0])
    top_vals = np.asarray(jax.lax.top_k(jnp.asarray(a), k)[0])
    for idx in np.ndindex(a.shape[:-1]):
        kept = np.sort(out[idx][out[idx] != 0])[::-1]
        want = top_vals[idx][top_vals[idx] > 0]
        np.testing.assert_array_equal(kept, want, err_msg=str(idx))


@pytest.mark.parametrize("impl", sorted(sparsity.TOPK_IMPLS))
def test_topk_gradient_flows_only_through_kept_entries(impl):
    k = 6
    a = jnp.asarray(_topk_input(k=k))
    w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, a.shape), jnp.float32)
    grad = np.asarray(jax.grad(lambda x: jnp.sum(sparsity.topk_mask(x, k, impl) * w))(a))
    kept = np.asarray(sparsity.topk_mask(a, k, impl)) != 0
    np.testing.assert_array_equal(grad[kept], np.asarray(w)[kept])  # d out / d a = 1
    np.testing.assert_array_equal(grad[~kept], 0.0)
    ones_grad = np.asarray(jax.grad(lambda x: jnp.sum(sparsity.topk_mask(x, k, impl)))(a))
    np.testing.assert_array_equal(ones_grad, kept.astype(np.float32))


@pytest.mark.parametrize("impl", sorted(sparsity.TOPK_IMPLS))
@pytest.mark.parametrize("k", [1, 6, 24])
def test_topk_threshold_from_the_pre_activation_gives_the_relu_maps_mask(k, impl):
    h = jnp.asarray(_topk_input(k=max(k, 2)))
    h = h.at[0, 2, :8].set(-0.0).at[1, 0, :8].set(0.25)  # negative zeros, ties
    a = jax.nn.relu(h)
    np.testing.assert_array_equal(
        np.asarray(sparsity.topk_mask(a, k, impl, scores_BTF=h)), np.asarray(sparsity.topk_mask(a, k, impl))
    )


def test_topk_zero_is_identity():
    a = jnp.asarray(_topk_input())
    np.testing.assert_array_equal(np.asarray(sparsity.topk_mask(a, 0)), np.asarray(a))


@pytest.mark.parametrize("impl", sorted(sparsity.TOPK_IMPLS))
def test_topk_keeps_ties_at_the_kth_value(impl):
    """docs/design.md: keep entries >= the k-th largest, so ties at the threshold all stay."""
    a = jnp.asarray([[3.0, 1.0, 3.0, 3.0, 0.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(sparsity.topk_mask(a, 2, impl)), [[3.0, 0, 3.0, 3.0, 0, 0]])


def _awkward_rows(dtype, d_ff=64, seed=0):
    """Rows full of ties (values on a coarse grid), negatives, -0.0, tiny and huge values."""
    rng = np.random.default_rng(seed)
    a = np.round(rng.standard_normal((40, d_ff)) * 3) / 4
    a[1] = -np.abs(a[1])  # no positives
    a[2] = np.where(a[2] > 0, a[2], -0.0)  # negative zeros
    a[3, :5] = [1e-40, 3e-39, 1e-45, 2.0, 2.0]  # subnormals (f32), zero in bf16
    a[4, :3] = [3e38, 1e30, 3e38]  # near the top of the range
    a[5] = 0.5  # one value everywhere
    return jnp.asarray(a.astype(np.float32)).astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("k", [1, 3, 17, 64])
def test_bisection_threshold_equals_lax_top_k(dtype, k):
    a = _awkward_rows(dtype)
    ref_kth = np.asarray(sparsity.kth_largest_reference(a, k), np.float32)
    kth = np.asarray(jax.jit(sparsity.kth_largest_positive, static_argnums=1)(a, k), np.float32)
    enough = np.asarray((a > 0).sum(-1) >= k)
    np.testing.assert_array_equal(kth[enough], ref_kth[enough])  # the same k-th value, ties included
    np.testing.assert_array_equal(kth[~enough], 0.0)
    for impl in sparsity.TOPK_IMPLS:
        got = np.asarray(sparsity.topk_mask(a, k, impl), np.float32)
        np.testing.assert_array_equal(got, np.asarray(sparsity.topk_mask(a, k, "lax"), np.float32), err_msg=impl)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("digit_bits, stacked", [(2, True), (3, False), (4, False), (4, True)])
def test_radix_threshold_equals_lax_top_k(dtype, digit_bits, stacked):
    """The radix select (digit widths that do and do not divide the bits, both ways of counting)
    finds lax.top_k's k-th value. k is traced here (one compile per case); the models pass an int."""
    a = _awkward_rows(dtype, seed=digit_bits)
    radix = jax.jit(topk.kth_largest_radix, static_argnums=2, static_argnames="stacked")
    for k in (1, 3, 17, 64):
        ref_kth = np.asarray(sparsity.kth_largest_reference(a, k), np.float32)
        kth = np.asarray(radix(a, jnp.int32(k), digit_bits, stacked=stacked), np.float32)
        enough = np.asarray((a > 0).sum(-1) >= k)
        np.testing.assert_array_equal(kth[enough], ref_kth[enough], err_msg=f"k={k}")
        np.testing.assert_array_equal(kth[~enough], 0.0, err_msg=f"k={k}")


def test_radix_digit_widths():
    assert topk.digit_widths(15, 4) == [4, 4, 4, 3]
    assert topk.digit_widths(31, 8) == [8, 8, 8, 7]
    assert topk.digit_widths(15, 1) == [1] * 15
    with pytest.raises(ValueError, match="digit_bits=9"):
        topk.digit_widths(15, 9)


def test_unknown_topk_impl_is_refused_by_name():
    with pytest.raises(
        ValueError,
        match=r"topk_impl='sort' is unknown; allowed: \['auto', 'bisect', 'lax', 'pallas', 'radix'\]",
    ):
        sparsity.topk_mask(jnp.ones((2, 4)), 2, "sort")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp_block_topk_bounds_every_token(activation):
    k, d_ff = 5, 32
    block = sparsity.MlpBlock(d_ff=d_ff, topk=k, activation=activation)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 16)), jnp.float32)
    mask = jnp.asarray([[1.0] * 7, [1.0] * 3 + [0.0] * 4])
    variables = jax.jit(block.init)(jax.random.key(0), x, mask)

    def apply(variables):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
                captured[context.module.name + "_in"] = args[0]
                captured[context.module.name + "_out"] = out
            return out

        with nn.intercept_methods(interceptor):
            _, stats = block.apply(variables, x, mask)
        return stats, captured

    stats, captured = jax.jit(apply)(variables)
    a = np.asarray(captured["wo_in"])
    dense_a = np.asarray(sparsity.ACTIVATIONS[activation](captured["wi_out"]))
    counts = (a > 0).sum(-1)
    assert counts.max() <= k
    np.testing.assert_array_equal(counts, np.minimum(k, (dense_a > 0).sum(-1)))
    valid = np.asarray(mask) > 0
    np.testing.assert_allclose(stats["nonzero_frac"], counts[valid].sum() / (valid.sum() * d_ff), rtol=1e-6)
    assert float(stats["nonzero_frac"]) <= k / d_ff


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("k", [-1, 65, 2.5, "3", True])
def test_check_topk_rejects(k):
    with pytest.raises(ValueError) as err:
        sparsity.check_topk(k, 64)
    assert str(k) in str(err.value) and "64" in str(err.value)


@pytest.mark.parametrize("k", [0, 1, 64])
def test_check_topk_accepts(k):
    sparsity.check_topk(k, 64)


def test_check_topk_names_the_key_and_width():
    with pytest.raises(InputError, match=r"^model.topk=9 is not allowed: use an integer 0 <= k <= tokens_mlp_dim=8 "):
        sparsity.check_topk(9, 8, key="model.topk", width_name="tokens_mlp_dim")


def test_spec_builders_check_topk_against_the_narrowest_mlp():
    """Top-k applies to every MLP of a model, so k is checked against the narrowest (the Mixer's token MLP here)."""
    config = mixer_lib.default_model_config("Mu/7")
    config.update(**MIXER_TINY, num_classes=5, topk=8)
    assert model_spec(config).mlp.topk == 8
    config.topk = 9
    with pytest.raises(InputError, match=r"model.topk=9 is not allowed.*tokens_mlp_dim=8"):
        get_model(config)
    config = mlp_lib.default_model_config(d_ff=8)
    config.update(num_classes=5, topk=9)
    with pytest.raises(InputError, match=r"model.topk=9 is not allowed.*d_ff=8"):
        get_model(config)


def test_unknown_activation_lists_allowed():
    config = mlp_lib.default_model_config(d_ff=8)
    config.update(num_classes=5, activation="tanh")
    with pytest.raises(InputError) as err:
        get_model(config)
    msg = str(err.value)
    assert "model.activation='tanh'" in msg
    for name in ["relu", "gelu", "gelu_tanh", "silu", "squared_relu"]:
        assert repr(name) in msg, name


# ----------------------------------------------------------------------------- metric names


def test_stats_to_metrics_names_and_means():
    rng = np.random.default_rng(0)
    enc = rng.uniform(0, 0.2, 12).astype(np.float32)  # 12 layers: names need two digits
    dec = np.asarray([0.6, 0.9], np.float32)
    aux = {
        "encoder": {
            "nonzero_frac": jnp.asarray(enc),
            "num_tokens": jnp.full((12,), 8.0),
            "neuron_freq": jnp.asarray(rng.uniform(size=(12, 16)), jnp.float32),
            "count_hist": jnp.asarray(rng.uniform(size=(12, 5)), jnp.float32),
        },
        "decoder": {"nonzero_frac": jnp.asarray(dec), "num_tokens": jnp.full((2,), 8.0)},
    }
    metrics = sparsity.stats_to_metrics(aux)
    want = (
        {f"nonzero_frac/encoder/layer_{i:02d}" for i in range(12)}
        | {f"neuron_freq/encoder/layer_{i:02d}" for i in range(12)}
        | {f"count_hist/encoder/layer_{i:02d}" for i in range(12)}
        | {"nonzero_frac/decoder/layer_00", "nonzero_frac/decoder/layer_01"}
        | {"nonzero_frac/encoder/mean", "nonzero_frac/decoder/mean", "nonzero_frac/mean"}
    )
    assert set(metrics) == want
    for i in range(12):
        np.testing.assert_allclose(metrics[f"nonzero_frac/encoder/layer_{i:02d}"], enc[i])
        np.testing.assert_array_equal(metrics[f"neuron_freq/encoder/layer_{i:02d}"], aux["encoder"]["neuron_freq"][i])
        assert metrics[f"count_hist/encoder/layer_{i:02d}"].shape == (5,)
    np.testing.assert_allclose(metrics["nonzero_frac/decoder/layer_01"], 0.9)
    np.testing.assert_allclose(metrics["nonzero_frac/encoder/mean"], enc.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["nonzero_frac/decoder/mean"], 0.75, rtol=1e-6)
    # Unweighted over all 14 layers, not the mean of the two stack means.
    overall = np.concatenate([enc, dec]).mean()
    np.testing.assert_allclose(metrics["nonzero_frac/mean"], overall, rtol=1e-6)
    assert abs(overall - (enc.mean() + 0.75) / 2) > 0.05


def test_stack_layer_stats_stacks_on_a_leading_axis():
    per_layer = [{"nonzero_frac": jnp.float32(i), "neuron_freq": jnp.full((3,), i, jnp.float32)} for i in range(4)]
    stacked = sparsity.stack_layer_stats(per_layer)
    np.testing.assert_array_equal(stacked["nonzero_frac"], np.arange(4))
    assert stacked["neuron_freq"].shape == (4, 3)
    np.testing.assert_array_equal(stacked["neuron_freq"][:, 0], np.arange(4))


@pytest.mark.parametrize(
    "shape, dtype", [((2, 32, 3072), jnp.bfloat16), ((48, 96), jnp.float32), ((1, 1, 65536), jnp.bfloat16)]
)
def test_pallas_one_read_threshold_equals_the_bisection(shape, dtype):
    """The Pallas kernel (interpret mode here) takes the kernel path, not its fallback, at a
    ViT-B/16 width (3 column chunks), at an f32 map whose rows need 3 x 32-column chunks, and at
    a decoding step's one T5-11B row (32 loads in a block of one row)."""
    assert topk.one_read_applies(jax.ShapeDtypeStruct(shape, dtype))
    a = jax.random.normal(jax.random.key(3), shape, jnp.float32)
    a = jnp.round(a * 8) / 8  # ties
    a = a.astype(dtype)
    for k in (1, 7, 128 if shape[-1] > 128 else 40):
        want = np.asarray(sparsity.kth_largest_positive(a, k), np.float32)
        got = np.asarray(jax.jit(topk.kth_largest_pallas, static_argnums=1)(a, k), np.float32)
        np.testing.assert_array_equal(got, want, err_msg=f"k={k}")


def test_pallas_threshold_differentiates_inside_a_scan():
    """Scanned layers linearize their body; the kernel's threshold must not ask for a JVP."""
    x = jnp.asarray(_topk_input(k=6))
    assert sparse_mlp.pow2_divisor(x.shape[-1], topk.MAX_CHUNK) >= 16  # the kernel, not the fallback
    w_L = jnp.asarray([1.0, 2.0])

    def loss(w_L):
        def layer(h, w):
            return sparsity.topk_mask(h * w, 6, "pallas"), None

        return jnp.sum(jax.lax.scan(layer, x, w_L)[0])

    def reference(w_L):
        def layer(h, w):
            return sparsity.topk_mask(h * w, 6, "bisect"), None

        return jnp.sum(jax.lax.scan(layer, x, w_L)[0])

    np.testing.assert_allclose(np.asarray(jax.grad(loss)(w_L)), np.asarray(jax.grad(reference)(w_L)), rtol=1e-6)


@pytest.mark.parametrize(
    "mesh, per_device_rows",
    [(dict(data=2, fsdp=4, model=1), 2), (dict(data=8, fsdp=1, model=1), 2), (dict(data=2, fsdp=1, model=4), None)],
)
def test_pallas_threshold_runs_on_each_devices_rows_under_a_mesh(mesh, per_device_rows, monkeypatch):
    """Under a mesh the kernel gets each device's rows (a shard_map over the batch axes); where the
    rules split a row over devices ('mlp' on a model axis of 4) the bisection takes over."""
    from lazy_jax import sharding as shd

    seen = []
    kernel = topk._kth_one_read
    monkeypatch.setattr(topk, "_kth_one_read", lambda a, **kw: seen.append(a.shape) or kernel(a, **kw))
    a = jnp.asarray(np.round(np.random.default_rng(0).standard_normal((16, 8, 64)) * 3) / 4, jnp.bfloat16)
    m = shd.make_mesh(mesh)
    with jax.set_mesh(m), nn.logical_axis_rules(shd.DEFAULT_RULES):
        got = jax.jit(topk.kth_largest_pallas, static_argnums=1)(jax.device_put(a, shd.batch_sharding(m)), 5)
    want = sparsity.kth_largest_positive(a, 5)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    assert seen == ([] if per_device_rows is None else [(per_device_rows, 8, 64)])


def test_auto_takes_the_kernel_on_a_gpu_unless_a_row_is_split(monkeypatch):
    """'auto': the kernel on GPUs for any map it can hold per device (a decoding step's one row
    too: its bisection is 15 dependent passes); the bisection on CPUs and where 'mlp' is sharded."""
    from lazy_jax import sharding as shd

    a = jnp.asarray(_topk_input(k=6))
    calls = []
    monkeypatch.setattr(topk, "_kth_one_read", lambda x, **kw: calls.append(x.shape) or x[..., :1])
    sparsity.kth_largest_auto(a, 6)
    assert calls == []  # a CPU: the bisection
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    sparsity.kth_largest_auto(a[:1, :1], 6)
    assert calls == [(1, 1, a.shape[-1])]
    with jax.set_mesh(shd.make_mesh(dict(data=2, fsdp=1, model=4))), nn.logical_axis_rules(shd.DEFAULT_RULES):
        sparsity.kth_largest_auto(jnp.zeros((8, 4, 64)), 6)
    assert len(calls) == 1  # the row is split over the model axis: the bisection
