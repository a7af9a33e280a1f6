"""Tests of the vision models: shapes, pooling, scan == loop, remat, bf16, variants, specs, axis names.

Models are shrunk to two tiny layers by config.model's size overrides (width, depth, ...);
parameters are random (the heads start at zero, which would make every logits comparison
vacuous). Each jitted function is compiled once per config and shared between tests through
`_jitted`.
"""

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from jax.sharding import PartitionSpec
from ml_collections import config_flags

from lazy_jax.errors import InputError
from lazy_jax.models import MODELS, get_model, model_spec
from lazy_jax.models import mixer as mixer_lib
from lazy_jax.models import mlp as mlp_lib
from lazy_jax.models import vit as vit_lib
from tests.model_helpers import MIXER_TINY, VIT_TINY, random_variables

MLP_D_FF = 96
BINS = 5
B, HW, PATCH, CLASSES = 3, 28, 7, 5
NUM_PATCHES = (HW // PATCH) ** 2
LOGICAL_NAMES = {"batch", "length", "embed", "mlp", "heads", "kv", "vocab", "layers", "patch", "classes"}


# ----------------------------------------------------------------------------- helpers

BLOCK = {"vit": "encoderblock", "mixer": "mixerblock"}


def _config(kind, *, tiny=True, **overrides):
    """config.model of a tiny model (tiny=False: the variant's own sizes)."""
    if kind == "vit":
        config = vit_lib.default_model_config("Mu/7")
        config.update(VIT_TINY if tiny else {})
    elif kind == "mixer":
        config = mixer_lib.default_model_config("Mu/7")
        config.update(MIXER_TINY if tiny else {})
    else:
        config = mlp_lib.default_model_config(d_ff=MLP_D_FF)
    config.update(num_classes=CLASSES, neuron_freq=True, count_hist_bins=BINS)
    config.update(overrides)
    return config


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.uniform(0, 1, (B, HW, HW, 1)), jnp.float32), "mask": jnp.asarray([1.0, 1.0, 0.0])}


def _abstract_boxed(kind, config, batch):
    model = get_model(config)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), batch)


def _variables(kind, config, seed=0):
    return random_variables(get_model(config), _batch(), seed)


_CACHE = {}


def _jitted(kind, config, what):
    """Compiled once per config and shared between tests.

    'apply': (logits, aux, x_BTD) with x_BTD the ViT's encoder_norm output (None for the others);
    'grad': value_and_grad of a fixed linear function of the logits, with (logits, aux).
    """
    key = (kind, json.dumps(config.to_dict(), sort_keys=True), what)
    if key not in _CACHE:
        model = get_model(config)
        probe = jnp.asarray(np.random.default_rng(7).standard_normal((B, CLASSES)), jnp.float32)

        def apply(variables, batch):
            captured = {}

            def interceptor(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                if context.module.name == "encoder_norm" and context.method_name == "__call__":
                    captured["x_BTD"] = out
                return out

            with nn.intercept_methods(interceptor):
                logits, aux = model.apply(variables, batch, train=False)
            return logits, aux, captured.get("x_BTD")

        def loss(variables, batch):
            logits, aux = model.apply(variables, batch, train=False)
            return jnp.sum(logits * probe), (logits, aux)

        _CACHE[key] = jax.jit(apply if what == "apply" else jax.value_and_grad(loss, has_aux=True))
    return _CACHE[key]


def _stack_loop_params(kind, params, depth):
    """Loop layout {<block>_<i>: tree} -> scan layout {<block>: tree with a leading [depth] axis}."""
    block = BLOCK[kind]
    layers = [params[f"{block}_{i}"] for i in range(depth)]
    scanned = {k: v for k, v in params.items() if not k.startswith(f"{block}_")}
    scanned[block] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return scanned


def _assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), got, want)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind,pool", [("vit", "cls"), ("vit", "gap"), ("mixer", None), ("mlp", None)])
def test_logits_and_aux_shapes(kind, pool):
    config = _config(kind, **({"pool": pool} if pool else {}))
    model = get_model(config)
    batch = _batch()
    logits, aux = jax.eval_shape(lambda v, b: model.apply(v, b), _variables(kind, config), batch)
    assert logits.shape == (B, CLASSES) and logits.dtype == jnp.float32
    if kind == "vit":
        stacks = {"encoder": (VIT_TINY["depth"], VIT_TINY["d_ff"])}
    elif kind == "mixer":
        depth = MIXER_TINY["depth"]
        stacks = {
            "token_mlp": (depth, MIXER_TINY["tokens_mlp_dim"]),
            "channel_mlp": (depth, MIXER_TINY["channels_mlp_dim"]),
        }
    else:
        stacks = {"encoder": (1, MLP_D_FF)}
    assert set(aux) == set(stacks)
    for stack, (depth, d_ff) in stacks.items():
        assert set(aux[stack]) == {"nonzero_frac", "num_tokens", "neuron_freq", "count_hist"}
        assert aux[stack]["nonzero_frac"].shape == (depth,)
        assert aux[stack]["num_tokens"].shape == (depth,)
        assert aux[stack]["neuron_freq"].shape == (depth, d_ff)
        assert aux[stack]["count_hist"].shape == (depth, BINS)
        assert all(x.dtype == jnp.float32 for x in aux[stack].values())


