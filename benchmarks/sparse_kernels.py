"""Times the decoding kernels alone at batch 1, for a grid of their tile settings, beside XLA's dense GEMV.

    python benchmarks/sparse_kernels.py                  # T5-11B, T5-3B and T5-Base shapes (F x D), on a GPU
    python benchmarks/sparse_kernels.py --shapes=512x64 --grid=small --calls=2   # a CPU check (interpret mode)

The decoding kernels, one JSON line per setting: microseconds a call (the device's busy time in a
profiler trace of `--calls` calls, each on its own input: every kernel of the call, no dispatch)
and the largest relative error against the f32 product.
- 'wout': the masked-row `sparse_mlp.pallas_matmul`, a [1, F] map with 3% of its entries nonzero
  times W_out [F, D], over tiles (block_f, block_d, steps) and `num_warps`;
- 'select': the one-read Top-k kernel's threshold of one ReLU row at k = 3% (decoding's selection);
- with --attention instead: `decode_attention.decode_attention` (one query against a [1, S, H, K]
  cache: T5-11B's cross-attention over 512 positions, its own cache at step 64 of 128 with the
  relative-position bias, T5-Base's cross-attention) over (block_s, block_h, steps) and
  `num_warps`, beside XLA's attention as T5 computes it without the kernel (bf16 logits);
- with --fused instead: `predictor.fused_predicted_mlp` (the predicted block of one token at
  T5-11B's and T5-3B's shapes: rank d_model / 16, the threshold keeping 3% of the rows) over its
  chunk and `num_warps` (round 23 also loaded W_out's rows together with W_in's: no gain, and
  the option was removed); its `err` is against interpret mode, where a score within rounding of
  the threshold can flip a row (`bench_decode --check` counts those);
- with --compacted instead of the tiles: 'compact_wout' (`sparse_mlp.compact_matvec`, the same
  product by index) and 'compact_rows' (`predictor.compact_rows_matvec`, W_in^T [F, D] times x [D]
  on 6% of its rows) at a few chunk and column widths, and XLA's compaction forms.
Round 15 of benchmarks/h200_round2.sh also timed a masked-row form of the rows kernel and written-
out loops (`unroll`); both were removed after it (docs/inference.md). XLA's dense GEMV
over the whole matrix, what they are to beat, is in the decode profiles (docs/inference.md: 32 µs
for T5-11B's W_in, 134 MB).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from lazy_jax import decode_attention, predictor, profiling, sparse_mlp, sparsity, topk

WOUT_TILES = ((64, 128, 1), (64, 128, 4), (32, 256, 1), (128, 64, 1), (64, 256, 1), (16, 1024, 1))


def time_us(fn, varied, fixed, calls: int, trace_dir: str) -> float:
    """Device time of one call: the busy time of the device's lines in a trace of `calls` calls
    (each on its own slice of `varied`), divided by `calls`: every kernel of a call (the partial
    sums' reduction, a pad) and nothing of the host's dispatch."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(varied[0], *fixed))  # compile
    with profiling.trace(trace_dir):
        jax.block_until_ready([jitted(varied[i], *fixed) for i in range(calls)])
    (trace_file,) = profiling.trace_files(trace_dir)
    lines = profiling.summarize(str(trace_file))
    gpu = [x for x in lines if x["process"].startswith("/device:GPU")]
    streams = [x for x in gpu if "Stream" in x["thread"]] or gpu or lines  # (a CPU: the host's XLA lines)
    return 1e3 * max(x["busy_ms"] for x in streams) / calls


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="65536x1024,16384x1024,3072x768", help="FxD, comma-separated")
    p.add_argument("--calls", type=int, default=32)
    p.add_argument("--grid", default="full", help="full, or small (the defaults only)")
    p.add_argument("--compacted", action="store_true", help="the compacted (index) forms instead of the grid")
    p.add_argument("--attention", action="store_true", help="the decode attention kernel instead")
    p.add_argument("--fused", action="store_true", help="the fused predicted-block kernel instead")
    a = p.parse_args(argv)
    interpret = jax.default_backend() != "gpu"
    if a.attention:
        return attention_kernels(a.calls, interpret, small=a.grid == "small")
    if a.fused:
        return fused_kernels(a.shapes, a.calls, interpret, small=a.grid == "small")
    small = a.grid == "small"
    for shape in a.shapes.split(","):
        f, d = (int(n) for n in shape.split("x"))
        k1, k2, k3, k4 = jax.random.split(jax.random.key(f + d), 4)
        w_FD = jax.random.normal(k1, (f, d), jnp.bfloat16)
        a_N1F = jax.random.normal(k2, (a.calls, 1, f), jnp.bfloat16)
        a_N1F = jnp.where(jax.random.uniform(k3, a_N1F.shape) < 0.03, a_N1F, 0)  # 3% active, each call its own
        x_ND = jax.random.normal(k3, (a.calls, d), jnp.bfloat16)
        keep_F = jax.random.uniform(k4, (f,)) < 0.06
        w32 = np.asarray(w_FD, np.float32)
        want_out = np.asarray(a_N1F[0], np.float32) @ w32
        want_rows = np.where(np.asarray(keep_F), w32 @ np.asarray(x_ND[0], np.float32), 0)
        kth = jax.nn.relu(jax.random.normal(k4, (a.calls, 1, f), jnp.bfloat16))  # a ReLU map's row
        k = round(0.03 * f)
        want_kth = np.asarray(sparsity.kth_largest_positive(kth[0], k), np.float32)
        select = functools.partial(topk.kth_largest_pallas, k=k, interpret=interpret)
        report(dict(kernel="select", shape=shape, k=k), select, kth, (), want_kth, a.calls)
        if a.compacted:
            compacted(shape, f, k, a_N1F, w_FD, want_out, x_ND, keep_F, want_rows, kth, a.calls, interpret)
            continue
        for tiles, warps in itertools.product([None] if small else [None, *WOUT_TILES], [None] if small else [4, 8]):
            full = (1, *tiles) if tiles else sparse_mlp.pallas_tiles(1, f, d)
            if f % (full[1] * full[3]) or d % full[2]:
                continue  # does not tile

            def wout(a_1F, w, t=full, n=warps):
                return sparse_mlp.pallas_matmul(a_1F, w, interpret=interpret, tiles=t, num_warps=n)

            report(dict(kernel="wout", shape=shape, tiles=full, warps=warps), wout, a_N1F, (w_FD,), want_out, a.calls)


