"""Shared by the ViT and T5 trainer tests: a run preempted by SIGTERM and resumed must write
the same metrics rows as an uninterrupted run."""

import signal
import threading

import numpy as np

from lazy_jax import input_pipeline
from lazy_jax.run import train_and_evaluate
from lazy_jax.workdir import CHECKPOINTS_DIR
from lazy_jax.workdir import read_metrics as read_rows  # test_train.py imports it under this name


def assert_preempt_and_resume_matches(make_config, tmp_path, monkeypatch, stop_step=4):
    """SIGTERM while step `stop_step`'s batch is fetched saves a checkpoint after that step and
    returns; the rerun continues from there (the newest checkpoint, not an older one, which would
    replay to the same rows). Rows must equal the uninterrupted run's."""
    train_and_evaluate(make_config(), tmp_path / "full")
    real = input_pipeline.train_batches

    def preempted_batches(config, start_step, *args):
        for step, batch in enumerate(real(config, start_step, *args), start_step + 1):
            if step == stop_step:
                signal.pthread_kill(
                    threading.main_thread().ident, signal.SIGTERM
                )  # to the main thread, never an XLA thread
            yield batch

    monkeypatch.setattr(input_pipeline, "train_batches", preempted_batches)
    out = train_and_evaluate(make_config(), tmp_path / "resumed")
    assert out["preempted_at"] == stop_step
    saved = sorted(int(p.name) for p in (tmp_path / "resumed" / CHECKPOINTS_DIR).iterdir() if p.name.isdigit())
    assert saved[-1] == stop_step and len(saved) > 1, saved  # an older checkpoint the rerun must not take

    starts = []  # the step each run's training data starts at: the restored step

    def recorded_batches(config, start_step, *args):
        starts.append(start_step)
        return real(config, start_step, *args)

    monkeypatch.setattr(input_pipeline, "train_batches", recorded_batches)
    train_and_evaluate(make_config(), tmp_path / "resumed")
    assert starts == [saved[-1]], f"resumed at step {starts}, the newest checkpoint is step {saved[-1]} of {saved}"
    monkeypatch.setattr(input_pipeline, "train_batches", real)
    a, b = read_rows(tmp_path / "full"), read_rows(tmp_path / "resumed")
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            if k not in ("steps_per_sec", "split"):
                np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, err_msg=f"{k} at step {ra['step']}")
    return a