def test_optional_statistics_are_off_by_default():
    config = _config("vit", neuron_freq=False, count_hist_bins=0)
    model = get_model(config)
    _, aux = jax.eval_shape(lambda v, b: model.apply(v, b), _variables("vit", config), _batch())
    assert set(aux["encoder"]) == {"nonzero_frac", "num_tokens"}


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_vit_pooling(pool):
    """cls reads the class token, gap the mean over patches, of the encoder_norm output."""
    config = _config("vit", pool=pool)
    variables = _variables("vit", config)
    params = variables["params"]
    assert ("cls" in params) == (pool == "cls")
    num_tokens = NUM_PATCHES + (pool == "cls")
    assert params["pos_embedding"].shape == (1, num_tokens, VIT_TINY["width"])

    logits, aux, x_BTD = _jitted("vit", config, "apply")(variables, _batch())
    assert x_BTD.shape == (B, num_tokens, VIT_TINY["width"])
    x_BD = x_BTD[:, 0] if pool == "cls" else jnp.mean(x_BTD, axis=1)
    want = x_BD @ params["head"]["kernel"] + params["head"]["bias"][None]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert np.std(np.asarray(logits)) > 1e-2
    # Statistics count every token of the two valid examples, the class token included.
    np.testing.assert_array_equal(aux["encoder"]["num_tokens"], 2 * num_tokens)


# ----------------------------------------------------------------------------- scan == loop


@pytest.mark.parametrize("kind", ["vit", "mixer"])
def test_scan_layers_matches_loop_with_stacked_params(kind):
    depth = VIT_TINY["depth"] if kind == "vit" else MIXER_TINY["depth"]
    loop_config, scan_config = _config(kind), _config(kind, scan_layers=True)
    loop_vars = _variables(kind, loop_config)
    scan_vars = {"params": _stack_loop_params(kind, loop_vars["params"], depth)}
    # The mapped tree is exactly the scan layout (names and shapes).
    want_layout = nn.meta.unbox(_abstract_boxed(kind, scan_config, _batch()))
    assert jax.tree.structure(scan_vars) == jax.tree.structure(want_layout)
    jax.tree.map(
        lambda x, y: (x.shape, x.dtype) == (y.shape, y.dtype) or pytest.fail(f"{x} vs {y}"), scan_vars, want_layout
    )

    batch = _batch()
    loop_logits, loop_aux, _ = _jitted(kind, loop_config, "apply")(loop_vars, batch)
    scan_logits, scan_aux, _ = _jitted(kind, scan_config, "apply")(scan_vars, batch)
    assert np.std(np.asarray(loop_logits)) > 1e-2
    np.testing.assert_allclose(scan_logits, loop_logits, rtol=1e-5, atol=1e-5)
    _assert_trees_close(scan_aux, loop_aux)
    # The layers differ, so the per-layer statistics do too: the stacking order is tested.
    frac = np.asarray(loop_aux["encoder" if kind == "vit" else "channel_mlp"]["nonzero_frac"])
    assert len(set(frac.tolist())) == depth


# ----------------------------------------------------------------------------- remat


# Each policy once, each stack form once, one layer: gradient compiles dominate this file's time.
@pytest.mark.parametrize("policy,scan", [("full", True), ("minimal", False)])
def test_remat_matches_no_remat(policy, scan):
    base = _config("vit", depth=1, scan_layers=scan)  # one layer: gradient compiles are the slowest
    variables = _variables("vit", _config("vit", depth=1))
    if scan:
        variables = {"params": _stack_loop_params("vit", variables["params"], 1)}
    batch = _batch()
    (want_loss, (want_logits, want_aux)), want_grad = _jitted("vit", base, "grad")(variables, batch)
    remat = _config("vit", depth=1, scan_layers=scan, remat_policy=policy)
    (loss, (logits, aux)), grad = _jitted("vit", remat, "grad")(variables, batch)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
    _assert_trees_close(aux, want_aux)
    _assert_trees_close(grad, want_grad, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(grad["params"]["embedding"]["kernel"]).max()) > 0


