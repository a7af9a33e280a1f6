"""The sparse W_out of decoding (lazy_jax.sparse_mlp) is exact: kernels against the dense matmul,
and greedy decoding of a random Top-k T5 with the same tokens and logits within bf16 rounding
(the tiny trained ReLU run: tests/test_generate.py). On the CPU the Pallas kernel runs in
interpret mode."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_t5_model import tiny_config

from lazy_jax import sparse_mlp
from lazy_jax.models import get_model
from lazy_jax.models.t5 import T5, decode_params, greedy_decode


@pytest.mark.parametrize("b,f,d", [(1, 256, 64), (3, 512, 128), (20, 64, 32)])
def test_kernels_equal_the_dense_matmul(b, f, d):
    k1, k2, k3 = jax.random.split(jax.random.key(b * f), 3)
    a_BF = jax.nn.relu(jax.random.normal(k1, (b, f), jnp.bfloat16))
    a_BF = jnp.where(jax.random.uniform(k3, (b, f)) < 0.1, a_BF, 0)  # ~5% active, rows differ
    w_FD = jax.random.normal(k2, (f, d), jnp.bfloat16)
    exact = np.asarray(a_BF, np.float64) @ np.asarray(w_FD, np.float64)
    dense = np.asarray(sparse_mlp.dense_matmul(a_BF, w_FD), np.float64)
    for impl in ("pallas", "gather"):
        y = sparse_mlp.sparse_matmul(a_BF, w_FD, impl)
        assert y.dtype == jnp.bfloat16 and y.shape == (b, d)
        # The same products summed in another order, rounded to bf16 (the CPU's bf16 dot adds in
        # bf16 too): within a few bf16 steps of the exact sums, as the dense matmul.
        scale = np.abs(exact).max()
        for got in (np.asarray(y, np.float64), dense):
            np.testing.assert_allclose(got, exact, atol=0.03 * scale)
    # gather above its capacity takes the dense branch
    full = jax.nn.relu(jax.random.normal(k1, (b, f), jnp.bfloat16)) + 1
    np.testing.assert_array_equal(sparse_mlp.gather_matmul(full, w_FD, 4), sparse_mlp.dense_matmul(full, w_FD))


def test_dot_general_only_when_decoding():
    assert sparse_mlp.wo_dot_general("off", (2, 1, 8), False) is None
    assert sparse_mlp.wo_dot_general("pallas", (2, 5, 8), False) is None  # a whole sequence
    assert sparse_mlp.wo_dot_general("pallas", (2, 1, 8), True) is None  # training
    assert sparse_mlp.wo_dot_general("pallas", (2, 1, 8), False) is not None


def with_impl(model, impl):
    return T5(dataclasses.replace(model.spec, mlp=dataclasses.replace(model.spec.mlp, sparse_decode=impl)))


def first_steps_logits(model, params, enc):
    """Logits [B, 2, V] of the first two cached decoding steps: BOS (filling the cache from the
    encoder output) and token 3 (reading it)."""
    enc_mask = enc > 0
    encoded, _ = model.apply({"params": params}, enc, enc_mask, method=T5.encode)
    out, state = [], {"params": params}
    for token, kv in ((0, encoded), (3, None)):
        tokens = jnp.full((enc.shape[0], 1), token, jnp.int32)
        (logits, _), new = model.apply(
            state, kv, enc_mask, tokens, decode=True, max_decode_length=2, method=T5.decode, mutable=["cache"]
        )
        state = {"params": params, "cache": new["cache"]}
        out.append(logits[:, 0])
    return jnp.stack(out, 1)


def assert_same_decoding(model, params, enc, impls=("pallas", "gather"), max_len=6, logits=True):
    """Every impl decodes the dense path's tokens (and, if `logits`, gives the first two steps'
    logits within bf16 rounding); -> the tokens."""
    params = decode_params(params, model.spec.dtype)
    decode = jax.jit(greedy_decode, static_argnums=(0, 3))
    step_logits = jax.jit(first_steps_logits, static_argnums=0)
    dense = with_impl(model, "off")
    dense_tokens = np.asarray(decode(dense, {"params": params}, enc, max_len, eos_id=None))
    dense_logits = np.asarray(step_logits(dense, params, enc)) if logits else None
    for impl in impls:
        sparse = with_impl(model, impl)
        np.testing.assert_array_equal(
            np.asarray(decode(sparse, {"params": params}, enc, max_len, eos_id=None)), dense_tokens, err_msg=impl
        )
        if logits:
            spread = np.abs(dense_logits).max()
            got = np.asarray(step_logits(sparse, params, enc))
            np.testing.assert_allclose(got, dense_logits, atol=0.02 * spread, err_msg=impl)
    return dense_tokens


def test_topk_model_decodes_the_same_tokens():
    model = get_model(tiny_config(topk=8, dtype="bfloat16", d_ff=128))
    enc = jnp.asarray(np.random.default_rng(0).integers(3, 40, (3, 7)), jnp.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": enc, "decoder_target_tokens": enc}
    params = jax.tree.map(np.array, nn.unbox(model.init(jax.random.key(1), batch)["params"]))
    params["token_embedder"]["embedding"][:2] = 0  # never padding or EOS: a varied greedy sequence
    tokens = assert_same_decoding(model, params, enc, impls=("pallas",), logits=False)  # logits: test_generate
    assert len(np.unique(tokens)) > 2


@pytest.mark.parametrize("f,d", [(512, 64), (3072, 768)])  # 3072 x 768: T5-Base's W_out
def test_compacted_kernel_equals_the_dense_product(f, d):
    k1, k2, k3 = jax.random.split(jax.random.key(f), 3)
    w_FD = jax.random.normal(k1, (f, d), jnp.bfloat16)
    a_F = jnp.where(jax.random.uniform(k2, (f,)) < 0.03, jax.random.normal(k3, (f,), jnp.bfloat16), 0)
    a_F = a_F.at[:40].set(1.0)  # one chunk with three groups of active rows
    exact = np.asarray(a_F, np.float64) @ np.asarray(w_FD, np.float64)
    got = np.asarray(sparse_mlp.compact_matvec(a_F, w_FD, interpret=True), np.float64)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())  # f32 sums
    nan_rows = jnp.where((a_F == 0)[:, None], jnp.nan, w_FD)  # rows it must never load
    assert np.isfinite(np.asarray(sparse_mlp.compact_matvec(a_F, nan_rows, interpret=True))).all()


def test_batch_one_decoding_takes_the_compacted_kernel_and_the_same_tokens(monkeypatch):
    model = get_model(tiny_config(topk=8, dtype="bfloat16", d_ff=128))
    enc = jnp.asarray(np.random.default_rng(0).integers(3, 40, (1, 7)), jnp.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": enc, "decoder_target_tokens": enc}
    params = jax.tree.map(np.array, nn.unbox(model.init(jax.random.key(1), batch)["params"]))
    params["token_embedder"]["embedding"][:2] = 0
    monkeypatch.setattr(sparse_mlp, "use_compact", lambda b, f, d: b == 1)  # as on a GPU
    real, calls = sparse_mlp.compact_matvec, []
    monkeypatch.setattr(sparse_mlp, "compact_matvec", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert_same_decoding(model, params, enc, impls=("pallas",), max_len=4, logits=False)
    assert calls


def test_kernel_refuses_batches_past_the_checked_ones_and_the_dense_path_serves_them():
    # The compiled kernel gave a wrong product at batch 64 on an H200; such batches must not reach it.
    assert sparse_mlp.pallas_tiles(16, 512, 64) is not None
    assert sparse_mlp.pallas_tiles(sparse_mlp.MAX_KERNEL_BATCH + 1, 512, 64) is None
    a_BF = jax.nn.relu(jax.random.normal(jax.random.key(0), (32, 512))).astype(jnp.bfloat16)
    w_FD = jax.random.normal(jax.random.key(1), (512, 64), jnp.bfloat16)
    np.testing.assert_array_equal(
        np.asarray(sparse_mlp.sparse_matmul(a_BF, w_FD, "pallas")), np.asarray(sparse_mlp.dense_matmul(a_BF, w_FD))
    )


def test_forced_decode_logits_replay_greedy_decoding_and_compare_implementations():
    """forced_decode_logits fed the greedy tokens gives logits whose argmax are those tokens, and
    the kernel's forced logits equal the dense path's within bf16 rounding at every step."""
    from lazy_jax.models.t5 import forced_decode_logits

    model = get_model(tiny_config(topk=8, dtype="bfloat16", d_ff=128))
    enc = jnp.asarray(np.random.default_rng(0).integers(3, 40, (2, 7)), jnp.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": enc, "decoder_target_tokens": enc}
    params = jax.tree.map(np.array, nn.unbox(model.init(jax.random.key(1), batch)["params"]))
    params["token_embedder"]["embedding"][:2] = 0
    params = decode_params(params, model.spec.dtype)
    dense, sparse = with_impl(model, "off"), with_impl(model, "pallas")
    tokens = jax.jit(greedy_decode, static_argnums=(0, 3))(dense, {"params": params}, enc, 6, eos_id=None)
    encoded, _ = dense.apply({"params": params}, enc, enc > 0, method=T5.encode)
    forced = jax.jit(forced_decode_logits, static_argnums=0)
    dense_logits = np.asarray(forced(dense, {"params": params}, encoded, enc > 0, tokens))
    np.testing.assert_array_equal(dense_logits.argmax(-1), np.asarray(tokens))
    sparse_logits = np.asarray(forced(sparse, {"params": params}, encoded, enc > 0, tokens))
    np.testing.assert_allclose(sparse_logits, dense_logits, atol=0.02 * np.abs(dense_logits).max())


def test_logit_check_names_partings_and_whether_they_are_near_ties():
    from lazy_jax.bench_decode import logit_check

    dense = np.zeros((1, 3, 4), np.float32)
    dense[0, :, 2] = 1.0
    dense[0, 1, 3] = 0.999  # step 1: top-2 gap 0.001
    sparse = dense.copy()
    sparse[0, 1, 3] += 0.002  # flips step 1's argmax: a near tie
    check = logit_check([dense], [sparse], [np.array([2, 2, 2])], [np.array([2, 3, 0])])
    assert check["partings"] == [
        {
            "prompt": 0,
            "step": 1,
            "top2_gap": check["partings"][0]["top2_gap"],
            "max_logit_diff": check["partings"][0]["max_logit_diff"],
        }
    ]
    assert abs(check["partings"][0]["top2_gap"] - 0.001) < 1e-6 and check["all_at_near_ties"]
    far = dense.copy()
    far[0, 0, 0] = 5.0  # a large difference at step 0, where the tokens still agree
    check = logit_check([dense], [far], [np.array([2, 2, 2])], [np.array([2, 2, 3])])
    assert check["max_logit_diff"] == 5.0 and check["partings"][0]["step"] == 2
    assert not check["all_at_near_ties"]  # step 2's gap (1.0) exceeds its difference (0)


def test_decode_byte_count_limit_of_t5_base():
    """docs/inference.md's table: T5-Base's decoder reads 16.5 MB of bf16 weights a layer, 28.6% of
    them W_out, and 1.77 MB of cached keys and values (512 prompt positions, 64.5 of its own on
    average); skipping 97% of W_out (12 layers, LM head included) bounds the speedup at 1.257x
    (1.285x counting the weights alone)."""
    from lazy_jax.bench_decode import model_config, step_bytes
    from lazy_jax.models.t5 import t5_spec

    spec = t5_spec(model_config("base", 12))
    b = step_bytes(spec)
    per_layer = (b["weights"] - 2 * spec.vocab_size * spec.d_model) / 12
    assert round(per_layer / 1e6, 1) == 16.5
    assert round(100 * b["w_out"] / 12 / per_layer, 1) == 28.6
    assert round(b["cache"] / 12 / 1e6, 2) == 1.77
    assert round(b["limit"], 3) == 1.257 and round(b["limit_weights"], 3) == 1.285
    assert step_bytes(spec, active_share=1.0)["limit"] == 1.0  # nothing skipped, nothing gained
    assert step_bytes(spec, prompt_len=2048)["limit"] < b["limit"]  # a longer prompt: more cache to read


def test_predicted_byte_count_limit_counts_the_cache():
    from lazy_jax.bench_decode import model_config, predicted_bytes_limit, step_bytes
    from lazy_jax.models.t5 import t5_spec

    spec = t5_spec(model_config("11B", 24))
    k = spec.mlp.topk
    # Reading every row of both matrices and no predictor: no gain at all.
    assert predicted_bytes_limit(spec, spec.d_ff, 0, spec.d_ff) == pytest.approx(1.0)
    # No predictor and all of W_in: the exact path's limit.
    assert predicted_bytes_limit(spec, spec.d_ff, 0, k) == pytest.approx(step_bytes(spec, k / spec.d_ff)["limit"])
    assert round(predicted_bytes_limit(spec, k, 64, k), 3) == 1.975


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "RUN"], "--workdir needs --input_file"),
        (["--workdir", "MISSING", "--input_file", "p.jsonl"], "--workdir=MISSING: no config.json"),
        (
            ["--topk_impl", "sort"],
            "--topk_impl='sort' is unknown; allowed: ['auto', 'bisect', 'lax', 'pallas', 'radix']",
        ),
        (["--plan", "T5-11B-full:1,T5-22B:1"], "--plan item 'T5-22B:1' is not NAME:BATCH with NAME one of ['T5-Base',"),
        (["--plan", "T5-3B:0"], "--plan item 'T5-3B:0' is not NAME:BATCH"),
        (["--impls", "off,predicted@x"], "--impls item 'predicted@x' is not one of"),
        (["--predictor", "32:16"], "--predictor needs --workdir"),
    ],
)
def test_bench_decode_refuses_bad_input_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    from lazy_jax import bench_decode

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        bench_decode.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bench_decode.log").exists()  # nothing written
