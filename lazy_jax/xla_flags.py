"""XLA flags the entry points set by default, before the first computation initialises a backend.

Training and measuring (`TRAINING`): `--xla_gpu_enable_triton_gemm=false`, XLA's cuBLAS GEMMs
instead of its Triton-generated ones, took ViT-B/16's training step on an H200 from 96.9 to
91.5 ms. Decoding (`DECODING`, `generate` and `bench_decode`): `--xla_gpu_enable_triton_gemm=true`,
XLA's own choice, because batch-1 decoding is the other way round: without Triton GEMMs a
T5-11B-shape decode step on an H200 took 1.130 ms a token, with them 0.881 (docs/performance.md,
docs/inference.md). A flag already in $XLA_FLAGS is left as the user set it; GPU flags are
accepted and ignored by the CPU backend.
"""

from __future__ import annotations

import os

TRAINING = ("--xla_gpu_enable_triton_gemm=false",)
DECODING = ("--xla_gpu_enable_triton_gemm=true",)


def apply(environ=os.environ, defaults: tuple[str, ...] = TRAINING) -> str:
    """Adds each default whose flag name $XLA_FLAGS does not mention; -> the new $XLA_FLAGS."""
    current = environ.get("XLA_FLAGS", "")
    names = {part.split("=", 1)[0] for part in current.split()}
    added = [flag for flag in defaults if flag.split("=", 1)[0] not in names]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return environ.get("XLA_FLAGS", "")
