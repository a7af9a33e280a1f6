"""`python -m lazy_jax.bench` with the 'radix' Top-k's digit width and counting form set by the environment.

  RADIX_DIGIT_BITS=2 RADIX_STACKED=1 python benchmarks/bench_variant.py --config=configs/vit.py:topk=128 \
      --config.model.topk_impl=radix

(lazy_jax.topk.kth_largest_radix: digit_bits 1 .. 8, stacked 0/1; the registry's 'radix' is 4-bit,
sibling counts). For measuring the variants side by side (docs/performance.md).
"""

import functools
import os

from absl import app

from lazy_jax import bench, sparsity, topk
from lazy_jax.config_checks import parse_flags

if __name__ == "__main__":
    sparsity.TOPK_IMPLS["radix"] = functools.partial(
        topk.kth_largest_radix,
        digit_bits=int(os.environ.get("RADIX_DIGIT_BITS", topk.DIGIT_BITS)),
        stacked=os.environ.get("RADIX_STACKED", "0") == "1",
    )
    app.run(bench.main, flags_parser=parse_flags)