ATTENTION_SHAPES = (("T5-11B cross", 512, 128, 128, 512, False), ("T5-11B self", 128, 128, 128, 64, True))
ATTENTION_SHAPES += (("T5-Base cross", 512, 12, 64, 512, False),)
ATTENTION_TILES = (
    (None, None, None),
    (16, 4, None),
    (16, 4, 1),
    (32, 4, None),
    (16, 8, None),
    (16, 2, None),
    (32, 2, None),
    (8, 8, None),
)


def attention_kernels(calls: int, interpret: bool, small: bool) -> None:
    for name, s, h, k, kept, bias in ATTENTION_SHAPES[-1:] if small else ATTENTION_SHAPES:
        ks = jax.random.split(jax.random.key(s + h), 4)
        q_NBHK = jax.random.normal(ks[0], (calls, 1, h, k), jnp.bfloat16)
        keys, values = (jax.random.normal(kk, (1, s, h, k), jnp.bfloat16) for kk in ks[1:3])
        bias_HS = jax.random.normal(ks[3], (h, s), jnp.float32) if bias else None
        ok_BS = jnp.arange(s)[None] < kept
        want = decode_attention.reference(q_NBHK[0].astype(jnp.float32), keys, values, bias_HS, ok_BS)

        def xla(q, keys, values, bias_HS, ok_BS):  # T5's attention without the kernel: bf16 logits and softmax
            logits = jnp.einsum("bhk,bshk->bhs", q, keys) + (0 if bias_HS is None else bias_HS.astype(q.dtype))
            probs = jax.nn.softmax(jnp.where(ok_BS[:, None], logits, -1e9), axis=-1).astype(q.dtype)
            return jnp.einsum("bhs,bshk->bhk", probs, values)

        fixed = (keys, values, bias_HS, ok_BS)
        report(dict(kernel="attention_xla", shape=name), xla, q_NBHK, fixed, want, calls)
        for tiles, warps in itertools.product(
            ATTENTION_TILES[:1] if small else ATTENTION_TILES, [4] if small else [4, 8]
        ):

            def kernel(q, keys, values, bias_HS, ok_BS, t=tiles, n=warps):
                fn = decode_attention.decode_attention
                return fn(q, keys, values, bias_HS, ok_BS, interpret=interpret, tiles=t, num_warps=n)

            full = decode_attention.kernel_tiles(1, s, h, k, *tiles)
            report(
                dict(kernel="attention", shape=name, tiles=full, warps=warps),
                kernel,
                q_NBHK,
                fixed,
                want,
                calls,
            )


