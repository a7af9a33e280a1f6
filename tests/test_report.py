"""Tests of lazy_jax.report and the workdir files it reads: metrics.jsonl, config.json, stats/*.npz;
the first/last table, the figures' data, report/ files, CLI."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazy_jax import report, report_figures
from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.metrics_writer import MetricsWriter
from lazy_jax.workdir import read_metrics, stats_path

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
    # What lazy_jax.run writes for this config.
    (workdir / "config.json").write_text(load_config("configs/vit.py:local,topk=64").to_json_best_effort(indent=2))

    stats_dir = workdir / "stats"
    stats_dir.mkdir()
    for step in (10, 30):
        np.savez(stats_dir / f"eval_{step:08d}.npz", **stats_arrays(seed=step))
    return workdir


def stats_arrays(seed: int, d_ff: int = 64, bins: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for stack in STACKS:
        for layer in range(NUM_LAYERS):
            freq = rng.uniform(0, 0.3 / (layer + 1), d_ff)
            freq[: 8 * layer] = 0.0  # 0, 8, 16 dead neurons -> 0.00%, 12.50%, 25.00%
            hist = np.zeros(bins)
            hist[layer : layer + 3] = [0.5, 0.3, 0.2]
            arrays[f"neuron_freq/{stack}/layer_{layer:02d}"] = freq
            arrays[f"count_hist/{stack}/layer_{layer:02d}"] = hist
    return arrays


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_fake_workdir(tmp_path)


def test_read_metrics_skips_blank_and_truncated_lines(workdir, caplog):
    with caplog.at_level(logging.WARNING):
        rows = read_metrics(workdir)
    assert len(rows) == 5 + 2  # 5 train rows (one stale) + 2 eval rows; not the truncated one
    assert [r["split"] for r in rows].count("eval") == 2
    assert "skipped 1 malformed line(s): 9" in caplog.text  # line 8 is blank: not malformed


def test_split_rows_last_write_of_a_step_wins(workdir):
    train = report.split_rows(read_metrics(workdir), "train")
    assert [r["step"] for r in train] == list(TRAIN_STEPS)
    assert train[2]["loss"] == pytest.approx(5.0 / 21)


def test_first_last_table_order_and_values(workdir):
    rows = read_metrics(workdir)
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
    text = report.format_first_last(read_metrics(workdir))
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

    assert "**model**: vit Mu/7, **dataset**: mnist5k, **topk**: 64, **steps**: 1200, **batch_size**: 64" in md
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


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "configs/vit.py:local",
            {
                "model": "vit Mu/7",
                "dataset": "mnist5k",
                "topk": 0,
                "steps": 1200,
                "batch_size": 64,
                "learning_rate": 2e-3,
            },
        ),
        ("configs/t5.py:local,topk=16", {"model": "t5 custom", "dataset": "pydocs", "topk": 16, "steps": 500}),
        ("configs/mlp.py:local", {"model": "mlp", "dataset": "mnist5k", "batch_size": 128}),
    ],
)
def test_config_summary_reads_the_config_json_lazy_jax_writes(spec, expected):
    summary = report.config_summary(json.loads(load_config(spec).to_json_best_effort()))
    assert summary == {**summary, **expected}
    assert list(summary) == ["model", "dataset", "topk", "steps", "batch_size", "optimizer", "learning_rate"]
    assert summary["optimizer"] == "adamw"


def test_config_summary_leaves_out_what_a_config_lacks():
    assert report.config_summary({"model": {"name": "vit"}, "total_steps": 5}) == {"model": "vit", "steps": 5}
    assert report.config_summary({"seed": 0}) == {}


def test_truncated_stats_file_is_skipped_with_a_warning(workdir, caplog):
    latest = workdir / "stats" / "eval_00000030.npz"
    latest.write_bytes(latest.read_bytes()[:100])  # a run killed mid-write
    with caplog.at_level(logging.WARNING):
        md = report.write_report(workdir).read_text()
    assert f"skipping unreadable stats file {latest}" in caplog.text
    # The split's previous stats file stands in for it.
    assert "eval, step 10, from stats/eval_00000010.npz" in md
    assert (workdir / "report" / "neuron_usage_eval.png").is_file()

    (workdir / "stats" / "eval_00000010.npz").write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        md = report.write_report(workdir).read_text()
    assert "eval_00000010.npz" in caplog.text and "Neuron usage" not in md


def test_stats_file_is_written_atomically(tmp_path, monkeypatch):
    """A write cut off midway leaves no file under the stats name for the report to trip over."""
    writer = MetricsWriter(tmp_path)
    path = stats_path(tmp_path, "eval", 3)

    def killed_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed_savez)
    with pytest.raises(KeyboardInterrupt):
        writer.write(3, "eval", {"loss": 1.0, "neuron_freq/encoder/layer_00": np.ones(4)})
    assert not path.exists()
    monkeypatch.undo()
    writer.write(3, "eval", {"loss": 1.0, "neuron_freq/encoder/layer_00": np.ones(4)})
    writer.close()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    np.testing.assert_array_equal(report.load_stats(path)["neuron_freq/encoder/layer_00"], np.ones(4))


def line_data(ax) -> dict[str, tuple[list, list]]:
    """{legend label: (x, y)} of the lines drawn on `ax`."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_nonzero_frac_figure_plots_each_layer_in_percent(workdir):
    rows = report.split_rows(read_metrics(workdir), "train")
    fig = report_figures.nonzero_frac_figure(rows, "train")
    axes = [ax for ax in fig.axes if ax.get_title()]  # not the colour bars
    assert [ax.get_title() for ax in axes] == ["decoder", "encoder"]
    for ax, stack in zip(axes, ["decoder", "encoder"]):
        lines = line_data(ax)
        assert list(lines) == ["layer 00", "layer 01", "layer 02", "mean"]
        for layer in range(NUM_LAYERS):
            steps, values = lines[f"layer {layer:02d}"]
            assert steps == list(TRAIN_STEPS)
            np.testing.assert_allclose(values, [100 * frac(stack, layer, s) for s in TRAIN_STEPS])
        mean = [100 * np.mean([frac(stack, layer, s) for layer in range(NUM_LAYERS)]) for s in TRAIN_STEPS]
        np.testing.assert_allclose(lines["mean"][1], mean)
        assert ax.get_yscale() == "log"
    assert report_figures.nonzero_frac_figure([{"step": 0, "split": "train", "loss": 1.0}], "train") is None


