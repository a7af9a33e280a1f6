"""Orbax checkpoints of the train state plus a JSON sidecar (step, data position, model shapes).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it), the
newest `keep` are kept. A save that fails (a full disk) is reported by the next `check()` (the
trainer calls it every step) as one `CheckpointSaveError`; its temporary directory is removed
and the earlier checkpoints are kept.

Restore compares what the checkpoint holds with what the config builds before reading any array:
the parameter shapes (sidecar) and the whole state tree, optimizer state included (orbax's stored
metadata); a difference is refused (`ModelMismatchError`) with nothing in the workdir touched.
A checkpoint that cannot be read is skipped for the previous one; restoring only reads. The
trainer then moves the unreadable newer ones (`move_unreadable_aside`, never deleting them) to a
directory beside the checkpoints, outside orbax's view, so they can be inspected and their steps
saved again. If checkpoints exist but none restores, `NoReadableCheckpointError` says so.
Temporary directories of saves that a kill cut off are removed when the next run opens the
workdir.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from lazy_jax.errors import InputError


def param_shapes(params: Any) -> dict[str, list[int]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in flat}


class ModelMismatchError(InputError):
    pass


class NoReadableCheckpointError(InputError):
    pass


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the earlier ones are kept."""


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DropOrbaxTracebacks(logging.Filter):
    """Orbax logs each failure of a background save with a long traceback from several threads;
    the Checkpointer raises the failure itself as one CheckpointSaveError, so those records go."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.levelno >= logging.ERROR and "orbax" in record.pathname)


_ORBAX_FILTER = _DropOrbaxTracebacks()


def state_tree(tree: Any) -> dict[str, str]:
    """{path: 'float32[128, 512]'} of every leaf of an orbax-serialised tree ('empty' for an empty
    node, e.g. optax's EmptyState: it changes the structure as much as a leaf does)."""
    out: dict[str, str] = {}

    def walk(node, path):
        if hasattr(node, "shape") and hasattr(node, "dtype"):
            out[path] = f"{np.dtype(node.dtype).name}{list(node.shape)}"
        elif isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{path}/{k}" if path else str(k))
        elif isinstance(node, (list, tuple)) and len(node):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}" if path else str(i))
        elif node is None or isinstance(node, (dict, list, tuple)):
            out[path] = "empty"
        else:
            out[path] = type(node).__name__

    walk(tree, "")
    return out


def _tree_diff(stored: dict[str, str], built: dict[str, str], limit: int = 3) -> str:
    only_stored = [k for k in stored if k not in built]
    only_built = [k for k in built if k not in stored]
    differ = [k for k in stored if k in built and stored[k] != built[k]]

    def some(keys, fmt):
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(fmt(k) for k in keys[:limit]) + more

    parts = []
    if differ:
        parts.append("differ: " + some(differ, lambda k: f"{k} checkpoint {stored[k]} vs config {built[k]}"))
    if only_stored:
        parts.append("only in the checkpoint: " + some(only_stored, lambda k: f"{k} {stored[k]}"))
    if only_built:
        parts.append("only in the config's state: " + some(only_built, lambda k: f"{k} {built[k]}"))
    return "; ".join(parts)


def _opt_fields(tree: dict[str, str]) -> list[str]:
    """The optimizer's per-parameter state names: the first non-index part of each opt_state path."""
    fields = set()
    for path in tree:
        parts = path.split("/")
        if parts[0] == "opt_state":
            fields.add(next((p for p in parts[1:] if not p.isdigit()), "empty"))
    return sorted(fields - {"empty"})


def _config_diff(stored: dict | None, built: dict | None) -> str:
    if not stored or not built:
        return ""
    keys = [k for k in sorted(set(stored) | set(built)) if stored.get(k) != built.get(k)]
    return ", ".join(f"{k}: checkpoint {stored.get(k)!r} vs config {built.get(k)!r}" for k in keys)


