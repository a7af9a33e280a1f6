"""Faults a long run meets: kills, preemption (SIGTERM, Ctrl-C, during an eval), NaN, corrupted
checkpoints, a full disk, a busy workdir, data that runs out. Most run `python -m lazy_jax.main`
in a subprocess on the tiny ViT-Mu/4 / digits config (one CPU device; a module-wide XLA
compilation cache keeps the reruns fast); a child's output is read by threads, so no read of it
blocks without a timeout.

Kill during an asynchronous save: the child is the real entry point with one test-only patch,
installed by `_KILL_AT_COMMIT` below (nothing in lazy_jax): orbax's atomic-rename commit of the
chosen step SIGKILLs the process after every file of that checkpoint is written, before the
rename that would make it complete; the checkpoint stays a temporary directory. A full disk is
the same kind of patch (`_DISK_FULL_AT_SAVE`): orbax's array writer raises ENOSPC for the
chosen step, in its background save thread as a real full disk would.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lazy_jax.workdir import DROPPED_METRICS, UNREADABLE_CHECKPOINTS_DIR, read_metrics, read_rows

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds; a hang fails the test instead of blocking the suite

# Steps 1..8, train rows every step, eval at 4 and 8, checkpoints at 3, 6 and 8.
STEPS = dict(total_steps=8, log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=3)

_KILL_AT_COMMIT = """
import os, runpy, signal
from orbax.checkpoint._src.path import atomicity
_finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self):
    if self._final_path.name == os.environ['KILL_AT_COMMIT_OF_STEP']:
        os.kill(os.getpid(), signal.SIGKILL)
    return await _finalize(self)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
runpy.run_module('lazy_jax.main', run_name='__main__', alter_sys=True)
"""

_DISK_FULL_AT_SAVE = """
import errno, json, os, runpy
from orbax.checkpoint._src.serialization import serialization
_write = serialization.async_serialize_from_host
async def write(rslices, spec, **kwargs):
    if '/' + os.environ['DISK_FULL_AT_SAVE_OF_STEP'] + '.orbax-checkpoint-tmp' in json.dumps(spec):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await _write(rslices, spec, **kwargs)
serialization.async_serialize_from_host = write
runpy.run_module('lazy_jax.main', run_name='__main__', alter_sys=True)
"""

# Every checkpoint save prints SAVING and then hangs, so a test can signal a run that is saving.
_HANG_IN_SAVE = """
import runpy, sys, time
from lazy_jax import checkpoint
def save(self, *args, **kwargs):
    print('SAVING', flush=True)
    time.sleep(600)
