"""Sparse `a @ W_out` for decoding: read only the rows of W_out whose activation is nonzero.

At decoding time an MLP sees one position per sequence, a_BF = act(x @ W_in) [B, F] with most
entries exactly 0 (ReLU zeros, or outside the Top-k set). Row f of W_out [F, D] only meets
column f of a, so a row inactive for every sequence of the batch (the union of active neurons,
`sparsity.union_active_frac`) need not be read. Decoding is memory-bound, so bytes skipped are
time saved. Exact: the same products are summed, only in another order (bf16 rounding apart).

Implementations (`IMPLS`, the `sparse_decode` of `MlpBlock` / `MlpSettings`):
- 'off': the dense matmul (XLA's), the reference and the fallback.
- 'pallas': Pallas (Triton) kernels. At batch 1 on a GPU, `compact_matvec`: each program
  compacts its chunk of a (a prefix count; no scatter) and loads only the active rows, by index.
  Otherwise the masked kernel in the manner of TEAL's sparse GEMV: the [F, D] kernel is cut into
  tiles of `block_f` rows x `block_d` columns; each program loads its tile with a row mask (the
  union of the batch's nonzeros), so inactive rows cost no memory traffic (but each tile is
  visited), and writes its [B, block_d] partial sum. Partials over F are summed in f32 outside
  (deterministic, no atomics). Off a GPU they run in Pallas' interpret mode (tests only: slow).
- 'predicted': W_out as 'pallas' on a GPU (the dense matmul on a CPU); MlpBlock also predicts
  which rows of W_in to read (`lazy_jax.predictor`, approximate).
- 'gather': compact the union's indices to a fixed capacity (`jnp.nonzero(size=C)`), take those
  rows, one small matmul; `lax.cond` to the dense matmul when the union exceeds C.
`wo_dot_general` is what `MlpBlock` hands its `wo` Dense: None (Flax's default dot) unless the
block is decoding (eval, one position per sequence) with an implementation switched on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lazy_jax.errors import InputError

Array = jax.Array

IMPLS = ("off", "pallas", "gather", "predicted")
EXACT_ZERO_ACTIVATIONS = ("relu", "squared_relu")  # maps with exact zeros even without Top-k
GATHER_CAPACITY_FRAC = 0.125  # 'gather': up to F/8 rows of W_out, else the dense matmul
PARTIAL_BYTES_FRAC = 1 / 64  # 'pallas': f32 partial sums at most this share of W_out's bytes ...
MIN_PROGRAMS = 264  # ... while two programs per H200 multiprocessor (132) are left


def has_exact_zeros(activation: str, topk: int) -> bool:
    """Whether an MLP's map has exact zeros to skip (a ReLU-like activation, or Top-k)."""
    return activation in EXACT_ZERO_ACTIVATIONS or topk > 0


def check_impl(impl: str, *, key: str = "sparse_decode") -> str:
    if impl not in IMPLS:
        raise InputError(f"{key}={impl!r} is unknown; allowed: {list(IMPLS)}")
    return impl


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def wo_dot_general(impl: str, a_shape: tuple[int, ...], train: bool):
    """The `dot_general` for MlpBlock's `wo` Dense: sparse only when decoding one position per sequence."""
    if impl == "off" or train or len(a_shape) != 3 or a_shape[1] != 1:
        return None
    return functools.partial(_sparse_dot_general, impl)


def _sparse_dot_general(impl, lhs_BTF, rhs_FD, dimension_numbers, precision=None, preferred_element_type=None):
    """lax.dot_general's signature for `a [B, 1, F] . W [F, D]` (Flax Dense's contraction)."""
    del precision
    if dimension_numbers != (((lhs_BTF.ndim - 1,), (0,)), ((), ())) or rhs_FD.ndim != 2:
        raise ValueError(f"sparse wo expects a [..., F] x [F, D] dense contraction, got {dimension_numbers}")
    out_dtype = preferred_element_type or jnp.result_type(lhs_BTF, rhs_FD)
    a_BF = lhs_BTF.reshape(-1, lhs_BTF.shape[-1])
    y_BD = sparse_matmul(a_BF, rhs_FD, impl)
    return y_BD.astype(out_dtype).reshape(*lhs_BTF.shape[:-1], rhs_FD.shape[1])