def _agree(ok: bool) -> bool:
    """Whether every process got `ok` (restoring is collective: all take the same checkpoint)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


class Checkpointer:
    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 3,
        async_save: bool = True,
        unreadable_dir: str | Path | None = None,
    ):
        self.directory = (
            epath.Path(directory) if str(directory).startswith("gs://") else epath.Path(directory).absolute()
        )
        # Outside `directory`, so orbax neither lists nor cleans up what is moved there.
        self.unreadable_dir = (
            None
            if not unreadable_dir
            else epath.Path(unreadable_dir)
            if str(unreadable_dir).startswith("gs://")
            else epath.Path(unreadable_dir).absolute()
        )
        # cleanup_tmp_directories: process 0 (the one holding the workdir lock) removes the
        # temporary directories of saves cut off by a kill; they were never complete checkpoints.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._unreadable: list[int] = []  # skipped by the last restore_latest, newer than the step it restored
        self._restored: int | None = None
        self._async = async_save
        self._pending: int | None = None  # step of an asynchronous save not yet known to have succeeded
        logging.getLogger("absl").addFilter(_ORBAX_FILTER)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    # -- saving ------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict) -> None:
        self._finish_pending()
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except Exception as e:  # a synchronous save, or the blocking part of an asynchronous one
            self._failed(step, e)
        if self._async:
            self._pending = step

    def check(self) -> None:
        """Raises CheckpointSaveError if the last asynchronous save has failed; never waits for one."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._finish_pending()

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._failed(step, e)

    def _failed(self, step: int, e: Exception) -> None:
        if jax.process_index() == 0:
            for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
        kept = [s for s in self.all_steps() if s != step]
        previous = f"the checkpoint of step {kept[-1]} is kept" if kept else "no earlier checkpoint exists"
        raise CheckpointSaveError(
            f"saving the checkpoint of step {step} failed: {_one_line(e)}; its temporary directory was removed and "
            f"{previous} in {self.directory}; free space there (or fix the storage) and rerun to resume"
        ) from e

    # -- restoring ---------------------------------------------------------------------------
    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def read_state_tree(self, step: int) -> dict[str, str]:
        """The stored state's tree (paths, dtypes, shapes) from orbax's metadata; reads no array."""
        handler = ocp.StandardCheckpointHandler()
        try:
            return state_tree(handler.metadata(epath.Path(self.directory / str(step) / "state")).tree)
        finally:
            handler.close()

    def restore_latest(
        self,
        abstract_state: Any,
        expected_shapes: dict[str, list[int]],
        *,
        optimizer: dict | None = None,
        check_meta: Callable[[int, dict], None] | None = None,
    ):
        """Returns (state, meta) of the newest readable checkpoint, or (None, None) if there is none.

        Raises ModelMismatchError if it holds another state than `abstract_state` (a parameter
        shape, or the optimizer state of another `optimizer` config), whatever `check_meta(step,
        meta)` raises, and NoReadableCheckpointError if checkpoints exist but none can be read.
        Reads only: the unreadable steps newer than the restored one are left for
        `move_unreadable_aside`.
        """
        unreadable: list[tuple[int, str]] = []
        built = state_tree(ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
        for step in reversed(self.all_steps()):
            try:
                meta, stored = self.read_meta(step), self.read_state_tree(step)
                ok = True
            except Exception as e:
                ok, why = False, _one_line(e)
            if not _agree(ok):
                unreadable.append((step, why if not ok else "unreadable on another process"))
                logging.warning(
                    "checkpoint %s/%d is unreadable (%s); trying the previous one", self.directory, step, why
                )
                continue
            self._check_state(step, meta, stored, built, expected_shapes, optimizer)
            if check_meta is not None:
                check_meta(step, meta)
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )
                ok = True
            except Exception as e:  # e.g. a truncated array file
                ok, why = False, _one_line(e)
            if not _agree(ok):
                unreadable.append((step, why if not ok else "unreadable on another process"))
                logging.warning(
                    "checkpoint %s/%d could not be restored (%s); trying the previous one", self.directory, step, why
                )
                continue
            self._unreadable, self._restored = [s for s, _ in unreadable], step
            return restored["state"], meta
        if unreadable:
            detail = "; ".join(f"step {s}: {why}" for s, why in unreadable[:3])
            raise NoReadableCheckpointError(
                f"none of the checkpoints in {self.directory} can be restored ({detail}); nothing was moved or "
                "deleted. Check the storage and rerun, or pass --start_afresh to move the checkpoints and "
                "metrics aside and start at step 0"
            )
        return None, None

    def _check_state(self, step, meta, stored, built, expected_shapes, optimizer) -> None:
        where = f"the checkpoint at {self.directory}/{step}"
        remedy = "use a new --workdir, or pass --start_afresh to move this run's checkpoints and metrics aside"
        stored_shapes = meta.get("param_shapes", {})
        if stored_shapes != expected_shapes:
            keys = sorted(set(stored_shapes) | set(expected_shapes))
            diff = [k for k in keys if stored_shapes.get(k) != expected_shapes.get(k)][:4]
            detail = ", ".join(
                f"{k}: checkpoint {stored_shapes.get(k)} vs model {expected_shapes.get(k)}" for k in diff
            )
            raise ModelMismatchError(
                f"{where} belongs to a model of another shape ({detail}); "
                f"resume with the config that wrote it (model={meta.get('model')}), or {remedy}"
            )
        if stored == built:
            return
        differing = (set(stored) ^ set(built)) | {k for k in stored if k in built and stored[k] != built[k]}
        parts = sorted({k.split("/")[0] for k in differing})
        names = {"opt_state": "optimizer state", "params": "parameters", "step": "step counter"}
        what = " and ".join(names.get(p, p) for p in parts)
        stored_opt, built_opt = meta.get("optimizer") or {}, optimizer or {}
        detail = ""
        if "opt_state" in parts:
            # What each optimizer keeps per parameter, e.g. adamw's (count, mu, nu).
            def kinds(opt, tree):
                owner = f"{opt['name']}'s " if opt.get("name") else ""
                return f"{owner}({', '.join(_opt_fields(tree))})"

            detail = f": the checkpoint has {kinds(stored_opt, stored)}, the config builds {kinds(built_opt, built)}"
            opt = _config_diff(stored_opt, built_opt)
            if opt:
                detail += f" (optimizer config {opt})"
        raise ModelMismatchError(
            f"{where} holds another {what} than the config builds{detail}; first differing paths: "
            f"{_tree_diff(stored, built)}; resume with the config that wrote it, or {remedy}; nothing in the "
            "workdir was changed"
        )

    def move_unreadable_aside(self) -> None:
        """Moves the unreadable checkpoints `restore_latest` skipped out of orbax's view (process 0),
        so their steps can be saved again; all processes call it."""
        steps, restored = self._unreadable, self._restored
        self._unreadable = []
        if not steps:
            return
        if jax.process_index() == 0:
            target_dir = self.unreadable_dir or self.directory.with_name(self.directory.name + ".unreadable")
            target_dir.mkdir(parents=True, exist_ok=True)
            for step in steps:
                src, dst = self.directory / str(step), target_dir / str(step)
                n = 1
                while dst.exists():  # a step moved aside before keeps its place
                    dst, n = target_dir / f"{step}.{n}", n + 1
                src.rename(dst)
                logging.warning(
                    "moved the unreadable checkpoint %s to %s (kept for inspection); resuming from %s/%d",
                    src,
                    dst,
                    self.directory,
                    restored,
                )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("lazy_jax_checkpoints_moved_aside")
        self.manager.reload()

    def wait(self) -> None:
        self._finish_pending()
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager; a second call does nothing."""
        if self.manager is None:
            return
        try:
            self._finish_pending()
        finally:
            manager, self.manager = self.manager, None
            manager.close()
            logging.getLogger("absl").removeFilter(_ORBAX_FILTER)
