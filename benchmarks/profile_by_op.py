"""Sums a profile's kernels by the JAX operation they compute, from XLA's optimized HLO.

    XLA_FLAGS="--xla_gpu_enable_triton_gemm=true --xla_dump_to=HLO --xla_dump_hlo_as_text" \
      python -m lazy_jax.bench_decode --plan T5-11B:1 --impls off,pallas --repeats 3 --profile_dir PROF
    python -m lazy_jax.profiling PROF/T5-11B_b1_off --top=80 > off.md
    python benchmarks/profile_by_op.py off.md HLO/module_*.jit__lambda.*gpu_after_optimizations.txt

(docs/inference.md, "Where a T5-11B-shape step goes"; of the two `jit__lambda` modules, the
dense decode is the one whose kernel names match the table). `lazy_jax.profiling` names
each row by its XLA kernel (`input_reduce_fusion_276`). The HLO dump gives each instruction's
`op_name` metadata (`T5.decode/decoder/layers_0/mlp/reduce_sum`), under its own name and its
`scheduling_name`. This script joins the two, folds the layer index (`layers_N`), keeps the
first `--depth` parts of the path, and prints ms per step and share by operation. Kernels
without metadata are listed by their result shape (XLA drops the op_name of some split-K GEMMs).
"""

from __future__ import annotations

import argparse
import collections
import re

ROW = re.compile(r"\| `([^`]+)` \| ([\d.]+) \| [\d.]+% \| ([\d.]+) \|")


def hlo_labels(hlo_text: str) -> dict[str, str]:
    """Instruction name (and scheduling name) -> its op_name, or its result shape if it has none."""
    labels = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+)", line)
        if not m:
            continue
        op = re.search(r'op_name="([^"]+)"', line)
        label = op.group(1) if op else f"{m.group(2)} (no op_name)"
        labels[m.group(1)] = label
        sched = re.search(r'scheduling_name="([^"]+)"', line)
        if sched:
            labels[sched.group(1)] = label
    return labels


def by_op(rows: list[tuple[str, float]], labels: dict[str, str], depth: int) -> collections.Counter:
    """ms per operation: each (kernel, ms) row under its label, layer indices folded."""
    out: collections.Counter = collections.Counter()
    for kernel, ms in rows:
        label = labels.get(re.sub(r"_(\d+)$", r".\1", kernel)) or labels.get(kernel) or f"{kernel} (not in the HLO)"
        label = re.sub(r"layers_\d+", "layers_N", label).replace("jit(<lambda>)/", "").replace("while/body/", "")
        out["/".join(label.split("/")[:depth])] += ms
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile_md", help="lazy_jax.profiling's output for one trace")
    p.add_argument("hlo", help="the module's *after_optimizations.txt")
    p.add_argument("--depth", type=int, default=5, help="parts of the op_name path kept")
    a = p.parse_args(argv)
    rows = [(m.group(1), float(m.group(2))) for m in map(ROW.match, open(a.profile_md)) if m]
    total = sum(ms for _, ms in rows)
    print(f"{len(rows)} kernels, {total:.2f} ms per step\n\n| operation | ms per step | share |\n|---|---|---|")
    for op, ms in by_op(rows, hlo_labels(open(a.hlo).read()), a.depth).most_common():
        print(f"| `{op}` | {ms:.2f} | {100 * ms / total:.1f}% |")


if __name__ == "__main__":
    main()
