"""Comparison of a sweep's runs: figures and one table side by side.

    python -m lazy_jax.report --compare runs/vit_size

reads every run of the sweep directory (the members sweep.json lists, in its order, then any
other subdirectory holding a metrics.jsonl) and writes DIR/compare/ (or --out_dir=OUT):
  compare.md             per member: overrides, parameters, last step, final eval accuracy,
                         loss and nonzero_frac/mean, and when the rows have them the eval `ece`,
                         the last train row's `accuracy_noisy_labels` / `accuracy_clean_labels`
                         (label noise) and each corruption's accuracy averaged over its
                         severities (the `accuracy` of split `eval_corrupt/<name>/mean`); the
                         FLOP table (lazy_jax.flops); the figures;
  nonzero_frac.png       nonzero_frac/mean against step, one line per member, train and eval;
  final_nonzero_frac.png each layer's final nonzero share (dots, coloured by layer) and the
                         stack's mean (line) against the varied quantity, one panel per stack;
  final_per_layer.png    each member's final nonzero share along its layers, one panel per stack.

The varied quantity: the config key the members' overrides vary, when it holds a number (several
keys varying with the same values, as T5's encoder and decoder depths, are named together); else
the parameter count (from parameters.txt: model size) when it differs between members; else the
members by name. "Final" is the last eval row (the last train row for a run without eval rows).
Rows are read with lazy_jax.workdir and ordered with lazy_jax.report (a re-logged step: the
last row wins). DIR and OUT may be gs://BUCKET/PATH: the figures are drawn locally and copied there.
compare.md names the command-line overrides the sweep ran with (sweep.json's "extra") under its title.

    python -m lazy_jax.report --redraw=docs/results --out_dir=docs/figures

redraws every figure of docs/results.md from the committed reduced metrics (`redraw`): the
comparison of every sweep directory of docs/results into docs/figures/<sweep>/, and the figures and
report.md of every measure output there (a directory holding lazy_jax.measure's measure.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from typing import Any

import numpy as np
from etils import epath

from lazy_jax import flops, report
from lazy_jax import workdir as wd
from lazy_jax.errors import InputError
from lazy_jax.sweep import COMPARE_DIR, SWEEP_JSON

logger = logging.getLogger(__name__)

_CORRUPT_MEAN_RE = re.compile(r"^eval_corrupt/(?P<name>[^/]+)/mean$")  # split of the mean over severities
_LABEL_NOISE_KEYS = ("accuracy_noisy_labels", "accuracy_clean_labels")  # train rows with data.label_noise
MEASURE_JSON = "measure.json"  # lazy_jax.measure.JSON_NAME (not imported: it brings jax)
_STACK_ORDER = {"encoder": 0, "decoder": 1, "token_mlp": 2, "channel_mlp": 3}
_LAYER_RE = re.compile(r"^nonzero_frac/(?P<stack>[^/]+)/layer_(?P<layer>\d+)$")


@dataclasses.dataclass
class Member:
    """One run of the sweep, as its workdir has it."""

    name: str
    run_dir: epath.Path
    overrides: dict[str, Any] | None  # from sweep.json; None for a run it does not list
    rows: list[dict[str, Any]]
    config: dict[str, Any] | None
    params: int | None

    def split(self, split: str) -> list[dict[str, Any]]:
        return report.split_rows(self.rows, split)

    def final_row(self) -> tuple[str, dict[str, Any]] | None:
        """(split, row): the last eval row, or the last train row if there is no eval row."""
        for split in ("eval", "train"):
            rows = self.split(split)
            if rows:
                return split, rows[-1]
        return None

    @property
    def total_steps(self) -> int | None:
        steps = (self.config or {}).get("total_steps")
        return steps if isinstance(steps, int) else None


def read_sweep(sweep_dir: wd.PathLike) -> tuple[dict[str, Any], list[Member], list[str]]:
    """(sweep.json or {}, the members with metrics, the names sweep.json lists that have none yet)."""
    sweep_dir = wd.location_path(sweep_dir, "--compare")
    if not sweep_dir.is_dir():
        raise InputError(f"--compare={str(sweep_dir)!r} is not a directory: give a sweep's --workdir")
    record: dict[str, Any] = {}
    if (sweep_dir / SWEEP_JSON).is_file():
        try:
            record = json.loads(wd.read_text(sweep_dir / SWEEP_JSON))
        except json.JSONDecodeError as e:
            logger.warning("%s is not valid JSON (%s); comparing its subdirectories without overrides", sweep_dir, e)
    recorded = record.get("members", {}) if isinstance(record.get("members"), dict) else {}
    others = sorted(p.name for p in sweep_dir.iterdir() if (p / wd.METRICS).is_file() and p.name not in recorded)
    members, not_run = [], []
    for name in [*recorded, *others]:
        run_dir = sweep_dir / name
        rows = wd.read_metrics(run_dir) if (run_dir / wd.METRICS).is_file() else []
        if not rows:
            not_run.append(name)
            continue
        table = flops.read_parameters(run_dir)
        members.append(
            Member(name, run_dir, recorded.get(name), rows, report.read_config(run_dir), table and table.total)
        )
    if not members:
        raise InputError(
            f"{sweep_dir} holds no run with metric rows: expected {SWEEP_JSON} members or subdirectories with "
            f"{wd.METRICS}"
        )
    return record, members, not_run


# ----------------------------------------------------------------------------- the varied quantity


@dataclasses.dataclass(frozen=True)
class Axis:
    """The x axis of the final-share figure: a label and one value per member."""

    label: str
    values: list[Any]
    log: bool  # positive numbers: a log axis at these values; else one category per member


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def varied_axis(members: list[Member]) -> Axis:
    """What the members vary (see the module docstring)."""
    overrides = [m.overrides or {} for m in members]
    keys = [
        k
        for k in dict.fromkeys(k for o in overrides for k in o)
        if len({json.dumps(o.get(k), sort_keys=True, default=str) for o in overrides}) > 1
    ]
    values = [[o.get(k) for o in overrides] for k in keys]
    if keys and all(v == values[0] for v in values) and all(_is_number(v) for v in values[0]):
        return Axis(" = ".join(keys), values[0], log=all(v > 0 for v in values[0]))
    params = [m.params for m in members]
    if all(p is not None for p in params) and len(set(params)) > 1:
        return Axis("parameters", params, log=True)
    return Axis("member", [m.name for m in members], log=False)


def _format_value(value: Any) -> str:
    if _is_number(value) and value >= 1e4:
        return flops.format_flops(value).replace(" ", "")  # 1.2M parameters
    return str(value)


# ----------------------------------------------------------------------------- figures


def _colors(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["viridis"](0.85 * i / max(n - 1, 1)) for i in range(n)]


def _member_order(axis: Axis) -> list[int]:
    """Member indices by the varied quantity (numbers ascending), so the colours follow it."""
    if all(_is_number(v) for v in axis.values):
        return sorted(range(len(axis.values)), key=lambda i: axis.values[i])
    return list(range(len(axis.values)))


def _legend_label(member: Member, axis: Axis, i: int) -> str:
    return member.name if axis.label == "member" else f"{member.name}: {_format_value(axis.values[i])}"


def _legend_title(axis: Axis) -> str | None:
    return None if axis.label == "member" else f"member: {axis.label}"


def nonzero_frac_figure(members: list[Member], axis: Axis):
    """nonzero_frac/mean (%) against step, one line per member; one panel per split (train, eval)."""
    from matplotlib.figure import Figure

    from lazy_jax.report_figures import _series

    splits = [s for s in ("train", "eval") if any(_series(m.split(s), "nonzero_frac/mean")[0].size for m in members)]
    if not splits:
        return None
    fig = Figure(figsize=(5.5 * len(splits), 4.2), layout="constrained")
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    order = _member_order(axis)
    colors = dict(zip(order, _colors(len(order))))
    plotted = []
    for ax, split in zip(axes, splits):
        for i in order:
            steps, values = _series(members[i].split(split), "nonzero_frac/mean")
            marker = "." if steps.size <= 30 else None
            ax.plot(
                steps, 100 * values, color=colors[i], marker=marker, lw=1.4, label=_legend_label(members[i], axis, i)
            )
            plotted += list(100 * values)
        ax.set_title(split)
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", title=_legend_title(axis), title_fontsize="x-small")
    _share_axis(axes[0], plotted)  # the panels share y
    axes[0].set_ylabel("nonzero entries, mean over layers (% of d_ff)")
    fig.suptitle("Activation map density during training")
    return fig


def _share_axis(ax, percents) -> None:
    """A log y axis labelled in plain numbers where the shares span a factor of 3 or more (denser labels within
    a decade); a linear one below that, where a log axis would show one tick or none."""
    from matplotlib import ticker

    values = [v for v in percents if v > 0]
    span = max(values) / min(values) if values else 1.0
    if span >= 3:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 3, 5, 7) if span < 10 else (1, 2, 5)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def final_shares(member: Member) -> dict[str, list[tuple[int, float]]]:
    """{stack: [(layer, share), ...] by layer} of the member's final row."""
    final = member.final_row()
    out: dict[str, list[tuple[int, float]]] = {}
    for key, value in (final[1] if final else {}).items():
        m = _LAYER_RE.match(key)
        if m and _is_number(value):
            out.setdefault(m["stack"], []).append((int(m["layer"]), float(value)))
    return {s: sorted(v) for s, v in sorted(out.items())}