def dense_matmul(a_BF: Array, w_FD: Array) -> Array:
    return jnp.dot(a_BF, w_FD)


def sparse_matmul(a_BF: Array, w_FD: Array, impl: str) -> Array:
    """a_BF @ w_FD, reading only the rows of w_FD active for some row of a_BF (per `impl`)."""
    if impl == "off":
        return dense_matmul(a_BF, w_FD)
    if impl == "gather":
        return gather_matmul(a_BF, w_FD)
    if impl in ("pallas", "predicted"):
        if use_compact(*a_BF.shape, w_FD.shape[1]):  # one row: by index (measured 2x the masked kernel)
            out_D = jax.jit(compact_matvec, static_argnames="interpret")(a_BF[0], w_FD, interpret=not on_gpu())
            return out_D[None].astype(jnp.result_type(a_BF, w_FD))
        if impl == "predicted" and not on_gpu():
            return dense_matmul(a_BF, w_FD)  # nothing to gain on a CPU ('pallas' interprets its kernels: tests)
        if pallas_tiles(*a_BF.shape, w_FD.shape[1]) is None:
            return dense_matmul(a_BF, w_FD)  # shapes the kernel does not tile
        # Inside a jit: Flax's nn.scan (scanned layers) refuses a bare pallas_call in its body.
        return jax.jit(pallas_matmul, static_argnames="interpret")(a_BF, w_FD, interpret=not on_gpu())
    raise ValueError(f"sparse_decode={impl!r}; allowed: {IMPLS}")


# ----------------------------------------------------------------------------- gather


def gather_matmul(a_BF: Array, w_FD: Array, capacity: int | None = None) -> Array:
    f = a_BF.shape[1]
    c = capacity or max(1, int(f * GATHER_CAPACITY_FRAC))
    active_F = jnp.any(a_BF != 0, axis=0)
    count = jnp.sum(active_F, dtype=jnp.int32)

    def sparse(a_BF, w_FD):
        idx_C = jnp.nonzero(active_F, size=c, fill_value=0)[0]
        a_BC = jnp.where(jnp.arange(c) < count, jnp.take(a_BF, idx_C, axis=1), 0)  # fill slots add 0
        return jnp.dot(a_BC, jnp.take(w_FD, idx_C, axis=0))

    return lax.cond(count <= c, sparse, dense_matmul, a_BF, w_FD)


# ----------------------------------------------------------------------------- pallas


# Checked on an H200 against exact sums (`bench_decode --check`): batch 1 and 4 (padded to 16) agree
# within bf16 rounding, batch 64 gave a wrong product (relative error 1.17; interpret mode on the
# CPU is right, so the fault is in the compiled Triton kernel at 64 rows, not yet found). Larger
# batches take the dense matmul (sparse_matmul's fallback); the kernel gains nothing there anyway.
MAX_KERNEL_BATCH = 16


def pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two <= cap that divides n (Triton's block sizes are powers of two)."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def pallas_tiles(b: int, f: int, d: int) -> tuple[int, int, int, int] | None:
    """(padded batch, block_f, block_d, steps) for the kernel, or None where it does not tile.

    block_d: up to 128 columns (256 bytes of a bf16 row: a masked-off row is whole sectors
    skipped). block_f: 64 rows a load. Batch 1 is a vector kernel; larger batches are padded to
    16 (at least) for the tensor-core dot. Each program loops over `steps` row blocks, so the f32
    partials [F / (block_f * steps), B, D] stay under PARTIAL_BYTES_FRAC of W_out's bytes, as
    long as MIN_PROGRAMS programs are left to fill the GPU.
    """
    block_d = pow2_divisor(d, 128)
    block_f = pow2_divisor(f, 64)
    if block_d < 16 or block_f < 16 or b > MAX_KERNEL_BATCH:
        return None
    bp = 1 if b == 1 else max(16, 1 << (b - 1).bit_length())  # Triton blocks are powers of two
    steps = 1
    while (
        (f // (block_f * steps)) * bp * 4 > f * 2 * PARTIAL_BYTES_FRAC
        and f % (block_f * steps * 2) == 0
        and (d // block_d) * (f // (block_f * steps * 2)) >= MIN_PROGRAMS
    ):
        steps *= 2
    return bp, block_f, block_d, steps


def _kernel(a_ref, w_ref, o_ref, *, block_f: int, steps: int, upcast: bool):
    """One [block_f * steps, block_d] slab of W. Batch 1: a_ref [slab], o_ref [block_d]; else
    a_ref [bp, slab], o_ref [bp, block_d]."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    vector = len(a_ref.shape) == 1

    def body(s, acc):
        rows = pl.ds(s * block_f, block_f)
        if vector:
            a_K = a_ref[rows].astype(jnp.float32)
            w_KD = plgpu.load(w_ref.at[rows, :], mask=(a_K != 0)[:, None], other=0.0)
            return acc + jnp.sum(a_K[:, None] * w_KD.astype(jnp.float32), axis=0)
        a_BK = a_ref[:, rows]
        # The union over the batch: a row of W is loaded if any sequence needs it.
        active_K = jnp.max(jnp.abs(a_BK.astype(jnp.float32)), axis=0) > 0
        w_KD = plgpu.load(w_ref.at[rows, :], mask=active_K[:, None], other=0.0)
        if upcast:  # interpret mode: the CPU has no bf16 x bf16 -> f32 dot (same products in f32)
            a_BK, w_KD = a_BK.astype(jnp.float32), w_KD.astype(jnp.float32)
        # f32 weights: full f32 products (Triton's default f32 dot is TF32); bf16: the tensor cores.
        precision = lax.Precision.HIGHEST if w_KD.dtype == jnp.float32 else None
        return acc + jnp.dot(a_BK, w_KD, precision=precision, preferred_element_type=jnp.float32)

    o_ref[...] = lax.fori_loop(0, steps, body, jnp.zeros(o_ref.shape, jnp.float32))


def pallas_matmul(
    a_BF: Array, w_FD: Array, *, interpret: bool = False, tiles=None, num_warps: int | None = None
) -> Array:
    """a_BF @ w_FD by the masked-row Pallas kernel; the result in a_BF's dtype (f32 sums).
    `tiles` (`pallas_tiles`'s) and `num_warps` override the defaults (benchmarks/sparse_kernels.py)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    b, f = a_BF.shape
    d = w_FD.shape[1]
    tiles = tiles or pallas_tiles(b, f, d)
    if tiles is None:
        raise ValueError(f"the sparse kernel does not tile a [{b}, {f}] x [{f}, {d}] product")
    bp, block_f, block_d, steps = tiles
    slab = block_f * steps
    a_PF = jnp.pad(a_BF, ((0, bp - b), (0, 0))).astype(w_FD.dtype)  # padded rows are 0: load nothing
    batch = None if bp == 1 else bp  # batch 1: the batch axis is squeezed out of the blocks
    partial_SPD = pl.pallas_call(
        functools.partial(_kernel, block_f=block_f, steps=steps, upcast=interpret),
        grid=(d // block_d, f // slab),
        in_specs=[
            pl.BlockSpec((batch, slab), lambda i, j: (0, j)),
            pl.BlockSpec((slab, block_d), lambda i, j: (j, i)),
        ],
        out_specs=pl.BlockSpec((None, batch, block_d), lambda i, j: (j, 0, i)),
        out_shape=jax.ShapeDtypeStruct((f // slab, bp, d), jnp.float32),
        interpret=interpret,
        compiler_params=None if num_warps is None else plgpu.CompilerParams(num_warps=num_warps),
        name="sparse_rows_matmul",
    )(a_PF, w_FD)
    return jnp.sum(partial_SPD, axis=0)[:b].astype(jnp.result_type(a_BF, w_FD))


# ----------------------------------------------------------------------------- compacted (batch 1)

# Measured on an H200 (benchmarks/sparse_kernels.py, docs/inference.md): the masked-row kernel
# above takes ~21 us at T5-11B's W_out whatever its tiles, for 4 MB of active rows: it visits every
# row block of F, and each visit waits for a load. The compacted kernel visits only active rows.
COMPACT_CHUNK = 256  # entries of the map a program compacts (its share of F)
COMPACT_GROUP = 16  # active rows a gathered load holds
COMPACT_BLOCK_D = 256  # columns of W a program sums


def use_compact(b: int, f: int, d: int) -> bool:
    """The compacted kernel serves one row of a (batch 1), on a GPU, where its blocks tile W."""
    return b == 1 and on_gpu() and compact_tiles(f, d) is not None


def compact_tiles(f: int, d: int, chunk: int = COMPACT_CHUNK, block_d: int = COMPACT_BLOCK_D):
    """(chunk, block_d) dividing F and D (powers of two), or None where they do not tile."""
    chunk, block_d = pow2_divisor(f, chunk), pow2_divisor(d, block_d)
    return None if chunk < 16 or block_d < 16 else (chunk, block_d)


def compact_group(m_C: Array, g, group: int) -> tuple[Array, Array, Array]:
    """The g-th `group` nonzeros of a chunk's mask m_C, compacted without a scatter: (hit [R, C]:
    which entry is the j-th nonzero, local [R]: its position in the chunk, valid [R])."""
    pos_C = jnp.cumsum(m_C.astype(jnp.int32)) - 1  # the rank of each nonzero among the chunk's
    j_R = g * group + jnp.arange(group, dtype=jnp.int32)
    hit_RC = m_C[None, :] & (pos_C[None, :] == j_R[:, None])
    local_R = jnp.sum(jnp.where(hit_RC, jnp.arange(m_C.shape[0], dtype=jnp.int32)[None, :], 0), axis=1)
    return hit_RC, local_R, j_R < jnp.sum(m_C.astype(jnp.int32))


def _compact_kernel(a_ref, w_ref, o_ref, *, chunk: int, group: int, block_d: int):
    """o [block_d] = sum over the active rows f of chunk p: a[f] * w[f, columns i]."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    p, i = pl.program_id(0), pl.program_id(1)
    a_C = a_ref[pl.ds(p * chunk, chunk)].astype(jnp.float32)
    m_C = a_C != 0
    count = jnp.sum(m_C.astype(jnp.int32))

    def body(g, acc_D):
        hit_RC, local_R, valid_R = compact_group(m_C, g, group)
        a_R = jnp.sum(jnp.where(hit_RC, a_C[None, :], 0.0), axis=1)
        # Two index arrays (not an index and a slice: Pallas' interpret mode takes one kind only).
        cols_1D = (i * block_d + jnp.arange(block_d, dtype=jnp.int32))[None, :]
        rows = w_ref.at[(p * chunk + local_R)[:, None], cols_1D]
        w_RD = plgpu.load(rows, mask=valid_R[:, None], other=0.0).astype(jnp.float32)
        return acc_D + jnp.sum(a_R[:, None] * w_RD, axis=0)

    o_ref[...] = lax.fori_loop(0, (count + group - 1) // group, body, jnp.zeros((block_d,), jnp.float32))


def compact_matvec(a_F: Array, w_FD: Array, *, interpret: bool = False, chunk=COMPACT_CHUNK, block_d=COMPACT_BLOCK_D):
    """a_F @ w_FD [D] f32, reading only the rows of w_FD where a_F != 0: each program compacts its
    chunk of a (a prefix count), then loads those rows `COMPACT_GROUP` at a time by index."""
    from jax.experimental import pallas as pl

    f, d = w_FD.shape
    tiles = compact_tiles(f, d, chunk, block_d)
    if tiles is None:
        raise ValueError(f"the compacted kernel does not tile a [{f}] x [{f}, {d}] product")
    chunk, block_d = tiles
    partial_PD = pl.pallas_call(
        functools.partial(_compact_kernel, chunk=chunk, group=COMPACT_GROUP, block_d=block_d),
        grid=(f // chunk, d // block_d),
        in_specs=[pl.no_block_spec, pl.no_block_spec],
        out_specs=pl.BlockSpec((None, block_d), lambda p, i: (p, i)),
        out_shape=jax.ShapeDtypeStruct((f // chunk, d), jnp.float32),
        interpret=interpret,
        name="compact_sparse_wout",
    )(a_F, w_FD)
    return jnp.sum(partial_PD, axis=0)