checkpoint.Checkpointer.save = save
runpy.run_module('lazy_jax.main', run_name='__main__', alter_sys=True)
"""


@pytest.fixture(scope="module")
def env(digits_dir, tmp_path_factory):
    """Prepared digits and a shared compilation cache for the child processes."""
    root = tmp_path_factory.mktemp("faults")
    e = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_collective_call_terminate_timeout_seconds=900",
        JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONUNBUFFERED="1",
    )
    return {"data_dir": digits_dir, "environ": e}


def main_argv(env, workdir, **overrides):
    cfg = dict(batch_size=16, eval_batch_size=64, async_checkpointing=True, **STEPS)
    cfg.update(overrides)
    return [
        "--config=configs/vit.py:local,dataset=digits,variant=Mu/4",
        f"--workdir={workdir}",
        f"--config.data.data_dir={env['data_dir']}",
        "--config.mesh.data=1",
    ] + [f"--config.{k}={v}" for k, v in cfg.items()]


def run_main(env, workdir, *, python_code=None, extra_env=None, extra_args=(), **overrides):
    head = ["-c", python_code] if python_code else ["-m", "lazy_jax.main"]
    return subprocess.run(
        [sys.executable, *head, *main_argv(env, workdir, **overrides), *extra_args],
        cwd=REPO,
        env={**env["environ"], **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


class Child:
    """A running `lazy_jax.main`; threads read its stdout and stderr, so every wait has a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.pid = proc, proc.pid
        self.out, self.err, self.lines = [], [], queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self.out, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.err, None), daemon=True),
        ]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, sink, lines):
        for line in stream:
            sink.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)  # end of output

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def poll(self):
        return self.proc.poll()

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)

    def wait_for_line(self, prefix, timeout=TIMEOUT):
        """Waits until the child prints a line starting with `prefix`; kills it and fails if it does not."""
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.time(), 0.01))
            except queue.Empty:
                line = None
            if line is not None and line.startswith(prefix):
                return
            if line is None:
                self.kill()
                raise AssertionError(
                    f"no line starting with {prefix!r}; stdout: {''.join(self.out)}; stderr: {''.join(self.err)}"
                )

    def finish(self, timeout=TIMEOUT):
        """(returncode, stdout, stderr) once the child exits; kills it and fails after `timeout` s."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout} s; stderr: {''.join(self.err)}") from None
        for t in self.readers:
            t.join(timeout=TIMEOUT)
        return self.proc.returncode, "".join(self.out), "".join(self.err)


def start_main(env, workdir, *, python_code=None, **overrides) -> Child:
    head = ["-c", python_code] if python_code else ["-m", "lazy_jax.main"]
    return Child(
        subprocess.Popen(
            [sys.executable, *head, *main_argv(env, workdir, **overrides)],
            cwd=REPO,
            env=env["environ"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def complete_steps(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def assert_same_rows(reference, resumed):
    keys = [(r["step"], r["split"]) for r in resumed]
    assert len(keys) == len(set(keys)), f"duplicated (step, split) rows: {keys}"
    assert keys == [(r["step"], r["split"]) for r in reference]
    for a, b in zip(reference, resumed):
        for k in a:
            if k not in ("split", "steps_per_sec"):
                np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=f"{k} at step {a['step']}")


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """An uninterrupted run: its rows are what every interrupted-and-resumed run must end with."""
    workdir = tmp_path_factory.mktemp("reference")
    out = run_main(env, workdir)
    assert out.returncode == 0, out.stderr
    assert complete_steps(workdir) == [3, 6, 8]
    return workdir


def test_sigkill_during_training_resumes_from_last_complete_checkpoint(env, reference, tmp_path):
    proc = start_main(env, tmp_path)
    proc.wait_for_line("step 5/")  # not later: the run must still be short of its last step when killed
    proc.send_signal(signal.SIGKILL)
    proc.finish()
    # Saves are asynchronous: on a busy machine the save of step 3 may still be in flight.
    restored = max(complete_steps(tmp_path), default=0)
    assert restored in (0, 3)
    assert [r["step"] for r in read_metrics(tmp_path) if r["split"] == "train"][-1] >= 5  # rows past it exist
    out = run_main(env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert (f"resuming at step {restored} of 8" if restored else "starting at step 0 of 8") in out.stdout
    assert_same_rows(read_metrics(reference), read_metrics(tmp_path))
    dropped = read_rows(tmp_path / DROPPED_METRICS)
    assert dropped and all(r["step"] > restored for r in dropped)


def test_sigkill_during_async_checkpoint_save(env, reference, tmp_path):
    out = run_main(env, tmp_path, python_code=_KILL_AT_COMMIT, extra_env={"KILL_AT_COMMIT_OF_STEP": "6"})
    assert out.returncode == -signal.SIGKILL, out.stderr
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert complete_steps(tmp_path) == [3]
    assert any(n.startswith("6.orbax-checkpoint-tmp") for n in names), names  # the save was cut off
    assert {r["step"] for r in read_metrics(tmp_path)} >= {6}  # rows of steps 4..6 were written before the kill
    out = run_main(env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "resuming at step 3 of 8" in out.stdout
    assert complete_steps(tmp_path) == [3, 6, 8]
    assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]  # cleaned up
    assert_same_rows(read_metrics(reference), read_metrics(tmp_path))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(env, tmp_path):
    """lr 1e38 after a warm-up step at lr 0: the update of step 2 blows the weights up; loss is NaN at 3."""
    out = run_main(
        env,
        tmp_path,
        checkpoint_every_steps=1,
        log_every_steps=5,
        **{"optimizer.schedule": "warmup_cosine", "optimizer.learning_rate": 1e38, "optimizer.warmup_steps": 2},
    )
    assert out.returncode == 2, out.stderr
    assert "error: loss is nan at step 3" in out.stderr
    assert "Traceback" not in out.stderr
    assert complete_steps(tmp_path) == [1, 2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]  # pending save committed
    # The kept checkpoint restores. (Its weights are finite, but they are the ones that gave the NaN
    # loss of step 3: a checkpoint's weights are only tried by the step after it.)
    state, meta = restore_latest(env, tmp_path)
    assert meta["step"] == 2 and int(state.step) == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def restore_latest(env, workdir):
    """The newest checkpoint of `workdir`, restored in this process as the CLI would restore it."""
    from lazy_jax import input_pipeline
    from lazy_jax.checkpoint import Checkpointer, param_shapes
    from lazy_jax.config_base import load_config
    from lazy_jax.train import Experiment

    c = load_config("configs/vit.py:local,dataset=digits,variant=Mu/4")
    c.data.data_dir = env["data_dir"]
    c.mesh.data = 1
    exp = Experiment(c, input_pipeline.data_spec(c), devices=jax.devices()[:1])
    ckpt = Checkpointer(Path(workdir) / "checkpoints")
    try:
        return ckpt.restore_latest(exp.abstract_state, param_shapes(exp.abstract_state.params))
    finally:
        ckpt.close()


def test_nonfinite_parameters_are_never_saved(env, tmp_path, monkeypatch):
    """An update that overflows the weights while its step's loss and gradients are finite (what
    a learning rate past float32's range does) stops the run before that state is saved."""
    import jax.numpy as jnp

    from lazy_jax.config_base import load_config
    from lazy_jax.run import NonFiniteError, train_and_evaluate
    from lazy_jax.train import Experiment

    real_init = Experiment.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        step = self.train_step

        def overflowing_step(state, batch):
            state, metrics = step(state, batch)
            if int(state.step) == 2:
                state = state.replace(params=jax.tree.map(lambda p: p * jnp.inf, state.params))
            return state, metrics

        self.train_step = overflowing_step

    monkeypatch.setattr(Experiment, "__init__", init)
    c = load_config("configs/vit.py:local,dataset=digits,variant=Mu/4")
    c.data.data_dir = env["data_dir"]
    c.update(
        batch_size=16,
        eval_batch_size=64,
        total_steps=4,
        log_every_steps=10,
        eval_every_steps=10,
        checkpoint_every_steps=1,
        async_checkpointing=True,
    )
    c.model.scan_layers = True  # a faster compile
    with pytest.raises(NonFiniteError, match=r"parameters after step 2 are not finite"):
        train_and_evaluate(c, tmp_path)
    assert complete_steps(tmp_path) == [1]


