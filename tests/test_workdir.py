"""Workdirs and data dirs that cannot be used are refused with one line naming the path.

An empty --workdir=, a workdir that is a file or lies under one, a read-only one, and the same
for the data dir (config.data.data_dir): each is an InputError raised before the run writes
anything. `~` is expanded; a local workdir keeps its flock lock.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from lazy_jax import workdir as wd
from lazy_jax.config_base import load_config
from lazy_jax.data import sources
from lazy_jax.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir):
    c = load_config(os.path.join(ROOT, "configs", "vit.py") + ":test")
    c.data.data_dir = data_dir
    return c


def test_empty_workdir_is_refused_before_anything_is_written(digits_dir, tmp_path, monkeypatch):
    from lazy_jax.run import train_and_evaluate

    with pytest.raises(InputError, match=r"^--workdir='' is empty: give a local directory"):
        wd.workdir_path("")
    with pytest.raises(InputError, match=r"^--workdir='  ' is empty"):
        wd.workdir_path("  ")
    # pathlib made "" the current directory: the run would have filled it with its files.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"--workdir='' is empty"):
        train_and_evaluate(tiny_config(digits_dir), "")
    assert os.listdir(tmp_path) == []


def test_empty_workdir_on_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lazy_jax.main", "--config=configs/vit.py:test", "--workdir="],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --workdir='' is empty"), proc.stderr[-3000:]


def test_workdir_tilde_is_expanded_and_uris_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert os.fspath(wd.workdir_path("~/runs/vit")) == str(tmp_path / "runs" / "vit")
    assert os.fspath(wd.workdir_path("runs/vit")) == "runs/vit"  # relative stays relative
    assert os.fspath(wd.workdir_path("gs://b/runs/vit")) == "gs://b/runs/vit"
    with pytest.raises(InputError, match=r"--workdir='gs:/b/vit' is not a location .* gs://BUCKET/PATH"):
        wd.workdir_path("gs:/b/vit")  # one slash: would be a local directory named gs:
    with pytest.raises(InputError, match=r"--workdir='s3://b/vit' is not a location .*'s3' URIs are not supported"):
        wd.workdir_path("s3://b/vit")
    with pytest.raises(InputError, match=r"--workdir='gs:///vit' names no bucket"):
        wd.workdir_path("gs:///vit")
    monkeypatch.setenv("TFDS_DATA_DIR", "s3://b/tfds")
    with pytest.raises(InputError, match=r"\$TFDS_DATA_DIR='s3://b/tfds' is not a location"):
        sources.resolve_data_dir(None)
    monkeypatch.setenv("TFDS_DATA_DIR", "~/tfds")
    assert sources.resolve_data_dir(None) == str(tmp_path / "tfds")


def test_workdir_that_is_a_file_or_under_a_file_is_refused(digits_dir, tmp_path):
    from lazy_jax.run import train_and_evaluate

    file = tmp_path / "notes.txt"
    file.write_text("not a directory")
    with pytest.raises(InputError, match=f"^--workdir {file} is an existing file, not a directory"):
        train_and_evaluate(tiny_config(digits_dir), file)
    with pytest.raises(InputError, match=f"^--workdir {file}/run cannot be created: {file} is a file, not a directory"):
        train_and_evaluate(tiny_config(digits_dir), file / "run")
    with pytest.raises(InputError, match=f"{file}/a/b cannot be created: {file} is a file"):
        wd.checked_workdir(file / "a" / "b")
    assert file.read_text() == "not a directory" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_data_dir_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    from lazy_jax.run import train_and_evaluate

    file = tmp_path / "tfds"
    file.write_text("not a directory")
    with pytest.raises(InputError, match=f"^data dir {file} is an existing file, not a directory"):
        sources.dataset_dir("digits", str(file))
    with pytest.raises(InputError, match=f"^data dir {file}/tfds cannot be created: {file} is a file"):
        sources.dataset_dir("digits", str(file / "tfds"))
    # Through the trainer: refused with the data checks, before the workdir is touched.
    with pytest.raises(InputError, match=f"data dir {file} is an existing file"):
        train_and_evaluate(tiny_config(str(file)), tmp_path / "run")
    assert sorted(os.listdir(tmp_path)) == ["tfds"]


# Run in a child process: as root, it drops its effective uid to nobody after its imports, since
# root may write into a 0o555 directory (os.access says so too: there would be nothing to refuse).
_READ_ONLY_CHECKS = """
import json, os, sys
from lazy_jax import workdir as wd
from lazy_jax.data import sources
from lazy_jax.errors import InputError

empty, prepared = sys.argv[1:]
if os.geteuid() == 0:
    try:
        os.setegid(65534)
        os.seteuid(65534)
    except OSError as e:
        print(json.dumps({"skip": f"running as root, and cannot drop to uid 65534 to see a read-only directory ({e})"}))
        sys.exit(0)
out = {}
for name, check in [
    ("workdir", lambda: wd.checked_workdir(empty)),
    ("new workdir", lambda: wd.checked_workdir(os.path.join(empty, "run"))),
    ("data dir", lambda: sources.dataset_dir("digits", empty)),
    ("prepared data dir", lambda: sources.dataset_dir("digits", prepared)),
]:
    try:
        out[name] = ("ok", os.fspath(check()))
    except InputError as e:
        out[name] = ("InputError", str(e))
print(json.dumps(out))
"""


def test_read_only_workdir_and_data_dir_are_refused(digits_dir):
    empty = tempfile.mkdtemp(prefix="lazy_jax_read_only_")
    prepared = tempfile.mkdtemp(prefix="lazy_jax_read_only_tfds_")
    shutil.copytree(os.path.join(digits_dir, "digits"), os.path.join(prepared, "digits"), dirs_exist_ok=True)
    dirs = [empty, *(os.path.join(root, d) for root, ds, _ in os.walk(prepared) for d in ds), prepared]
    try:
        for d in dirs:
            os.chmod(d, 0o555)
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHECKS, empty, prepared],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if "skip" in out:
            pytest.skip(out["skip"])
        assert out["workdir"] == [
            "InputError",
            f"--workdir {empty} is read-only for this user: give a directory it can write to",
        ]
        assert out["new workdir"][1].startswith(f"--workdir {empty}/run cannot be created: {empty} is read-only")
        # digits is not prepared there, and preparing it would write into the data dir.
        assert out["data dir"][0] == "InputError"
        assert out["data dir"][1].startswith(f"data dir {empty} is read-only for this user"), out
        # Reading needs no write permission: a prepared dataset on a read-only data dir is found.
        assert out["prepared data dir"] == ["ok", os.path.join(prepared, "digits", "1.0.0")], out
    finally:
        for d in dirs:
            os.chmod(d, 0o755)
        shutil.rmtree(empty)
        shutil.rmtree(prepared)


def test_local_workdir_keeps_its_flock_lock(tmp_path):
    from lazy_jax.run import WorkdirInUseError, WorkdirLock

    with WorkdirLock(tmp_path / "run") as held:
        assert held.object_lock is None
        assert (tmp_path / "run" / wd.LOCK).read_text().startswith(f"pid {os.getpid()} since ")
        with pytest.raises(
            WorkdirInUseError, match=rf"workdir {tmp_path}/run is in use by another run \(pid {os.getpid()} "
        ):
            with WorkdirLock(tmp_path / "run"):
                pass
    with WorkdirLock(tmp_path / "run"):  # released
        pass
