"""Bad inputs from a user trial that misbehaved (trained on nonsense, crashed deep inside a library,
or waited silently): each is refused with one clear line naming the value and what is allowed."""

import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import mixer as mixer_lib
from lazy_jax.models import mlp as mlp_lib
from lazy_jax.models import model_spec
from lazy_jax.models import vit as vit_lib
from lazy_jax.run import train_and_evaluate
from tests.test_train import tiny_config

REPO = Path(__file__).resolve().parents[1]


def run_module(module, *args, timeout=180, env=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def assert_one_line_error(out, *fragments):
    """Exit 2, no traceback, and the last stderr line `error: ...` holding every fragment."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


# -- 1: a patch that does not tile the image ------------------------------------------------------


def _vision_model(kind, variant):
    lib = vit_lib if kind == "vit" else mixer_lib
    return lib.default_model_config(variant)


@pytest.mark.parametrize("kind", ["vit", "mixer"])
@pytest.mark.parametrize(
    "variant, image_shape, problem",
    [
        ("Mu/16", (8, 8, 1), "larger than the image"),
        ("Mu/32", (28, 28, 1), "larger than the image"),
        ("Mu/16", (8, 32, 3), "larger than the image"),  # the shorter side counts
        ("Mu/3", (8, 8, 1), "not a divisor"),  # 2x2 patches, 2 rows and columns dropped
        ("Mu/7", (32, 32, 3), "not a divisor"),
    ],
)
def test_patch_that_does_not_tile_the_image_is_refused(kind, variant, image_shape, problem):
    with pytest.raises(InputError) as err:
        model_spec(_vision_model(kind, variant), num_classes=10, image_shape=image_shape)
    msg = str(err.value)
    assert f"model.variant={variant!r} has patch {variant.split('/')[1]}, {problem}" in msg
    assert f"images are {image_shape[0]}x{image_shape[1]}" in msg and "data.image_size" in msg


@pytest.mark.parametrize("kind", ["vit", "mixer"])
@pytest.mark.parametrize("variant, image_shape", [("Mu/8", (8, 8, 1)), ("Mu/4", (8, 8, 1)), ("B/16", (224, 224, 3))])
def test_patch_that_tiles_the_image_is_allowed(kind, variant, image_shape):
    spec = model_spec(_vision_model(kind, variant), num_classes=10, image_shape=image_shape)
    assert spec == model_spec(_vision_model(kind, variant), num_classes=10)  # the shape is checked, not kept


def test_data_spec_gives_the_image_shape_and_other_models_ignore_it():
    spec = DataSpec(example_batch={"image": np.zeros((1, 8, 8, 1), np.float32)}, num_classes=10)
    sizes = spec.model_sizes(vit_lib.default_model_config("Mu/4"))
    assert sizes == {"num_classes": 10, "image_shape": (8, 8, 1)}
    assert model_spec(mlp_lib.default_model_config(), **sizes).num_classes == 10  # the MLP takes no image shape
    with pytest.raises(InputError, match="patch 16, larger than the image"):
        model_spec(vit_lib.default_model_config("Mu/16"), **sizes)


def test_run_with_patch_larger_than_the_images_is_refused_before_the_workdir(digits_dir, tmp_path):
    c = tiny_config(digits_dir)
    c.model.variant = "Mu/16"  # digits are 8x8
    with pytest.raises(InputError, match=r"model.variant='Mu/16' has patch 16, larger than the image.* 8x8"):
        train_and_evaluate(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- 2: a missing or broken config file -----------------------------------------------------------

BROKEN_CONFIGS = {
    "syntax.py": ("def get_config(:\n    pass\n", "has a syntax error at line 1"),
    "raises.py": ("def get_config(arg=None):\n    raise RuntimeError('boom')\n", "raised RuntimeError: boom (line 2)"),
    "import_fails.py": ("import no_such_module_xyz\n", "failed to load: ModuleNotFoundError"),
    "no_get_config.py": ("X = 1\n", "defines no get_config() function"),
    "not_a_config.py": ("def get_config():\n    return 3\n", "returned int, not an ml_collections.ConfigDict"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGS))
def test_broken_config_file_is_one_input_error(tmp_path, name):
    from lazy_jax.config_checks import load_config_file

    text, problem = BROKEN_CONFIGS[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config_file(str(path))
    msg = str(err.value)
    assert msg.startswith(f"--config={path}") and problem in msg and "\n" not in msg


def test_missing_config_file_and_bad_argument_are_input_errors(tmp_path, monkeypatch):
    from lazy_jax.config_checks import load_config_file

    monkeypatch.chdir(REPO)
    with pytest.raises(
        InputError, match=r"'configs/nope.py' does not exist.*\['mixer.py', 'mlp.py', 't5.py', 'vit.py'\]"
    ):
        load_config_file("configs/nope.py")
    with pytest.raises(InputError, match="is a directory"):
        load_config_file(str(tmp_path))
    with pytest.raises(InputError, match=r"^--config=.*vit.py:colour=red: config argument 'colour' is unknown"):
        load_config_file(f"{REPO}/configs/vit.py:colour=red")
    config = load_config_file(f"{REPO}/configs/vit.py:test")  # a good one loads as ml_collections would
    assert config.model.variant == "Mu/4" and config.is_locked


@pytest.mark.parametrize(
    "config, fragment",
    [
        ("configs/nope.py", "--config=configs/nope.py: the config file 'configs/nope.py' does not exist"),
        ("BROKEN/syntax.py", "has a syntax error at line 1: "),
        ("BROKEN/raises.py", "get_config() of"),
        ("configs/vit.py:colour=red", "config argument 'colour' is unknown"),
    ],
)
def test_main_prints_a_broken_config_file_as_one_line(tmp_path, config, fragment):
    for name, (text, _) in BROKEN_CONFIGS.items():
        (tmp_path / name).write_text(text)
    out = run_module("lazy_jax.main", f"--config={config.replace('BROKEN', str(tmp_path))}", f"--workdir={tmp_path}/w")
    assert_one_line_error(out, fragment)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "w").exists()


def test_bench_prints_a_missing_config_file_as_one_line():
    out = run_module("lazy_jax.bench", "--config=configs/nope.py")
    assert_one_line_error(out, "--config=configs/nope.py: the config file 'configs/nope.py' does not exist")


# -- 3: an invalid MLP width is named, not reported as a Top-k error ------------------------------


@pytest.mark.parametrize("d_ff", [0, -4])
@pytest.mark.parametrize(
    "spec, key",
    [
        ("configs/vit.py:test", "d_ff"),
        ("configs/mixer.py:local", "tokens_mlp_dim"),
        ("configs/mixer.py:local", "channels_mlp_dim"),
        ("configs/mlp.py:local", "d_ff"),
        ("configs/t5.py:test", "d_ff"),
    ],
)
def test_invalid_mlp_width_names_the_width_not_topk(spec, key, d_ff):
    c = load_config(spec)
    c.model[key] = d_ff
    c.model.topk = 8
    with pytest.raises(InputError, match=rf"^model.{key}={d_ff} is not allowed: use a positive integer"):
        model_spec(c.model, num_classes=10, vocab_size=4224)


# -- 4: data.image_size ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -8])
def test_nonpositive_image_size_is_refused_by_name(digits_dir, tmp_path, size):
    from lazy_jax.data import vision

    c = tiny_config(digits_dir)
    c.data.image_size = size
    with pytest.raises(InputError, match=rf"^data.image_size={size} is not allowed: use a positive integer"):
        vision.dataset_spec(c.data)
    with pytest.raises(InputError, match=rf"data.image_size={size} is not allowed"):
        train_and_evaluate(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- 5: seeds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["seed", "data.shuffle_seed"])
@pytest.mark.parametrize("value", [-1, 2**32, 2**40, 2**64, True])
def test_seed_outside_32_bits_is_refused(digits_dir, key, value):
    from lazy_jax.config_checks import validate_config

    c = tiny_config(digits_dir)
    with c.unlocked():
        if key == "seed":
            c.seed = value
        else:
            c.data.shuffle_seed = value
    with pytest.raises(InputError, match=rf"^{key}={value!r} is not allowed: use an integer 0 <= .* < 2\*\*32"):
        validate_config(c)


def test_largest_seed_is_allowed(digits_dir):
    from lazy_jax.config_checks import validate_config

    c = tiny_config(digits_dir, seed=2**32 - 1)
    c.data.shuffle_seed = 2**32 - 1
    validate_config(c)


# -- 6: a truncated array_record file -------------------------------------------------------------


@pytest.fixture
def truncated_digits(digits_dir, tmp_path):
    """A copy of the prepared digits whose train file lost its second half (a copy cut short)."""
    data_dir = tmp_path / "tfds"
    shutil.copytree(Path(digits_dir) / "digits", data_dir / "digits")
    (train_file,) = (data_dir / "digits").glob("*/digits-train.array_record-*")
    os.truncate(train_file, train_file.stat().st_size // 2)
    return str(data_dir)


def test_truncated_array_record_names_dataset_split_and_how_to_prepare(truncated_digits, tmp_path):
    from lazy_jax.data import vision

    c = tiny_config(truncated_digits)
    with pytest.raises(InputError) as err:
        next(iter(vision.train_batches(c.data, global_batch_size=16, start_step=0)))
    msg = str(err.value)
    assert msg.startswith("Dataset 'digits' split 'train' cannot be read from")
    assert "truncated, corrupt or missing" in msg
    assert f"python -m lazy_jax.data.prepare --dataset=digits --data_dir={truncated_digits}" in msg
    assert os.path.join(truncated_digits, "digits", "1.0.0") in msg  # the directory to delete
    assert "\n" not in msg


def test_truncated_array_record_is_one_line_from_main(truncated_digits, tmp_path):
    out = run_module(
        "lazy_jax.main",
        "--config=configs/vit.py:test",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.data_dir={truncated_digits}",
    )
    assert_one_line_error(out, "Dataset 'digits' split 'train' cannot be read", "--dataset=digits")


# -- 7: metrics rows with a step that is no step --------------------------------------------------


def test_rows_with_non_integer_steps_are_skipped_with_a_warning(tmp_path, caplog):
    from lazy_jax import report
    from lazy_jax.workdir import read_metrics

    good = [{"step": s, "split": "train", "loss": 1.0 / s, "nonzero_frac/encoder/layer_00": 0.5} for s in (1, 2, 3)]
    bad = [
        {"step": "ten", "split": "train", "loss": 0.1},
        {"step": 3.5, "split": "train", "loss": 0.1},
        {"step": True, "split": "train", "loss": 0.1},
        {"step": -1, "split": "train", "loss": 0.1},
        {"step": 4, "split": 7, "loss": 0.1},
    ]
    lines = [json.dumps(good[0]), *map(json.dumps, bad), json.dumps(good[1]), json.dumps(good[2])]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        rows = read_metrics(tmp_path)
    assert rows == good
    for line_no, what in ((2, "step='ten'"), (3, "step=3.5"), (4, "step=True"), (5, "step=-1"), (6, "split=7")):
        assert f"line {line_no}: {what}" in caplog.text
    report.write_report(tmp_path)  # the report of such a file is written, not a crash


# -- 8: bench flags -------------------------------------------------------------------------------

BENCH_SMALL = ["--config=configs/vit.py:test", "--config.data.image_size=8", "--per_device_batch=1", "--steps=1"]


@pytest.mark.parametrize(
    "flag, fragment",
    [
        ("--meshes=0x1x1", "--meshes='0x1x1': mesh '0x1x1' is not allowed: use DATAxFSDPxMODEL with positive integers"),
        ("--meshes=abc", "--meshes='abc': mesh 'abc' is not allowed"),
        ("--meshes=-1x1x1", "--meshes='-1x1x1': mesh '-1x1x1' is not allowed"),
        ("--meshes=1x1x1,2x2", "mesh '2x2' is not allowed"),
        ("--meshes=4x4x1", "mesh '4x4x1' needs 16 devices but 8 are present"),
        ("--steps=0", "--steps=0 is not allowed: use a positive integer"),
        ("--per_device_batch=0", "--per_device_batch=0 is not allowed: use a positive integer"),
        ("--num_classes=-3", "--num_classes=-3 is not allowed: use a positive integer"),
        ("--json=/no/such/dir/out.json", "--json='/no/such/dir/out.json' is not allowed"),
        ("--attention=flash", "--attention='flash' is not allowed; allowed: ['auto', 'xla', 'cudnn']"),
        ("--relpos=table", "--relpos='table' is not allowed; allowed: ['onehot', 'gather']"),
        ("--peak_tflops=0", "--peak_tflops=0.0 is not allowed: use a positive number"),
        ("--attention=cudnn", "attention impl='cudnn' needs a CUDA GPU, but the backend is 'cpu'"),
        ("--peers --meshes=2x1x1", "--meshes='2x1x1' is not allowed with --peers: the peers run on one device"),
    ],
)
def test_bench_flags_are_refused_before_any_compile(flag, fragment):
    env = {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=900",
    }
    out = run_module("lazy_jax.bench", *BENCH_SMALL, *flag.split(), env=env)
    assert_one_line_error(out, fragment)
    assert "mesh" not in out.stdout  # no result table: nothing was measured


# -- 9: a multi-process run waiting for its coordinator -------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_waiting_for_the_coordinator_says_so_and_gives_up_with_one_line(tmp_path):
    port = _free_port()  # nobody listens there: no coordinator
    out = run_module(
        "lazy_jax.main",
        "--config=configs/vit.py:test",
        f"--workdir={tmp_path / 'run'}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--process_id=1",
        "--initialization_timeout=3",
        timeout=120,  # below jax's own 300 s default: only the 3 s timeout can end it in time
        env={"JAX_PLATFORMS": "cpu"},
    )
    lines = out.stderr.strip().splitlines()
    assert f"process 1 of 2: waiting up to 3 s for the coordinator at 127.0.0.1:{port}" in out.stderr
    assert_one_line_error(out, "process 1 of 2: no cluster within 3 s (--initialization_timeout)")
    assert "Check failure" not in out.stderr and "DEADLINE_EXCEEDED" not in out.stderr, lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"], "--process_id=2 is not allowed"),
        (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"], "use HOST:PORT"),
        (["--multihost", "--initialization_timeout=0"], "--initialization_timeout=0 is not allowed"),
    ],
)
def test_bad_cluster_flags_are_one_line(tmp_path, args, fragment):
    out = run_module("lazy_jax.main", "--config=configs/vit.py:test", f"--workdir={tmp_path / 'run'}", *args)
    assert_one_line_error(out, fragment)


# -- 10: temporary directories of killed preparations ---------------------------------------------


def _age(path: Path, seconds: float) -> None:
    """Sets the mtime of `path` and everything under it `seconds` back."""
    then = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (then, then), follow_symlinks=False)


def _abandoned(data_dir: Path, name: str, suffix: str, *, lock: bool, age: float) -> Path:
    d = data_dir / f".{name}-incomplete-{suffix}"
    (d / name / "1.0.0").mkdir(parents=True)
    (d / name / "1.0.0" / f"{name}-train.array_record-00000-of-00001").write_bytes(b"half")
    if lock:
        (d / ".preparing.lock").touch()
    _age(d, age)
    return d


def test_prepare_removes_the_directories_of_killed_preparations_only(tmp_path, caplog):
    from lazy_jax.data import offline

    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    killed = _abandoned(data_dir, "digits", "k1ll3d_", lock=True, age=60)  # lock file, nobody holds it
    old = _abandoned(data_dir, "digits", "0ld", lock=False, age=2 * offline.STALE_AFTER_S)  # before the lock
    live = _abandoned(data_dir, "digits", "l1ve", lock=True, age=60)
    fresh = _abandoned(data_dir, "digits", "fr3sh", lock=False, age=0)  # may be a preparer starting now
    other = _abandoned(data_dir, "mnist5k", "k1ll3d", lock=True, age=60)  # another dataset's
    not_ours = [data_dir / "digits-incomplete-x", data_dir / ".digits-incomplete-", data_dir / ".digits-incomplete-a.b"]
    for d in not_ours:
        d.mkdir()
        _age(d, 2 * offline.STALE_AFTER_S)
    (data_dir / ".digits-incomplete-file").write_text("a file, not a directory")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (data_dir / ".digits-incomplete-link").symlink_to(outside)
    holder = os.open(live / ".preparing.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live preparer's lock
    try:
        with caplog.at_level(logging.WARNING):
            assert offline.prepare("digits", str(data_dir))
    finally:
        os.close(holder)
    assert not killed.exists() and not old.exists()
    assert live.is_dir() and fresh.is_dir() and other.is_dir() and all(d.is_dir() for d in not_ours)
    assert (data_dir / ".digits-incomplete-file").is_file() and (outside / "keep").is_file()
    assert f"Removing {killed}" in caplog.text and f"Removing {old}" in caplog.text
    assert offline.is_prepared("digits", str(data_dir))
    # The new preparation left no temporary directory of its own.
    left = sorted(p.name for p in data_dir.iterdir() if p.name.startswith(".digits-incomplete-"))
    assert left == sorted(
        [
            live.name,
            fresh.name,
            ".digits-incomplete-",
            ".digits-incomplete-a.b",
            ".digits-incomplete-file",
            ".digits-incomplete-link",
        ]
    )


def test_prepare_pydocs_removes_a_killed_pydocs_preparation(tmp_path):
    """Even when pydocs is prepared already (the preparation is then skipped)."""
    from lazy_jax.data import text_corpus

    data_dir = tmp_path / "tfds"
    version = Path(text_corpus.version_dir("pydocs", str(data_dir)))
    version.mkdir(parents=True)
    for f in ("dataset_info.json", text_corpus.SPM_FILENAME):
        (version / f).write_text("{}")  # looks prepared: nothing is built
    killed = _abandoned(data_dir, "pydocs", "abc123", lock=True, age=60)
    kjv = _abandoned(data_dir, "pydocs_kjv", "abc123", lock=True, age=60)  # another name, left alone
    assert text_corpus.prepare_pydocs(str(data_dir)) is False
    assert not killed.exists() and kjv.is_dir()