def test_loss_figure_plots_loss_and_accuracy_per_split(workdir):
    rows = read_metrics(workdir)
    fig = report_figures.loss_figure({s: report.split_rows(rows, s) for s in ("train", "eval")})
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_title(), acc_ax.get_title()) == ("loss", "accuracy")
    loss = line_data(loss_ax)
    assert loss["train"][0] == list(TRAIN_STEPS) and loss["eval"][0] == list(EVAL_STEPS)
    np.testing.assert_allclose(loss["train"][1], [5.0 / (1 + s) for s in TRAIN_STEPS])  # not the stale 99.0
    np.testing.assert_allclose(line_data(acc_ax)["eval"][1], [100 * (0.1 + s / 100) for s in EVAL_STEPS])
    assert report_figures.loss_figure({"train": [{"step": 0, "split": "train"}]}) is None


def test_neuron_usage_figure_plots_histograms_and_sorted_frequencies():
    stats = stats_arrays(seed=0)
    fig = report_figures.neuron_usage_figure(stats, "eval", 30)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "decoder: per-token nonzero count",
        "decoder: per-neuron activation frequency",
        "encoder: per-token nonzero count",
        "encoder: per-neuron activation frequency",
    ]
    hist_ax, freq_ax = axes[2], axes[3]
    for layer, patch in enumerate(hist_ax.patches):
        values, edges, _ = patch.get_data()
        np.testing.assert_allclose(values, 100 * stats[f"count_hist/encoder/layer_{layer:02d}"])
        np.testing.assert_allclose(edges, np.linspace(0, 100, 17))
    assert hist_ax.get_xlim() == pytest.approx((0, 1.1 * 100 * 5 / 16))  # zoomed to the used bins
    for layer in range(NUM_LAYERS):
        rank, freq = line_data(freq_ax)[f"layer {layer:02d}"]
        np.testing.assert_allclose(freq, 100 * np.sort(stats[f"neuron_freq/encoder/layer_{layer:02d}"])[::-1])
        np.testing.assert_allclose(rank, 100 * (np.arange(64) + 0.5) / 64)
    assert report_figures.neuron_usage_figure({"other": np.ones(3)}, "eval", 30) is None


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


# ----------------------------------------------------------------------------- docs/figures, redrawn from docs/results

RESULTS = REPO_ROOT / "docs" / "results"
FIGURES = REPO_ROOT / "docs" / "figures"
MEASURE_FILES = {"report.md", "nonzero.png", "neuron_freq.png", "count_hist.png", "union.png"}
COMPARE_FILES = {"compare.md", "nonzero_frac.png", "final_nonzero_frac.png", "final_per_layer.png"}