def test_corrupted_latest_checkpoint_falls_back_to_the_previous(env, reference, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    newest = workdir / "checkpoints" / "8"
    files = sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0)
    assert files
    for p in files:  # truncate everything: array data, metadata, the JSON sidecar
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    out = run_main(env, workdir, total_steps=10)
    assert out.returncode == 0, out.stderr
    assert f"{newest}" in out.stderr and "trying the previous one" in out.stderr
    assert "resuming at step 6 of 10" in out.stdout
    moved = workdir / UNREADABLE_CHECKPOINTS_DIR / "8"
    assert f"moved the unreadable checkpoint {newest} to {moved}" in out.stderr
    assert moved.is_dir() and sorted(p.name for p in moved.iterdir())  # kept, not deleted
    assert complete_steps(workdir) == [6, 9, 10]  # saving at 9 and 10 went on past the moved step
    keys = [(r["step"], r["split"]) for r in read_metrics(workdir)]
    assert len(keys) == len(set(keys))
    assert [k for k in keys if k[0] <= 8] == [(r["step"], r["split"]) for r in read_metrics(reference)]


@pytest.fixture(scope="module")
def running(env, tmp_path_factory):
    """A long run, past its first step, shared by the busy-workdir and SIGTERM tests."""
    workdir = tmp_path_factory.mktemp("running")
    # Far more steps than the tests take (~60 steps/s here): it must still be running when signalled.
    never = 10**7
    proc = start_main(env, workdir, total_steps=never, checkpoint_every_steps=never, eval_every_steps=never)
    proc.wait_for_line("step 2/")
    yield proc, workdir
    if proc.poll() is None:
        proc.kill()


