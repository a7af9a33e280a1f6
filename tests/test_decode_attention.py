"""The decode attention kernel (lazy_jax.decode_attention), in Pallas' interpret mode on the CPU:

- it gives XLA's f32 attention over bias, padding and odd lengths, and 0 for a row with no key;
- it never loads a position its mask leaves out (NaN there changes nothing);
- T5 decoding through it gives the tokens and logits of XLA's attention, scanned layers or not,
  and the kernel is what ran;
- where it applies: 'auto' keeps XLA's on a CPU and under a mesh of several devices;
- bad settings are refused by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import bench_decode
from lazy_jax import decode_attention as da
from lazy_jax import sharding as shd
from lazy_jax.errors import InputError
from lazy_jax.models import attention
from lazy_jax.models.t5 import decode_from_encoded, forced_decode_logits


@pytest.fixture
def restore_settings():
    saved = attention.SETTINGS
    yield
    attention.SETTINGS = saved


def _inputs(b, s, h, k, *, bias, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(ks[0], (b, h, k), dtype)
    keys, values = (jax.random.normal(kk, (b, s, h, k), dtype) for kk in ks[1:3])
    bias_HS = 2 * jax.random.normal(ks[3], (h, s)) if bias else None
    return q, keys, values, bias_HS


@pytest.mark.parametrize(
    "b, s, h, k, bias",
    [(1, 37, 4, 16, True), (2, 64, 12, 64, False), (3, 20, 2, 32, True), (1, 512, 8, 128, False)],
)
def test_kernel_matches_xla_attention(b, s, h, k, bias):
    q, keys, values, bias_HS = _inputs(b, s, h, k, bias=bias)
    # Each row keeps its own prefix, as padded prompts and a decoder's cache at different steps do.
    ok_BS = jnp.arange(s)[None] < jnp.asarray([max(1, s - 7 * i) for i in range(b)])[:, None]
    got = da.decode_attention(q, keys, values, bias_HS, ok_BS, interpret=True)
    np.testing.assert_allclose(got, da.reference(q, keys, values, bias_HS, ok_BS), rtol=1e-4, atol=1e-5)
    # Against the attention T5 computes without the kernel (f32 logits: the same softmax).
    logits_BHS = jnp.einsum("bhk,bshk->bhs", q, keys) + (0 if bias_HS is None else bias_HS[None])
    probs_BHS = jax.nn.softmax(jnp.where(ok_BS[:, None], logits_BHS, -1e10), axis=-1)
    np.testing.assert_allclose(got, jnp.einsum("bhs,bshk->bhk", probs_BHS, values), rtol=1e-4, atol=1e-5)


def test_kernel_in_bf16_is_within_bf16_rounding():
    q, keys, values, _ = _inputs(1, 128, 8, 64, bias=False, dtype=jnp.bfloat16)
    ok_BS = jnp.ones((1, 128), jnp.bool_)
    got = da.decode_attention(q, keys, values, None, ok_BS, interpret=True)
    assert got.dtype == jnp.bfloat16
    want = da.reference(q.astype(jnp.float32), keys, values, None, ok_BS)
    assert float(jnp.linalg.norm(got.astype(jnp.float32) - want) / jnp.linalg.norm(want)) < 4e-3


def test_kernel_never_loads_a_left_out_position_and_a_row_without_keys_gives_zero():
    q, keys, values, bias_HS = _inputs(2, 48, 4, 16, bias=True)
    ok_BS = jnp.stack([jnp.arange(48) % 3 != 1, jnp.zeros(48, jnp.bool_)])
    nan_keys, nan_values = (jnp.where(ok_BS[:, :, None, None], x, jnp.nan) for x in (keys, values))
    got = da.decode_attention(q, nan_keys, nan_values, bias_HS, ok_BS, interpret=True)
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got[0], da.reference(q, keys, values, bias_HS, ok_BS)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1], 0.0)


def test_tiles_fill_the_gpu_and_cover_every_position():
    for b, s, h, k in [(1, 512, 128, 128), (1, 37, 12, 64), (4, 512, 32, 128), (1, 1, 1, 16)]:
        block_s, block_h, steps, splits = da.kernel_tiles(b, s, h, k)
        assert h % block_h == 0 and block_s * steps * splits >= s > block_s * steps * (splits - 1)
        assert b * (h // block_h) * splits >= min(da.MIN_PROGRAMS, b * (h // block_h) * -(-s // block_s))
    assert da.kernel_tiles(1, 512, 8, 48) is None  # K not a power of two: XLA's attention


def _small_t5(scan: bool):
    c = bench_decode.model_config("small", 2, d_model=64, num_heads=4, d_kv=16, d_ff=256)
    c.dtype, c.scan_layers = "float32", scan
    model = bench_decode.build(c, "off")
    return model, jax.tree.map(lambda x: x.astype(jnp.float32), bench_decode.random_params(model))


@pytest.mark.parametrize("scan", [False, True])
def test_t5_decoding_through_the_kernel_gives_xlas_tokens_and_logits(scan, restore_settings, monkeypatch):
    model, params = _small_t5(scan)
    encoded = jax.random.normal(jax.random.key(3), (2, 24, 64), jnp.float32)
    mask_BS = jnp.arange(24)[None] < jnp.asarray([[24], [17]])  # the second prompt padded
    calls = []
    kernel = da.decode_attention
    monkeypatch.setattr(da, "decode_attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    out = {}
    for choice in ("xla", "pallas"):
        attention.set_attention(decode=choice)
        tokens, _ = jax.jit(lambda v, e, m: decode_from_encoded(model, v, e, m, 10, eos_id=None))(
            {"params": params}, encoded, mask_BS
        )
        logits = jax.jit(lambda v, e, m, t: forced_decode_logits(model, v, e, m, t))(
            {"params": params}, encoded, mask_BS, tokens
        )
        out[choice] = np.asarray(tokens), np.asarray(logits)
        assert bool(calls) == (choice == "pallas")
    np.testing.assert_array_equal(out["pallas"][0], out["xla"][0])
    np.testing.assert_allclose(out["pallas"][1], out["xla"][1], rtol=1e-4, atol=1e-5)


def test_auto_keeps_xla_on_a_cpu_and_under_a_mesh(restore_settings):
    shape = (1, 512, 8, 64)
    assert not da.use_kernel(shape)  # 'auto' on a CPU
    attention.set_attention(decode="pallas")
    assert da.use_kernel(shape)
    assert not da.use_kernel((1, 512, 8, 48))  # the kernel does not tile it
    with jax.set_mesh(shd.make_mesh(dict(data=8, fsdp=1, model=1))):
        assert not da.use_kernel(shape)
    attention.set_attention(decode="xla")
    assert not da.use_kernel(shape)


def test_bad_decode_attention_settings_are_refused_by_name(restore_settings, tmp_path, capsys):
    with pytest.raises(
        InputError, match=r"attention decode='flash' is not allowed; allowed: \['auto', 'xla', 'pallas'\]"
    ):
        attention.set_attention(decode="flash")
    with pytest.raises(SystemExit) as e:
        bench_decode.main(["--tiny", "--decode_attention=flash", f"--out={tmp_path}"])
    assert e.value.code == 2 and "attention decode='flash' is not allowed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bench_decode_check_reports_the_kernel_against_xla():
    lines = []
    bench_decode.check_attention(lines.append, ((1, 37, 2, 32, 20, True), (2, 16, 4, 16, 9, False)))
    errors = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(errors) == 2 and all(e < 4e-3 for e in errors)  # bf16 rounding