def test_the_docs_link_figures_that_are_committed():
    """Every link of README.md and docs/results.md into docs/figures/ or docs/results/ names a committed file."""
    for doc in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "results.md"):
        links = re.findall(r"\]\(((?:docs/)?(?:figures|results)/[^)\s#]+)\)", doc.read_text())
        assert links or doc.name == "README.md"
        for link in links:
            assert (doc.parent / link).is_file(), f"{doc.name} links {link}, which does not exist"


def test_docs_figures_hold_one_redrawn_copy_for_every_results_directory():
    for d in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        expected = MEASURE_FILES if (d / "measure.json").is_file() else COMPARE_FILES
        assert {p.name for p in (FIGURES / d.name).iterdir()} == expected, d.name
        assert not (d / "compare").exists() and not list(d.glob("*.png")), f"{d.name}: figures belong in docs/figures"


def test_redraw_writes_what_docs_figures_hold(tmp_path):
    """`redraw` (python -m lazy_jax.report --redraw=docs/results --out_dir=docs/figures) on a copy of two results
    directories, a sweep and a measure output, writes what docs/figures holds for them; the Markdown alike to the
    byte (its links back to the metrics are relative)."""
    from lazy_jax import compare

    results, out = tmp_path / "results", tmp_path / "figures"
    for name in ("t5_depth_adafactor", "measure_default"):  # T5's two stacks; sweep.json's command-line overrides
        shutil.copytree(RESULTS / name, results / name)
    (results / "notes").mkdir()  # neither a sweep nor a measure output: skipped
    written = compare.redraw(results, out)
    assert written == [out / "measure_default" / "report.md", out / "t5_depth_adafactor" / "compare.md"]
    for name, files in (("t5_depth_adafactor", COMPARE_FILES), ("measure_default", MEASURE_FILES)):
        assert {p.name for p in (out / name).iterdir()} == files
        for file in files:
            if file.endswith(".md"):
                assert (out / name / file).read_text() == (FIGURES / name / file).read_text(), file
            else:
                assert (out / name / file).read_bytes().startswith(PNG_MAGIC), file
    md = (out / "t5_depth_adafactor" / "compare.md").read_text()
    assert f"{compare.EXTRA_NOTE}: `optimizer.name='adafactor', optimizer.schedule='t5_rsqrt'," in md
    assert "Runs (metrics, configs): [../../results/t5_depth_adafactor](../../results/t5_depth_adafactor)" in md
    with pytest.raises(InputError, match="holds no sweep directory and no measure output"):
        compare.redraw(results / "notes", out)

    done = run_cli(f"--redraw={results}")
    assert done.returncode != 0 and "--redraw needs --out_dir" in done.stderr


def test_import_defines_no_flags():
    """The trainer defines its own --workdir and imports this module."""
    code = "import lazy_jax.report; from absl import flags; flags.DEFINE_string('workdir', None, ''); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_splits_with_a_slash_keep_flat_stats_files_and_stay_out_of_the_first_last_table(tmp_path):
    writer = MetricsWriter(tmp_path)
    metrics = {k: v for k, v in metric_row(6, "eval").items() if k not in ("step", "split")}
    writer.write(6, "eval", {**metrics, "calibration/count": np.arange(15.0)})
    split = "eval_corrupt/gaussian_noise/s3"
    writer.write(6, split, {**metrics, "accuracy": 0.25, "calibration/count": np.ones(15)})
    writer.write(6, "eval_corrupt/gaussian_noise/mean", {"accuracy": 0.3, "ece": 0.125, "nonzero_frac/mean": 0.5})
    writer.close()
    assert stats_path(tmp_path, split, 6).parent == tmp_path / "stats"
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [
        "eval_00000006.npz",
        "eval_corrupt+gaussian_noise+s3_00000006.npz",
    ]
    stats = report.latest_stats(tmp_path)
    np.testing.assert_array_equal(stats[split][2]["calibration/count"], np.ones(15))
    rows = read_metrics(tmp_path)
    assert list(report.corruption_results(rows)) == ["gaussian_noise"]
    assert list(report.corruption_results(rows)["gaussian_noise"]) == ["s3", "mean"]
    assert "eval_corrupt" not in report.format_first_last(rows)
    md = report.write_report(tmp_path).read_text()
    assert "| gaussian_noise | 3 | 25.00% | - |" in md and "| gaussian_noise | mean | 30.00% | 0.1250 | 50.00% |" in md
    assert not list((tmp_path / "report").glob("*corrupt*"))


def test_reliability_figure_needs_the_calibration_vectors():
    assert report_figures.reliability_figure({"neuron_freq/encoder/layer_00": np.ones(4)}, "eval", 1) is None
