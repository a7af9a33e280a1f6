"""Times the decoding kernels alone at batch 1, for a grid of their tile settings, beside XLA's dense GEMV.

    python benchmarks/sparse_kernels.py                  # T5-11B and T5-3B shapes (F x D), on a GPU
    python benchmarks/sparse_kernels.py --shapes=512x64 --grid=small   # a CPU check (interpret mode)

Two kernels, one JSON line per setting: microseconds a call (`--repeats` calls queued back to
back, the median of 5 rounds) and the largest relative error against the f32 product.
- 'wout': `sparse_mlp.pallas_matmul`, a [1, F] map with 3% of its entries nonzero times W_out [F, D]
  (tiles = block_f, block_d, steps);
- 'rows': `predictor.rows_matvec`, W_in^T [F, D] times x [D] on 6% of its rows (tiles = block_f,
  slab_d, block_d);
with `num_warps` and `unroll` (the loop over steps / column chunks written out). The 'dense'
lines are XLA's GEMV over the whole matrix: what the kernels are to beat.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lazy_jax import predictor, sparse_mlp

WOUT_TILES = ((64, 128, 1), (64, 128, 2), (64, 128, 8), (16, 128, 1), (32, 256, 1), (128, 64, 1), (256, 32, 1))
ROWS_TILES = ((64, 1024, 128), (16, 1024, 256), (16, 1024, 1024), (32, 1024, 128), (128, 1024, 64), (16, 256, 256))


def time_us(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready([fn(*args) for _ in range(repeats)])
        times.append(1e6 * (time.perf_counter() - t0) / repeats)
    return statistics.median(times)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="65536x1024,16384x1024", help="FxD, comma-separated")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--grid", default="full", help="full, or small (the defaults only)")
    a = p.parse_args(argv)
    interpret = jax.default_backend() != "gpu"
    for shape in a.shapes.split(","):
        f, d = (int(n) for n in shape.split("x"))
        k1, k2, k3, k4 = jax.random.split(jax.random.key(f + d), 4)
        w_FD = jax.random.normal(k1, (f, d), jnp.bfloat16)
        a_1F = jnp.where(jax.random.uniform(k2, (1, f)) < 0.03, jax.random.normal(k3, (1, f), jnp.bfloat16), 0)
        x_D = jax.random.normal(k3, (d,), jnp.bfloat16)
        keep_F = jax.random.uniform(k4, (f,)) < 0.06
        want_out = np.asarray(a_1F, np.float32) @ np.asarray(w_FD, np.float32)
        want_rows = np.where(np.asarray(keep_F), np.asarray(w_FD, np.float32) @ np.asarray(x_D, np.float32), 0)
        for name, fn, args in (("wout", jnp.dot, (a_1F, w_FD)), ("rows", lambda w, x: w @ x, (w_FD, x_D))):
            us = time_us(jax.jit(fn), args, a.repeats)
            print(json.dumps(dict(kernel=name, shape=shape, impl="dense", us=us)), flush=True)
        small = a.grid == "small"
        for tiles, warps, unroll in itertools.product(
            [None] if small else [None, *WOUT_TILES], [None] if small else [4, 8], [False, True]
        ):
            full = (1, *tiles) if tiles else sparse_mlp.pallas_tiles(1, f, d)
            if f % (full[1] * full[3]) or d % full[2] or (unroll and full[3] == 1):
                continue  # does not tile, or nothing to unroll
            fn = jax.jit(
                lambda a_, w_, t=full, n=warps, u=unroll: sparse_mlp.pallas_matmul(
                    a_, w_, interpret=interpret, tiles=t, num_warps=n, unroll=u
                )
            )
            row = dict(kernel="wout", shape=shape, tiles=full, warps=warps)
            try:
                row.update(
                    unroll=unroll, us=time_us(fn, (a_1F, w_FD), a.repeats), err=rel_err(fn(a_1F, w_FD), want_out)
                )
            except Exception as e:  # one setting failing to compile must not lose the others
                row.update(unroll=unroll, failed=f"{type(e).__name__}: {str(e)[:300]}")
            print(json.dumps(row), flush=True)
        for tiles, warps, unroll in itertools.product(
            [None] if small else [None, *ROWS_TILES], [None] if small else [4, 8], [False, True]
        ):
            if tiles and (f % tiles[0] or d % tiles[1] or tiles[1] % tiles[2]):
                continue
            fn = jax.jit(
                lambda w_, x_, k_, t=tiles, n=warps, u=unroll: predictor.rows_matvec(
                    w_, x_, k_, interpret=interpret, tiles=t, num_warps=n, unroll=u
                )
            )
            row = dict(kernel="rows", shape=shape, tiles=tiles or predictor.rows_tiles(f, d), warps=warps)
            try:
                args = (w_FD, x_D, keep_F)
                row.update(unroll=unroll, us=time_us(fn, args, a.repeats), err=rel_err(fn(*args), want_rows))
            except Exception as e:
                row.update(unroll=unroll, failed=f"{type(e).__name__}: {str(e)[:300]}")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
