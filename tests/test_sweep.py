"""Tests of lazy_jax.sweep (a two-member sweep trained in-process), the sweep files, and lazy_jax.compare."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazy_jax import compare, flops, sweep
from lazy_jax.errors import InputError
from lazy_jax.models import model_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs" / "sweeps").glob("*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH_SWEEP = "configs/sweeps/vit_width.py:test"  # members dff64 and dff128: 32 wide, 2 layers
TINY = {"model.width": 32, "model.num_heads": 2, "model.depth": 2}


def get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def json_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl read with json alone (not lazy_jax's reader)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- the sweep files


def test_there_are_sweep_files_for_the_papers_figures():
    names = {Path(f).stem for f in SWEEP_FILES}
    assert {
        "vit_size",
        "vit_width",
        "vit_depth",
        "vit_data",
        "vit_topk",
        "vit_topk_robust",
        "t5_depth",
        "t5_width",
    } <= names


@pytest.mark.parametrize("arg", ["", ":full", ":test"])
@pytest.mark.parametrize("path", SWEEP_FILES)
def test_every_sweep_file_builds_its_member_configs(path, arg, monkeypatch):
    """Every member of every sweep file gets its overrides and a model spec that builds (no data, no training)."""
    monkeypatch.chdir(REPO_ROOT)
    s = sweep.load_sweep(path + arg)
    assert len(s.members) >= 2
    if arg == ":test":  # tiny members on the configs the tests use
        assert s.base in ("configs/vit.py:test", "configs/t5.py:test")
    configs = sweep.member_configs(s)
    assert list(configs) == list(s.members)
    for name, config in configs.items():
        for key, value in s.members[name].items():
            assert get(config, key) == value, (name, key)
        model_spec(config.model, num_classes=1000, vocab_size=32128)
    assert len({json.dumps(o, sort_keys=True) for o in s.members.values()}) == len(s.members)  # members differ


def test_sweep_files_say_how_to_run_them():
    for path in SWEEP_FILES:
        doc = (REPO_ROOT / path).read_text().split('"""')[1]
        assert f"python -m lazy_jax.sweep --sweep={path}" in doc, path
        assert "python -m lazy_jax.report --compare" in doc, path
        assert "Test (`:test`)" in doc, path


# ----------------------------------------------------------------------------- bad input


def write_sweep(tmp_path: Path, members: dict, base: str = "configs/vit.py:test") -> str:
    path = tmp_path / "my_sweep.py"
    path.write_text(f"def get_sweep(arg=None):\n    return {base!r}, {members!r}\n")
    return str(path)


@pytest.mark.parametrize(
    "members, extra, only, match",
    [
        (
            {"a": {"model.d_ff": 64}, "b": {"model.dff": 128}},
            {},
            None,
            r"member 'b' of .*my_sweep.py sets 'model.dff', which configs/vit.py:test does not have",
        ),
        ({"a": {"model.d_ff": 64}, "b": {"modle.d_ff": 1}}, {}, None, r"member 'b' .* sets 'modle.d_ff'"),
        ({"a": {"model.d_ff": "wide"}}, {}, None, r"member 'a' .* sets model.d_ff='wide', which .* refuses"),
        ({"a": {"model.d_ff": 0}, "b": {}}, {}, None, r"member 'a': model.d_ff=0 is not allowed"),
        (
            {"a": {"model.d_ff": 64}, "b": {}},
            {"model.d_ff": 32},
            None,
            r"--config.model.d_ff is not allowed: the members of .* vary it \(\{'a': 64, 'b': \"\(the base's\)\"\}\)",
        ),
        ({"a": {}}, {"model.nope": 1}, None, r"--config.model.nope sets 'model.nope'"),
        ({"a": {}, "b": {}}, {}, "c", r"--only='c' is not a member of .*; allowed: \['a', 'b'\]"),
        ({"compare": {}}, {}, None, r"member name 'compare' is not allowed"),
    ],
)
def test_bad_sweeps_are_refused_before_any_run(tmp_path, monkeypatch, digits_dir, members, extra, only, match):
    monkeypatch.chdir(REPO_ROOT)
    spec = write_sweep(tmp_path, members)
    trained = []
    workdir = tmp_path / "sweep"
    with pytest.raises(InputError, match=match):
        sweep.run_sweep(
            spec,
            workdir,
            only=only,
            extra={"data.data_dir": digits_dir, **extra},
            train=lambda c, w: trained.append(w),
        )
    assert not trained and not workdir.exists()


