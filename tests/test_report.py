"""Tests of lazy_jax.report: reading metrics.jsonl, the first/last table, report/ files, CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazy_jax import report

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STACKS = ("encoder", "decoder")
NUM_LAYERS = 3
TRAIN_STEPS = (0, 10, 20, 30)
EVAL_STEPS = (0, 30)


def frac(stack: str, layer: int, step: int) -> float:
    """Dense at step 0 (50% / (layer+1), decoder x0.8), 16x sparser at the last step."""
    base = 0.5 / (layer + 1) * (0.8 if stack == "decoder" else 1.0)
    return base / (1 + step / 2)


def metric_row(step: int, split: str) -> dict:
    row = {"step": step, "split": split, "loss": 5.0 / (1 + step), "accuracy": 0.1 + step / 100}
    if split == "train":
        row.update(learning_rate=1e-3, steps_per_sec=12.5)
    per_stack = []
    for stack in STACKS:
        fracs = [frac(stack, layer, step) for layer in range(NUM_LAYERS)]
        row.update({f"nonzero_frac/{stack}/layer_{layer:02d}": f for layer, f in enumerate(fracs)})
        row[f"nonzero_frac/{stack}/mean"] = float(np.mean(fracs))
        per_stack += fracs
    row["nonzero_frac/mean"] = float(np.mean(per_stack))
    return row


def write_fake_workdir(workdir: Path) -> Path:
    """metrics.jsonl with train/eval rows, a resumed run's re-logged step, a blank and a
    truncated last line; config.json; two stats files (the later one must be used)."""
    lines = [json.dumps(metric_row(s, "train")) for s in TRAIN_STEPS[:3]]
    stale = metric_row(20, "train")
    stale["loss"] = 99.0  # written before a restart; the re-logged row below wins
    lines.insert(2, json.dumps(stale))
    lines += [json.dumps(metric_row(s, "eval")) for s in EVAL_STEPS]
    lines += [json.dumps(metric_row(TRAIN_STEPS[-1], "train")), ""]
    lines.append(json.dumps(metric_row(40, "train"))[:57])  # killed mid-write
    (workdir / "metrics.jsonl").write_text("\n".join(lines))
    config = {
        "model": {"name": "t5", "variant": "small", "topk": 64},
        "dataset": {"name": "c4"},
        "num_train_steps": 30,
        "seed": 0,
    }
    (workdir / "config.json").write_text(json.dumps(config))

    stats_dir = workdir / "stats"
    stats_dir.mkdir()
    rng = np.random.default_rng(0)
    d_ff, bins = 64, 16
    for step in (10, 30):
        arrays = {}
        for stack in STACKS:
            for layer in range(NUM_LAYERS):
                freq = rng.uniform(0, 0.3 / (layer + 1), d_ff)
                freq[: 8 * layer] = 0.0  # 0, 8, 16 dead neurons -> 0.00%, 12.50%, 25.00%
                hist = np.zeros(bins)
                hist[layer : layer + 3] = [0.5, 0.3, 0.2]
                arrays[f"neuron_freq/{stack}/layer_{layer:02d}"] = freq
                arrays[f"count_hist/{stack}/layer_{layer:02d}"] = hist
        np.savez(stats_dir / f"eval_{step:08d}.npz", **arrays)
    return workdir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_fake_workdir(tmp_path)


def test_read_metrics_skips_blank_and_truncated_lines(workdir, caplog):
    with caplog.at_level(logging.WARNING):
        rows = report.read_metrics(workdir)
    assert len(rows) == 4 + 2 + 1  # 5 train rows (one stale) + 2 eval rows; not the truncated one
    assert [r["split"] for r in rows].count("eval") == 2
    assert "skipped 1 malformed line(s): 9"  # line 8 is blank in caplog.text


def test_split_rows_last_write_of_a_step_wins(workdir):
    train = report.split_rows(report.read_metrics(workdir), "train")
    assert [r["step"] for r in train] == list(TRAIN_STEPS)
    assert train[2]["loss"] == pytest.approx(5.0 / 21)


def test_first_last_table_order_and_values(workdir):
    rows = report.read_metrics(workdir)
    table = report.first_last_table(rows, "train")
    expected_names = (
        [f"nonzero_frac/decoder/layer_{layer:02d}" for layer in range(NUM_LAYERS)]
        + [f"nonzero_frac/encoder/layer_{layer:02d}" for layer in range(NUM_LAYERS)]
        + ["nonzero_frac/decoder/mean", "nonzero_frac/encoder/mean", "nonzero_frac/mean"]
    )
    assert [name for name, _, _ in table] == expected_names
    by_name = {name: (first, last) for name, first, last in table}
    assert by_name["nonzero_frac/encoder/layer_00"] == pytest.approx((0.5, 0.5 / 16))
    assert by_name["nonzero_frac/decoder/layer_02"] == pytest.approx((0.4 / 3, 0.4 / 3 / 16))
    assert report.first_last_table(rows, "test") == []


def test_metric_sort_key_sorts_layers_numerically():
    names = [
        "nonzero_frac/mean",
        "nonzero_frac/a/layer_100",
        "nonzero_frac/a/mean",
        "nonzero_frac/a/layer_11",
        "nonzero_frac/a/layer_02",
    ]
    assert sorted(names, key=report.metric_sort_key) == [
        "nonzero_frac/a/layer_02",
        "nonzero_frac/a/layer_11",
        "nonzero_frac/a/layer_100",
        "nonzero_frac/a/mean",
        "nonzero_frac/mean",
    ]


def test_format_first_last(workdir):
    text = report.format_first_last(report.read_metrics(workdir))
    lines = text.splitlines()
    assert "train (step 0 -> 30)" in lines[0] and "eval (step 0 -> 30)" in lines[0]
    enc0 = next(line for line in lines if line.startswith("encoder/layer_00"))
    assert enc0.count("50.00% ->   3.12%") == 2  # train and eval
    assert lines[-1].startswith("mean")


def test_write_report(workdir):
    path = report.write_report(workdir)
    assert path == workdir / "report" / "report.md"
    md = path.read_text()

    for png in ("loss.png", "nonzero_frac_train.png", "nonzero_frac_eval.png", "neuron_usage_eval.png"):
        data = (workdir / "report" / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, png
        assert f"]({png})" in md  # linked relative to report.md
    assert not (workdir / "report" / "neuron_usage_train.png").exists()  # no train stats

    assert "**model**: t5 small" in md and "**dataset**: c4" in md
    assert "**topk**: 64" in md and "**steps**: 30" in md
    # Final metrics: the re-logged step-20 row does not leak its stale loss.
    assert f"| train | 30 | {5 / 31:.4f} | 40.00% |" in md
    assert "99.0000" not in md
    # First/last table: headers with steps, rows sorted by stack then layer, means last.
    assert "train first (step 0) | train last (step 30) | eval first (step 0) | eval last (step 30)" in md
    assert "| encoder | 00 | 50.00% | 3.12% | 50.00% | 3.12% |" in md
    assert f"| decoder | 01 | 20.00% | {100 * 0.2 / 16:.2f}% |" in md
    order = [
        md.index(f"| {s} | {layer} |")
        for s, layer in [
            ("decoder", "00"),
            ("decoder", "01"),
            ("decoder", "02"),
            ("encoder", "00"),
            ("encoder", "02"),
            ("decoder", "mean"),
            ("encoder", "mean"),
            ("all", "mean"),
        ]
    ]
    assert order == sorted(order)
    # Neuron usage comes from the last stats file, with its dead-neuron shares.
    assert "eval, step 30, from stats/eval_00000030.npz" in md
    assert "| encoder | 02 | 64 | 25.00% |" in md


def test_write_report_without_config_or_stats(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(metric_row(0, "train")) + "\n")
    md = report.write_report(tmp_path).read_text()
    assert "No config.json" in md and "neuron_usage" not in md
    assert (tmp_path / "report" / "nonzero_frac_train.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "report" / "nonzero_frac_eval.png").exists()


def test_missing_or_empty_metrics_raise(tmp_path):
    with pytest.raises(ValueError, match=f"no metrics file at {tmp_path / 'metrics.jsonl'}"):
        report.write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('\n{"step": 1\n')
    with pytest.raises(ValueError, match="holds no metric rows"):
        report.write_report(tmp_path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lazy_jax.report", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    (workdir / "metrics.jsonl").write_text(json.dumps(metric_row(0, "train")) + "\n")
    done = run_cli(f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(workdir / "report" / "report.md")
    assert (workdir / "report" / "report.md").is_file()

    empty = tmp_path_factory.mktemp("empty")
    failed = run_cli(f"--workdir={empty}")
    assert failed.returncode != 0
    assert str(empty / "metrics.jsonl") in failed.stderr


def test_import_defines_no_flags():
    """The trainer defines its own --workdir and imports this module."""
    code = "import lazy_jax.report; from absl import flags; flags.DEFINE_string('workdir', None, ''); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
