"""Writes logged metrics: metrics.jsonl rows, TensorBoard events, vector statistics as .npz.

Only process 0 writes. On resume, rows logged after the restored step (they will be logged
again) move to metrics.dropped.jsonl, so metrics.jsonl never holds a step twice and nothing
written is lost.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from lazy_jax.workdir import DROPPED_METRICS, METRICS, TB_DIR, stats_path


def _replace_atomically(path: Path, write) -> None:
    """Writes through `write(file)` to `<path>.tmp`, then renames it to `path`: a kill leaves the old
    file or the new one, never a truncated one (and `.tmp` matches no reader's `*.npz` / `*.jsonl`)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class MetricsWriter:
    def __init__(self, workdir: str | Path, *, enabled: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self.jsonl = self.workdir / METRICS
        self._tb = None

    def truncate_after(self, step: int) -> None:
        """Keeps rows with step <= `step`; later rows go to metrics.dropped.jsonl."""
        if not self.enabled or not self.jsonl.exists():
            return
        lines = self.jsonl.read_text().splitlines()
        keep, drop = [], []
        for line in lines:
            try:
                (keep if json.loads(line)["step"] <= step else drop).append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                drop.append(line)
        if not drop:
            return
        with open(self.workdir / DROPPED_METRICS, "a") as f:
            f.write("".join(line + "\n" for line in drop))
        _replace_atomically(self.jsonl, lambda f: f.write("".join(line + "\n" for line in keep).encode()))

    def write(self, step: int, split: str, metrics: dict) -> None:
        """`metrics` holds host values: Python/NumPy scalars, or arrays for vector statistics."""
        if not self.enabled:
            return
        scalars, vectors = {}, {}
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 0:
                scalars[k] = float(v)
            else:
                vectors[k] = v
        row = {"step": int(step), "split": split, **scalars}
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        if vectors:
            path = stats_path(self.workdir, split, step)
            path.parent.mkdir(exist_ok=True)
            _replace_atomically(path, lambda f: np.savez(f, **vectors))
        tb = self._writer()
        for k, v in scalars.items():
            if math.isfinite(v):
                tb.add_scalar(f"{split}/{k}", v, step)
        tb.flush()

    def _writer(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter  # no TensorFlow needed

            self._tb = SummaryWriter(str(self.workdir / TB_DIR))
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
