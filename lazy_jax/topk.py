"""The k-th largest entry of each row, exactly, without a sort: a radix select in XLA
(`kth_largest_radix`, topk_impl='radix') and the bisection as one Pallas GPU kernel
(`kth_largest_pallas`, topk_impl='pallas', what the default 'auto' takes on GPUs).

`kth_largest_radix(a, k)` gives what `sparsity.kth_largest_positive` (the bisection) gives: the
k-th largest of max(row, 0), exactly, ties included; `sparsity.topk_mask` turns it into the same
mask as `jax.lax.top_k`. Non-negative floats order like their bits read as integers, so the
threshold is built from the top, `digit_bits` bits at a time: at each digit position the
2**digit_bits - 1 candidates `prefix | d << shift` (d = 1 .. 2**digit_bits - 1) are counted
(entries >= candidate) in one pass over the row, and the digit is the number of candidates with
at least k entries (the counts fall as d rises). A bf16 map (15 bits below the sign) takes
ceil(15 / digit_bits) passes (4 with 4-bit digits: 15 + 15 + 15 + 7 counts), an f32 map
ceil(31 / digit_bits), where the bisection takes 15 and 31 (it is the case digit_bits = 1).

The counts of one pass are sibling reductions of the same row (`jnp.sum` of compares) that XLA
can fuse into one kernel reading the row once; `stacked=True` writes them instead as one
reduction over a [..., candidates, F] broadcast (which reads each row once per candidate,
mostly from cache). On an H200 (ViT-B/16, k=128, docs/performance.md) the 4-bit sibling form
trained at 1.143x the dense step, the bisection at 1.149x (a difference within noise), the
stacked form at 1.167x: so the radix select is not a default.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

INT_DTYPES = {2: jnp.int16, 4: jnp.int32}  # the integer of a float's bit pattern, by its size in bytes
DIGIT_BITS = 4  # the registry's 'radix': 4 passes over a bf16 row, 8 over an f32 row


def positive_bits(a_BTF: Array, method: str) -> Array:
    """max(a, 0) as its bit pattern (int16 / int32), which orders like the values; -0.0 and
    negatives become +0. `method` names the caller in the error for a map of another dtype."""
    x_BTF = jnp.where(a_BTF > 0, a_BTF, jnp.zeros_like(a_BTF))
    int_dtype = INT_DTYPES.get(x_BTF.dtype.itemsize)
    if int_dtype is None or not jnp.issubdtype(x_BTF.dtype, jnp.floating):
        raise ValueError(f"Top-k by {method} needs a 16- or 32-bit float map, got {x_BTF.dtype}")
    return jax.lax.bitcast_convert_type(x_BTF, int_dtype)


def digit_widths(value_bits: int, digit_bits: int) -> list[int]:
    """The widths of the digits from the top, e.g. 15 bits in 4-bit digits -> [4, 4, 4, 3]."""
    if not isinstance(digit_bits, int) or not 1 <= digit_bits <= 8:
        raise ValueError(f"digit_bits={digit_bits!r}: use an integer 1 .. 8")
    widths, left = [], value_bits
    while left > 0:
        widths.append(min(digit_bits, left))
        left -= widths[-1]
    return widths


def kth_largest_radix(a_BTF: Array, k: int, digit_bits: int = DIGIT_BITS, *, stacked: bool = False) -> Array:
    """[..., 1]: the k-th largest of max(row, 0), exactly, by a radix select with `digit_bits`-bit digits.

    Where a row has fewer than k positive entries the result is 0 (as the bisection's).
    """
    bits_BTF = positive_bits(a_BTF, "radix select")
    int_dtype = bits_BTF.dtype
    value_bits = 8 * bits_BTF.dtype.itemsize - 1  # the sign bit is 0
    kth_BT1 = jnp.zeros((*a_BTF.shape[:-1], 1), int_dtype)
    shift = value_bits
    for width in digit_widths(value_bits, digit_bits):
        shift -= width
        digits = range(1, 1 << width)
        if stacked:
            step_C = jnp.asarray([d << shift for d in digits], int_dtype)
            cand_BTC = kth_BT1 | step_C.reshape((1,) * (kth_BT1.ndim - 1) + (-1,))
            count_BTC = jnp.sum(bits_BTF[..., None, :] >= cand_BTC[..., None], axis=-1, dtype=jnp.int32)
            digit_BT1 = jnp.sum(count_BTC >= k, axis=-1, keepdims=True, dtype=jnp.int32)
        else:
            digit_BT1 = jnp.zeros(kth_BT1.shape, jnp.int32)
            for d in digits:
                cand_BT1 = kth_BT1 | jnp.asarray(d << shift, int_dtype)
                count_BT1 = jnp.sum(bits_BTF >= cand_BT1, axis=-1, keepdims=True, dtype=jnp.int32)
                digit_BT1 = digit_BT1 + (count_BT1 >= k).astype(jnp.int32)
        kth_BT1 = kth_BT1 | (digit_BT1 << shift).astype(int_dtype)
    return jax.lax.bitcast_convert_type(kth_BT1, a_BTF.dtype)


# ----------------------------------------------------------------------------- one read: Pallas

MAX_BLOCK_ROWS = 8  # rows a program holds in registers (16 and 32 were slower on an H200)
NUM_WARPS = 8  # 256 threads a program
PACK_PAIRS = True  # a 16-bit map: two values a 32-bit lane, compared and counted together
MAX_CHUNK = 1024  # columns a load: a power of two (Triton's arrays are)
MAX_CHUNKS = 8  # loads a row (held at once) in a block of MAX_BLOCK_ROWS; fewer rows, more loads each
# (a decoding step's one row of T5-11B's 65536: 32 loads); wider blocks take the XLA bisection


def kth_largest_pallas(a_BTF: Array, k: int, *, interpret: bool | None = None) -> Array:
    """[..., 1]: the bisection's threshold (exactly `sparsity.kth_largest_positive`'s) from one read.

    The bisection's 15 (bf16) or 31 (f32) count passes each read the whole map from HBM when XLA
    runs them (on an H200, ViT-B/16: 14 passes x 12 layers = 11.9 ms of a 84.5 ms Top-k step).
    Here one Pallas program loads a block of rows once, as integers held in registers, and makes
    every pass over them there; the counts of a pass add up elementwise over the row's chunks
    before the one reduction across threads. A 16-bit map packs two values into each 32-bit
    integer and compares both with one subtraction (see `_kth_kernel`). On the same GPU this is
    0.28 ms a layer, and ViT-B/16's Top-k step took 1.002x the dense one, T5-Base's 1.005x
    (docs/performance.md). Under a mesh of several devices each device runs the kernel on its own
    rows (`jax.shard_map`: XLA cannot split a custom call, it would gather the map); where a row
    is split over devices, or the shapes do not tile, it falls back to the XLA bisection, and off
    a GPU it runs in Pallas' interpret mode: the same threshold every way.
    """
    from lazy_jax.sparsity import kth_largest_positive

    split = per_device_map(a_BTF)
    if split is None or not one_read_applies(jax.ShapeDtypeStruct(split[1], a_BTF.dtype)):
        return kth_largest_positive(a_BTF, k)
    rows_spec = split[0]
    # The threshold carries no gradient (topk_mask stops it); stopping it here, at the input, keeps
    # autodiff from asking the pallas_call for a JVP rule it does not have.
    a_BTF = jax.lax.stop_gradient(a_BTF)
    kth = functools.partial(_kth_one_read, k=k, interpret=interpret)
    if rows_spec is None:
        return kth(a_BTF)
    # Inside a jit: Flax's nn.scan (scanned layers) refuses a bare shard_map in its body.
    return jax.jit(jax.shard_map(kth, in_specs=rows_spec, out_specs=rows_spec, check_vma=False))(a_BTF)


def per_device_map(a_BTF: Array):
    """(rows_spec, shape) of each device's part of the map as the kernel splits it over the current
    mesh: rows_spec None (no mesh of several devices, or one whose rules leave the batch whole:
    one call over the map) or a PartitionSpec splitting the leading (batch) axis over the mesh
    axes Flax's rules give 'batch'. None where the kernel cannot run per device: the rows do not
    divide evenly, or the rules shard 'mlp' (a row's entries live on several devices)."""
    import flax.linen as nn

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return None, a_BTF.shape
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (a_BTF.ndim - 2) + ("mlp",))
    rows_split, row_split = (math.prod(mesh.shape[a] for a in _axes(entry)) for entry in (spec[0], spec[-1]))
    if row_split > 1 or a_BTF.shape[0] % rows_split:
        return None
    if rows_split == 1:
        return None, a_BTF.shape
    rows_spec = jax.sharding.PartitionSpec(spec[0], *(None,) * (a_BTF.ndim - 1))
    return rows_spec, (a_BTF.shape[0] // rows_split, *a_BTF.shape[1:])


def _axes(entry) -> tuple:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _kth_one_read(a_BTF: Array, *, k: int, interpret: bool | None) -> Array:
    kth_R = _one_read_call(a_BTF, k, interpret=interpret)(a_BTF.reshape(-1, a_BTF.shape[-1]))
    kth_BT1 = kth_R.astype(INT_DTYPES[a_BTF.dtype.itemsize]).reshape(*a_BTF.shape[:-1], 1)
    return jax.lax.bitcast_convert_type(kth_BT1, a_BTF.dtype)


def _one_read_layout(a_BTF: Array):
    """(rows, F, block_rows, chunk, pack) of the kernel over a [..., F] map, or None where it does
    not tile: not a 16/32-bit float, or a row that is not a few power-of-two chunks."""
    from lazy_jax.sparse_mlp import pow2_divisor

    *lead, f = a_BTF.shape
    rows = math.prod(lead)
    if a_BTF.dtype.itemsize not in INT_DTYPES or not jnp.issubdtype(a_BTF.dtype, jnp.floating):
        return None
    pack = PACK_PAIRS and a_BTF.dtype.itemsize == 2 and f % 2 == 0
    cols = f // 2 if pack else f  # the 32-bit columns a row is held in
    block_rows, chunk = pow2_divisor(rows, MAX_BLOCK_ROWS), pow2_divisor(cols, MAX_CHUNK)
    if chunk < 16 or block_rows * (cols // chunk) > MAX_BLOCK_ROWS * MAX_CHUNKS:
        return None
    return rows, f, block_rows, chunk, pack


def one_read_applies(a_BTF: Array) -> bool:
    """Whether the one-read kernel takes this map (else the callers use the XLA bisection)."""
    return _one_read_layout(a_BTF) is not None


def _one_read_call(a_BTF: Array, k: int, *, interpret: bool | None):
    """The jitted pallas_call [rows, F] -> kth [rows] int32, for a map where `one_read_applies`."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    rows, f, block_rows, chunk, pack = _one_read_layout(a_BTF)
    int_dtype = INT_DTYPES[a_BTF.dtype.itemsize]
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    value_bits = 8 * a_BTF.dtype.itemsize - 1
    kernel = functools.partial(_kth_kernel, k=k, value_bits=value_bits, chunk=chunk, int_dtype=int_dtype, pack=pack)
    call = pl.pallas_call(
        kernel,
        grid=(rows // block_rows,),
        in_specs=[pl.BlockSpec((block_rows, f), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((block_rows,), lambda i: (i,)),
        out_shape=jax.ShapeDtypeStruct((rows,), jnp.int32),
        interpret=interpret,
        compiler_params=plt.CompilerParams(num_warps=NUM_WARPS),
        name="topk_kth_one_read",
    )
    # Inside a jit: Flax's nn.scan (scanned layers) refuses a bare pallas_call in its body.
    return jax.jit(call)


def _kth_kernel(a_ref, o_ref, *, k, value_bits, chunk, int_dtype, pack):
    """a_ref [rows, F] (float), o_ref [rows] (int32 bit pattern of each row's k-th largest of max(a, 0)).

    pack (16-bit maps): columns j and F/2 + j share an int32 lane, `hi << 16 | lo | 0x80008000`.
    Both values and the candidate c are below 2**15, so (v | 0x8000) - c lies in [1, 0xffff]:
    one 32-bit subtraction of `c << 16 | c` compares both halves without a borrow crossing them,
    and bit 15 (31) of the difference is set exactly when lo >= c (hi >= c). Those bits, moved to
    bits 0 and 16 (by a logical shift), add up per half (at most F/2 < 2**16 each) until the row's sum is split.
    """
    from jax.experimental import pallas as pl

    def as_bits(x):  # max(x, 0) as order-preserving int32s
        x = jnp.where(x > 0, x, jnp.zeros_like(x))
        return jax.lax.bitcast_convert_type(x, int_dtype).astype(jnp.int32)

    def bits(col):  # one chunk of the block, loaded
        return as_bits(a_ref[:, pl.ds(col, chunk)])

    f = a_ref.shape[1]
    high = jnp.int32(-0x7FFF8000)  # 0x80008000
    if pack:
        chunks = [jnp.left_shift(bits(f // 2 + c), 16) | bits(c) | high for c in range(0, f // 2, chunk)]
    else:
        chunks = [bits(c) for c in range(0, f, chunk)]  # the only read of the block

    def count_ge(cand_R1):
        if not pack:
            return jnp.sum(sum((c >= cand_R1).astype(jnp.int32) for c in chunks), axis=1)
        cand2_R1 = jnp.left_shift(cand_R1, 16) | cand_R1
        # (d & 0x80008000) >>> 15: the two compare bits at 0 and 16, a shift-and-add for the GPU.
        hits = (jax.lax.shift_right_logical((c - cand2_R1) & high, 15) for c in chunks)
        halves_R = jnp.sum(sum(hits), axis=1)
        return (halves_R & 0xFFFF) + jnp.right_shift(halves_R, 16)

    def bit_step(i, kth_R):
        cand_R1 = (kth_R | jnp.left_shift(jnp.int32(1), value_bits - 1 - i))[:, None]
        return jnp.where(count_ge(cand_R1) >= k, cand_R1[:, 0], kth_R)

    kth_R = jax.lax.fori_loop(0, value_bits, bit_step, jnp.zeros((a_ref.shape[0],), jnp.int32))
    o_ref[...] = kth_R