def fused_kernels(shapes: str, calls: int, interpret: bool, small: bool) -> None:
    for shape in shapes.split(","):
        f, d = (int(n) for n in shape.split("x"))
        ks = jax.random.split(jax.random.key(f + d), 4)
        wi_DF = (jax.random.normal(ks[0], (d, f), jnp.float32) * d**-0.5).astype(jnp.bfloat16)
        wo_FD = jax.random.normal(ks[1], (f, d), jnp.bfloat16)
        x_ND = jax.random.normal(ks[2], (calls, d), jnp.bfloat16)
        pred = predictor.fit(wi_DF, max(1, d // 16))
        pred["threshold"] = predictor.fit_threshold(pred, x_ND.astype(jnp.float32), round(0.03 * f))
        want_a = np.asarray(predictor.fused_predicted_mlp(x_ND[0], pred, wo_FD, interpret=True)[0], np.float32)
        for chunk, warps in itertools.product((256,) if small else (128, 256, 512), (4,) if small else (4, 8)):

            def kernel(x_D, pred, w, c=chunk, n=warps):
                return predictor.fused_predicted_mlp(x_D, pred, w, interpret=interpret, chunk=c, num_warps=n)[0]

            row = dict(kernel="fused_predicted", shape=shape, chunk=chunk, warps=warps)
            report(row, kernel, x_ND, (pred, wo_FD), want_a, calls)


def compacted(shape, f, k, a_N1F, w_FD, want_out, x_ND, keep_F, want_rows, kth, calls, interpret) -> None:
    """The same products from compacted indices: the compacted Pallas kernels (each program
    compacts its chunk, `sparse_mlp.compact_matvec`, `predictor.compact_rows_matvec`) at a few
    chunk and column widths; XLA's `jnp.nonzero` to a capacity, `jnp.take` of those rows, one
    small dot; and lax.top_k's indices of one row (what a predictor's set needs)."""
    cap_out, cap_rows = round(0.04 * f), round(0.07 * f)  # 3% and 6% active, with room

    def nonzero(a_1F):
        return jnp.nonzero(a_1F[0] != 0, size=cap_out, fill_value=0)[0]

    def gather_out(a_1F, w):
        return sparse_mlp.gather_matmul(a_1F, w, capacity=cap_out)

    def take_out(a_1F, w):  # gather_out without its lax.cond to the dense product
        idx = jnp.nonzero(a_1F[0] != 0, size=cap_out, fill_value=0)[0]
        return jnp.dot(jnp.take(a_1F, idx, axis=1), jnp.take(w, idx, axis=0))

    def gather_rows(x_D, w, keep):
        idx = jnp.nonzero(keep, size=cap_rows, fill_value=0)[0]
        h_C = jnp.take(w, idx, axis=0).astype(jnp.float32) @ x_D.astype(jnp.float32)
        return jnp.zeros((f,), jnp.float32).at[idx].set(jnp.where(jnp.arange(cap_rows) < keep.sum(), h_C, 0))

    def topk_idx(row_1F):
        return jax.lax.top_k(row_1F, 2 * k)[1]

    for chunk, block_d in ((256, 256), (128, 256), (512, 256), (256, 128), (256, 512)):

        def wout(a_1F, w, c=chunk, b=block_d):
            return sparse_mlp.compact_matvec(a_1F[0], w, interpret=interpret, chunk=c, block_d=b)[None]

        def rows(x_D, w, keep, c=chunk, b=block_d):
            return predictor.compact_rows_matvec(w, x_D, keep, interpret=interpret, chunk=c, block_d=b)

        row = dict(shape=shape, chunk=chunk, block_d=block_d)
        report(dict(kernel="compact_wout", **row), wout, a_N1F, (w_FD,), want_out, calls)
        report(dict(kernel="compact_rows", **row), rows, x_ND, (w_FD, keep_F), want_rows, calls)
    want_idx = np.asarray(nonzero(a_N1F[0]))
    report(dict(kernel="nonzero", shape=shape, capacity=cap_out), nonzero, a_N1F, (), want_idx, calls)
    report(dict(kernel="gather_wout", shape=shape, capacity=cap_out), gather_out, a_N1F, (w_FD,), want_out, calls)
    report(dict(kernel="take_dot_wout", shape=shape, capacity=cap_out), take_out, a_N1F, (w_FD,), want_out, calls)
    report(
        dict(kernel="gather_rows", shape=shape, capacity=cap_rows), gather_rows, x_ND, (w_FD, keep_F), want_rows, calls
    )
    want_top = np.asarray(topk_idx(kth[0]))
    report(dict(kernel="top_k_indices", shape=shape, k=2 * k), topk_idx, kth, (), want_top, calls)


def report(row: dict, fn, varied, fixed, want, calls: int) -> None:
    """Times fn(varied[i], *fixed) and checks fn(varied[0], *fixed) against `want`; prints the row."""
    try:
        with tempfile.TemporaryDirectory() as trace_dir:
            row.update(us=time_us(fn, varied, fixed, calls, trace_dir), err=rel_err(fn(varied[0], *fixed), want))
    except Exception as e:  # one setting failing to compile must not lose the others
        row.update(failed=f"{type(e).__name__}: {str(e)[:300]}")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
