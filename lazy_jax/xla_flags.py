"""XLA flags the entry points set by default, before the first computation initialises a backend.

`--xla_gpu_enable_triton_gemm=false`: XLA's cuBLAS GEMMs instead of its Triton-generated ones took
ViT-B/16's training step on an H200 from 96.9 to 91.5 ms (docs/performance.md). A flag already in
$XLA_FLAGS is left as the user set it (`XLA_FLAGS=--xla_gpu_enable_triton_gemm=true` restores
XLA's choice); GPU flags are accepted and ignored by the CPU backend.
"""

from __future__ import annotations

import os

DEFAULTS = ("--xla_gpu_enable_triton_gemm=false",)


def apply(environ=os.environ) -> str:
    """Adds each default whose flag name $XLA_FLAGS does not mention; -> the new $XLA_FLAGS."""
    current = environ.get("XLA_FLAGS", "")
    names = {part.split("=", 1)[0] for part in current.split()}
    added = [flag for flag in DEFAULTS if flag.split("=", 1)[0] not in names]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return environ.get("XLA_FLAGS", "")