def _x_positions(axis: Axis) -> list[float]:
    return list(axis.values) if axis.log else list(range(len(axis.values)))


def _set_x_axis(ax, axis: Axis) -> None:
    if axis.log:
        ax.set_xscale("log", base=10 if axis.label == "parameters" else 2)
        ticks = sorted(set(axis.values))
        ax.set_xticks(ticks, [_format_value(v) for v in ticks])
        ax.minorticks_off()
        lo, hi = min(ticks), max(ticks)
        pad = (hi / lo) ** 0.08 if hi > lo else 1.5
        ax.set_xlim(lo / pad, hi * pad)
    else:
        ax.set_xticks(range(len(axis.values)), [_format_value(v) for v in axis.values])
        ax.set_xlim(-0.5, len(axis.values) - 0.5)
    ax.set_xlabel(axis.label)


def _layer_colors(max_layer: int):
    """A colour map with one colour per layer index and its norm, for scatter points and a discrete colour bar."""
    from matplotlib import colormaps, colors

    cmap = colors.ListedColormap(colormaps["viridis"](np.linspace(0, 0.85, max_layer + 1)))
    return cmap, colors.BoundaryNorm(np.arange(-0.5, max_layer + 1), cmap.N)


def _stack_panels(members: list[Member]):
    """(final shares per member, stacks, figure, one axis per stack sharing y), or None without shares."""
    from matplotlib.figure import Figure

    shares = [final_shares(m) for m in members]
    # T5's encoder before its decoder, the Mixer's token MLP before its channel MLP; others by name.
    stacks = sorted({s for sh in shares for s in sh}, key=lambda s: (_STACK_ORDER.get(s, len(_STACK_ORDER)), s))
    if not stacks:
        return None
    fig = Figure(figsize=(5.5 * len(stacks), 4.2), layout="constrained")
    return shares, stacks, fig, fig.subplots(1, len(stacks), sharey=True, squeeze=False)[0]