@pytest.mark.parametrize("kind,dtype", [("vit", "bfloat16"), ("mixer", "float32"), ("mlp", "float32")])
def test_topk_bisection_and_lax_top_k_give_the_same_model(kind, dtype):
    """Same logits, statistics and gradients whichever way the k-th largest value is found."""
    variables = _variables(kind, _config(kind))
    k = 3
    # radix and the kernel (interpret mode): one model is enough
    impls = ("bisect", "radix", "pallas", "lax") if kind == "vit" else ("bisect", "lax")
    *gots, want = (
        _jitted(kind, _config(kind, topk=k, topk_impl=impl, dtype=dtype), "grad")(variables, _batch()) for impl in impls
    )
    for got in gots:
        jax.tree.map(np.testing.assert_array_equal, got, want)
    for stack in got[0][1][1].values():  # Top-k was applied (every d_ff here is >= 8)
        assert np.asarray(stack["nonzero_frac"]).max() <= k / 8 + 1e-6


# ----------------------------------------------------------------------------- bf16


@pytest.mark.parametrize("kind", ["vit", "mixer", "mlp"])
def test_bfloat16_keeps_float32_params(kind):
    config = _config(kind, dtype="bfloat16")
    boxed = _abstract_boxed(kind, config, _batch())
    dtypes = {x.dtype for x in jax.tree.leaves(nn.meta.unbox(boxed))}
    assert dtypes == {jnp.dtype(jnp.float32)}
    if kind != "vit":
        return  # one compiled bf16 model is enough for the run-time checks
    variables = _variables(kind, _config(kind))
    logits, aux, _ = _jitted(kind, config, "apply")(variables, _batch())
    want_logits, want_aux, _ = _jitted(kind, _config(kind), "apply")(variables, _batch())
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    scale = float(np.abs(np.asarray(want_logits)).max())
    np.testing.assert_allclose(logits, want_logits, atol=0.1 * scale)
    assert aux["encoder"]["nonzero_frac"].dtype == jnp.float32
    np.testing.assert_allclose(aux["encoder"]["nonzero_frac"], want_aux["encoder"]["nonzero_frac"], atol=0.05)


# ----------------------------------------------------------------------------- variants


@pytest.mark.parametrize(
    "kind,variant",
    [
        ("vit", "X/16"),
        ("vit", "B/0"),
        ("vit", "B"),
        ("vit", "B/16x"),
        ("mixer", "X/16"),
        ("mixer", "B/0"),
        ("mixer", "B"),
        ("mixer", "Ti/16"),
    ],
)
def test_unknown_variant_names_variant_and_sizes(kind, variant):
    sizes = vit_lib.VIT_SIZES if kind == "vit" else mixer_lib.MIXER_SIZES
    with pytest.raises(InputError) as err:
        get_model(_config(kind, variant=variant))
    msg = str(err.value)
    assert repr(variant) in msg
    for size in sizes:
        assert repr(size) in msg, size


