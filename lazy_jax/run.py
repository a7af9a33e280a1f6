"""train_and_evaluate: data -> jitted step -> metrics -> writer, with checkpoints and resume.

The run resumes from the workdir's newest readable checkpoint at its exact step (the data
position is the step: batches are a pure function of (seed, step)); a checkpoint the config
cannot continue (another model or optimizer state, an infinite-data stream of another batch
size) is refused before the workdir is touched. Each (re)start's config is kept
(config_history.jsonl; config.json is the latest). Metrics are fetched from the device only on
logged steps; a NaN/Inf there, or before a checkpoint, stops the run and keeps the last good
checkpoint. SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint and exit cleanly, also
from inside an eval (with several processes, at the next logged step or every few eval batches,
which all of them agree on); a second Ctrl-C exits at once. A checkpoint save that fails (a
full disk) stops the run at the first step after it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from clu import parameter_overview
from jax.experimental import multihost_utils

from lazy_jax import input_pipeline
from lazy_jax import sharding as shd
from lazy_jax import workdir as wd
from lazy_jax.checkpoint import Checkpointer, param_shapes
from lazy_jax.config_checks import validate_config
from lazy_jax.data import corruptions
from lazy_jax.errors import InputError
from lazy_jax.metrics_writer import MetricsWriter
from lazy_jax.models import model_spec
from lazy_jax.train import Experiment, check_union_sizes


class NonFiniteError(FloatingPointError):
    pass


class WorkdirInUseError(InputError):
    pass


class WorkdirLock:
    """An exclusive lock on the workdir, so a second run on it refuses instead of interleaving.

    A local workdir is locked with flock on `.lock` (released by the kernel when the process dies).
    flock cannot work on an object store: a gs:// workdir gets a lock object (`wd.ObjectLock`:
    created only if absent, refreshed every minute, taken over when not refreshed for 5 minutes).
    """

    def __init__(self, workdir: wd.PathLike):
        self.path = wd.workdir_path(workdir) / wd.LOCK
        self.file = None
        self.object_lock = wd.ObjectLock(self.path) if wd.is_remote(self.path) else None

    def __enter__(self):
        if self.object_lock is not None:
            try:
                self.object_lock.acquire()
            except wd.LockHeldError as e:
                raise WorkdirInUseError(
                    f"workdir {self.path.parent} is in use by another run ({e}); wait for it to finish or use "
                    f"another --workdir (a lock not refreshed for {self.object_lock.stale_after:.0f} s is taken over)"
                ) from None
            except OSError as e:  # 403: no write permission; 404: no such bucket
                raise InputError(
                    f"workdir {self.path.parent} cannot be written ({type(e).__name__}: {' '.join(str(e).split())}): "
                    "check that the bucket exists and that this machine's credentials may write to it"
                ) from e
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise WorkdirInUseError(
                f"workdir {self.path.parent} is in use by another run ({holder}); "
                "wait for it to finish or use another --workdir"
            ) from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.object_lock is not None:
            self.object_lock.release()
            return
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _check_finite(step: int, metrics: dict) -> None:
    for name in ("loss", "grad_norm"):
        if name in metrics and not math.isfinite(float(metrics[name])):
            raise NonFiniteError(
                f"{name} is {float(metrics[name])} at step {step}: the run stops here; "
                "the last checkpoint written before it is kept (lower the learning rate or "
                "check the data)"
            )


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _agreed_stop(local_stop: bool, sync_step: bool) -> bool:
    """Whether to stop after this step. With several processes all must stop at the same step
    (the checkpoint save is collective), so they agree at logged steps; alone, at once."""
    if jax.process_count() == 1:
        return local_stop
    if not sync_step:
        return False
    return bool(np.any(multihost_utils.process_allgather(np.array(local_stop))))


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def check_run(config) -> input_pipeline.DataSpec:
    """Every check of the config, the data, the model and the mesh, made before a workdir is touched.

    Returns the data's spec (read from dataset metadata), which the run builds its model from.
    """
    validate_config(config)
    data = input_pipeline.data_spec(config)
    model_spec(config.model, **data.model_sizes(config.model))
    check_union_sizes(config, data)
    input_pipeline.check_run_length(config)
    mesh = shd.make_mesh(config.mesh)  # the mesh the Experiment will build: batch sizes must split over it
    shd.check_batch_size(config.batch_size, mesh, "batch_size")
    shd.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    return data


def train_and_evaluate(config, workdir: str | Path, *, start_afresh: bool = False) -> dict:
    """Trains `config` in `workdir`; returns the last logged train and eval metrics.

    start_afresh: move the workdir's checkpoints, metrics and the rest of an earlier run's files
    into `set_aside/<time>/` (nothing is deleted) and start at step 0.
    """
    workdir = wd.checked_workdir(workdir)  # epath: local or gs://; empty, a file, read-only: InputError
    data = check_run(config)
    is_writer = jax.process_index() == 0
    with WorkdirLock(workdir) if is_writer else contextlib.nullcontext():
        return _train(config, data, workdir, is_writer, start_afresh)


def resolved_config(config, model_sizes: dict):
    """The config with the sizes the model was built with where it says -1 (the data's)."""
    resolved = config.copy_and_resolve_references()
    with resolved.unlocked():
        resolved.model.update(model_sizes)
    return resolved


def set_aside(workdir: Path) -> Path | None:
    """Moves an earlier run's files (wd.RUN_OUTPUTS) into workdir/set_aside/<time>/; returns that
    folder, or None if there was nothing to move. Nothing is deleted."""
    names = [name for name in wd.RUN_OUTPUTS if (workdir / name).exists()]
    if not names:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = workdir / wd.SET_ASIDE_DIR / stamp, 1
    while dest.exists():
        dest, n = workdir / wd.SET_ASIDE_DIR / f"{stamp}-{n}", n + 1
    dest.mkdir(parents=True)
    for name in names:
        (workdir / name).rename(dest / name)
    print(f"start_afresh: moved {', '.join(names)} to {dest}", flush=True)
    return dest


def _resume_meta(config) -> dict:
    """What a checkpoint records of the data stream: infinite data is read once, at position
    step x batch size in the order of (seed, shuffle_seed), so a resume must keep all three."""
    out = {"batch_size": config.batch_size, "seed": config.seed}
    if config.task == "classification":
        out.update(shuffle_seed=config.data.shuffle_seed, infinite_data=bool(config.data.get("infinite", False)))
    return out


def _check_resume(config, directory: Path, step: int, meta: dict) -> None:
    if not (config.task == "classification" and config.data.get("infinite", False)):
        return
    from lazy_jax.data import vision

    if vision.has_infinite_source(config.data):
        return  # the infinite source keys each draw by its step: a resumed run's steps are all new draws
    now = _resume_meta(config)
    for key in ("batch_size", "seed", "shuffle_seed"):
        if key in meta and meta[key] != now[key]:
            name = f"data.{key}" if key == "shuffle_seed" else key
            raise InputError(
                f"the checkpoint at {directory}/{step} is of a run with {name}={meta[key]}, and this config has "
                f"{name}={now[key]}: with infinite data (data.infinite=True) the stream position is step x batch "
                f"size in the order of seed and data.shuffle_seed, so resuming would see examples again; resume "
                f"with {name}={meta[key]}, or use a new --workdir (or --start_afresh)"
            )


def _write_config(workdir: Path, resolved, start: int) -> None:
    """config.json is the latest (re)start's config; config_history.jsonl keeps every one."""
    text = resolved.to_json_best_effort(indent=2)
    wd.replace_text(workdir / wd.CONFIG, text)
    row = {"step": start, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "config": json.loads(text)}
    wd.append_text(workdir / wd.CONFIG_HISTORY, json.dumps(row) + "\n")


# With several processes every eval batch would wait for an allgather of the stop flag; every
# few batches keeps the eval pipelined and still stops within seconds.
EVAL_STOP_CHECK_EVERY = 4


def _train(config, data: input_pipeline.DataSpec, workdir: Path, is_writer: bool, start_afresh: bool) -> dict:
    pi, pc = jax.process_index(), jax.process_count()
    exp = Experiment(config, data)
    resolved = resolved_config(config, exp.model_sizes)

    if start_afresh:
        if is_writer:
            set_aside(workdir)
        if pc > 1:
            multihost_utils.sync_global_devices("lazy_jax_start_afresh")
    ckpt = Checkpointer(
        workdir / wd.CHECKPOINTS_DIR,
        keep=config.keep_checkpoints,
        async_save=config.async_checkpointing,
        unreadable_dir=workdir / wd.UNREADABLE_CHECKPOINTS_DIR,
    )
    shapes = param_shapes(exp.abstract_state.params)
    try:
        state, meta = ckpt.restore_latest(
            exp.abstract_state,
            shapes,
            optimizer=resolved.optimizer.to_dict(),
            check_meta=lambda step, meta: _check_resume(config, ckpt.directory, step, meta),
        )
        ckpt.move_unreadable_aside()
    except BaseException:
        ckpt.close()
        raise
    if state is None:
        state = exp.init_state(config.seed)
        logging.info("initialised a new model")
    start = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir, enabled=is_writer)
    writer.truncate_after(start)
    if is_writer:
        print(
            f"{'resuming at' if start else 'starting at'} step {start} of {config.total_steps}; "
            f"mesh {dict(exp.mesh.shape)}; {sum(np.prod(s) for s in shapes.values()):,} parameters",
            flush=True,
        )
        _write_config(workdir, resolved, start)
        if not start:
            overview = parameter_overview.get_parameter_overview(exp.abstract_state.params, include_stats=False)
            print(overview, flush=True)
            (workdir / wd.PARAMETERS).write_text(overview + "\n")

    params_finite = jax.jit(_all_finite, out_shardings=shd.replicated(exp.mesh))

    def save(step, eval_pending=False):
        _check_finite(step, last_train or {})
        # The metrics of step s come from the parameters before its update: an update that
        # overflows leaves finite metrics but non-finite parameters, which must not be saved.
        if not bool(params_finite(state.params)):
            raise NonFiniteError(
                f"the parameters after step {step} are not finite (NaN/Inf): the run stops here "
                "without saving them; the last checkpoint written before it is kept (lower the "
                "learning rate or check the data)"
            )
        ckpt.save(
            step,
            state,
            {
                "step": step,
                "data_position": step,
                "param_shapes": shapes,
                "model": resolved.model.to_dict(),
                "optimizer": resolved.optimizer.to_dict(),
                **_resume_meta(config),
                # The eval of this step was cut off by a stop signal: the resumed run does it first.
                "eval_pending": eval_pending,
            },
        )

    stop = {"signal": None}

    def on_signal(signum, frame):
        if signum == signal.SIGINT:
            # The first Ctrl-C stops with a checkpoint; a second one must end the run at once.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if stop["signal"] is None:
            stop["signal"] = signum

    eval_batches_seen = [0]

    def eval_should_stop() -> bool:
        eval_batches_seen[0] += 1
        return _agreed_stop(stop["signal"] is not None, eval_batches_seen[0] % EVAL_STOP_CHECK_EVERY == 0)

    def evaluate(corruption=None) -> dict | None:
        batches = input_pipeline.eval_batches(config, pi, pc, corruption)
        return exp.evaluate(state.params, batches, should_stop=eval_should_stop)

    names = corruptions.parse_names(config.eval_corruptions)
    severities = corruptions.parse_severities(config.eval_corruption_severities)

    def run_eval(step) -> bool:
        """Evaluates at `step` and logs it; False if a stop signal cut the eval off (nothing logged).

        The corrupted evals (config.eval_corruptions) run at the final step only (config_base says
        why). Every row of the eval is written after its last pass, so a cut-off eval leaves no
        row and the resumed run does it all again (eval_pending), never a (step, split) twice.
        """
        nonlocal last_eval
        results = {"eval": evaluate()}
        if results["eval"] is None:
            return False
        if step == config.total_steps:
            for name in names:
                by_severity = []
                for severity in severities:
                    result = evaluate((name, severity))
                    if result is None:
                        return False
                    results[corruptions.split_name(name, severity)] = result
                    by_severity.append(result)
                results[corruptions.split_name(name, None)] = corruptions.mean_over_severities(by_severity)
        last_eval = results["eval"]
        for split, metrics in results.items():
            writer.write(step, split, metrics)
        if is_writer:
            for split, metrics in results.items():
                print(
                    f"{split:<5} {step} | loss {metrics['loss']:.4f} | acc {metrics['accuracy']:.3f} | "
                    f"ece {metrics['ece']:.4f} | nonzero {100 * metrics['nonzero_frac/mean']:.2f}%",
                    flush=True,
                )
        return True

    def why_stopped() -> str:
        if stop["signal"] is not None:
            return f"received signal {stop['signal']}"
        return "another process received a stop signal"

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    last_train, last_eval = None, None
    try:
        if meta is not None and meta.get("eval_pending") and not run_eval(start):
            if is_writer:
                print(f"{why_stopped()}: the checkpoint at step {start} is kept; exiting", flush=True)
            return {"train": None, "eval": None, "preempted_at": start}
        batches = input_pipeline.train_batches(config, start, pi, pc)
        t_last, s_last = time.time(), start
        with jax.set_mesh(exp.mesh):
            for step in range(start + 1, config.total_steps + 1):
                batch = shd.global_batch(next(batches), exp.mesh)
                state, metrics = exp.train_step(state, batch)
                # A failed asynchronous save (a full disk) is reported now, not at the next save.
                ckpt.check()
                if step % config.log_every_steps == 0 or step == 1 or step == config.total_steps:
                    metrics = jax.device_get(metrics)
                    _check_finite(step, metrics)
                    now = time.time()
                    metrics["steps_per_sec"] = (step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, step
                    writer.write(step, "train", metrics)
                    last_train = metrics
                    if is_writer:
                        # the recent rate; the first step's includes compilation, so no ETA yet
                        eta = (
                            "--"
                            if step == start + 1
                            else _fmt_eta((config.total_steps - step) / metrics["steps_per_sec"])
                        )
                        print(
                            f"step {step}/{config.total_steps} | loss {metrics['loss']:.4f} | "
                            f"acc {metrics['accuracy']:.3f} | nonzero {100 * metrics['nonzero_frac/mean']:.2f}% | "
                            f"{metrics['steps_per_sec']:.2f} steps/s | ETA {eta}",
                            flush=True,
                        )
                eval_cut = False
                if step % config.eval_every_steps == 0 or step in (1, config.total_steps):
                    eval_cut = not run_eval(step)  # all processes agreed inside the eval
                preempted = eval_cut or _agreed_stop(stop["signal"] is not None, step % config.log_every_steps == 0)
                if step % config.checkpoint_every_steps == 0 or step == config.total_steps or preempted:
                    last_train = jax.device_get(metrics)
                    save(step, eval_pending=eval_cut)
                if preempted:
                    ckpt.wait()
                    if is_writer:
                        print(f"{why_stopped()}: saved a checkpoint at step {step}; exiting", flush=True)
                    return {"train": last_train, "eval": last_eval, "preempted_at": step}
    finally:
        # Also on an error: let an in-flight asynchronous save of an earlier (checked) step
        # commit, instead of leaving a temporary directory behind at exit.
        try:
            ckpt.close()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            writer.close()
    if is_writer:
        print_summary(workdir)
    return {"train": last_train, "eval": last_eval}


def print_summary(workdir: Path) -> None:
    from lazy_jax import report

    rows = wd.read_metrics(workdir)
    print("\nnonzero share of MLP activations per layer, first -> last logged step:")
    print(report.format_first_last(rows), flush=True)


if __name__ == "__main__":
    sys.exit("use: python -m lazy_jax.main --config=... --workdir=...")