def final_nonzero_frac_figure(members: list[Member], axis: Axis):
    """Per stack: each layer's final share (dots coloured by layer) and the stack mean against `axis`."""
    from matplotlib import cm, ticker

    panels = _stack_panels(members)
    if panels is None:
        return None
    shares, stacks, fig, axes = panels
    xs = _x_positions(axis)
    plotted = []
    for ax, stack in zip(axes, stacks):
        cmap, norm = _layer_colors(max(layer for sh in shares for layer, _ in sh.get(stack, [])))
        for x, sh in zip(xs, shares):
            ys = [100 * v for _, v in sh.get(stack, [])]
            ax.scatter([x] * len(ys), ys, c=[layer for layer, _ in sh.get(stack, [])], cmap=cmap, norm=norm, s=20)
            plotted += ys
        mean = [
            (xs[i], 100 * np.mean([v for _, v in shares[i][stack]]))
            for i in _member_order(axis)
            if shares[i].get(stack)
        ]
        # A line between numbers; between named members (no order) the means stand alone.
        line_width = 1.5 if axis.log else 0
        ax.plot(*zip(*mean), color="black", lw=line_width, marker="_", ms=14, mew=2, label="mean over layers")
        _set_x_axis(ax, axis)
        ax.set_title(stack)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
        bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer")
        bar.locator = ticker.MaxNLocator(integer=True)
        bar.update_ticks()
    _share_axis(axes[0], plotted)
    split = sorted({m.final_row()[0] for m in members})
    axes[0].set_ylabel("final nonzero entries (% of d_ff)")
    fig.suptitle(f"Final activation map density per layer ({', '.join(split)})")
    return fig


