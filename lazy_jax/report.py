"""Run report: reads a workdir's metrics.jsonl (and stats/*.npz) and writes report/.

    python -m lazy_jax.report --workdir=DIR
    python -m lazy_jax.report --compare=SWEEP_DIR [--out_dir=OUT]       # lazy_jax.compare
    python -m lazy_jax.report --redraw=docs/results --out_dir=docs/figures  # every figure of docs/results.md

writes DIR/report/report.md with the run's config summary (of its latest start, with the keys a
restart changed: config_history.jsonl), the final loss/accuracy, the
first/last nonzero_frac table (per stack and layer, in percent) and these figures:
  nonzero_frac_<split>.png  nonzero_frac per layer against step (one panel per stack);
  loss.png                  loss (and accuracy) against step, one line per split;
  neuron_usage_<split>.png  from the split's last DIR/stats/<split>_<step>.npz: per-token
                            nonzero count histograms and sorted per-neuron activation
                            frequency, per layer (only when stats files exist);
  reliability_eval.png      the reliability diagram of the last eval (accuracy per confidence
                            bin against confidence, with the bins' counts; `calibration/*`);
  union_eval.png            the last eval's union of active neurons against the pool size n
                            (model.union_sizes; `union_random/*`, `union_consecutive/*`).
The final-metrics table has each split's ECE; a table of the corrupted evals (eval_corrupt/*,
accuracy, ECE and nonzero share per corruption and severity, and their mean) and the forward
FLOP table (lazy_jax.flops) follow it. Corrupted-eval splits get no per-split figures (one row
each, at the final step).

Decisions the design leaves open:
- Blank lines of metrics.jsonl are skipped; malformed ones (a run killed mid-write) are
  skipped with a warning that names their line numbers.
- A resumed run re-logs the steps after its checkpoint: per split, the last row written
  for a step wins and rows are ordered by step.
- "First" / "last" of a metric are its first / last logged value in that split.

- An unreadable stats file (a run killed mid-write before writes were atomic) is skipped with
  a warning naming it; the split's previous stats file is used instead.

The plain functions (`first_last_table`, `format_first_last`, `write_report`) are importable
without matplotlib or absl flags, so the trainer can print the end-of-run summary with them;
matplotlib is imported only to draw the figures. File names come from lazy_jax.workdir.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np
from etils import epath

from lazy_jax import workdir as wd
from lazy_jax.data.corruptions import SPLIT_PREFIX
from lazy_jax.errors import InputError
from lazy_jax.workdir import CONFIG, CONFIG_HISTORY, METRICS, REPORT_DIR, STATS_DIR, read_metrics, stats_files

NONZERO_PREFIX = "nonzero_frac/"

_LAYER_RE = re.compile(r"^(?P<kind>[^/]+)/(?P<stack>[^/]+)/layer_(?P<layer>\d+)$")

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- metrics rows


def split_rows(rows: Iterable[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Rows of one split ordered by step; of rows with the same step the last one wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.get("split") == split:
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def splits_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The splits present, 'train' and 'eval' first, others by name."""
    found = {str(r["split"]) for r in rows}
    first = [s for s in ("train", "eval") if s in found]
    return first + sorted(found - set(first))


def is_corrupt_split(split: str) -> bool:
    """An eval on corrupted inputs (eval_corrupt/<name>/s<k> or .../mean)."""
    return split.startswith(SPLIT_PREFIX)


