"""Orbax checkpoints of the train state plus a JSON sidecar (step, data position, model shapes).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it), the
newest `keep` are kept. Restore checks the stored parameter shapes against the model being
built before reading any array, and falls back to an older checkpoint if the newest is
unreadable (a warning names it; no complete checkpoint is deleted). Temporary directories
of saves that a kill cut off are removed when the next run opens the workdir.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from lazy_jax.errors import InputError


def param_shapes(params: Any) -> dict[str, list[int]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in flat}


class ModelMismatchError(InputError):
    pass


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        # cleanup_tmp_directories: process 0 (the one holding the workdir lock) removes the
        # temporary directories of saves cut off by a kill; they were never complete checkpoints.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
        )

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_latest(self, abstract_state: Any, expected_shapes: dict[str, list[int]]):
        """Returns (state, meta) of the newest readable checkpoint, or (None, None) if there is none."""
        for step in reversed(self.all_steps()):
            try:
                meta = self.read_meta(step)
            except Exception as e:  # unreadable sidecar: treat the checkpoint as corrupted
                logging.warning("checkpoint %s/%d is unreadable (%s); trying the previous one", self.directory, step, e)
                continue
            stored = meta.get("param_shapes", {})
            if stored != expected_shapes:
                keys = sorted(set(stored) | set(expected_shapes))
                diff = [k for k in keys if stored.get(k) != expected_shapes.get(k)][:4]
                detail = ", ".join(f"{k}: checkpoint {stored.get(k)} vs model {expected_shapes.get(k)}" for k in diff)
                raise ModelMismatchError(
                    f"the checkpoint at {self.directory}/{step} belongs to a model of another shape ({detail}); "
                    f"use a new --workdir for this model, or the config that wrote it (model={meta.get('model')})"
                )
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )
            except Exception as e:
                logging.warning(
                    "checkpoint %s/%d could not be restored (%s); trying the previous one", self.directory, step, e
                )
                continue
            return restored["state"], meta
        return None, None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager; a second call does nothing."""
        if self.manager is None:
            return
        self.manager.wait_until_finished()
        self.manager.close()
        self.manager = None
