"""T5 v1.0 model: relative position buckets, padding in the statistics, scan, KV-cache decoding, bf16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from lazy_jax.errors import InputError
from lazy_jax.models import get_model, model_spec
from lazy_jax.models.t5 import T5, default_model_config, greedy_decode, relative_position_bucket, t5_dims
from lazy_jax.models.t5_convert import _scan_params

VOCAB = 40


def tiny_config(**overrides):
    c = default_model_config("tiny")
    c.vocab_size = VOCAB
    c.update(
        dict(
            size="custom",
            d_model=32,
            num_heads=2,
            d_kv=16,
            d_ff=64,
            num_encoder_layers=2,
            num_decoder_layers=3,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
        )
    )
    c.update(overrides)
    return c


def make_batch(seed=0, batch=3, enc_len=11, dec_len=9, enc_valid=(11, 6, 3), dec_valid=(9, 4, 6)):
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, VOCAB, (batch, enc_len)).astype(np.int32)
    tgt = rng.integers(2, VOCAB, (batch, dec_len)).astype(np.int32)
    for row, (ne, nd) in enumerate(zip(enc_valid, dec_valid)):
        enc[row, ne:] = 0
        tgt[row, nd:] = 0
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    return dict(encoder_input_tokens=enc, decoder_input_tokens=dec_in, decoder_target_tokens=tgt)


@pytest.fixture(scope="module")
def model_and_vars():
    """One initialised model shared by the tests (compiling inits is what costs time on a CPU)."""
    model = get_model(tiny_config())
    return model, nn.unbox(jax.jit(model.init)(fast_key(0), make_batch()))


@pytest.fixture(scope="module")
def forward(model_and_vars):
    """The f32 model's (logits, aux) on make_batch(), computed once."""
    model, variables = model_and_vars
    return jit_apply(model)(variables, make_batch())