def final_per_layer_figure(members: list[Member], axis: Axis):
    """Per stack: each member's final share against the layer index, one line per member."""
    from matplotlib import ticker

    panels = _stack_panels(members)
    if panels is None:
        return None
    shares, stacks, fig, axes = panels
    order = _member_order(axis)
    colors = dict(zip(order, _colors(len(order))))
    plotted = []
    for ax, stack in zip(axes, stacks):
        for i in order:
            layers = shares[i].get(stack, [])
            if layers:
                points = zip(*[(layer, 100 * v) for layer, v in layers])
                ax.plot(*points, color=colors[i], marker=".", label=_legend_label(members[i], axis, i))
                plotted += [100 * v for _, v in layers]
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if max((layer for sh in shares for layer, _ in sh.get(stack, [])), default=0) == 0:
            ax.set_xticks([0])  # one layer (a 2-layer MLP): one tick, not fractions of a layer
            ax.set_xlim(-0.5, 0.5)
        ax.set_title(stack)
        ax.set_xlabel("layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", title=_legend_title(axis), title_fontsize="x-small")
    _share_axis(axes[0], plotted)
    axes[0].set_ylabel("final nonzero entries (% of d_ff)")
    fig.suptitle("Final activation map density along the layers")
    return fig


# ----------------------------------------------------------------------------- compare.md


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _overrides_text(overrides: dict[str, Any] | None) -> str:
    if overrides is None:
        return "-"
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in overrides.items()) or "(base)"


def _last(rows: list[dict[str, Any]], key: str) -> Any:
    for row in reversed(rows):
        if key in row:
            return row[key]
    return None


