"""Two CPU processes on localhost (jax.distributed, gloo collectives) train the tiny ViT as one
run and match a single-process run of the same global batch.

Each process has 2 local CPU devices (a 4-device global mesh) and gets the contiguous block p of
every global batch. Both share one workdir, as hosts share a file system: only process 0 writes
metrics and holds the workdir lock; every process writes its part of each orbax checkpoint.
The multi-process run stops at step 4 and a second multi-process launch resumes it to step 6 from
that shared checkpoint. (The learning-rate schedule is constant, so the total step count does not
change the updates.)
"""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lazy_jax.workdir import read_metrics

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def free_port() -> int:
    try:
        import portpicker

        return portpicker.pick_unused_port()
    except ImportError:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


@pytest.fixture(scope="module")
def env(digits_dir, tmp_path_factory):
    """digits prepared before the processes start (they must not race to prepare it)."""
    root = tmp_path_factory.mktemp("multihost")
    e = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=900",
        JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )
    return {"data_dir": digits_dir, "environ": e}


def argv(env, workdir, total_steps):
    return [
        "-m",
        "lazy_jax.main",
        "--config=configs/vit.py:local,dataset=digits,variant=Mu/4",
        f"--workdir={workdir}",
        f"--config.data.data_dir={env['data_dir']}",
        "--config.mesh.data=-1",
        "--config.batch_size=16",
        "--config.eval_batch_size=64",
        f"--config.total_steps={total_steps}",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=2",
        "--config.checkpoint_every_steps=2",
        "--config.optimizer.schedule=constant",
        "--config.async_checkpointing=True",
    ]


def run_cluster(env, workdir, total_steps, num_processes):
    """Starts `num_processes` processes of one run; returns their (returncode, stdout, stderr)."""
    port = free_port()
    procs = []
    for i in range(num_processes):
        cluster = (
            [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}", f"--process_id={i}"]
            if num_processes > 1
            else []
        )
        local_devices = 4 // num_processes  # 4 devices in all, like the 2 x 2 cluster
        e = dict(
            env["environ"],
            XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices} --xla_cpu_collective_call_terminate_timeout_seconds=900",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv(env, workdir, total_steps), *cluster],
                cwd=REPO,
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (rc, out, err) in enumerate(outs):
        assert rc == 0, f"process {i} exited {rc}:\n{out}\n{err[-4000:]}"
    return outs


def wait_for_output(proc, text, timeout=TIMEOUT):
    """Reads proc's stdout lines until one contains `text`. A blocking readline has no timeout of
    its own, so a timer kills the child after `timeout` s; its stdout then ends and the test fails."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                return lines
    finally:
        timer.cancel()
    proc.wait(timeout=TIMEOUT)  # its stdout ended: it exited, or the timer killed it
    raise AssertionError(
        f"no {text!r} from the process (exit {proc.returncode}, after {timeout} s a kill): {''.join(lines)}"
    )


@pytest.fixture(scope="module")
def single(env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single")
    run_cluster(env, workdir, total_steps=6, num_processes=1)
    return read_metrics(workdir)


def test_two_processes_match_one_and_resume_from_a_shared_checkpoint(env, single, tmp_path):
    outs = run_cluster(env, tmp_path, total_steps=4, num_processes=2)
    assert "starting at step 0 of 4" in outs[0][1] and "mesh {'data': 4" in outs[0][1]
    assert "step 1/4" not in outs[1][1]  # only process 0 reports and writes metrics
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4"]

    outs = run_cluster(env, tmp_path, total_steps=6, num_processes=2)
    assert "resuming at step 4 of 6" in outs[0][1]
    assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4", "6"]

    multi = read_metrics(tmp_path)
    assert [(r["step"], r["split"]) for r in multi] == [(r["step"], r["split"]) for r in single]
    checked = 0
    for a, b in zip(single, multi):
        assert set(a) == set(b)
        for k in a:
            if k not in ("split", "steps_per_sec"):
                np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=f"{k} at step {a['step']}")
                checked += k.startswith(("loss", "nonzero_frac"))
    assert checked > 6 * 8  # loss and every layer's statistics, on train and eval rows


def test_sigterm_to_one_process_stops_both_at_the_same_step(env, tmp_path):
    """Preemption of one host: all processes agree on the stop step, save together and exit 0."""
    import signal

    port = free_port()
    procs = []
    for i in range(2):
        e = dict(
            env["environ"],
            XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=900",
            PYTHONUNBUFFERED="1",
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    *argv(env, tmp_path, 200),
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2",
                    f"--process_id={i}",
                ],
                cwd=REPO,
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        # Process 0 reports every step, and prints step 3 before the processes agree on stopping
        # at step 3, so the agreed step is 3 or later.
        wait_for_output(procs[0], "step 3/")
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[1][1][-3000:]
    assert "another process received a stop signal: saved a checkpoint at step" in outs[0][0]
    stopped = int(outs[0][0].split("saved a checkpoint at step ")[1].split(";")[0])
    assert 3 <= stopped < 200
    assert str(stopped) in {p.name for p in (tmp_path / "checkpoints").iterdir()}
