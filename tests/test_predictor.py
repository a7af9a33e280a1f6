"""The approximate decoding path (lazy_jax.predictor): its kernel reads only kept rows and agrees
with the dense product; at full rank and rows = d_ff it decodes the exact path's tokens; its fit
is the best low-rank approximation for the given inputs; bad settings are refused by name."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sparse_mlp import with_impl
from test_t5_model import tiny_config

from lazy_jax import predictor
from lazy_jax.errors import InputError
from lazy_jax.models import get_model
from lazy_jax.models.t5 import T5, decode_params, forced_decode_logits, greedy_decode


@pytest.mark.parametrize("f,d", [(512, 64), (1024, 768)])  # 768: three column blocks; 1024: 4 chunks
def test_rows_kernel_equals_the_masked_dense_product(f, d):
    k1, k2, k3 = jax.random.split(jax.random.key(f + d), 3)
    w_FD = jax.random.normal(k1, (f, d), jnp.bfloat16)
    x_D = jax.random.normal(k2, (d,), jnp.bfloat16)
    keep_F = (jax.random.uniform(k3, (f,)) < 0.1).at[:40].set(True)  # one chunk with 3 groups of 16
    exact = np.where(keep_F, np.asarray(w_FD, np.float64) @ np.asarray(x_D, np.float64), 0)
    got = np.asarray(predictor.compact_rows_matvec(w_FD, x_D, keep_F, interpret=True), np.float64)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-4)  # f32 sums of the bf16 products
    assert np.all(got[~np.asarray(keep_F)] == 0)  # rows not kept are never loaded: exactly 0


def test_rows_kernel_never_reads_rows_it_does_not_keep():
    w_FD = jnp.ones((64, 32), jnp.float32).at[5].set(jnp.nan)  # a row it must not load
    keep_F = jnp.ones((64,), bool).at[5].set(False)
    h_F = predictor.compact_rows_matvec(w_FD, jnp.ones((32,)), keep_F, interpret=True)
    assert np.isfinite(np.asarray(h_F)).all() and float(h_F[0]) == 32.0


def test_fit_is_exact_at_full_rank_and_best_for_the_inputs():
    rng = np.random.default_rng(0)
    w_DF = rng.normal(size=(16, 64)).astype(np.float32)
    x_ND = (rng.normal(size=(500, 16)) * np.geomspace(10, 0.01, 16)).astype(np.float32)  # anisotropic inputs
    full = predictor.fit(w_DF, 16, x_ND)
    np.testing.assert_allclose(x_ND @ full["u"] @ full["v"], x_ND @ w_DF, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(full["wi_t"], w_DF.T)

    def err(p):
        return np.linalg.norm(x_ND @ p["u"] @ p["v"] - x_ND @ w_DF)

    aware, plain = predictor.fit(w_DF, 4, x_ND), predictor.fit(w_DF, 4)
    assert err(aware) < 0.5 * err(plain)  # the inputs' directions first: far closer on them
    # optimal: no rank-4 matrix does better on these inputs, e.g. not a perturbed one
    bumped = dict(aware, v=aware["v"] + 0.01 * rng.normal(size=aware["v"].shape).astype(np.float32))
    assert err(aware) < err(bumped)


def _model_and_params(topk=8, dtype="float32"):
    model = get_model(tiny_config(topk=topk, dtype=dtype, d_ff=128, num_encoder_layers=1, num_decoder_layers=2))
    enc = jnp.asarray(np.random.default_rng(0).integers(3, 40, (1, 7)), jnp.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": enc, "decoder_target_tokens": enc}
    params = jax.tree.map(np.array, nn.unbox(model.init(jax.random.key(1), batch)["params"]))
    params["token_embedder"]["embedding"][:2] = 0  # never padding or EOS: a varied greedy sequence
    return model, decode_params(params, model.spec.dtype), enc, batch


def _decode(model, variables, enc, n=5):
    return np.asarray(jax.jit(greedy_decode, static_argnums=(0, 3))(model, variables, enc, n, eos_id=None))


def test_full_rank_all_rows_decodes_the_exact_tokens_and_logits():
    model, params, enc, _ = _model_and_params()
    exact = with_impl(model, "off")
    full = predictor.predicted_model(model, 128)
    pred = predictor.fit_decoder(params, rank=32)  # d_model = 32: full rank
    tokens = jnp.asarray(_decode(exact, {"params": params}, enc))
    encoded, _ = exact.apply({"params": params}, enc, enc > 0, method=T5.encode)
    forced = jax.jit(forced_decode_logits, static_argnums=0)
    want = np.asarray(forced(exact, {"params": params}, encoded, enc > 0, tokens))
    got = np.asarray(forced(full, {"params": params, "predictor": pred}, encoded, enc > 0, tokens))
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    # Fed the exact tokens, it picks each next one: greedy decoding gives the exact sequence.
    np.testing.assert_array_equal(got.argmax(-1), np.asarray(tokens))


def test_few_rows_change_the_output_and_the_kernel_gives_the_fallbacks_numbers(monkeypatch):
    model, params, enc, batch = _model_and_params()
    inputs = predictor.decoder_mlp_inputs(model, {"params": params}, batch)
    assert sorted(inputs) == ["layers_0", "layers_1"] and inputs["layers_0"].shape == (7, 32)
    pred = predictor.fit_decoder(params, rank=4, inputs=inputs)
    few = predictor.predicted_model(model, 8)  # rows = k: the predictor alone picks the k neurons
    variables = {"params": params, "predictor": pred}
    fallback = _decode(few, variables, enc)
    exact = with_impl(model, "off")
    encoded, _ = exact.apply({"params": params}, enc, enc > 0, method=T5.encode)
    forced = jax.jit(forced_decode_logits, static_argnums=0)
    want = np.asarray(forced(exact, {"params": params}, encoded, enc > 0, jnp.asarray(fallback)))
    got = np.asarray(forced(few, variables, encoded, enc > 0, jnp.asarray(fallback)))
    assert np.abs(got - want).max() > 1e-3 * np.abs(want).max()  # approximate: rank 4 of 32 misses neurons
    jax.clear_caches()  # trace again, now on the kernel's path
    monkeypatch.setattr(predictor.sparse_mlp, "use_compact", lambda b, f, d: b == 1)  # the kernels, interpreted
    monkeypatch.setattr(predictor, "fused_applies", lambda f, d: False)  # the two kernels, not the fused one
    real_rows, calls = predictor.compact_rows_matvec, []
    monkeypatch.setattr(predictor, "compact_rows_matvec", lambda *a: calls.append(1) or real_rows(*a))
    np.testing.assert_array_equal(_decode(few, variables, enc), fallback)
    assert calls


@pytest.mark.parametrize("threshold", [False, True])
def test_fused_kernel_gives_the_unfused_paths_tokens_and_logits(threshold, monkeypatch):
    """rows = k: the whole block in one kernel (the threshold scored inside it, or the top rows
    given), against the same predictor through the XLA fallback."""
    model, params, enc, batch = _model_and_params()
    inputs = predictor.decoder_mlp_inputs(model, {"params": params}, batch)
    pred = predictor.fit_decoder(params, rank=4, inputs=inputs, rows=8 if threshold else None)
    few = predictor.predicted_model(model, 8, threshold=threshold)
    variables = {"params": params, "predictor": pred}
    exact = with_impl(model, "off")
    encoded, _ = exact.apply({"params": params}, enc, enc > 0, method=T5.encode)
    forced = jax.jit(forced_decode_logits, static_argnums=0)
    fallback_tokens = _decode(few, variables, enc)
    fallback = np.asarray(forced(few, variables, encoded, enc > 0, jnp.asarray(fallback_tokens)))
    jax.clear_caches()
    monkeypatch.setattr(predictor, "fused_applies", lambda f, d: True)  # the fused kernel, interpreted
    real, calls = predictor.fused_predicted_mlp, []
    monkeypatch.setattr(predictor, "fused_predicted_mlp", lambda *a: calls.append(1) or real(*a))
    np.testing.assert_array_equal(_decode(few, variables, enc), fallback_tokens)
    got = np.asarray(forced(few, variables, encoded, enc > 0, jnp.asarray(fallback_tokens)))
    np.testing.assert_allclose(got, fallback, atol=1e-5 * np.abs(fallback).max())
    assert calls


def test_fused_kernel_never_loads_a_row_it_does_not_keep():
    f, d = 512, 64
    ks = jax.random.split(jax.random.key(5), 4)
    wi_DF = jax.random.normal(ks[0], (d, f)) * d**-0.5
    wo_FD = jax.random.normal(ks[1], (f, d))
    x_D = jax.random.normal(ks[2], (d,))
    pred = predictor.fit(wi_DF, 16)
    keep_F = jax.random.uniform(ks[3], (f,)) < 0.05
    want_a = jnp.where(keep_F, jax.nn.relu(x_D @ wi_DF), 0)
    nan_rows = lambda w_FD: jnp.where(keep_F[:, None], w_FD, jnp.nan)
    pred = dict(pred, wi_t=nan_rows(pred["wi_t"]))
    a_F, y_D = predictor.fused_predicted_mlp(x_D, pred, nan_rows(wo_FD), keep_F, interpret=True)
    np.testing.assert_allclose(a_F, want_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_D, want_a @ wo_FD, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_refused_by_name():
    model, params, enc, _ = _model_and_params()
    with pytest.raises(InputError, match=r"rows=200 must be an integer in \[max\(1, topk\)=8, d_ff=128\]"):
        predictor.predicted_model(model, 200)
    with pytest.raises(InputError, match=r"rows=4 must be"):
        predictor.predicted_model(model, 4)  # fewer rows than Top-k keeps
    with pytest.raises(InputError, match=r"rank=33 must be an integer in \[1, d_model=32\]"):
        predictor.fit_decoder(params, rank=33)
    gelu = get_model(tiny_config(activation="gelu", d_ff=128))
    with pytest.raises(InputError, match="needs exact zeros"):
        predictor.predicted_model(gelu, 8)
    with pytest.raises(InputError, match="needs a 'predictor' collection"):
        _decode(predictor.predicted_model(model, 16), {"params": params}, enc)


def test_bench_decode_predictor_setting_is_checked():
    from lazy_jax.bench_decode import parse_predictor

    model, *_ = _model_and_params()
    assert parse_predictor("16:32", model) == (16, 32, False)
    assert parse_predictor("16:32:threshold", model) == (16, 32, True)
    for text, message in [
        ("32", "is not RANK:ROWS"),
        ("16:32:top", "is not RANK:ROWS"),
        ("64:32", "rank=64 must be"),
        ("8:500", "rows=500 must be"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_predictor(text, model)


def test_thresholded_predictor_keeps_about_rows_and_needs_its_threshold():
    model, params, enc, batch = _model_and_params()
    inputs = predictor.decoder_mlp_inputs(model, {"params": params}, batch)
    pred = predictor.fit_decoder(params, rank=8, inputs=inputs, rows=16)
    layer = pred["decoder"]["layers_0"]["mlp"]
    x_ND = inputs["layers_0"]
    kept_N = np.sum(np.asarray((x_ND @ layer["u"]) @ layer["v"]) > float(layer["threshold"]), axis=1)
    assert abs(kept_N.mean() - 16) < 4 and kept_N.std() > 0  # 16 on average, not always
    h = predictor.predicted_preactivation(x_ND[:3], layer, 16)  # no selection: the threshold's rows
    np.testing.assert_array_equal(np.sum(np.asarray(h) != 0, axis=1), kept_N[:3])
    thresholded = predictor.predicted_model(model, 16, threshold=True)
    assert _decode(thresholded, {"params": params, "predictor": pred}, enc).shape == (1, 5)
    no_threshold = predictor.fit_decoder(params, rank=8)
    with pytest.raises(InputError, match="'threshold'"):
        _decode(thresholded, {"params": params, "predictor": no_threshold}, enc)


def test_bench_decode_check_reports_the_fused_kernel_against_xla():
    import re

    from lazy_jax import bench_decode

    lines = []
    bench_decode.check_fused(lines.append, ((512, 64),))
    assert len(lines) == 4
    for line in lines:
        steps, a_err, y_err = (
            float(x) for x in re.search(r"\(largest ([\d.]+) .* a error (\S+) .* error (\S+)$", line).groups()
        )
        assert steps <= 1 and a_err < 1e-2 and y_err < 1e-5  # flips only within a bf16 step of the threshold
