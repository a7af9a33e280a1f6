"""Bad input gets a clear error naming the value and what is allowed, before any work is done."""

import subprocess
import sys

import pytest

from lazy_jax.config_base import load_config
from lazy_jax.run import train_and_evaluate
from tests.test_train import tiny_config


def run_main(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "lazy_jax.main", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_unknown_config_key_is_refused_by_name(tmp_path):
    out = run_main("--config=configs/vit.py:local", f"--workdir={tmp_path}", "--config.model.not_a_key=3")
    assert out.returncode != 0
    assert "not_a_key" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_config_argument():
    with pytest.raises(
        ValueError, match=r"'colour' is unknown; allowed: \['dataset', 'local', 'test', 'topk', 'variant'\]"
    ):
        load_config("configs/vit.py:colour=red")


def test_unknown_dataset(digits_dir, tmp_path):
    c = tiny_config(digits_dir)
    c.data.name = "no_such_dataset"
    with pytest.raises(ValueError, match="no_such_dataset"):
        train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("k", [-1, 513])
def test_topk_out_of_range(digits_dir, tmp_path, k):
    c = tiny_config(digits_dir)
    c.model.topk = k
    with pytest.raises(ValueError, match=rf"k={k} is not allowed.*d_ff=512"):
        train_and_evaluate(c, tmp_path)


def test_unknown_topk_impl(digits_dir, tmp_path):
    c = tiny_config(digits_dir)
    c.model.update(topk=8, topk_impl="sort")
    with pytest.raises(
        ValueError,
        match=r"topk_impl='sort' is unknown; allowed: \['auto', 'bisect', 'lax', 'pallas', 'radix'\]",
    ):
        train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_mesh_that_does_not_match_devices(digits_dir, tmp_path):
    c = tiny_config(digits_dir)
    c.mesh.update(data=3, fsdp=1, model=1)
    with pytest.raises(ValueError, match=r"needs 3 devices but 8 are present"):
        train_and_evaluate(c, tmp_path)


def test_batch_not_divisible_by_data_parallel_size(digits_dir, tmp_path):
    c = tiny_config(digits_dir, batch_size=12)
    c.mesh.update(data=8, fsdp=1, model=1)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"batch_size=12 must be a positive multiple of the data-parallel size 8"):
        train_and_evaluate(c, workdir)
    assert not workdir.exists(), "refused before the workdir is made (no .lock left behind)"


def test_checkpoint_of_another_model_shape(digits_dir, tmp_path):
    train_and_evaluate(tiny_config(digits_dir, total_steps=3), tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    other = tiny_config(digits_dir)
    other.model.variant = "Mu/2"  # more patches: another position-embedding shape
    with pytest.raises(ValueError, match=r"belongs to a model of another shape.*pos_embedding"):
        train_and_evaluate(other, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_before


def test_main_prints_a_clean_error(tmp_path, digits_dir):
    workdir = tmp_path / "run"
    out = run_main(
        "--config=configs/vit.py:test",
        f"--workdir={workdir}",
        f"--config.data.data_dir={digits_dir}",
        "--config.model.topk=100000",
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: model.topk=100000 is not allowed")
    assert "Traceback" not in out.stderr
    assert not workdir.exists(), "a bad model value is refused before the workdir is made"


@pytest.mark.parametrize(
    "arg, message",
    [
        (
            "local=on",
            r"config argument local='on' is not allowed: use one of \['0', '1', 'false', 'no', 'true', 'yes'\]",
        ),
        ("local=ture", r"local='ture' is not allowed"),
        ("topk=abc", r"config argument topk='abc' is not allowed: use an integer"),
    ],
)
def test_config_argument_values_are_checked(arg, message):
    """A typo in a boolean argument must not silently select the full-size config."""
    with pytest.raises(ValueError, match=message):
        load_config(f"configs/vit.py:{arg}")
    assert load_config("configs/vit.py:local=false").model.variant == "B/16"  # the words that parse still do
    assert load_config("configs/vit.py:local=yes").model.variant == "Mu/7"


@pytest.mark.parametrize("error, one_line", [("input", True), ("other", False)])
def test_only_input_errors_become_one_line_messages(tmp_path, monkeypatch, capsys, error, one_line):
    """An InputError prints as `error: ...` (exit 2); any other ValueError, e.g. a shape error
    while tracing, keeps its traceback (it propagates)."""
    from lazy_jax import main as main_lib
    from lazy_jax import run
    from lazy_jax.errors import InputError

    def fail(config, workdir):
        raise (InputError if error == "input" else ValueError)("bad thing 123")

    monkeypatch.setattr(run, "train_and_evaluate", fail)
    main_lib.FLAGS(["main", "--config=configs/vit.py:test", f"--workdir={tmp_path}"])
    try:
        if one_line:
            with pytest.raises(SystemExit) as exit_info:
                main_lib.main(["main"])
            assert exit_info.value.code == 2
            assert capsys.readouterr().err == "error: bad thing 123\n"
        else:
            with pytest.raises(ValueError, match="bad thing 123"):
                main_lib.main(["main"])
    finally:
        main_lib.FLAGS.unparse_flags()
