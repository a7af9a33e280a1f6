"""Resuming a workdir: what a checkpoint may be continued with, what happens to unreadable ones,
the config of every restart, and the data stream of infinite-data runs. In-process on
configs/vit.py:test (ViT-Mu/4 on digits, 6 steps, checkpoints at 3 and 6)."""

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from lazy_jax import report
from lazy_jax import workdir as wd
from lazy_jax.checkpoint import ModelMismatchError
from lazy_jax.config_base import load_config
from lazy_jax.data import vision
from lazy_jax.errors import InputError
from lazy_jax.run import train_and_evaluate


def tiny_config(data_dir, **overrides):
    """configs/vit.py:test reading from `data_dir`; overrides as dotted keys."""
    c = load_config("configs/vit.py:test")
    c.data.data_dir = data_dir
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def complete_steps(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / wd.CHECKPOINTS_DIR).iterdir() if p.name.isdigit())


def snapshot(workdir):
    """Every file of the workdir but the lock, with its size and modification time."""
    root = Path(workdir)
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != wd.LOCK
    }


def keys(workdir):
    return [(r["step"], r["split"]) for r in wd.read_metrics(workdir)]


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    """A finished 6-step AdamW run (checkpoints 3 and 6); tests work on copies of it."""
    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(tiny_config(digits_dir), workdir)
    assert complete_steps(workdir) == [3, 6]
    return workdir


@pytest.fixture
def copy_of(trained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir)
    return workdir


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def largest_array_file(checkpoint: Path) -> Path:
    files = [p for p in (checkpoint / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


# -- 1a: another optimizer state --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, named",
    [
        ({"optimizer.name": "adafactor"}, r"has adamw's \(count, mu, nu\), the config builds adafactor's \(count, v,"),
        ({"optimizer.grad_clip_norm": 0.0}, r"grad_clip_norm: checkpoint 1\.0 vs config 0\.0"),
    ],
)
def test_resume_with_another_optimizer_state_is_refused_and_touches_nothing(digits_dir, copy_of, override, named):
    before, metrics = snapshot(copy_of), (copy_of / wd.METRICS).read_text()
    with pytest.raises(ModelMismatchError) as info:
        train_and_evaluate(tiny_config(digits_dir, total_steps=9, **override), copy_of)
    message = str(info.value)
    assert f"{copy_of / wd.CHECKPOINTS_DIR}/6" in message
    assert "optimizer state" in message and "opt_state/" in message  # the first differing paths
    assert "only in the checkpoint" in message and "only in the config's state" in message
    assert re.search(named, message), message
    assert isinstance(info.value, InputError)
    assert snapshot(copy_of) == before  # nothing moved, deleted or rewritten
    assert (copy_of / wd.METRICS).read_text() == metrics
    assert not (copy_of / wd.DROPPED_METRICS).exists()


# -- 1b: an unreadable newest checkpoint ----------------------------------------------------------


@pytest.mark.parametrize("broken", ["array file", "meta/metadata"])
def test_unreadable_newest_checkpoint_is_moved_aside_and_training_goes_on(digits_dir, copy_of, broken, capsys, caplog):
    newest = copy_of / wd.CHECKPOINTS_DIR / "6"
    truncate(largest_array_file(newest) if broken == "array file" else newest / "meta" / "metadata")
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny_config(digits_dir, total_steps=9), copy_of)
    assert "resuming at step 3 of 9" in capsys.readouterr().out
    moved = copy_of / wd.UNREADABLE_CHECKPOINTS_DIR / "6"
    assert moved.is_dir()  # kept for inspection, out of orbax's view
    assert any(str(newest) in r.getMessage() and str(moved) in r.getMessage() for r in caplog.records)
    assert complete_steps(copy_of) == [3, 6, 9]  # step 6 trained and saved again
    assert len(keys(copy_of)) == len(set(keys(copy_of)))
    # And the next run resumes from the new newest checkpoint, as every later one will.
    train_and_evaluate(tiny_config(digits_dir, total_steps=12), copy_of)
    assert "resuming at step 9 of 12" in capsys.readouterr().out
    assert complete_steps(copy_of) == [6, 9, 12]
    assert moved.is_dir()