@pytest.mark.parametrize(
    "kind,variant,want",
    [
        ("vit", "S/16", vit_lib.VIT_SIZES["S"]),
        ("vit", "Mu/4", vit_lib.VIT_SIZES["Mu"]),
        ("mixer", "B/16", mixer_lib.MIXER_SIZES["B"]),
    ],
)
def test_known_variant_sizes(kind, variant, want):
    """Real sizes by shape only (eval_shape: nothing is materialised)."""
    config = _config(kind, tiny=False, variant=variant, neuron_freq=False, count_hist_bins=0)
    params = nn.meta.unbox(_abstract_boxed(kind, config, {"image": jnp.zeros((1, 32, 32, 3))}))["params"]
    patch = int(variant.split("/")[1])
    if kind == "vit":
        width, heads, depth, d_ff = want
        assert params["embedding"]["kernel"].shape == (patch, patch, 3, width)
        assert params[f"encoderblock_{depth - 1}"]["mlp"]["wi"]["kernel"].shape == (width, d_ff)
        assert f"encoderblock_{depth}" not in params
        assert params["encoderblock_0"]["attention"]["qkv_kernel"].shape == (3, width, heads, width // heads)
    else:
        hidden, depth, d_tok, d_ch = want
        assert params["stem"]["kernel"].shape == (patch, patch, 3, hidden)
        block = params[f"mixerblock_{depth - 1}"]
        assert block["token_mlp"]["wi"]["kernel"].shape == ((32 // patch) ** 2, d_tok)
        assert block["channel_mlp"]["wi"]["kernel"].shape == (hidden, d_ch)
        assert f"mixerblock_{depth}" not in params


def test_mlp_rejects_nonpositive_width():
    with pytest.raises(InputError, match="model.d_ff=0 is not allowed"):
        get_model(_config("mlp", d_ff=0))


@pytest.mark.parametrize(
    "kind,overrides,want",
    [
        ("vit", dict(d_ff=1024), dict(width=768, num_heads=12, depth=12, d_ff=1024)),
        ("vit", dict(width=96, num_heads=3, depth=2), dict(width=96, num_heads=3, depth=2, d_ff=3072)),
        (
            "mixer",
            dict(depth=3, channels_mlp_dim=100),
            dict(width=768, depth=3, tokens_mlp_dim=384, channels_mlp_dim=100),
        ),
    ],
)
def test_size_overrides_replace_the_variants_sizes(kind, overrides, want):
    spec = model_spec(_config(kind, tiny=False, variant="B/16", **overrides))
    assert {f: getattr(spec, f) for f in want} == want
    assert spec.patch == 16


@pytest.mark.parametrize("kind", ["vit", "mixer"])
def test_size_overrides_from_the_command_line(kind):
    """The size fields are int placeholders, so `--config.model.d_ff=1024` parses (a None field would not)."""
    lib = vit_lib if kind == "vit" else mixer_lib
    field = "d_ff" if kind == "vit" else "channels_mlp_dim"
    values = flags.FlagValues()
    argv = ["main", f"--config.{field}=1024", "--config.depth=3"]
    config_flags.DEFINE_config_dict("config", lib.default_model_config("B/16"), flag_values=values, sys_argv=argv)
    values(argv)
    spec = model_spec(values.config, num_classes=10)
    assert (getattr(spec, field), spec.depth, spec.width) == (1024, 3, 768)


# ----------------------------------------------------------------------------- specs and the registry


def test_registry_has_one_entry_per_model():
    assert set(MODELS) == {"vit", "mixer", "mlp", "t5"}
    with pytest.raises(InputError, match=r"model.name='resnet' is unknown; allowed: \['vit', 'mixer', 'mlp', 't5'\]"):
        get_model({"name": "resnet"})


@pytest.mark.parametrize("kind", ["vit", "mixer", "mlp"])
def test_spec_is_frozen_and_hashable(kind):
    spec = model_spec(_config(kind))
    assert spec == model_spec(_config(kind)) and hash(spec) == hash(model_spec(_config(kind)))
    for part in (spec, spec.mlp):
        with pytest.raises(dataclasses.FrozenInstanceError):
            part.topk = 3
    assert get_model(_config(kind)).spec == spec


@pytest.mark.parametrize("kind,mlp_rate", [("vit", 0.0), ("mixer", 0.25), ("mlp", 0.25)])
def test_one_mlp_settings_per_spec(kind, mlp_rate):
    """spec.mlp holds what every MLP of the model gets; the ViT's dropout is outside its MLPs."""
    spec = model_spec(_config(kind, topk=4, dropout_rate=0.25))
    assert (spec.mlp.topk, spec.mlp.neuron_freq, spec.mlp.count_hist_bins) == (4, True, BINS)
    assert spec.mlp.dropout_rate == mlp_rate
    assert getattr(spec, "dropout_rate", 0.25) == 0.25


@pytest.mark.parametrize("kind", ["vit", "mixer", "mlp"])
def test_num_classes_minus_one_is_the_datas(kind):
    config = _config(kind, num_classes=-1)
    assert model_spec(config, num_classes=10).num_classes == 10
    assert model_spec(config, num_classes=10, vocab_size=99).num_classes == 10  # a classifier ignores vocab_size
    assert config.num_classes == -1  # nothing is written back
    with pytest.raises(
        InputError, match=r"model.num_classes=-1 means the data's number of classes, but no num_classes"
    ):
        get_model(config)


def test_explicit_num_classes_must_cover_the_datas():
    assert model_spec(_config("vit", num_classes=12), num_classes=10).num_classes == 12  # used as given
    assert model_spec(_config("vit", num_classes=12)).num_classes == 12
    with pytest.raises(
        InputError, match=r"model.num_classes=3 is less than the data's number of classes \(10\).*>= 10"
    ):
        model_spec(_config("vit", num_classes=3), num_classes=10)


@pytest.mark.parametrize(
    "kind,key,value,match",
    [
        ("vit", "num_classes", 0, r"model.num_classes=0 is not allowed: use a positive integer or -1"),
        ("vit", "dtype", "float16", r"model.dtype='float16' is not allowed; use one of \['bfloat16', 'float32'\]"),
        ("mixer", "activation", "tanh", r"model.activation='tanh' is unknown; allowed: \[.*'relu'.*\]"),
        ("vit", "topk", 65, r"model.topk=65 is not allowed: use an integer 0 <= k <= d_ff=64 \(0 = dense\)"),
        ("mixer", "topk", 9, r"model.topk=9 is not allowed: use an integer 0 <= k <= tokens_mlp_dim=8"),
        ("mlp", "topk", -1, r"model.topk=-1 is not allowed: use an integer 0 <= k <= d_ff=96"),
        (
            "mlp",
            "topk_impl",
            "sort",
            r"model.topk_impl='sort' is unknown; allowed: \['auto', 'bisect', 'lax', 'pallas', 'radix'\]",
        ),
        ("vit", "remat_policy", "some", r"model.remat_policy='some' is unknown; allowed: \[.*'full'"),
        ("mixer", "scan_layers", 1, r"model.scan_layers=1 is not allowed: use True or False"),
        ("vit", "pool", "max", r"model.pool='max' is unknown; allowed: \['cls', 'gap'\]"),
        ("vit", "dropout_rate", 1.0, r"model.dropout_rate=1.0 is not allowed: use 0 <= rate < 1"),
        ("mlp", "count_hist_bins", -2, r"model.count_hist_bins=-2 is not allowed: use an integer >= 0"),
        ("vit", "num_heads", 3, r"model.num_heads=3 is not allowed: it must divide the width 32"),
        ("mixer", "width", 0, r"model.width=0 is not allowed: use a positive integer, or None"),
    ],
)
def test_spec_builders_name_the_bad_value(kind, key, value, match):
    config = _config(kind)
    with config.ignore_type():
        config[key] = value
    with pytest.raises(InputError, match=match):
        model_spec(config)


# ----------------------------------------------------------------------------- logical axis names


_NAMING_CASES = [("vit", False), ("vit", True), ("mixer", False), ("mixer", True), ("mlp", False)]


def _unnamed(kind, scan, only_kernels):
    """'path: spec' for every param whose PartitionSpec lacks a logical name per dimension."""
    config = _config(kind, **({"scan_layers": True} if scan else {}))
    boxed = _abstract_boxed(kind, config, _batch())
    specs = nn.get_partition_spec(boxed)["params"]
    shapes = nn.meta.unbox(boxed)["params"]
    bad = []
    for (path, spec), leaf in zip(
        jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)),
        jax.tree.leaves(shapes),
    ):
        name = jax.tree_util.keystr(path)
        if only_kernels and "kernel" not in name:
            continue
        ok = (
            isinstance(spec, PartitionSpec)
            and len(spec) == leaf.ndim
            and any(n is not None for n in spec)
            and set(spec) - {None} <= LOGICAL_NAMES
            and (not scan or not any(k in name for k in BLOCK.values()) or spec[0] == "layers")
        )
        if not ok:
            bad.append(f"{name}: {spec} for shape {leaf.shape}")
    return bad


@pytest.mark.parametrize("kind,scan", _NAMING_CASES)
def test_every_kernel_has_logical_axis_names(kind, scan):
    assert not _unnamed(kind, scan, only_kernels=True)


@pytest.mark.parametrize("kind,scan", _NAMING_CASES)
def test_every_param_has_logical_axis_names(kind, scan):
    assert not _unnamed(kind, scan, only_kernels=False)


@pytest.mark.parametrize("kind,scan", _NAMING_CASES[:4])
def test_embed_axis_is_always_the_model_width(kind, scan):
    """'embed' maps to a mesh axis, so it must mean one size: the width, not e.g. the patch count."""
    config = _config(kind, **({"scan_layers": True} if scan else {}))
    boxed = _abstract_boxed(kind, config, {"image": jnp.zeros((1, 42, 42, 1))})  # 36 patches
    width = VIT_TINY["width"] if kind == "vit" else MIXER_TINY["width"]
    specs = nn.get_partition_spec(boxed)["params"]
    shapes = nn.meta.unbox(boxed)["params"]
    bad = [
        f"{jax.tree_util.keystr(path)}: {spec} for shape {leaf.shape}"
        for (path, spec), leaf in zip(
            jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)),
            jax.tree.leaves(shapes),
        )
        if any(name == "embed" and size != width for name, size in zip(spec, leaf.shape))
    ]
    assert not bad
