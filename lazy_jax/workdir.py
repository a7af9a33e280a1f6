"""The layout of a run's --workdir, and the one reader of its metrics rows.

    metrics.jsonl           one JSON row per logged (step, split): {"step", "split", metric: value, ...}
    metrics.dropped.jsonl   rows a resumed run moved out of metrics.jsonl (logged after its checkpoint)
    config.json             the config of the latest (re)start (ConfigDict.to_json_best_effort)
    config_history.jsonl    one row per (re)start: {"step": the step it started at, "time", "config": {...}}
    parameters.txt          the model's parameter overview (shapes and counts)
    stats/<split>_<step>.npz  vector statistics of a logged step (step zero-padded to 8 digits; a '/'
                            of the split, as in eval_corrupt/<name>/s<k>, written '+')
    tb/                     TensorBoard events
    checkpoints/            orbax checkpoints
    checkpoints.unreadable/ checkpoints a resume could not read, moved out of orbax's view (never deleted)
    set_aside/<time>/       what --start_afresh moved out of the way (RUN_OUTPUTS of the earlier run)
    report/                 report.md and its figures (python -m lazy_jax.report)
    .lock                   held by the running trainer's process 0

Everything that writes or reads a workdir takes these names from here (`workdir / METRICS`).
Plain Python only, so the report and the tests import it without jax.

Workdirs and data dirs are `etils.epath` paths: a local directory, or an object-store URI
(`gs://BUCKET/PATH`), which epath opens through fsspec (gcsfs) when TensorFlow is absent, as it
always is here. Object stores have no directories, no append and no atomic rename, but replace
an object whole on every write: `replace_bytes`, `replace_text` and `append_text` write either
kind of path so that a reader or a kill sees the old content or the new, never a part.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from etils import epath

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

PathLike = str | os.PathLike

# URI prefixes epath reads through fsspec; gs:// (gcsfs, a dependency) is the one a workdir may use.
REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/")


# ----------------------------------------------------------------------------- paths


def is_remote(path: PathLike) -> bool:
    """Whether `path` is an object-store URI (gs://BUCKET/...) rather than a local path."""
    return os.fspath(path).startswith(REMOTE_PREFIXES)


def location_path(value: PathLike | None, flag: str) -> epath.Path:
    """`value` of `flag` as an epath.Path: a local path with `~` expanded, or gs://BUCKET[/PATH].

    Raises InputError naming `flag` for an empty value, a gs:// URI without a bucket, and other
    schemes ("gs:/b" with one slash, s3://, http://).
    """
    text = "" if value is None else os.fspath(value)
    if not text.strip():
        raise InputError(
            f"{flag}={text!r} is empty: give a local directory ({flag}=runs/NAME, ~ allowed) or a bucket path "
            f"({flag}=gs://BUCKET/NAME)"
        )
    m = _SCHEME_RE.match(text)
    if m and not text.startswith("gs://"):
        raise InputError(
            f"{flag}={text!r} is not a location lazy_jax can use: give a local directory or gs://BUCKET/PATH "
            f"(Google Cloud Storage through gcsfs; {m['scheme']!r} URIs are not supported)"
        )
    if text.startswith("gs://"):
        if not text[len("gs://") :].split("/", 1)[0]:
            raise InputError(f"{flag}={text!r} names no bucket: use gs://BUCKET/PATH")
        return epath.Path(text)
    return epath.Path(text).expanduser()


def workdir_path(workdir: PathLike | None) -> epath.Path:
    """The --workdir as an epath.Path (see `location_path`); an empty --workdir= is refused."""
    return location_path(workdir, "--workdir")


def check_writable_dir(path: PathLike, what: str = "--workdir", *, writable: bool = True) -> None:
    """Raises InputError naming `path` if it cannot be a directory to write into: an existing file,
    a path under a file, or (`writable`) a local directory this user cannot write to (or whose
    nearest existing parent it cannot write to, when it is still to be created).

    A gs:// path is only checked for being an existing object (a file); whether the bucket can be
    written shows at the first write (the workdir lock object).
    """
    try:
        if is_remote(path):
            p = epath.Path(path)
            if p.exists() and not p.is_dir():
                raise InputError(f"{what} {path} is an existing object (a file), not a directory: give a directory")
            return
        p = os.path.abspath(os.fspath(path))
        if os.path.exists(p) and not os.path.isdir(p):
            raise InputError(f"{what} {path} is an existing file, not a directory: give a directory")
        existing = p
        while not os.path.exists(existing):  # the nearest part of the path that exists
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise InputError(
                f"{what} {path} cannot be created: {existing} is a file, not a directory; give a directory path"
            )
        # effective_ids: what this process may do (as root, any directory but one on a read-only mount).
        if writable and not os.access(
            existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids
        ):
            where = f"{path} is" if existing == p else f"{path} cannot be created: {existing} is"
            raise InputError(f"{what} {where} read-only for this user: give a directory it can write to")
    except OSError as e:  # e.g. a parent it may not list
        raise InputError(f"{what} {path} cannot be used: {type(e).__name__}: {e}") from e


def checked_workdir(workdir: PathLike | None) -> epath.Path:
    """`workdir_path` and `check_writable_dir`: the one check of --workdir before a run touches it."""
    path = workdir_path(workdir)
    check_writable_dir(path, "--workdir")
    return path


def read_text(path: PathLike) -> str:
    """The file's text (UTF-8, undecodable bytes replaced), local or gs://."""
    return epath.Path(path).read_bytes().decode("utf-8", errors="replace")


def replace_bytes(path: PathLike, data: bytes) -> None:
    """Writes `data` as the whole content of `path`, so a reader or a kill sees the old content or the
    new, never a part: locally through `<path>.tmp` (which matches no reader's `*.npz` / `*.jsonl`) and a
    rename; on an object store in one upload (an object is replaced whole when its upload completes)."""
    path = epath.Path(path)
    if is_remote(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def replace_text(path: PathLike, text: str) -> None:
    replace_bytes(path, text.encode("utf-8"))


def append_text(path: PathLike, text: str) -> None:
    """Appends `text` to `path` (created if missing). Object stores cannot append (gcsfs's "a" mode
    silently overwrites), so there the object is read and written again whole with `text` added."""
    path = epath.Path(path)
    if not is_remote(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    old = path.read_bytes() if path.exists() else b""
    path.write_bytes(old + text.encode("utf-8"))


@contextlib.contextmanager
def local_output_dir(out_dir: PathLike) -> Iterator[epath.Path]:
    """A local directory to write `out_dir`'s files in (matplotlib and json write local files): `out_dir`
    itself (created) when it is local; for gs:// a temporary directory whose files are copied into
    `out_dir` (`replace_bytes`, one object each) when the block ends without an error, then removed."""
    out_dir = epath.Path(out_dir)
    if not is_remote(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        yield out_dir
        return
    local = epath.Path(tempfile.mkdtemp(prefix="lazy_jax_out_"))
    try:
        yield local
        for path in sorted(local.iterdir()):
            replace_bytes(out_dir / path.name, path.read_bytes())
    finally:
        shutil.rmtree(local, ignore_errors=True)


# ----------------------------------------------------------------------------- readers


# A split may hold '/' (eval_corrupt/gaussian_noise/s3); its stats file stays one flat name,
# with '/' written as '+' (no split name holds a '+').
_SPLIT_SEP_IN_NAME = "+"


def stats_path(workdir: PathLike, split: str, step: int) -> epath.Path:
    name = split.replace("/", _SPLIT_SEP_IN_NAME)
    return epath.Path(workdir) / STATS_DIR / f"{name}_{step:08d}.npz"


def stats_files(workdir: PathLike) -> Iterator[tuple[str, int, epath.Path]]:
    """(split, step, path) of each `stats/<split>_<step>.npz`; other .npz files are skipped with a warning."""
    directory = epath.Path(workdir) / STATS_DIR
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.npz")):
        m = _STATS_NAME_RE.match(path.name)
        if not m:
            logger.warning("ignoring %s: stats files are named <split>_<step>.npz", path)
            continue
        yield m["split"].replace(_SPLIT_SEP_IN_NAME, "/"), int(m["step"]), path


def read_rows(path: PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics JSONL file (metrics.jsonl or metrics.dropped.jsonl) in file order.

    Skips blank lines, and lines that are not a JSON object with `step` and `split` with a
    warning naming their line numbers: a killed run can leave a truncated last line. A row whose
    step is not an integer >= 0 or whose split is not a string (a hand-edited "step": "ten" or
    3.5) is skipped too, with a warning naming its line and value.
    Raises FileNotFoundError if the file does not exist.
    """
    path = epath.Path(path)
    rows, bad_lines, bad_values = [], [], []
    # Split on "\n" only, as iterating over a file does: a JSON string may hold U+2028.
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
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


def read_metrics(workdir: PathLike) -> list[dict[str, Any]]:
    """`read_rows` of the workdir's metrics.jsonl (local or gs://); InputError naming the path if there is none."""
    path = epath.Path(workdir) / METRICS
    if not path.is_file():
        raise InputError(f"no metrics file at {path}: expected the {METRICS} a training run writes into its --workdir")
    return read_rows(path)


# ----------------------------------------------------------------------------- lock of a gs:// workdir


class LockHeldError(Exception):
    """The lock object is held by a live run; the message names it (pid, host, since, last refresh)."""


class ObjectLock:
    """The workdir lock where flock cannot work: an object store (gs://) has no file locks.

    `acquire()` creates the lock object (`.lock`) only if it does not exist (GCS: an upload with
    ifGenerationMatch=0, so of two runs starting at once one fails) holding this process's pid,
    host, start time and a token; a thread rewrites its refresh time every `heartbeat` seconds.
    A lock object already there refuses the run (LockHeldError) unless it was not refreshed for
    `stale_after` seconds: its run was killed (a preempted VM, SIGKILL), and it is taken over with
    a warning. `release()` stops the thread and deletes the object if it still holds our token.
    Staleness compares the holder's clock with ours (machines on NTP agree to well under a second).
    """

    HEARTBEAT_SECONDS = 60.0
    STALE_SECONDS = 300.0

    def __init__(self, path: PathLike, *, heartbeat: float | None = None, stale_after: float | None = None):
        import fsspec

        self.path = epath.Path(path)
        self.heartbeat = self.HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self.stale_after = self.STALE_SECONDS if stale_after is None else stale_after
        self.fs, self._key = fsspec.core.url_to_fs(os.fspath(self.path))
        self.token = uuid.uuid4().hex
        self.since = time.strftime("%Y-%m-%d %H:%M:%S")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        row = {"pid": os.getpid(), "host": socket.gethostname(), "since": self.since}
        return (json.dumps({**row, "refreshed": time.time(), "token": self.token}) + "\n").encode()

    def _read(self) -> dict[str, Any] | None:
        """The lock object's fields; None if there is none; {} if it cannot be parsed."""
        self.fs.invalidate_cache(self._key)  # another machine may have written it since we looked
        try:
            data = self.fs.cat_file(self._key)
        except FileNotFoundError:
            return None
        try:
            row = json.loads(data)
        except ValueError:
            return {}
        return row if isinstance(row, dict) else {}

    def describe(self, holder: dict[str, Any]) -> str:
        refreshed = holder.get("refreshed")
        age = f"{time.time() - refreshed:.0f} s ago" if isinstance(refreshed, (int, float)) else "at an unknown time"
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
        return f"{who}; its lock {self.path} was refreshed {age}"

    def acquire(self) -> None:
        holder = self._read()
        if holder is not None:
            refreshed = holder.get("refreshed")
            if isinstance(refreshed, (int, float)) and time.time() - refreshed < self.stale_after:
                raise LockHeldError(self.describe(holder))
            logger.warning(
                "taking over the lock %s (%s): not refreshed for %.0f s, its run is gone",
                self.path,
                self.describe(holder),
                self.stale_after,
            )
            self.fs.rm_file(self._key)
        try:
            self.fs.pipe_file(self._key, self._body(), mode="create")
        except FileExistsError:  # another run created it between our look and our write
            raise LockHeldError(self.describe(self._read() or {})) from None
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh, name="lazy_jax-workdir-lock", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                holder = self._read()
                if holder is not None and holder.get("token") != self.token:
                    logger.error("the lock %s was taken over by %s; no longer refreshing it", self.path, holder)
                    return
                self.fs.pipe_file(self._key, self._body())
            except Exception as e:  # a network error: try again at the next heartbeat
                logger.warning("could not refresh the lock %s (%s: %s)", self.path, type(e).__name__, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            holder = self._read()
            if holder is not None and holder.get("token") == self.token:
                self.fs.rm_file(self._key)
        except Exception as e:
            logger.warning("could not remove the lock %s (%s: %s)", self.path, type(e).__name__, e)
