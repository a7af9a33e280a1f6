"""Times the Top-k threshold implementations alone on one MLP map, and checks they agree to the bit.

    python benchmarks/topk_kernel.py                      # ViT-B/16's map: 256 x 197 tokens x 3072, bf16
    python benchmarks/topk_kernel.py --rows=16384 --width=3072 --k=128 --block_rows=4,8,16 --num_warps=4,8

For each implementation of `lazy_jax.sparsity.TOPK_IMPLS` (and the Pallas kernel at each
`--block_rows`, `--num_warps` and `--pack`), one JSON line: ms per jitted threshold (`--repeats` calls
queued back to back, the median of 5 rounds), the bytes of the map over that time (GB/s: the
one-read kernel's bound is the map read once), and whether its threshold equals the
bisection's on every row. On a CPU the Pallas kernel runs in
interpret mode: use small `--rows` there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lazy_jax import sparsity, topk, xla_flags


def time_ms(fn, x, repeats: int) -> float:
    """The median over 5 rounds of `repeats` calls queued back to back, per call (no sync between)."""
    jax.block_until_ready(fn(x))  # compile
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready([fn(x) for _ in range(repeats)])
        times.append(1e3 * (time.perf_counter() - t0) / repeats)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=256 * 197)
    p.add_argument("--width", type=int, default=3072)
    p.add_argument("--k", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--block_rows", default="8", help="comma-separated rows per Pallas program")
    p.add_argument("--num_warps", default="8", help="comma-separated warps per Pallas program")
    p.add_argument("--pack", default="1", help="comma-separated 0/1: the Pallas kernel's PACK_PAIRS")
    p.add_argument("--impls", default="bisect,radix,lax,pallas")
    a = p.parse_args(argv)
    # A ReLU map: about half the entries positive, a few ties.
    x_RF = jax.random.normal(jax.random.key(0), (a.rows, a.width), jnp.float32)
    x_RF = jnp.round(jax.nn.relu(x_RF) * 64).astype(a.dtype) / 64
    nbytes = x_RF.size * x_RF.dtype.itemsize
    want = jax.jit(lambda x: sparsity.kth_largest_positive(x, a.k))(x_RF)
    for impl in a.impls.split(","):
        grid = [(b, w, q) for b in a.block_rows.split(",") for w in a.num_warps.split(",") for q in a.pack.split(",")]
        for block, warps, pack in grid if impl == "pallas" else [(None, None, None)]:
            if block is not None:
                topk.MAX_BLOCK_ROWS, topk.NUM_WARPS, topk.PACK_PAIRS = int(block), int(warps), pack == "1"
            fn = jax.jit(lambda x, impl=impl: sparsity.TOPK_IMPLS[impl](x, a.k))
            row = dict(impl=impl, block_rows=block, num_warps=warps, pack=pack)
            try:
                ms = time_ms(fn, x_RF, a.repeats)
                got = fn(x_RF)
                # 'lax' is the k-th largest itself, the others of max(row, 0): equal where >= k positives.
                same = bool(np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)))
                row.update(ms=round(ms, 4), gb_per_s=round(nbytes / ms / 1e6, 1), same=same)
            except Exception as e:  # a kernel that does not compile here is a result too
                row.update(error=f"{type(e).__name__}: {str(e)[:400]}")
            print(json.dumps(dict(rows=a.rows, width=a.width, k=a.k, dtype=a.dtype, **row)), flush=True)


if __name__ == "__main__":
    xla_flags.apply()
    main()