def test_extra_overrides_apply_to_every_member_after_its_own(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    # model.width=32 is set alike by both members; the extra wins. d_ff stays each member's.
    configs = sweep.member_configs(sweep.load_sweep(WIDTH_SWEEP), {"model.width": 64, "total_steps": 4})
    assert [(c.model.width, c.model.d_ff, c.total_steps) for c in configs.values()] == [(64, 64, 4), (64, 128, 4)]


def test_a_member_that_trained_keeps_its_overrides(tmp_path, monkeypatch, digits_dir):
    monkeypatch.chdir(REPO_ROOT)
    workdir = tmp_path / "sweep"
    trained = []
    fake_train = lambda config, run_dir: trained.append((run_dir.name, config.model.d_ff)) or {}
    extra = {"data.data_dir": digits_dir}
    sweep.run_sweep(write_sweep(tmp_path, {"a": {**TINY, "model.d_ff": 64}}), workdir, extra=extra, train=fake_train)
    (workdir / "a").mkdir()  # as a run leaves it
    record = (workdir / "sweep.json").read_text()
    with pytest.raises(InputError, match=r"member 'a' already trained in .* with \{.*'model.d_ff': 64\}"):
        sweep.run_sweep(
            write_sweep(tmp_path, {"a": {**TINY, "model.d_ff": 128}}), workdir, extra=extra, train=fake_train
        )
    assert (workdir / "sweep.json").read_text() == record
    # A new member may join; the one that trained is unchanged.
    sweep.run_sweep(
        write_sweep(tmp_path, {"a": {**TINY, "model.d_ff": 64}, "b": {**TINY, "model.d_ff": 32}}),
        workdir,
        extra=extra,
        train=fake_train,
    )
    assert trained == [("a", 64), ("a", 64), ("b", 32)]
    assert json.loads((workdir / "sweep.json").read_text())["members"]["b"] == {**TINY, "model.d_ff": 32}


def test_a_preempted_member_stops_the_sweep(tmp_path, monkeypatch, digits_dir):
    monkeypatch.chdir(REPO_ROOT)
    calls = []

    def preempted(config, run_dir):
        calls.append(run_dir.name)
        return {"train": None, "eval": None, "preempted_at": 3}

    status = sweep.run_sweep(WIDTH_SWEEP, tmp_path / "s", extra={"data.data_dir": digits_dir}, train=preempted)
    assert status == {"dff64": "preempted at step 3"} and calls == ["dff64"]


def test_a_run_is_finished_only_with_the_eval_row_of_its_last_step(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    config = sweep.member_configs(sweep.load_sweep(WIDTH_SWEEP))["dff64"]
    assert config.total_steps == 6
    assert not sweep.is_finished(config, tmp_path)  # no metrics.jsonl
    rows = [{"step": 3, "split": "eval"}, {"step": 6, "split": "train"}]  # killed before the last eval
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert not sweep.is_finished(config, tmp_path)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 6, "split": "eval"}) + "\n")
    assert sweep.is_finished(config, tmp_path)


# ----------------------------------------------------------------------------- a sweep trained in-process


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    """vit_width.py:test trained once, end to end: (sweep dir, status, printed lines)."""
    workdir = tmp_path_factory.mktemp("sweep") / "vit_width"
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)
        status = sweep.run_sweep(WIDTH_SWEEP, workdir, extra={"data.data_dir": digits_dir}, echo=lines.append)
    return workdir, status, lines


