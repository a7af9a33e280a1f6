"""Writes logged metrics: metrics.jsonl rows, TensorBoard events, vector statistics as .npz.

Only process 0 writes. On resume, rows logged after the restored step (they will be logged
again) move to metrics.dropped.jsonl, so metrics.jsonl never holds a step twice and nothing
written is lost.

The workdir may be local or gs:// (see lazy_jax.workdir). On an object store nothing can be
appended to: metrics.jsonl is kept in memory and its object written again whole at every logged
row (a few requests per logged step, and an upload of the whole file, small next to the steps
between two logs), so the bucket always holds every row logged so far. TensorBoard events are
written by tensorboardX into a local temporary directory and copied to `<workdir>/tb/` at most
every TB_SYNC_SECONDS and when the writer closes. Why not tensorboardX's own gs:// writer: it
goes through google-cloud-storage, a second GCS client beside gcsfs (installed today only as a
dependency of gcsfs), and uploads the whole event file again at every flush, which this writer
does at every logged row; copying it at most once a minute bounds that.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import tempfile
import time

import numpy as np
from etils import epath

from lazy_jax import workdir as wd
from lazy_jax.workdir import DROPPED_METRICS, METRICS, TB_DIR, stats_path

logger = logging.getLogger(__name__)

# How often TensorBoard events of a gs:// workdir are copied there (and always at close).
TB_SYNC_SECONDS = 60.0


class MetricsWriter:
    def __init__(self, workdir: wd.PathLike, *, enabled: bool = True):
        self.workdir = epath.Path(workdir)
        self.enabled = enabled
        self.jsonl = self.workdir / METRICS
        self.remote = wd.is_remote(self.workdir)
        self._jsonl_text: str | None = None  # gs://: metrics.jsonl as written last (None: not read yet)
        self._tb = None
        self._tb_local: str | None = None  # gs://: the local directory tensorboardX writes into
        self._tb_synced = 0.0

    def truncate_after(self, step: int) -> None:
        """Keeps rows with step <= `step`; later rows go to metrics.dropped.jsonl."""
        if not self.enabled or not self.jsonl.exists():
            return
        lines = wd.read_text(self.jsonl).splitlines()
        keep, drop = [], []
        for line in lines:
            try:
                (keep if json.loads(line)["step"] <= step else drop).append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                drop.append(line)
        if not drop:
            return
        wd.append_text(self.workdir / DROPPED_METRICS, "".join(line + "\n" for line in drop))
        text = "".join(line + "\n" for line in keep)
        wd.replace_text(self.jsonl, text)
        if self.remote:
            self._jsonl_text = text

    def _append_row(self, line: str) -> None:
        if not self.remote:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a") as f:
                f.write(line)
            return
        if self._jsonl_text is None:
            self._jsonl_text = wd.read_text(self.jsonl) if self.jsonl.exists() else ""
            if self._jsonl_text and not self._jsonl_text.endswith("\n"):
                self._jsonl_text += "\n"  # a cut-off last line stays a line of its own (readers skip it)
        self._jsonl_text += line
        wd.replace_text(self.jsonl, self._jsonl_text)

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
        self._append_row(json.dumps(row, allow_nan=True) + "\n")
        if vectors:
            path = stats_path(self.workdir, split, step)
            if not self.remote:
                path.parent.mkdir(exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **vectors)
            wd.replace_bytes(path, buffer.getvalue())
        tb = self._writer()
        for k, v in scalars.items():
            if math.isfinite(v):
                tb.add_scalar(f"{split}/{k}", v, step)
        tb.flush()
        if self.remote and time.monotonic() - self._tb_synced >= TB_SYNC_SECONDS:
            self._sync_tb()

    def _writer(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter  # no TensorFlow needed

            if self.remote:
                self._tb_local = tempfile.mkdtemp(prefix="lazy_jax_tb_")
                self._tb_synced = time.monotonic()  # the first copy after TB_SYNC_SECONDS (or at close)
                self._tb = SummaryWriter(self._tb_local)
            else:
                self._tb = SummaryWriter(str(self.workdir / TB_DIR))
        return self._tb

    def _sync_tb(self) -> bool:
        """Copies the local event files of a gs:// workdir to <workdir>/tb/ (each file whole)."""
        self._tb_synced = time.monotonic()
        try:
            for local in sorted(epath.Path(self._tb_local).iterdir()):
                wd.replace_bytes(self.workdir / TB_DIR / local.name, local.read_bytes())
            return True
        except Exception as e:  # gcsfs raises more than OSError; events are not worth stopping a run for
            logger.warning(
                "could not copy TensorBoard events to %s (%s: %s)", self.workdir / TB_DIR, type(e).__name__, e
            )
            return False

    def close(self) -> None:
        if self._tb is None:
            return
        self._tb.close()
        self._tb = None
        if self._tb_local is not None:
            if self._sync_tb():
                shutil.rmtree(self._tb_local, ignore_errors=True)
            else:
                logger.warning("the TensorBoard events of this run stay in %s", self._tb_local)
            self._tb_local = None
