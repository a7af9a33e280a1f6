"""The layout of a run's --workdir, and the one reader of its metrics rows.

    metrics.jsonl           one JSON row per logged (step, split): {"step", "split", metric: value, ...}
    metrics.dropped.jsonl   rows a resumed run moved out of metrics.jsonl (logged after its checkpoint)
    config.json             the config of the latest (re)start (ConfigDict.to_json_best_effort)
    config_history.jsonl    one row per (re)start: {"step": the step it started at, "time", "config": {...}}
    parameters.txt          the model's parameter overview (shapes and counts)
    stats/<split>_<step>.npz  vector statistics of a logged step (step zero-padded to 8 digits)
    tb/                     TensorBoard events
    checkpoints/            orbax checkpoints
    checkpoints.unreadable/ checkpoints a resume could not read, moved out of orbax's view (never deleted)
    set_aside/<time>/       what --start_afresh moved out of the way (RUN_OUTPUTS of the earlier run)
    report/                 report.md and its figures (python -m lazy_jax.report)
    .lock                   held by the running trainer's process 0

Everything that writes or reads a workdir takes these names from here (`Path(workdir) / METRICS`).
Plain Python only, so the report and the tests import it without jax.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lazy_jax.errors import InputError

METRICS = "metrics.jsonl"
DROPPED_METRICS = "metrics.dropped.jsonl"
CONFIG = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
PARAMETERS = "parameters.txt"
STATS_DIR = "stats"
TB_DIR = "tb"
CHECKPOINTS_DIR = "checkpoints"
UNREADABLE_CHECKPOINTS_DIR = "checkpoints.unreadable"
SET_ASIDE_DIR = "set_aside"
REPORT_DIR = "report"
LOCK = ".lock"
# What a run writes into its workdir (all but the lock): --start_afresh moves these aside.
RUN_OUTPUTS = (
    CHECKPOINTS_DIR,
    UNREADABLE_CHECKPOINTS_DIR,
    METRICS,
    DROPPED_METRICS,
    CONFIG,
    CONFIG_HISTORY,
    PARAMETERS,
    STATS_DIR,
    TB_DIR,
    REPORT_DIR,
)

_STATS_NAME_RE = re.compile(r"^(?P<split>.+)_(?P<step>\d+)\.npz$")

logger = logging.getLogger(__name__)


def stats_path(workdir: str | Path, split: str, step: int) -> Path:
    return Path(workdir) / STATS_DIR / f"{split}_{step:08d}.npz"


def stats_files(workdir: str | Path) -> Iterator[tuple[str, int, Path]]:
    """(split, step, path) of each `stats/<split>_<step>.npz`; other .npz files are skipped with a warning."""
    directory = Path(workdir) / STATS_DIR
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.npz")):
        m = _STATS_NAME_RE.match(path.name)
        if not m:
            logger.warning("ignoring %s: stats files are named <split>_<step>.npz", path)
            continue
        yield m["split"], int(m["step"]), path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics JSONL file (metrics.jsonl or metrics.dropped.jsonl) in file order.

    Skips blank lines, and lines that are not a JSON object with `step` and `split` with a
    warning naming their line numbers: a killed run can leave a truncated last line. A row whose
    step is not an integer >= 0 or whose split is not a string (a hand-edited "step": "ten" or
    3.5) is skipped too, with a warning naming its line and value.
    Raises FileNotFoundError if the file does not exist.
    """
    path = Path(path)
    rows, bad_lines, bad_values = [], [], []
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad_lines.append(line_no)
                continue
            if not isinstance(row, dict) or "step" not in row or "split" not in row:
                bad_lines.append(line_no)
                continue
            step, split = row["step"], row["split"]
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                bad_values.append(f"line {line_no}: step={step!r}")
                continue
            if not isinstance(split, str):
                bad_values.append(f"line {line_no}: split={split!r}")
                continue
            rows.append(row)
    if bad_lines:
        logger.warning(
            "%s: skipped %d malformed line(s): %s",
            path,
            len(bad_lines),
            ", ".join(map(str, bad_lines[:20])) + (" ..." if len(bad_lines) > 20 else ""),
        )
    if bad_values:
        logger.warning(
            "%s: skipped %d row(s) whose step is not an integer >= 0 or whose split is not a string: %s",
            path,
            len(bad_values),
            "; ".join(bad_values[:20]) + (" ..." if len(bad_values) > 20 else ""),
        )
    return rows


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """`read_rows` of the workdir's metrics.jsonl; ValueError naming the path if there is none."""
    path = Path(workdir) / METRICS
    if not path.is_file():
        raise InputError(f"no metrics file at {path}: expected the {METRICS} a training run writes into its --workdir")
    return read_rows(path)
