"""Cached single-query attention for decoding, as one Pallas (Triton) kernel.

A decoding step attends one query per head to S cached keys and values ([B, S, H, K]: the
decoder's own cache, or the prompt's cross-attention keys and values). XLA computes it as a chain
of small kernels (logits, max, exp and sum, the weighted sum of values, converts and selects),
each reading or writing its intermediate; the bytes that matter are the cache's, and at T5-11B's
128 heads x 128 d_kv a 512-token prompt's keys and values are 34 MB a layer. Here one kernel reads
each cached key and value once: a program takes `block_h` heads and `steps` blocks of `block_s`
positions, keeps a running softmax (max, sum, weighted values in f32), and writes its partial
result; the partials of the S splits are merged outside (`merge_partials`, a few KB). Positions a
mask leaves out (padding, or the decoder's cache beyond the current step) are not loaded.

T5's attention: no 1/sqrt(d_kv) scale, an optional additive bias [H, S] (relative positions),
logits and softmax in f32. `attention.SETTINGS.decode` picks it ('auto': on a GPU without a mesh of
several devices; 'xla'; 'pallas', which off a GPU runs in Pallas' interpret mode, for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lazy_jax.sparse_mlp import pow2_divisor

Array = jax.Array

# A tile is block_h heads x K = BLOCK_COLS columns, by K / 4 positions: the fastest of the sweep in
# docs/inference.md at both K (T5-11B's cross-attention: 12.8 us against 14.4 for 16 x 4 heads).
BLOCK_COLS = 256
MIN_PROGRAMS = 264  # two programs per H200 multiprocessor (132): splits of S until this many
NO_LOGIT = -1e30  # a left-out position's logit: exp(NO_LOGIT - m) is 0, and it stays finite


def kernel_tiles(
    b: int, s: int, h: int, k: int, block_s: int | None = None, block_h: int | None = None, steps: int | None = None
) -> tuple[int, int, int, int] | None:
    """(block_s, block_h, steps, splits) of the kernel over a [B, S, H, K] cache, or None where it
    does not apply (K not a power of two >= 16: Triton's blocks are powers of two). None: the
    defaults (BLOCK_COLS; `steps`: fewer, longer splits, fewer partials to merge, while the grid
    still fills the GPU)."""
    if k < 16 or k & (k - 1):
        return None
    block_s = block_s or max(8, k // 4)
    block_h = pow2_divisor(h, block_h or max(1, BLOCK_COLS // k))
    blocks = -(-s // block_s)
    if steps is None:
        steps = 1
        while steps * 2 <= blocks and b * (h // block_h) * -(-blocks // (steps * 2)) >= MIN_PROGRAMS:
            steps *= 2
    return block_s, block_h, steps, -(-blocks // steps)


def _kernel(q_ref, k_ref, v_ref, bias_ref, ok_ref, o_ref, m_ref, l_ref, *, seq, block_s, block_h, steps):
    """Program (b, head block, split): a running softmax over `steps` blocks of positions."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    b, hb, sp = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    kdim = o_ref.shape[-1]
    h_H = hb * block_h + jnp.arange(block_h, dtype=jnp.int32)
    cols_HK = h_H[:, None] * kdim + jnp.arange(kdim, dtype=jnp.int32)[None, :]  # into H * K
    b_11 = jnp.full((1, 1), b, jnp.int32)
    q_HK = plgpu.load(q_ref.at[b_11, cols_HK]).astype(jnp.float32)

    def body(i, carry):
        m_H, l_H, o_HK = carry
        s_S = (sp * steps + i) * block_s + jnp.arange(block_s, dtype=jnp.int32)
        inside_S = s_S < seq
        s_S = jnp.minimum(s_S, seq - 1)  # in bounds; `inside_S` drops the copies
        ok_S = inside_S & (plgpu.load(ok_ref.at[jnp.full((block_s,), b, jnp.int32), s_S]) != 0)
        rows_S11 = (b * seq + s_S)[:, None, None]
        load = lambda ref: plgpu.load(ref.at[rows_S11, cols_HK[None]], mask=ok_S[:, None, None], other=0.0)
        logits_SH = jnp.sum(load(k_ref).astype(jnp.float32) * q_HK[None], axis=-1)
        if bias_ref is not None:
            logits_SH += plgpu.load(bias_ref.at[h_H[None, :], s_S[:, None]]).astype(jnp.float32)
        logits_SH = jnp.where(ok_S[:, None], logits_SH, NO_LOGIT)
        new_m_H = jnp.maximum(m_H, jnp.max(logits_SH, axis=0))
        p_SH = jnp.where(ok_S[:, None], jnp.exp(logits_SH - new_m_H[None]), 0.0)
        scale_H = jnp.exp(m_H - new_m_H)
        o_HK = o_HK * scale_H[:, None] + jnp.sum(p_SH[:, :, None] * load(v_ref).astype(jnp.float32), axis=0)
        return new_m_H, l_H * scale_H + jnp.sum(p_SH, axis=0), o_HK

    init = (jnp.full((block_h,), NO_LOGIT, jnp.float32), jnp.zeros((block_h,), jnp.float32))
    m_H, l_H, o_HK = lax.fori_loop(0, steps, body, (*init, jnp.zeros((block_h, kdim), jnp.float32)))
    o_ref[...], m_ref[...], l_ref[...] = o_HK, m_H, l_H


def merge_partials(o_BPHK: Array, m_BPH: Array, l_BPH: Array) -> Array:
    """The softmax-weighted values [B, H, K] f32 from the splits' (values, max, sum). A row with no
    position left (every key masked) gives 0 (XLA's softmax would average all values)."""
    m_B1H = jnp.max(m_BPH, axis=1, keepdims=True)
    w_BPH = jnp.exp(m_BPH - m_B1H)
    num_BHK = jnp.sum(o_BPHK * w_BPH[..., None], axis=1)
    den_BH = jnp.sum(l_BPH * w_BPH, axis=1)
    return num_BHK / jnp.maximum(den_BH, jnp.finfo(jnp.float32).tiny)[..., None]


def decode_attention(
    q_BHK: Array,
    k_BSHK: Array,
    v_BSHK: Array,
    bias_HS: Array | None,
    ok_BS: Array,
    *,
    interpret: bool = False,
    tiles: tuple[int, int, int | None] | None = None,
    num_warps: int | None = None,
) -> Array:
    """softmax(q . k + bias, over the positions where ok_BS) . v, per head: [B, H, K] in q's dtype.

    No 1/sqrt(K) scale (T5's). Logits and softmax in f32; keys and values are read once, and not
    at all where ok_BS is False. `tiles` (block_s, block_h, steps) and `num_warps` override the
    defaults (benchmarks/sparse_kernels.py --attention)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    b, s, h, k = k_BSHK.shape
    tiles = kernel_tiles(b, s, h, k, *(tiles or ()))
    if tiles is None:
        raise ValueError(f"the decode attention kernel does not tile a [{b}, {s}, {h}, {k}] cache")
    block_s, block_h, steps, splits = tiles
    flat = lambda x: x.reshape(b * s, h * k)  # free: rows of positions, columns of heads x K
    kernel = functools.partial(_kernel, seq=s, block_s=block_s, block_h=block_h, steps=steps)
    if bias_HS is None:
        kernel = functools.partial(_no_bias, kernel)
    o_spec = pl.BlockSpec((None, None, block_h, k), lambda i, j, p: (i, p, j, 0))
    ml_spec = pl.BlockSpec((None, None, block_h), lambda i, j, p: (i, p, j))
    o_BPHK, m_BPH, l_BPH = pl.pallas_call(
        kernel,
        grid=(b, h // block_h, splits),
        in_specs=[pl.no_block_spec] * (4 if bias_HS is None else 5),
        out_specs=[o_spec, ml_spec, ml_spec],
        out_shape=[
            jax.ShapeDtypeStruct((b, splits, h, k), jnp.float32),
            jax.ShapeDtypeStruct((b, splits, h), jnp.float32),
            jax.ShapeDtypeStruct((b, splits, h), jnp.float32),
        ],
        interpret=interpret,
        compiler_params=None if num_warps is None else plgpu.CompilerParams(num_warps=num_warps),
        name="decode_attention",
    )(
        q_BHK.reshape(b, h * k),
        flat(k_BSHK),
        flat(v_BSHK),
        *(() if bias_HS is None else (bias_HS,)),
        ok_BS.astype(jnp.int32),
    )
    return merge_partials(o_BPHK, m_BPH, l_BPH).astype(q_BHK.dtype)


def use_kernel(shape_BSHK: tuple[int, ...]) -> bool:
    """Whether a decoding step's attention over a [B, S, H, K] cache takes the kernel
    (`attention.SETTINGS.decode`; a mesh of several devices keeps XLA's, which it can split)."""
    from lazy_jax.models import attention
    from lazy_jax.sparse_mlp import on_gpu

    choice = attention.SETTINGS.decode
    mesh = jax.sharding.get_abstract_mesh()
    if choice == "xla" or kernel_tiles(*shape_BSHK) is None or not (mesh.empty or mesh.size == 1):
        return False
    return choice == "pallas" or on_gpu()


def _no_bias(kernel, q_ref, k_ref, v_ref, ok_ref, o_ref, m_ref, l_ref):
    kernel(q_ref, k_ref, v_ref, None, ok_ref, o_ref, m_ref, l_ref)


def reference(q_BHK, k_BSHK, v_BSHK, bias_HS, ok_BS) -> Array:
    """The same attention in plain XLA, f32 (for tests)."""
    logits_BHS = jnp.einsum("bhk,bshk->bhs", q_BHK.astype(jnp.float32), k_BSHK.astype(jnp.float32))
    if bias_HS is not None:
        logits_BHS += bias_HS[None].astype(jnp.float32)
    logits_BHS = jnp.where(ok_BS[:, None], logits_BHS, NO_LOGIT)
    probs_BHS = jax.nn.softmax(logits_BHS, axis=-1) * ok_BS[:, None]
    out = jnp.einsum("bhs,bshk->bhk", probs_BHS, v_BSHK.astype(jnp.float32))
    return out.astype(q_BHK.dtype)