def test_sweep_trains_every_member_in_its_workdir(trained, digits_dir, monkeypatch):
    workdir, status, lines = trained
    monkeypatch.chdir(REPO_ROOT)
    assert status == {"dff64": "trained", "dff128": "trained"}
    assert lines[0].endswith(
        f"member 1/2 'dff64' (model.width=32, model.num_heads=2, model.depth=2, model.d_ff=64): "
        f"training in {workdir / 'dff64'}"
    )
    record = json.loads((workdir / "sweep.json").read_text())
    assert record == {
        "sweep": WIDTH_SWEEP,
        "base": "configs/vit.py:test",
        "members": {"dff64": {**TINY, "model.d_ff": 64}, "dff128": {**TINY, "model.d_ff": 128}},
        "extra": {"data.data_dir": digits_dir},
    }
    for name, d_ff in (("dff64", 64), ("dff128", 128)):
        config = json.loads((workdir / name / "config.json").read_text())
        assert (config["model"]["d_ff"], config["model"]["width"], config["data"]["data_dir"]) == (d_ff, 32, digits_dir)
        rows = json_rows(workdir / name)
        assert {(r["step"], r["split"]) for r in rows} >= {(6, "eval"), (6, "train")}
        assert sweep.is_finished(sweep.member_configs(sweep.load_sweep(WIDTH_SWEEP))[name], workdir / name)


def test_rerun_skips_finished_members(trained, digits_dir, monkeypatch):
    workdir, _, _ = trained
    monkeypatch.chdir(REPO_ROOT)
    before = {n: (workdir / n / "metrics.jsonl").read_bytes() for n in ("dff64", "dff128")}
    lines = []
    status = sweep.run_sweep(WIDTH_SWEEP, workdir, extra={"data.data_dir": digits_dir}, echo=lines.append)
    assert status == {"dff64": "finished before", "dff128": "finished before"}
    assert all(line.endswith("finished before, skipped") for line in lines)
    assert before == {n: (workdir / n / "metrics.jsonl").read_bytes() for n in before}


def test_only_resumes_an_interrupted_member(trained, digits_dir, monkeypatch):
    """dff128 as if killed after its step-4 row: no step-6 checkpoint, rows up to step 4. --only=dff128
    resumes it from the step-3 checkpoint, keeps the rows up to step 3 and leaves dff64 alone."""
    workdir, _, _ = trained
    monkeypatch.chdir(REPO_ROOT)
    run_dir = workdir / "dff128"
    rows = json_rows(run_dir)
    kept = [r for r in rows if r["step"] <= 3]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= 4))
    shutil.rmtree(run_dir / "checkpoints" / "6")
    other = (workdir / "dff64" / "metrics.jsonl").read_bytes()

    status = sweep.run_sweep(WIDTH_SWEEP, workdir, only="dff128", extra={"data.data_dir": digits_dir})
    assert status == {"dff128": "resumed"}
    after = json_rows(run_dir)
    assert [r for r in after if r["step"] <= 3] == kept  # the same rows, steps_per_sec included: not retrained
    assert {(r["step"], r["split"]) for r in after if r["step"] > 3} == {(4, "train"), (6, "train"), (6, "eval")}
    assert (workdir / "dff64" / "metrics.jsonl").read_bytes() == other