def test_second_run_on_the_same_workdir_refuses(env, running):
    first, workdir = running
    second = run_main(env, workdir)
    assert second.returncode == 2
    assert f"workdir {workdir} is in use by another run (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None  # the first run was not disturbed


def assert_stopped_with_a_checkpoint(proc, workdir, signum):
    returncode, stdout, stderr = proc.finish()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(rf"received signal {signum}: saved a checkpoint at step (\d+); exiting", last)
    assert match, stdout
    assert complete_steps(workdir) == [int(match[1])]
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def test_sigterm_saves_a_checkpoint_and_exits_zero(running):
    proc, workdir = running
    proc.send_signal(signal.SIGTERM)
    assert_stopped_with_a_checkpoint(proc, workdir, signal.SIGTERM)


def test_ctrl_c_saves_a_checkpoint_and_exits_zero(env, tmp_path):
    never = 10**7
    proc = start_main(env, tmp_path, total_steps=never, checkpoint_every_steps=never, eval_every_steps=never)
    proc.wait_for_line("step 2/")
    proc.send_signal(signal.SIGINT)
    assert_stopped_with_a_checkpoint(proc, tmp_path, signal.SIGINT)


def test_second_ctrl_c_exits_at_once(env, tmp_path):
    """The first Ctrl-C starts the checkpoint save (here one that would hang for minutes); the
    second ends the process at once."""
    never = 10**7
    proc = start_main(
        env,
        tmp_path,
        python_code=_HANG_IN_SAVE,
        total_steps=never,
        checkpoint_every_steps=never,
        eval_every_steps=never,
    )
    proc.wait_for_line("step 2/")
    proc.send_signal(signal.SIGINT)
    proc.wait_for_line("SAVING")  # the first Ctrl-C was taken as a stop with a checkpoint
    proc.send_signal(signal.SIGINT)
    returncode, _, stderr = proc.finish(timeout=30)  # the hung save would never end on its own
    assert returncode == -signal.SIGINT, stderr
    assert "Traceback" not in stderr