# -- 1c: checkpoints exist but none restores ------------------------------------------------------


def test_no_readable_checkpoint_is_refused_until_start_afresh(digits_dir, copy_of, capsys):
    for step in (3, 6):
        truncate(largest_array_file(copy_of / wd.CHECKPOINTS_DIR / str(step)))
    before, metrics = snapshot(copy_of), (copy_of / wd.METRICS).read_text()
    with pytest.raises(InputError, match=r"none of the checkpoints in .* can be restored.*--start_afresh") as info:
        train_and_evaluate(tiny_config(digits_dir), copy_of)
    assert str(copy_of / wd.CHECKPOINTS_DIR) in str(info.value)
    assert snapshot(copy_of) == before  # nothing moved or deleted

    train_and_evaluate(tiny_config(digits_dir), copy_of, start_afresh=True)
    assert "starting at step 0 of 6" in capsys.readouterr().out
    (aside,) = (copy_of / wd.SET_ASIDE_DIR).iterdir()
    assert sorted(int(p.name) for p in (aside / wd.CHECKPOINTS_DIR).iterdir()) == [3, 6]
    assert (aside / wd.METRICS).read_text() == metrics
    assert complete_steps(copy_of) == [3, 6]
    assert keys(copy_of)[0] == (1, "train") and len(keys(copy_of)) == len(set(keys(copy_of)))


# -- 2: the config of every (re)start ------------------------------------------------------------


def test_config_of_every_restart_is_kept_and_reported(digits_dir, tmp_path):
    train_and_evaluate(tiny_config(digits_dir, total_steps=3), tmp_path)
    train_and_evaluate(tiny_config(digits_dir, total_steps=6, **{"optimizer.learning_rate": 1e-3}), tmp_path)
    latest = json.loads((tmp_path / wd.CONFIG).read_text())
    assert latest["optimizer"]["learning_rate"] == 1e-3 and latest["total_steps"] == 6  # describes the run now
    history = [json.loads(line) for line in (tmp_path / wd.CONFIG_HISTORY).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 3]
    assert [h["config"]["optimizer"]["learning_rate"] for h in history] == [3e-3, 1e-3]
    md = report.write_report(tmp_path).read_text()
    assert "**learning_rate**: 0.001" in md  # the summary is of the latest start
    line = next(x for x in md.splitlines() if x.startswith("- restart at step 3:"))
    assert "`optimizer.learning_rate` 0.003 -> 0.001" in line and "`total_steps` 3 -> 6" in line


# -- 3: infinite data ------------------------------------------------------------------------------


def test_infinite_data_resume_with_another_batch_size_is_refused(digits_dir, tmp_path, monkeypatch):
    # One pass over the split, as for a dataset the infinite source cannot deform (digits stand in for
    # one; the source itself never repeats a draw, tests/test_infinite.py).
    monkeypatch.setattr(vision, "INFINITE_SOURCE_DATASETS", frozenset())
    train_and_evaluate(tiny_config(digits_dir, total_steps=3, **{"data.infinite": True}), tmp_path)
    before = snapshot(tmp_path)
    other = tiny_config(digits_dir, total_steps=6, batch_size=32, **{"data.infinite": True})
    with pytest.raises(InputError, match=r"batch_size=16, and this config has batch_size=32"):
        train_and_evaluate(other, tmp_path)
    # Another order of the stream would see examples again too.
    for key, value, named in [
        ("seed", 1, r"seed=0, and this config has seed=1"),
        ("data.shuffle_seed", 2, r"data\.shuffle_seed=0, and this config has data\.shuffle_seed=2"),
    ]:
        with pytest.raises(InputError, match=named):
            train_and_evaluate(tiny_config(digits_dir, total_steps=6, **{"data.infinite": True, key: value}), tmp_path)
    assert snapshot(tmp_path) == before
    meta = json.loads((tmp_path / wd.CHECKPOINTS_DIR / "3" / "meta" / "metadata").read_text())
    assert (meta["batch_size"], meta["seed"], meta["shuffle_seed"]) == (16, 0, 0)
    # The same stream resumes.
    train_and_evaluate(tiny_config(digits_dir, total_steps=6, **{"data.infinite": True}), tmp_path)
    assert complete_steps(tmp_path) == [3, 6]