def test_compare_writes_figures_and_the_table_from_the_rows(trained):
    workdir, _, _ = trained
    md = compare.write_compare(workdir).read_text()
    out = workdir / "compare"
    for png in ("nonzero_frac.png", "final_nonzero_frac.png", "final_per_layer.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC), png
        assert f"]({png})" in md

    for name, d_ff in (("dff64", 64), ("dff128", 128)):
        rows = json_rows(workdir / name)
        last_eval = [r for r in rows if r["split"] == "eval"][-1]
        last_train = [r for r in rows if r["split"] == "train"][-1]
        total = int(
            re.search(r"^Total: ([\d,]+)", (workdir / name / "parameters.txt").read_text(), re.M)[1].replace(",", "")
        )
        expected = (
            f"| {name} | model.width=32, model.num_heads=2, model.depth=2, model.d_ff={d_ff} | {total / 1e3:.3g}k | 6 / 6 | "
            f"{100 * last_eval['accuracy']:.2f}% | {last_eval['loss']:.4f} | {100 * last_eval['nonzero_frac/mean']:.2f}% | "
            f"{100 * last_train['nonzero_frac/mean']:.2f}% |"
        )
        if "ece" in last_eval:  # the trainer's eval rows have it
            expected += f" {last_eval['ece']:.4f} |"
        assert expected + "\n" in md
    assert "corrupt" not in md and "noisy_labels" not in md  # the rows have neither

    # FLOPs per example of 8 x 8 digits in 4 x 4 patches: 4 patches + class token, 32 wide, 2 layers, 10 classes.
    for name, d_ff in (("dff64", 64), ("dff128", 128)):
        d, t = 32, 5
        per_token = 2 * (8 * d * d + 4 * t * d + 2 * 2 * d * d_ff)
        per_example = t * per_token + 4 * 2 * 16 * d + 2 * d * 10
        assert f"| {name} | {flops.format_flops(per_example)} |" in md

    # The figures' data, read back against the rows.
    _, members, not_run = compare.read_sweep(workdir)
    assert [m.name for m in members] == ["dff64", "dff128"] and not not_run
    axis = compare.varied_axis(members)
    assert (axis.label, axis.values, axis.log) == ("model.d_ff", [64, 128], True)
    fig = compare.nonzero_frac_figure(members, axis)
    train_ax, eval_ax = fig.axes
    for ax, split in ((train_ax, "train"), (eval_ax, "eval")):
        assert ax.get_title() == split
        lines = {line.get_label(): line for line in ax.get_lines()}
        for name, d_ff in (("dff64", 64), ("dff128", 128)):
            split_rows = [r for r in json_rows(workdir / name) if r["split"] == split]
            line = lines[f"{name}: {d_ff}"]
            assert list(line.get_xdata()) == [r["step"] for r in split_rows]
            np.testing.assert_allclose(line.get_ydata(), [100 * r["nonzero_frac/mean"] for r in split_rows])

    final = compare.final_nonzero_frac_figure(members, axis)
    ax = final.axes[0]
    assert ax.get_title() == "encoder" and ax.get_xscale() == "log"
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    expected_points = [
        (
            d_ff,
            100
            * [r for r in json_rows(workdir / name) if r["split"] == "eval"][-1][f"nonzero_frac/encoder/layer_{i:02d}"],
        )
        for name, d_ff in (("dff64", 64), ("dff128", 128))
        for i in range(2)
    ]
    np.testing.assert_allclose(points, expected_points)
    (mean_line,) = ax.get_lines()
    np.testing.assert_allclose(
        mean_line.get_ydata(), [np.mean([y for x, y in expected_points if x == f]) for f in (64, 128)]
    )

    per_layer = {line.get_label(): line for line in compare.final_per_layer_figure(members, axis).axes[0].get_lines()}
    assert list(per_layer) == ["dff64: 64", "dff128: 128"]
    for line, start in zip(per_layer.values(), (0, 2)):
        assert list(line.get_xdata()) == [0, 1]
        np.testing.assert_allclose(line.get_ydata(), [y for _, y in expected_points[start : start + 2]])


@pytest.mark.parametrize(
    "overrides, params, expected",
    [
        ([{"model.d_ff": 256}, {"model.d_ff": 64}], [2, 1], ("model.d_ff", [256, 64], True)),
        (  # T5's depths move together: one axis named by both keys
            [{"model.num_encoder_layers": n, "model.num_decoder_layers": n} for n in (1, 2)],
            [1, 2],
            ("model.num_encoder_layers = model.num_decoder_layers", [1, 2], True),
        ),
        ([{"model.topk": 0}, {"model.topk": 8}], [1, 1], ("model.topk", [0, 8], False)),  # 0: categories
        (  # width and d_ff apart: model size
            [{"model.width": 32, "model.d_ff": 64}, {"model.width": 64, "model.d_ff": 256}],
            [18, 69],
            ("parameters", [18, 69], True),
        ),
        ([{"model.variant": "Mu/7"}, {"model.variant": "S/7"}], [1, 21], ("parameters", [1, 21], True)),
        ([{}, {"data.random_labels": True}], [5, 5], ("member", ["m0", "m1"], False)),
    ],
)
def test_varied_axis(overrides, params, expected):
    members = [compare.Member(f"m{i}", Path("."), o, [], None, p) for i, (o, p) in enumerate(zip(overrides, params))]
    axis = compare.varied_axis(members)
    assert (axis.label, axis.values, axis.log) == expected


def test_compare_names_members_that_have_not_run_and_other_runs(trained, tmp_path):
    workdir, _, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "tb", "compare"))
    record = json.loads((copy / "sweep.json").read_text())
    record["members"] = {"later": {"model.d_ff": 256}, "dff64": record["members"]["dff64"]}
    (copy / "sweep.json").write_text(json.dumps(record))
    md = compare.write_compare(copy).read_text()
    assert "Not run yet (no metric rows): later." in md
    # dff128 is not in sweep.json any more: compared after the listed members, without overrides.
    assert md.index("| dff64 |") < md.index("| dff128 | - |")
    axis = compare.varied_axis(compare.read_sweep(copy)[1])
    assert axis.label == "parameters"  # one member's overrides are unknown: the parameter counts differ


