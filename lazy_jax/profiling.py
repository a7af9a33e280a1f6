"""Where a step's time goes: a `jax.profiler` trace of a few steps, summed by kernel.

  python -m lazy_jax.bench --config=configs/vit.py --profile_dir=/tmp/prof/vit   # trace 3 steps
  python -m lazy_jax.profiling /tmp/prof/vit --top=30                          # the table

`trace(dir)` records a Perfetto trace (`*.trace.json.gz`, readable in ui.perfetto.dev) next to
the usual TensorBoard profile. `summarize` reads it back without TensorBoard: for every device
(a process named `/device:...`; on a CPU backend, the host's XLA threads) and every timeline of
it (a GPU's compute streams, XLA's op and module lines), the busy time and the events that take
most of it, summed by name over the traced steps. Names are XLA's (fusion and custom-call
names on the op line, CUDA kernel names on a stream), so a row reads as "this fusion / this
kernel took this share of the timeline".
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import sys
from collections.abc import Iterator

from etils import epath


@contextlib.contextmanager
def trace(log_dir: str) -> Iterator[None]:
    """Records what runs inside the block (call `jax.block_until_ready` before leaving it)."""
    import jax

    with jax.profiler.trace(str(log_dir), create_perfetto_trace=True):
        yield


def trace_files(log_dir: str) -> list[epath.Path]:
    """The traces in log_dir or one folder down (jax writes DIR/plugins/profile/<time>/<host>.trace.json.gz)."""
    root = epath.Path(log_dir)
    patterns = ("*.trace.json.gz", "plugins/profile/*/*.trace.json.gz", "*/plugins/profile/*/*.trace.json.gz")
    return sorted(path for pattern in patterns for path in root.glob(pattern))


def summarize(trace_file: str, top: int = 25) -> list[dict]:
    """One dict per (process, thread) timeline: its name, busy ms, and its `top` events by time."""
    with gzip.open(epath.Path(trace_file).open("rb")) as f:
        events = json.load(f)["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    by_line: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    kinds: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("ph") != "X":
            continue
        proc = procs.get(e["pid"], str(e["pid"]))
        thread = threads.get((e["pid"], e["tid"]), str(e["tid"]))
        if not _is_device_line(proc, thread):
            continue
        by_line[(proc, thread)][e["name"]] += float(e.get("dur", 0.0))
        counts[(proc, thread)][e["name"]] += 1
        kinds[(proc, thread)][kind_of(e["name"])] += float(e.get("dur", 0.0))
    lines = []
    for (proc, thread), durs in sorted(by_line.items()):
        busy_us = sum(durs.values())
        lines.append(
            {
                "process": proc,
                "thread": thread,
                "busy_ms": busy_us / 1e3,
                "kinds": {k: us / 1e3 for k, us in kinds[(proc, thread)].most_common()},
                "events": [
                    {
                        "name": name,
                        "ms": us / 1e3,
                        "share": us / busy_us if busy_us else 0.0,
                        "count": counts[(proc, thread)][name],
                    }
                    for name, us in durs.most_common(top)
                ],
            }
        )
    return lines


KINDS = (  # (kind, substrings of an event name), first match wins
    ("attention (fused)", ("cudnn", "flash", "fmha", "sdpa")),  # before matmul: their names hold 'wgmma'
    ("matmul", ("gemm", "cublas", "nvjet", "xmma", "cutlass", "matmul", "dot", "wgmma")),
    ("triton", ("triton",)),
    ("reduction", ("reduce", "reduction")),
    ("copy / memset", ("memcpy", "memset", "copy", "transpose")),
    ("fusion", ("fusion",)),
)


def kind_of(name: str) -> str:
    lower = name.lower()
    return next((kind for kind, subs in KINDS if any(sub in lower for sub in subs)), "other")


def _is_device_line(proc: str, thread: str) -> bool:
    if proc.startswith("/device:"):
        return True
    # A CPU backend has no device process: its XLA work runs on the host's XLA threads.
    return proc.startswith("/host:") and thread.startswith("tf_XLA")


def markdown(lines: list[dict], steps: int = 1) -> str:
    """The summary as Markdown; times are per step when `steps` steps were traced."""
    out = []
    for line in lines:
        out.append(f"### {line['process']} / {line['thread']}: {line['busy_ms'] / steps:.2f} ms busy per step\n")
        kinds = ", ".join(f"{k} {ms / steps:.2f} ms" for k, ms in line["kinds"].items())
        out.append(f"By kind (from the names): {kinds}\n")
        out.append("| event | ms per step | share | count per step |")
        out.append("|---|---|---|---|")
        for e in line["events"]:
            name = e["name"] if len(e["name"]) <= 90 else e["name"][:87] + "..."
            out.append(f"| `{name}` | {e['ms'] / steps:.3f} | {100 * e['share']:.1f}% | {e['count'] / steps:g} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Sum a jax.profiler trace by kernel, per device timeline.")
    p.add_argument("log_dir")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--steps", type=int, default=1, help="steps traced, to print per-step times")
    a = p.parse_args(argv)
    files = trace_files(a.log_dir)
    if not files:
        print(f"error: no *.trace.json.gz under {a.log_dir}", file=sys.stderr)
        raise SystemExit(2)
    for path in files:
        print(f"## {path}\n")
        print(markdown(summarize(str(path), a.top), a.steps))


if __name__ == "__main__":
    main(sys.argv[1:])