def metrics_table(members: list[Member]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the side-by-side table: one row per member, final eval values (the
    label-noise accuracies: the last train row's; a corruption: its last mean-over-severities row)."""
    corrupt = sorted({str(r["split"]) for m in members for r in m.rows if _CORRUPT_MEAN_RE.match(str(r["split"]))})
    has_ece = any("ece" in r for m in members for r in m.split("eval"))
    noise_keys = [k for k in _LABEL_NOISE_KEYS if any(k in r for m in members for r in m.split("train"))]
    header = ["member", "overrides", "parameters", "step", "eval accuracy", "eval loss", "eval nonzero_frac/mean"]
    header += ["train nonzero_frac/mean"] + (["eval ece"] if has_ece else [])
    header += [f"train {k}" for k in noise_keys]
    header += [f"{_CORRUPT_MEAN_RE.match(s)['name']} accuracy" for s in corrupt]
    body = []
    for m in members:
        evals = m.split("eval")
        last_step = max(int(r["step"]) for r in m.rows)
        step = f"{last_step}" if m.total_steps is None else f"{last_step} / {m.total_steps}"
        line = [m.name, _cell(_overrides_text(m.overrides)), _format_value(m.params) if m.params else "-", step]
        line += [
            report.pct(report.as_float(_last(evals, "accuracy"))),
            report.fmt(_last(evals, "loss"), ".4f"),
            report.pct(report.as_float(_last(evals, "nonzero_frac/mean"))),
            report.pct(report.as_float(_last(m.split("train"), "nonzero_frac/mean"))),
        ]
        if has_ece:
            line.append(report.fmt(_last(evals, "ece"), ".4f"))
        line += [report.pct(report.as_float(_last(m.split("train"), k))) for k in noise_keys]
        line += [report.pct(report.as_float(_last(m.split(s), "accuracy"))) for s in corrupt]
        body.append(line)
    return header, body


def flops_table(members: list[Member]) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows): each member's forward FLOPs per example and the shares its final nonzero shares could skip."""
    header = ["member", "FLOPs / example", "attention", "MLP W_in", "MLP W_out", "rest", "nonzero (mean)"]
    header += ["W_out skippable", "W_in + W_out skippable"]
    body = []
    for m in members:
        result = flops.run_flops(m.run_dir, m.rows)
        if result is None:
            continue
        parts = result.parts
        total = flops.per_example(parts)
        kinds = [sum(p.tokens * getattr(p, k) for p in parts) for k in ("attention", "mlp_first", "mlp_second", "rest")]
        skip = result.skip["all" if "all" in result.skip else parts[0].name]
        body.append(
            [m.name, flops.format_flops(total)]
            + [f"{100 * v / total:.1f}%" for v in kinds]
            + [f"{100 * skip.nonzero:.1f}%", f"{100 * skip.second:.1f}%", f"{100 * skip.both:.1f}%"]
        )
    return (header, body) if body else None


def write_compare(sweep_dir: wd.PathLike, out_dir: wd.PathLike | None = None) -> epath.Path:
    """Writes compare.md and the PNG figures into `out_dir` (default DIR/compare/); returns the path of compare.md."""
    sweep_dir = wd.location_path(sweep_dir, "--compare")
    out = sweep_dir / COMPARE_DIR if out_dir is None else wd.location_path(out_dir, "--out_dir")
    record, members, not_run = read_sweep(sweep_dir)
    with wd.local_output_dir(out) as local:
        _write_compare(
            sweep_dir, record, members, not_run, local, source=None if out_dir is None else _link(sweep_dir, out)
        )
    return out / "compare.md"


def is_sweep_dir(path: epath.Path) -> bool:
    """A directory `read_sweep` can compare: it holds sweep.json or a subdirectory with metric rows."""
    return path.is_dir() and (
        (path / SWEEP_JSON).is_file() or any((p / wd.METRICS).is_file() for p in path.iterdir() if p.is_dir())
    )


def redraw(results_dir: wd.PathLike, out_dir: wd.PathLike) -> list[epath.Path]:
    """Redraws every figure of a results directory (docs/results) into `out_dir` (docs/figures); returns the
    Markdown files written. Per subdirectory NAME, by name: a sweep (`is_sweep_dir`) gets its comparison
    (write_compare) in OUT/NAME/; a lazy_jax.measure output (measure.json) its figures and report.md there.
    Other subdirectories are skipped with a warning."""
    results_dir = wd.location_path(results_dir, "--redraw")
    out_dir = wd.location_path(out_dir, "--out_dir")
    if not results_dir.is_dir():
        raise InputError(f"--redraw={str(results_dir)!r} is not a directory: give one holding sweep directories")
    written = []
    for path in sorted(results_dir.iterdir(), key=lambda p: p.name):
        if (path / MEASURE_JSON).is_file():
            written.append(redraw_measure(path, out_dir / path.name))
        elif is_sweep_dir(path):
            written.append(write_compare(path, out_dir / path.name))
        elif path.is_dir():
            logger.warning("%s is neither a sweep directory nor a measure output: no figures redrawn", path)
    if not written:
        raise InputError(f"{results_dir} holds no sweep directory and no measure output ({MEASURE_JSON})")
    return written


def redraw_measure(measure_dir: wd.PathLike, out_dir: wd.PathLike) -> epath.Path:
    """The figures and report.md of a lazy_jax.measure output, drawn again from its measure.json into `out_dir`."""
    from lazy_jax import measure  # jax and the models: only here

    measure_dir, out = epath.Path(measure_dir), epath.Path(out_dir)
    results = json.loads(wd.read_text(measure_dir / MEASURE_JSON))
    with wd.local_output_dir(out) as local:
        figures = measure.draw_figures(local, results)
        source = _link(measure_dir / MEASURE_JSON, out)
        md = measure.report_markdown(results, figures) + f"\nRedrawn from [{source}]({source}).\n"
        (local / "report.md").write_text(md, encoding="utf-8")
    return out / "report.md"


def _link(target: epath.Path, start: epath.Path) -> str:
    """`target` as a link from `start`: a relative path when both are local, else the URI itself."""
    if wd.is_remote(target) or wd.is_remote(start):
        return str(target)
    return os.path.relpath(os.path.abspath(target), os.path.abspath(start))


def _write_compare(
    sweep_dir: epath.Path, record, members: list[Member], not_run: list[str], out_dir, source: str | None = None
) -> None:
    """write_compare, into the local directory `out_dir`; `source`: a link to the sweep directory, when elsewhere."""
    from lazy_jax.report_figures import save

    axis = varied_axis(members)

    md = [f"# Sweep comparison: {sweep_dir.name}", ""]
    if source is not None:
        md += [f"Runs (metrics, configs): [{source}]({source})", ""]
    if record:
        md += [f"Sweep `{record.get('sweep')}` on `{record.get('base')}`", ""]
        if record.get("extra"):
            md += [f"{EXTRA_NOTE}: `{_overrides_text(record['extra'])}`", ""]
    if not_run:
        md += [f"Not run yet (no metric rows): {', '.join(not_run)}.", ""]
    md += ["## Final metrics", "", "Last eval row of each run; `step`: the last logged step of the run's total.", ""]
    header, body = metrics_table(members)
    if any(h.startswith("train accuracy_") for h in header):
        md += [LABEL_NOISE_NOTE, ""]
    if any(h.endswith(" accuracy") and h != "eval accuracy" for h in header):
        md += [CORRUPTION_NOTE, ""]
    md += report.md_table(header, body, "ll" + "r" * (len(header) - 2)) + [""]

    table = flops_table(members)
    if table:
        md += ["## Forward FLOPs", "", FLOPS_NOTE, ""]
        md += report.md_table(*table) + [""]

    md += ["## Figures", ""]
    figures = [
        ("nonzero_frac.png", nonzero_frac_figure, "Mean nonzero share of the MLP activation maps against step."),
        (
            "final_nonzero_frac.png",
            final_nonzero_frac_figure,
            f"Final nonzero share of every layer (dots, coloured by layer) and the mean over each stack's layers "
            f"(line) against {axis.label}.",
        ),
        ("final_per_layer.png", final_per_layer_figure, "Final nonzero share along the layers, one line per run."),
    ]
    for file_name, draw, caption in figures:
        png = save(draw(members, axis), out_dir / file_name)
        if png:
            md += [caption, "", f"![{png.stem}]({png.name})", ""]
    (out_dir / "compare.md").write_text("\n".join(md), encoding="utf-8")


EXTRA_NOTE = "Command-line overrides of every member (sweep.json `extra`, applied after each member's own)"
LABEL_NOISE_NOTE = (
    "Label noise (data.label_noise): `train accuracy_noisy_labels` is the last train batch's accuracy on the "
    "examples whose label was replaced, against that random label (memorisation); `train accuracy_clean_labels` "
    "on the others."
)
CORRUPTION_NOTE = (
    "`<corruption> accuracy`: the eval split under that corruption, mean over its severities "
    "(split `eval_corrupt/<corruption>/mean`)."
)
FLOPS_NOTE = (
    "Forward FLOPs of one example (a multiply-add is 2 FLOPs; matrix products only) and the share of "
    "each kind; skippable: the share of all FLOPs that each run's final nonzero shares let W_out skip, "
    "and the bound if a predictor let W_in skip too (lazy_jax/flops.py)."
)