def test_compare_shows_ece_label_noise_and_corruption_columns_when_the_rows_have_them(trained, tmp_path):
    workdir, _, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "tb", "compare"))
    path = copy / "dff64" / "metrics.jsonl"
    rows = json_rows(copy / "dff64")
    step = rows[-1]["step"]
    last_train = max(i for i, r in enumerate(rows) if r["split"] == "train")
    rows[last_train] |= {"accuracy_noisy_labels": 0.125, "accuracy_clean_labels": 0.875}
    rows[-1] |= {"ece": 0.0123}
    # Corrupted evals are rows of their own splits: per severity, and the mean over severities.
    for name, mean in (("noise", 0.25), ("blur", 0.5)):
        rows += [{"step": step, "split": f"eval_corrupt/{name}/s{k}", "accuracy": 0.0, "ece": 0.5} for k in (1, 2)]
        rows.append({"step": step, "split": f"eval_corrupt/{name}/mean", "accuracy": mean, "ece": 0.5})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = compare.write_compare(copy).read_text()
    header = next(line for line in md.splitlines() if line.startswith("| member | overrides"))
    assert header.endswith(
        "| train nonzero_frac/mean | eval ece | train accuracy_noisy_labels | train accuracy_clean_labels "
        "| blur accuracy | noise accuracy |"
    )
    dff64 = next(line for line in md.splitlines() if line.startswith("| dff64 |"))
    assert dff64.endswith("| 0.0123 | 12.50% | 87.50% | 50.00% | 25.00% |")
    assert next(line for line in md.splitlines() if line.startswith("| dff128 |")).endswith(" | - | - | - | - |")
    assert compare.LABEL_NOISE_NOTE in md and compare.CORRUPTION_NOTE in md