def corruption_results(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{corruption: {'s1': row, ..., 'mean': row}}: the last row of every eval_corrupt/<name>/<which> split."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    rows = list(rows)
    for split in splits_of(rows):
        if is_corrupt_split(split):
            name, _, which = split[len(SPLIT_PREFIX) :].rpartition("/")
            out.setdefault(name, {})[which] = split_rows(rows, split)[-1]
    return {name: dict(sorted(v.items(), key=lambda kv: (kv[0] == "mean", kv[0]))) for name, v in sorted(out.items())}


def metric_sort_key(name: str) -> tuple:
    """Per-layer metrics by stack then layer number; stack means after them; overall last."""
    m = _LAYER_RE.match(name)
    if m:
        return (0, m["kind"], m["stack"], int(m["layer"]), "")
    parts = name.split("/")
    if len(parts) == 3 and parts[2] == "mean":
        return (1, parts[0], parts[1], 0, "")
    if len(parts) == 2 and parts[1] == "mean":
        return (2, parts[0], "", 0, "")
    return (1, parts[0], parts[1] if len(parts) > 1 else "", 1, name)


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def first_last_table(rows: list[dict[str, Any]], split: str) -> list[tuple[str, float, float]]:
    """(metric name, first value, last value) of every nonzero_frac/* metric of `split`.

    Sorted by stack then layer, with the per-stack means and then `nonzero_frac/mean` last.
    Empty if the split has no rows.
    """
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for row in split_rows(rows, split):
        for key, value in row.items():
            if not key.startswith(NONZERO_PREFIX):
                continue
            value = as_float(value)
            if value is None:
                continue
            first.setdefault(key, value)
            last[key] = value
    return [(k, first[k], last[k]) for k in sorted(first, key=metric_sort_key)]


def pct(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{100.0 * value:.2f}%"


def _short_name(name: str) -> str:
    """'nonzero_frac/encoder/layer_03' -> 'encoder/layer_03'."""
    return name[len(NONZERO_PREFIX) :] if name.startswith(NONZERO_PREFIX) else name


def _split_step_range(rows: list[dict[str, Any]], split: str) -> tuple[int, int] | None:
    steps = [int(r["step"]) for r in split_rows(rows, split) if any(k.startswith(NONZERO_PREFIX) for k in r)]
    return (steps[0], steps[-1]) if steps else None


def _first_last_by_split(rows: list[dict[str, Any]], splits: list[str]):
    """(metric names in table order, {split: {name: (first, last)}})."""
    tables = {s: {n: (f, last) for n, f, last in first_last_table(rows, s)} for s in splits}
    names = sorted({n for t in tables.values() for n in t}, key=metric_sort_key)
    return names, tables


def format_first_last(rows: list[dict[str, Any]]) -> str:
    """Plain-text table for the console: per layer, first -> last nonzero_frac per split."""
    splits = [s for s in splits_of(rows) if not is_corrupt_split(s)] or ["train", "eval"]
    names, tables = _first_last_by_split(rows, splits)
    if not names:
        return "no nonzero_frac metrics logged"
    header = ["nonzero_frac"]
    for s in splits:
        steps = _split_step_range(rows, s)
        header.append(f"{s} (step {steps[0]} -> {steps[1]})" if steps else f"{s} (no rows)")
    lines = [header]
    for n in names:
        line = [_short_name(n)]
        for s in splits:
            f, last = tables[s].get(n, (None, None))
            line.append(f"{pct(f):>7} -> {pct(last):>7}" if f is not None else "-")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# ----------------------------------------------------------------------------- config


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# config.json is `to_json_best_effort()` of a configs/*.py ConfigDict built on
# config_base.base_config; the model is named by `variant` (ViT, Mixer) or `size` (T5).
_SUMMARY_KEYS = {
    "dataset": "data.name",
    "topk": "model.topk",
    "steps": "total_steps",
    "batch_size": "batch_size",
    "optimizer": "optimizer.name",
    "learning_rate": "optimizer.learning_rate",
}


def config_summary(config: dict[str, Any]) -> dict[str, Any]:
    """model / dataset / topk / steps / batch_size / optimizer / learning_rate of a run's
    config.json; entries an older or hand-written config lacks are left out."""
    model_words = [_lookup(config, k) for k in ("model.name", "model.variant", "model.size")]
    model = " ".join(str(v) for v in model_words if v is not None) or None
    summary = {"model": model, **{label: _lookup(config, key) for label, key in _SUMMARY_KEYS.items()}}
    return {k: v for k, v in summary.items() if v is not None and not isinstance(v, (dict, list))}


def read_config(workdir: wd.PathLike) -> dict[str, Any] | None:
    path = epath.Path(workdir) / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        logger.warning("%s is not valid JSON (%s); the report leaves the config out", path, e)
        return None
    if not isinstance(config, dict):
        logger.warning(
            "%s holds a %s, not a JSON object; the report leaves the config out", path, type(config).__name__
        )
        return None
    return config


def read_config_history(workdir: wd.PathLike) -> list[dict[str, Any]]:
    """Rows of config_history.jsonl ({"step", "config", ...}, one per (re)start); malformed lines
    are skipped with a warning, a missing file gives []."""
    path = epath.Path(workdir) / CONFIG_HISTORY
    if not path.is_file():
        return []
    rows, bad = [], []
    for line_no, line in enumerate(wd.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("config"), dict) and "step" in row:
            rows.append(row)
        else:
            bad.append(line_no)
    if bad:
        logger.warning("%s: skipped malformed line(s) %s", path, ", ".join(map(str, bad[:20])))
    return rows


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(history: list[dict[str, Any]]) -> list[tuple[int, list[tuple[str, Any, Any]]]]:
    """(step, [(dotted key, old, new), ...]) for each restart whose config differs from the one before."""
    changes = []
    for before, after in zip(history, history[1:]):
        a, b = _flatten(before["config"]), _flatten(after["config"])
        diff = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            changes.append((int(after["step"]), diff))
    return changes


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if value is not None else "(none)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_config_changes(history: list[dict[str, Any]], max_keys: int = 8) -> list[str]:
    """Markdown lines: one bullet per restart that changed the config, its keys as old -> new."""
    lines = []
    for step, diff in config_changes(history):
        items = [f"`{k}` {_short(old)} -> {_short(new)}" for k, old, new in diff[:max_keys]]
        more = f" (+{len(diff) - max_keys} more)" if len(diff) > max_keys else ""
        lines.append(f"- restart at step {step}: " + ", ".join(items) + more)
    return lines


# ----------------------------------------------------------------------------- stats files


def latest_stats(workdir: wd.PathLike) -> dict[str, tuple[int, epath.Path, dict[str, np.ndarray]]]:
    """{split: (step, path, arrays)} of the last readable `stats/<split>_<step>.npz` of each split.

    An unreadable file is skipped with a warning naming it, and the split's previous one is tried.
    """
    by_split: dict[str, list[tuple[int, epath.Path]]] = {}
    for split, step, path in stats_files(workdir):
        by_split.setdefault(split, []).append((step, path))
    latest = {}
    for split, files in by_split.items():
        for step, path in sorted(files, reverse=True):
            try:
                latest[split] = (step, path, load_stats(path))
                break
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                logger.warning("skipping unreadable stats file %s (%s: %s)", path, type(e).__name__, e)
    return latest


def load_stats(path: wd.PathLike) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as data:  # local or gs://
        return {k: np.asarray(data[k]) for k in data.files}


# ----------------------------------------------------------------------------- report.md


def md_table(header: list[str], body: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(r) + " |" for r in [header, sep, *body]]


def fmt(value: Any, spec: str) -> str:
    value = as_float(value)
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else format(value, spec)


def _last_value(rows: list[dict[str, Any]], key: str) -> Any:
    for row in reversed(rows):
        if key in row:
            return row[key]
    return None


def _safe_name(split: str) -> str:
    return re.sub(r"[^\w.-]", "_", split)


def write_report(workdir: wd.PathLike) -> epath.Path:
    """Writes `<workdir>/report/` (report.md and PNG figures); returns the path of report.md.

    The workdir may be gs://: the report is drawn in a local temporary directory (matplotlib
    writes local files) and copied into the workdir's report/.
    Raises InputError naming the path if metrics.jsonl is missing or holds no valid rows.
    """
    workdir = wd.workdir_path(workdir)
    with wd.local_output_dir(workdir / REPORT_DIR) as out_dir:
        _write_report(workdir, out_dir)
    return workdir / REPORT_DIR / "report.md"


def _write_report(workdir: epath.Path, out_dir: epath.Path) -> epath.Path:
    """write_report, with the report written into `out_dir` (a local directory)."""
    from lazy_jax import report_figures  # matplotlib only when drawing

    rows = read_metrics(workdir)
    if not rows:
        raise InputError(f"{workdir / METRICS} holds no metric rows (no line is a JSON object with 'step' and 'split')")
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [s for s in splits_of(rows) if not is_corrupt_split(s)]
    rows_by_split = {s: split_rows(rows, s) for s in splits}
    config = read_config(workdir)

    md = [f"# Activation sparsity report: {workdir.name}", ""]
    if config is not None:
        summary = config_summary(config)
        if summary:
            md += [", ".join(f"**{k}**: {v}" for k, v in summary.items()), ""]
        else:
            md += [f"{CONFIG} names none of: model, {', '.join(_SUMMARY_KEYS)}.", ""]
    else:
        md += [f"No {CONFIG} in the workdir.", ""]
    changed = format_config_changes(read_config_history(workdir))
    if changed:
        md += [f"The summary is of the latest start; config changes at restarts ({CONFIG_HISTORY}):", ""]
        md += changed + [""]

    # Final loss / accuracy.
    md += ["## Final metrics", ""]
    body = []
    for s in splits:
        r = rows_by_split[s]
        body.append(
            [
                s,
                str(int(r[-1]["step"])),
                fmt(_last_value(r, "loss"), ".4f"),
                pct(as_float(_last_value(r, "accuracy"))),
                fmt(_last_value(r, "ece"), ".4f"),
                pct(as_float(_last_value(r, "nonzero_frac/mean"))),
            ]
        )
    md += md_table(["split", "step", "loss", "accuracy", "ECE", "nonzero_frac/mean"], body) + [""]
    md += _corruption_section(rows)
    from lazy_jax import flops  # its model imports stay out of the trainer's summary path

    table = flops.report_rows(workdir, rows)
    if table:
        md += ["## Forward FLOPs", "", flops.REPORT_NOTE, ""] + md_table(*table) + [""]

    # First / last nonzero_frac.
    names, tables = _first_last_by_split(rows, splits)
    md += ["## Nonzero entries of the MLP activation map, first and last logged step", ""]
    if names:
        header = ["stack", "layer"]
        for s in splits:
            steps = _split_step_range(rows, s)
            header += (
                [f"{s} first (step {steps[0]})", f"{s} last (step {steps[1]})"]
                if steps
                else [f"{s} first", f"{s} last"]
            )
        body = []
        for n in names:
            parts = _short_name(n).split("/")
            stack, layer = (parts[0], parts[1].removeprefix("layer_")) if len(parts) == 2 else ("all", parts[0])
            line = [stack, layer]
            for s in splits:
                f, last = tables[s].get(n, (None, None))
                line += [pct(f), pct(last)]
            body.append(line)
        md += md_table(header, body, "ll" + "r" * (len(header) - 2)) + [""]
    else:
        md += ["No nonzero_frac metrics were logged.", ""]

    # Figures.
    md += ["## Figures", ""]
    loss_png = report_figures.save(report_figures.loss_figure(rows_by_split), out_dir / "loss.png")
    if loss_png:
        md += ["Loss and accuracy against step.", "", f"![loss]({loss_png.name})", ""]
    for s in splits:
        fig = report_figures.nonzero_frac_figure(rows_by_split[s], s)
        png = report_figures.save(fig, out_dir / f"nonzero_frac_{_safe_name(s)}.png")
        if png:
            md += [
                f"Nonzero entries per layer ({s}), log scale; dashed: mean over the stack's layers.",
                "",
                f"![nonzero_frac {s}]({png.name})",
                "",
            ]
    all_stats = {s: v for s, v in latest_stats(workdir).items() if not is_corrupt_split(s)}
    if "eval" in all_stats:
        step, path, stats = all_stats["eval"]
        png = report_figures.save(
            report_figures.reliability_figure(stats, "eval", step), out_dir / "reliability_eval.png"
        )
        if png:
            md += [
                f"Reliability diagram (eval, step {step}, from {STATS_DIR}/{path.name}): accuracy of the predictions "
                f"in each of {len(stats['calibration/count'])} equal-width confidence bins against their mean "
                "confidence (a calibrated model lies on the diagonal), and how many fall in each bin.",
                "",
                f"![reliability eval]({png.name})",
                "",
            ]
    sizes = _union_sizes(config)
    if "eval" in all_stats and sizes:
        step, path, stats = all_stats["eval"]
        png = report_figures.save(report_figures.union_figure(stats, sizes, "eval", step), out_dir / "union_eval.png")
        if png:
            md += [
                f"Union of active neurons (eval, step {step}, from {STATS_DIR}/{path.name}; model.union_sizes): the "
                "share of neurons active on at least one of n pooled tokens, which batched inference must still "
                "read; at n = 1 the nonzero share.",
                "",
                f"![union eval]({png.name})",
                "",
            ]
    for s, (step, path, stats) in all_stats.items():
        fig = report_figures.neuron_usage_figure(stats, s, step)
        png = report_figures.save(fig, out_dir / f"neuron_usage_{_safe_name(s)}.png")
        if not png:  # every eval writes calibration vectors; neuron usage only when asked for
            continue
        md += [
            f"Neuron usage ({s}, step {step}, from {STATS_DIR}/{path.name}): share of tokens per "
            f"number of nonzero entries, and each neuron's activation frequency, sorted.",
            "",
            f"![neuron usage {s}]({png.name})",
            "",
        ]
        dead = _dead_neuron_rows(stats)
        if dead:
            md += [f"Neurons never active on the batch ({s}, step {step}):", ""]
            md += md_table(["stack", "layer", "d_ff", "never active"], dead, "llrr") + [""]

    if config is not None:
        md += [
            "## Config",
            "",
            f"<details><summary>{CONFIG}</summary>",
            "",
            "```json",
            json.dumps(config, indent=2, sort_keys=True),
            "```",
            "",
            "</details>",
            "",
        ]

    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(md), encoding="utf-8")
    return report_path


def _union_sizes(config: dict[str, Any] | None) -> list[int]:
    """model.union_sizes of config.json ('1,2,4' -> [1, 2, 4]); [] when absent or unreadable."""
    text = str(_lookup(config or {}, "model.union_sizes") or "")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else []


def _corruption_section(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: accuracy, ECE and nonzero share of each corrupted eval (and the clean one of that step)."""
    results = corruption_results(rows)
    if not results:
        return []
    body = []
    steps = sorted({int(r["step"]) for by_which in results.values() for r in by_which.values()})
    clean = {int(r["step"]): r for r in split_rows(rows, "eval")}
    for step in steps:
        if step in clean:
            r = clean[step]
            body.append(
                [
                    "none (eval)",
                    "-",
                    pct(as_float(r.get("accuracy"))),
                    fmt(r.get("ece"), ".4f"),
                    pct(as_float(r.get("nonzero_frac/mean"))),
                ]
            )
    for name, by_which in results.items():
        for which, r in by_which.items():
            body.append(
                [
                    name,
                    which.removeprefix("s"),
                    pct(as_float(r.get("accuracy"))),
                    fmt(r.get("ece"), ".4f"),
                    pct(as_float(r.get("nonzero_frac/mean"))),
                ]
            )
    where = f"step {steps[0]}" if len(steps) == 1 else f"steps {', '.join(map(str, steps))}"
    return [
        "## Corrupted inputs",
        "",
        f"ImageNet-C corruptions of the eval split ({where}; `eval_corrupt/<name>/s<k>` splits, "
        "`mean` = the unweighted mean over the severities run; lazy_jax/data/corruptions.py).",
        "",
        *md_table(["corruption", "severity", "accuracy", "ECE", "nonzero_frac/mean"], body, "llrrr"),
        "",
    ]


def _dead_neuron_rows(stats: dict[str, np.ndarray]) -> list[list[str]]:
    body = []
    for key in sorted(stats, key=metric_sort_key):
        m = _LAYER_RE.match(key)
        if m and m["kind"] == "neuron_freq":
            freq = np.asarray(stats[key], dtype=np.float64).ravel()
            body.append([m["stack"], m["layer"], str(freq.size), pct(float(np.mean(freq <= 0)))])
    return body


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> None:
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    given = [name for name in ("workdir", "compare", "redraw") if f[name].value is not None]
    if len(given) != 1:
        raise SystemExit(
            "error: give one of --workdir=RUN_DIR (a run's report), --compare=SWEEP_DIR (a sweep's) and "
            "--redraw=RESULTS_DIR (every sweep and measure output in it)"
        )
    if f.out_dir is not None and f.workdir is not None:
        raise SystemExit(
            "error: --out_dir goes with --compare or --redraw (a run's report is written in RUN_DIR/report/)"
        )
    if f.redraw is not None and f.out_dir is None:
        raise SystemExit("error: --redraw needs --out_dir (docs/figures for docs/results)")
    from lazy_jax import compare  # here, not at the top: compare imports this module

    try:
        if f.compare is not None:
            path = compare.write_compare(f.compare, f.out_dir)
        elif f.redraw is not None:
            for path in compare.redraw(f.redraw, f.out_dir):
                print(path)
            return
        else:
            path = write_report(f.workdir)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(path)


if __name__ == "__main__":
    # Flags are defined here, not at import, so the trainer (which has its own --workdir)
    # can import this module.
    from absl import app, flags

    flags.DEFINE_string("workdir", None, f"Training workdir holding {METRICS}: writes its report/.")
    flags.DEFINE_string(
        "compare", None, "A sweep's workdir (python -m lazy_jax.sweep): writes compare/ with its runs side by side."
    )
    flags.DEFINE_string(
        "redraw",
        None,
        "A directory of sweep directories and measure outputs (docs/results): redraws each one's figures into "
        "--out_dir/<name>/.",
    )
    flags.DEFINE_string(
        "out_dir",
        None,
        "Where --compare writes (default SWEEP_DIR/compare/), or where --redraw writes its directories "
        "(docs/figures for docs/results).",
    )
    app.run(main)