def fast_key(seed):
    """A PRNG key whose random-bit ops compile fast on a CPU (threefry makes T5's ~30 dropouts slow)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def jit_apply(model, **kwargs):
    """model.apply compiled once (op-by-op execution compiles every op on a CPU, which is slower)."""
    return jax.jit(lambda variables, *args, **kw: model.apply(variables, *args, **kwargs, **kw))


def logical_specs(model, batch):
    return nn.get_partition_spec(jax.eval_shape(model.init, jax.random.key(0), batch))["params"]


# ----------------------------------------------------------------------------- buckets
# Hand-computed from T5's rule: exact buckets below max_exact = buckets_per_direction // 2, then
# max_exact + floor(log(n / max_exact) / log(max_distance / max_exact) * (buckets_per_dir - max_exact)),
# capped at the last bucket; bidirectional adds buckets_per_dir for keys after the query.
BUCKET_CASES = [
    # (bidirectional, num_buckets, max_distance, relative position (key - query), bucket)
    (True, 32, 128, 0, 0),
    (True, 32, 128, -1, 1),
    (True, 32, 128, 1, 17),
    (True, 32, 128, -7, 7),
    (True, 32, 128, -8, 8),
    (True, 32, 128, -20, 10),  # 8 + floor(log(2.5)/log(16)*8 = 2.64)
    (True, 32, 128, 20, 26),
    (True, 32, 128, -100, 15),  # 8 + floor(7.29)
    (True, 32, 128, -127, 15),
    (True, 32, 128, -128, 15),
    (True, 32, 128, -1000, 15),
    (True, 32, 128, 1000, 31),
    (False, 32, 128, 5, 0),
    (False, 32, 128, 1000, 0),
    (False, 32, 128, 0, 0),
    (False, 32, 128, -1, 1),
    (False, 32, 128, -15, 15),
    (False, 32, 128, -16, 16),
    (False, 32, 128, -20, 17),  # 16 + floor(1.72)
    (False, 32, 128, -100, 30),  # 16 + floor(14.10)
    (False, 32, 128, -127, 31),
    (False, 32, 128, -128, 31),
    (False, 32, 128, -500, 31),
    (True, 8, 12, -1, 1),
    (True, 8, 12, -2, 2),
    (True, 8, 12, -3, 2),  # 2 + floor(log(1.5)/log(6)*2 = 0.45)
    (True, 8, 12, -5, 3),
    (True, 8, 12, -12, 3),
    (True, 8, 12, 3, 6),
    (True, 8, 12, 100, 7),
    (False, 8, 12, -3, 3),
    (False, 8, 12, -5, 4),
    (False, 8, 12, -11, 7),
    (False, 8, 12, -50, 7),
    (False, 8, 12, 50, 0),
]


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance,rel,bucket", BUCKET_CASES)
def test_relative_position_bucket_hand_computed(bidirectional, num_buckets, max_distance, rel, bucket):
    got = relative_position_bucket(
        np.array([rel]), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert int(got[0]) == bucket


def test_relative_position_bucket_ranges():
    rel = np.arange(-400, 401)
    bi = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    causal = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert bi.min() == 0 and bi.max() == 31 and causal.min() == 0 and causal.max() == 31
    assert np.all(np.diff(bi[rel <= 0][::-1]) >= 0)  # non-decreasing with distance
    assert np.all(causal[rel > 0] == 0)  # the future is one bucket


# ----------------------------------------------------------------------------- config
def test_config_sizes_and_errors():
    assert t5_dims(default_model_config("base")) == dict(
        d_model=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, d_ff=3072, d_kv=64
    )
    assert t5_dims(default_model_config("11B"))["d_ff"] == 65536
    base = default_model_config("base")
    base.d_ff = 1024  # an int overrides the size's
    assert t5_dims(base) == dict(
        d_model=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, d_ff=1024, d_kv=64
    )
    with pytest.raises(InputError, match=r"size='xl'.*'small'.*'3B'"):
        default_model_config("xl")
    bad = default_model_config("tiny")
    bad.size = "huge"
    # Model values are checked when the spec is built, before anything is traced.
    with pytest.raises(InputError, match=r"model.size='huge' is unknown"):
        get_model(bad)
    with pytest.raises(InputError, match=r"model.topk=65 is not allowed.*d_ff=64"):
        get_model(tiny_config(topk=65))
    with pytest.raises(InputError, match=r"model.size='custom' needs model.d_ff"):
        t5_dims(tiny_config(d_ff=None))
    with pytest.raises(InputError, match=r"model.d_kv=0 is not allowed: use a positive integer"):
        get_model(tiny_config(d_kv=0))
    with pytest.raises(InputError, match="max_distance=4 .*> relative_attention_num_buckets // 2 = 4"):
        get_model(tiny_config(relative_attention_max_distance=4))
    with pytest.raises(InputError, match=r"model.relative_attention_num_buckets=7 is not allowed"):
        get_model(tiny_config(relative_attention_num_buckets=7))
    with pytest.raises(InputError, match=r"model.layer_norm_epsilon=0.0 is not allowed"):
        get_model(tiny_config(layer_norm_epsilon=0.0))
    with pytest.raises(InputError, match=r"model.remat_policy='some' is unknown"):
        get_model(tiny_config(remat_policy="some"))
    with pytest.raises(ValueError, match="decoder_target_tokens"):
        model = get_model(tiny_config())
        model.init(jax.random.key(0), {k: v for k, v in make_batch().items() if k != "decoder_target_tokens"})


def test_vocab_size_minus_one_is_the_datas():
    config = tiny_config(vocab_size=-1)
    spec = model_spec(config, vocab_size=VOCAB, num_classes=3)  # T5 ignores num_classes
    assert spec.vocab_size == VOCAB and config.vocab_size == -1
    assert model_spec(tiny_config(vocab_size=64), vocab_size=VOCAB).vocab_size == 64  # used as given
    with pytest.raises(InputError, match=r"model.vocab_size=-1 means the data's vocabulary size, but no vocab_size"):
        get_model(config)
    with pytest.raises(InputError, match=r"model.vocab_size=30 is less than the data's vocabulary size \(40\)"):
        model_spec(tiny_config(vocab_size=30), vocab_size=VOCAB)


def test_dims_override_the_size_from_the_command_line():
    """The dimension fields are int placeholders, so `--config.model.d_ff=1024` parses."""
    values = flags.FlagValues()
    argv = ["main", "--config.d_ff=1024", "--config.num_decoder_layers=3"]
    config_flags.DEFINE_config_dict("config", default_model_config("small"), flag_values=values, sys_argv=argv)
    values(argv)
    spec = model_spec(values.config)
    assert (spec.d_model, spec.d_ff, spec.num_encoder_layers, spec.num_decoder_layers) == (512, 1024, 6, 3)


def test_outputs_and_logical_axes(model_and_vars, forward):
    model, variables = model_and_vars
    batch = make_batch()
    logits, aux = forward
    assert logits.shape == (3, 9, VOCAB) and logits.dtype == jnp.float32
    assert aux["encoder"]["nonzero_frac"].shape == (2,) and aux["decoder"]["nonzero_frac"].shape == (3,)
    assert np.all(np.asarray(aux["encoder"]["num_tokens"]) == 11 + 6 + 3)
    assert np.all(np.asarray(aux["decoder"]["num_tokens"]) == 9 + 4 + 6)
    specs = logical_specs(model, batch)
    assert tuple(specs["token_embedder"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["encoder"]["relpos_bias"]["rel_embedding"]) == ("relpos_buckets", "heads")
    assert tuple(specs["decoder"]["layers_0"]["self_attention"]["query"]) == ("embed", "heads", "kv")
    assert tuple(specs["decoder"]["layers_0"]["encoder_decoder_attention"]["out"]) == ("heads", "kv", "embed")
    assert tuple(specs["encoder"]["layers_1"]["mlp"]["wi"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["decoder"]["decoder_norm"]["scale"]) == ("embed",)
    assert "bias" not in variables["params"]["encoder"]["layers_1"]["mlp"]["wi"]
    scanned = logical_specs(get_model(tiny_config(scan_layers=True)), batch)
    assert tuple(scanned["encoder"]["layers"]["mlp"]["wo"]["kernel"]) == ("layers", "mlp", "embed")


def test_padding_never_counted(model_and_vars):
    model, variables = model_and_vars
    batch = make_batch()
    enc_mask = batch["encoder_input_tokens"] > 0
    dec_mask = batch["decoder_target_tokens"] > 0
    apply = jit_apply(model)
    logits, aux = apply(variables, {**batch, "encoder_mask": enc_mask})
    # Fill every padded position with real tokens, keeping the masks: nothing valid may change.
    rng = np.random.default_rng(1)
    noisy = dict(batch)
    noisy["encoder_input_tokens"] = np.where(
        enc_mask, batch["encoder_input_tokens"], rng.integers(2, VOCAB, enc_mask.shape)
    ).astype(np.int32)
    noisy["decoder_input_tokens"] = np.where(
        dec_mask, batch["decoder_input_tokens"], rng.integers(2, VOCAB, dec_mask.shape)
    ).astype(np.int32)
    logits2, aux2 = apply(variables, {**noisy, "encoder_mask": enc_mask})
    for stack in ("encoder", "decoder"):
        np.testing.assert_allclose(aux2[stack]["nonzero_frac"], aux[stack]["nonzero_frac"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(logits2)[dec_mask], np.asarray(logits)[dec_mask], atol=1e-5)
    # Counting the padded positions would change the statistics (so the check above can fail).
    _, aux_all = apply(variables, {**noisy, "encoder_mask": np.ones_like(enc_mask)})
    assert abs(float(aux_all["encoder"]["nonzero_frac"][0] - aux["encoder"]["nonzero_frac"][0])) > 1e-4


def test_scan_matches_loop(model_and_vars):
    model, variables = model_and_vars
    batch = make_batch()
    scanned = get_model(tiny_config(scan_layers=True, remat_policy="full"))
    s_vars = {"params": _scan_params(variables["params"])}

    def loss_and_grad(m, params):
        loss = lambda p: (lambda out: (jnp.mean(out[0] ** 2), out))(m.apply({"params": p}, batch))
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, (logits, aux)), g = loss_and_grad(model, variables["params"])
    (_, (s_logits, s_aux)), s_g = loss_and_grad(scanned, s_vars["params"])
    np.testing.assert_allclose(s_logits, logits, atol=1e-5)
    for stack, n in (("encoder", 2), ("decoder", 3)):
        assert s_aux[stack]["nonzero_frac"].shape == (n,)
        np.testing.assert_allclose(s_aux[stack]["nonzero_frac"], aux[stack]["nonzero_frac"], rtol=1e-6)
    # Gradients flow through scan + remat and agree with the loop's.
    np.testing.assert_allclose(
        s_g["encoder"]["layers"]["mlp"]["wi"]["kernel"][1], g["encoder"]["layers_1"]["mlp"]["wi"]["kernel"], atol=1e-6
    )


def test_topk_and_dropout(model_and_vars):
    _, variables = model_and_vars
    batch = make_batch()
    model = get_model(tiny_config(topk=4, dropout_rate=0.3))
    eval_logits, aux = jit_apply(model)(variables, batch)
    assert float(jnp.max(aux["decoder"]["nonzero_frac"])) <= 4 / 64 + 1e-6
    assert float(jnp.min(aux["encoder"]["nonzero_frac"])) > 0
    train_logits, _ = jit_apply(model, train=True)(variables, batch, rngs={"dropout": fast_key(1)})
    assert not np.allclose(eval_logits, train_logits)
    lax_logits, lax_aux = jit_apply(get_model(tiny_config(topk=4, dropout_rate=0.3, topk_impl="lax")))(variables, batch)
    np.testing.assert_array_equal(lax_logits, eval_logits)  # the reference Top-k gives the same model
    jax.tree.map(np.testing.assert_array_equal, lax_aux, aux)


def slow_greedy(encode, decode, variables, enc, max_len, eos_id):
    """Argmax loop without a cache: re-runs the whole decoder prefix for every new token."""
    encoded, _ = encode(variables, enc, enc > 0)
    tokens = np.zeros((enc.shape[0], max_len + 1), np.int32)  # position 0 = BOS
    done = np.zeros(enc.shape[0], bool)
    for i in range(max_len):
        logits, _ = decode(variables, encoded, enc > 0, tokens[:, :max_len])
        nxt = np.where(done, 0, np.argmax(np.asarray(logits[:, i]), axis=-1))
        done |= nxt == eos_id
        tokens[:, i + 1] = nxt
    return tokens[:, 1:]


@pytest.mark.parametrize("scan", [False, True])
def test_greedy_cache_matches_no_cache(model_and_vars, scan):
    model = get_model(tiny_config(scan_layers=scan, relative_attention_max_distance=6))  # decode past max distance
    batch = make_batch(seed=3)
    params = jax.tree.map(np.array, model_and_vars[1]["params"])
    # A random model with tied embeddings repeats its input token; flipping the final norm makes it
    # hop between tokens instead, so the decoded sequences vary from step to step.
    params["decoder"]["decoder_norm"]["scale"] *= -1.0
    variables = {"params": _scan_params(params) if scan else params}
    enc, dec_in = batch["encoder_input_tokens"], batch["decoder_input_tokens"]
    max_len = dec_in.shape[1]
    encode, decode = jit_apply(model, method=T5.encode), jit_apply(model, method=T5.decode)
    fast_greedy = jax.jit(greedy_decode, static_argnums=(0, 3))
    without_eos = slow_greedy(encode, decode, variables, enc, max_len, eos_id=-1)
    eos_id = int(without_eos[0, 3])  # a token that occurs mid-sequence, so stopping is exercised
    for eos in (-1, eos_id):
        np.testing.assert_array_equal(
            np.asarray(fast_greedy(model, variables, enc, max_len, eos_id=eos)),
            slow_greedy(encode, decode, variables, enc, max_len, eos),
        )
    assert len(np.unique(without_eos)) > 3
    # Step-wise cached logits equal the full (teacher-forced) decoder pass.
    encoded, _ = encode(variables, enc, enc > 0)
    full, _ = decode(variables, encoded, enc > 0, dec_in)
    step = jit_apply(model, decode=True, max_decode_length=max_len, method=T5.decode, mutable=["cache"])
    cache = jax.tree.map(jnp.zeros_like, jax.eval_shape(step, variables, encoded, enc > 0, dec_in[:, :1])[1]["cache"])
    for i in range(max_len):
        (step_logits, _), new = step({**variables, "cache": cache}, encoded, enc > 0, dec_in[:, i : i + 1])
        cache = new["cache"]
        np.testing.assert_allclose(step_logits[:, 0], full[:, i], atol=1e-5)


def test_bfloat16(model_and_vars, forward):
    model, variables = model_and_vars
    batch = make_batch()
    logits, aux = forward
    bf16 = get_model(tiny_config(dtype="bfloat16"))
    b_logits, b_aux = jit_apply(bf16)(variables, batch)
    assert b_logits.dtype == jnp.float32 and np.all(np.isfinite(b_logits))
    abstract = nn.unbox(jax.eval_shape(bf16.init, jax.random.key(0), batch))["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))
    # bf16 activations stay close to the f32 model, far closer than the logits' spread.
    assert float(jnp.max(jnp.abs(b_logits - logits))) < 0.1 * float(jnp.std(logits)) + 0.05
    np.testing.assert_allclose(b_aux["encoder"]["nonzero_frac"], aux["encoder"]["nonzero_frac"], atol=0.03)
    out = jax.jit(greedy_decode, static_argnums=(0, 3))(bf16, variables, batch["encoder_input_tokens"], 4)
    assert out.shape == (3, 4) and out.dtype == jnp.int32