def report_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m lazy_jax.report ARGS` from the repository root."""
    command = [sys.executable, "-m", "lazy_jax.report", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_compare_cli(trained, tmp_path):
    workdir, _, _ = trained
    done = report_cli("--compare", str(workdir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(workdir / "compare" / "compare.md")
    # The command-line overrides the sweep ran with (sweep.json's "extra") stand under the title.
    extra = json.loads((workdir / "sweep.json").read_text())["extra"]
    md = (workdir / "compare" / "compare.md").read_text()
    assert f"{compare.EXTRA_NOTE}: `data.data_dir={extra['data.data_dir']!r}`" in md.splitlines()[:6]
    assert "Runs (metrics, configs)" not in md  # beside the runs: no link needed

    # --redraw of a results directory holding (a copy of) the sweep: the same report in OUT/<sweep>/, with a
    # relative link back to the runs, as docs/figures has for docs/results.
    results = tmp_path / "results"
    shutil.copytree(workdir, results / "vit_width", ignore=shutil.ignore_patterns("checkpoints", "tb", "compare"))
    redrawn = report_cli(f"--redraw={results}", f"--out_dir={tmp_path / 'figures'}")
    assert redrawn.returncode == 0, redrawn.stderr
    out = tmp_path / "figures" / "vit_width"
    assert redrawn.stdout.split() == [str(out / "compare.md")]
    link = "../../results/vit_width"
    assert (out / "compare.md").read_text() == md.replace(
        "\n\n", f"\n\nRuns (metrics, configs): [{link}]({link})\n\n", 1
    )
    for png in ("nonzero_frac.png", "final_nonzero_frac.png", "final_per_layer.png"):
        assert (out / png).read_bytes() == (workdir / "compare" / png).read_bytes(), png
    both = report_cli(f"--compare={workdir}", f"--workdir={workdir}")
    assert both.returncode != 0 and "give one of --workdir" in both.stderr
    empty = report_cli(f"--compare={tmp_path}")
    assert empty.returncode != 0 and f"{tmp_path} holds no run with metric rows" in empty.stderr


def test_sweep_cli_refuses_bad_input_with_one_line(trained, digits_dir):
    workdir, _, _ = trained
    before = (workdir / "sweep.json").read_bytes()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lazy_jax.sweep",
            f"--sweep={WIDTH_SWEEP}",
            f"--workdir={workdir}",
            "--config.model.d_ff=32",
            f"--config.data.data_dir={digits_dir}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --config.model.d_ff is not allowed: the members")
    assert (workdir / "sweep.json").read_bytes() == before


# ----------------------------------------------------------------------------- a smoke run of every sweep file


# vit_width.py:test is left out: the `trained` fixture above trains both its members and compares them.
SMOKE_FILES = [path for path in SWEEP_FILES if f"{path}:test" != WIDTH_SWEEP]
assert len(SMOKE_FILES) == len(SWEEP_FILES) - 1


@pytest.mark.parametrize("path", SMOKE_FILES)
def test_every_sweep_file_trains_its_first_test_member_and_compares_it(path, tmp_path, request, monkeypatch):
    """The first member of every sweep file's `:test` variant trains end to end on the CPU (its few steps, on the
    prepared offline data its config names) and `compare` reads it: the sweep files keep working. Any file added
    to configs/sweeps/ is picked up. The first members share their programs where they can (the tiny ViT of
    vit_width's, configs/t5.py:test's T5), so the XLA compilation cache spares most compilations."""
    monkeypatch.chdir(REPO_ROOT)
    spec = f"{path}:test"
    first, config = next(iter(sweep.member_configs(sweep.load_sweep(spec)).items()))
    data_dir = request.getfixturevalue(f"{config.data.name}_dir")  # conftest: one fixture per offline dataset
    workdir = tmp_path / Path(path).stem
    status = sweep.run_sweep(spec, workdir, only=first, extra={"data.data_dir": data_dir})
    assert status == {first: "trained"}
    rows = json_rows(workdir / first)
    assert {(config.total_steps, "train"), (config.total_steps, "eval")} <= {(r["step"], r["split"]) for r in rows}
    assert all(0 < r["nonzero_frac/mean"] <= 1 for r in rows if "nonzero_frac/mean" in r)
    # What compare reads of it (its figures: drawn from the vit_width fixture's runs above and, for every
    # committed sweep, by tests/test_report.py's redraw test).
    record, members, not_run = compare.read_sweep(workdir)
    assert [m.name for m in members] == [first] and not_run == list(record["members"])[1:]
    (row,) = compare.metrics_table(members)[1]
    assert row[0] == first and row[3] == f"{config.total_steps} / {config.total_steps}"
    (flops_row,) = compare.flops_table(members)[1]
    assert flops_row[0] == first