def test_sigterm_during_a_long_eval_stops_between_eval_batches(digits_dir, tmp_path, monkeypatch):
    """SIGTERM while the eval of step 3 runs: the eval stops before its next batch (it does not run
    to its end), logs no eval row, and the run saves a checkpoint at step 3 and returns. The rerun
    does that eval first, so metrics.jsonl ends up as an uninterrupted run's."""
    from lazy_jax import input_pipeline
    from lazy_jax.config_base import load_config
    from lazy_jax.run import train_and_evaluate

    def config():
        c = load_config("configs/vit.py:test")
        c.data.data_dir = digits_dir
        c.eval_batch_size = 16  # more eval batches
        return c

    train_and_evaluate(config(), tmp_path / "full")
    real, calls = input_pipeline.eval_batches, []

    def long_eval(config, *args):
        calls.append(0)
        for i, batch in enumerate(real(config, *args)):
            if len(calls) == 2:  # the eval of step 3 (step 1 has the first)
                if i == 1:
                    signal.pthread_kill(
                        threading.main_thread().ident, signal.SIGTERM
                    )  # to the main thread, never an XLA thread
                assert i < 3, "the eval went on after SIGTERM"
            yield batch

    monkeypatch.setattr(input_pipeline, "eval_batches", long_eval)
    out = train_and_evaluate(config(), tmp_path / "resumed")
    assert out["preempted_at"] == 3
    rows = read_metrics(tmp_path / "resumed")
    assert (3, "eval") not in [(r["step"], r["split"]) for r in rows]  # a cut-off eval is no metric
    assert complete_steps(tmp_path / "resumed") == [3]
    monkeypatch.setattr(input_pipeline, "eval_batches", real)
    train_and_evaluate(config(), tmp_path / "resumed")
    assert_same_rows(read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed"))


def test_disk_full_during_an_async_save_is_one_error_line_at_the_next_step(env, tmp_path):
    """ENOSPC while the asynchronous save of step 60 writes its arrays (checkpoints every 30 steps):
    the run stops at the first step after the background save failed, with one line, long before
    the next save (90) would have noticed; the temporary directory goes, the checkpoint of step 30
    stays. (The failure reaches the main thread when orbax's background thread gets to run: with
    saves 10 steps apart, a loaded 2-core machine once let the run reach the next save first.)"""
    out = run_main(
        env,
        tmp_path,
        python_code=_DISK_FULL_AT_SAVE,
        extra_env={"DISK_FULL_AT_SAVE_OF_STEP": "60"},
        total_steps=150,
        checkpoint_every_steps=30,
        eval_every_steps=300,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: saving the checkpoint of step 60 failed: [Errno 28] No space left on device"), last
    assert len(out.stderr.strip().splitlines()) < 10, out.stderr  # no pages of orbax tracebacks
    assert complete_steps(tmp_path) == [30]
    assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    last_step = max(r["step"] for r in read_metrics(tmp_path))
    assert last_step < 90, f"reported at step {last_step}, not before the next save (90)"
    meta = json.loads((tmp_path / "checkpoints" / "30" / "meta" / "metadata").read_text())
    assert meta["step"] == 30  # the kept checkpoint is whole


def test_unreadable_checkpoints_refuse_until_start_afresh(env, reference, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    for step in (3, 6, 8):
        meta = workdir / "checkpoints" / str(step) / "meta" / "metadata"
        meta.write_text(meta.read_text()[:10])
    out = run_main(env, workdir)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: none of the checkpoints in {workdir / 'checkpoints'} can be restored"), last
    assert "--start_afresh" in last
    assert complete_steps(workdir) == [3, 6, 8]
    out = run_main(env, workdir, extra_args=["--start_afresh"])
    assert out.returncode == 0, out.stderr
    assert "starting at step 0 of 8" in out.stdout
    (aside,) = (workdir / "set_aside").iterdir()
    assert sorted(p.name for p in (aside / "checkpoints").iterdir()) == ["3", "6", "8"]
    assert_same_rows(read_metrics(reference), read_metrics(workdir))


# digits stand in for a dataset the infinite source cannot deform: one pass over the split
_ONE_PASS = """
import runpy
from lazy_jax.data import vision
vision.INFINITE_SOURCE_DATASETS = frozenset()
runpy.run_module('lazy_jax.main', run_name='__main__', alter_sys=True)
"""


def test_infinite_data_that_runs_out_is_refused_before_training(env, tmp_path):
    out = run_main(env, tmp_path, python_code=_ONE_PASS, total_steps=1000, **{"data.infinite": True})  # 16000 > 1437
    assert out.returncode == 2, out.stderr
    assert "infinite data" in out.stderr and "some example would be seen twice" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("split", ["data.eval_split=test[:0]", "data.train_split=train[5:5]"])
def test_empty_split_is_a_clear_error(env, tmp_path, split):
    key, value = split.split("=")
    out = run_main(env, tmp_path, **{key: value})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert value in out.stderr and "empty" in out.stderr, out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
