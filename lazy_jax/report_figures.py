"""Figures of the run report (lazy_jax.report), drawn with matplotlib's Agg canvas.

Figures are built as `matplotlib.figure.Figure` objects without pyplot, so no display and no
global backend switch are needed and importing this module changes nothing for the caller.
Each `*_figure` function returns the figure, or None when there is nothing to draw; `save`
writes it (the tests read the plotted data back from the figure).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import cm, colormaps, colors, ticker
from matplotlib.figure import Figure

_LAYER_RE = re.compile(r"^(?P<kind>[^/]+)/(?P<stack>[^/]+)/layer_(?P<layer>\d+)$")
_CMAP = "viridis"
_CMAP_TOP = 0.85  # viridis' last yellows are hard to see on white
_MAX_LEGEND_LAYERS = 12  # more layers than this get a colour bar instead of a legend
_DPI = 120


def _layers_by_stack(names, kind: str) -> dict[str, list[tuple[int, str]]]:
    """{stack: [(layer, name), ...] by layer} of the `kind/<stack>/layer_<ii>` names."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in names:
        m = _LAYER_RE.match(name)
        if m and m["kind"] == kind:
            out[m["stack"]].append((int(m["layer"]), name))
    return {s: sorted(v) for s, v in sorted(out.items())}


def _colors(num_layers: int) -> list:
    """One colour per layer index, by depth (first layer dark, last light)."""
    cmap = colormaps[_CMAP]
    return [cmap(_CMAP_TOP * i / max(num_layers - 1, 1)) for i in range(num_layers)]


def _depth_key(fig: Figure, ax, layers: list[int]) -> None:
    """A legend for few layers, a colour bar (layer index) for many."""
    if len(layers) <= _MAX_LEGEND_LAYERS:
        ax.legend(fontsize="x-small", ncol=2 if len(layers) > 6 else 1)
    else:
        top = colors.ListedColormap(colormaps[_CMAP](np.linspace(0, _CMAP_TOP, 256)))
        norm = colors.Normalize(vmin=0, vmax=max(layers))
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=top), ax=ax, label="layer")


def _percent_log_axis(ax) -> None:
    """Log y axis labelled in plain numbers at 1, 2, 5 x 10^n (runs span only a decade or two)."""
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(
        ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v)), 6) in (2, 5) else ""
        )
    )


def _series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if value is None:
            continue
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            continue
        steps.append(int(row["step"]))
    return np.asarray(steps), np.asarray(values, dtype=np.float64)


def save(fig: Figure | None, path: Path) -> Path | None:
    """Writes `fig` as a PNG at `path`; returns the path, or None (nothing written) if `fig` is None."""
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def nonzero_frac_figure(rows: list[dict[str, Any]], split: str) -> Figure | None:
    """nonzero_frac (%) per layer against step, log y; one panel per stack; rows of one split."""
    names = {k for r in rows for k in r}
    stacks = _layers_by_stack(names, "nonzero_frac")
    if not stacks:
        return None
    fig = Figure(figsize=(5.5 * len(stacks), 4.2), layout="constrained")
    axes = fig.subplots(1, len(stacks), sharey=True, squeeze=False)[0]
    marker = "." if len(rows) <= 30 else None
    for ax, (stack, layers) in zip(axes, stacks.items()):
        palette = _colors(max(layer for layer, _ in layers) + 1)
        for layer, name in layers:
            steps, values = _series(rows, name)
            ax.plot(steps, 100 * values, color=palette[layer], marker=marker, lw=1.2, label=f"layer {layer:02d}")
        steps, values = _series(rows, f"nonzero_frac/{stack}/mean")
        if steps.size:
            ax.plot(steps, 100 * values, color="black", ls="--", lw=1.5, marker=marker, label="mean")
        _percent_log_axis(ax)
        ax.set_title(stack)
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        _depth_key(fig, ax, [layer for layer, _ in layers])
    axes[0].set_ylabel("nonzero entries (% of d_ff)")
    fig.suptitle(f"Activation map density per layer ({split})")
    return fig


def loss_figure(rows_by_split: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Loss (left) and accuracy (right, if logged) against step, one line per split."""
    panels = [k for k in ("loss", "accuracy") if any(_series(r, k)[0].size for r in rows_by_split.values())]
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels):
        for split, rows in rows_by_split.items():
            steps, values = _series(rows, key)
            if steps.size:
                scale = 100 if key == "accuracy" else 1
                ax.plot(steps, scale * values, marker="." if steps.size <= 30 else None, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)" if key == "accuracy" else key)
        ax.set_title(key)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def neuron_usage_figure(stats: dict[str, np.ndarray], split: str, step: int) -> Figure | None:
    """Per stack: per-token nonzero-count histograms and sorted per-neuron frequency, per layer.

    count_hist/<stack>/layer_<ii> [bins]: share of tokens whose nonzero count falls in each of
    `bins` equal-width bins of [0, d_ff]; neuron_freq/<stack>/layer_<ii> [d_ff]: share of
    tokens on which each neuron is nonzero.
    """
    hists = _layers_by_stack(stats, "count_hist")
    freqs = _layers_by_stack(stats, "neuron_freq")
    kinds = [k for k, v in (("count_hist", hists), ("neuron_freq", freqs)) if v]
    if not kinds:
        return None
    stacks = sorted(set(hists) | set(freqs))
    fig = Figure(figsize=(5.5 * len(kinds), 3.8 * len(stacks)), layout="constrained")
    axes = fig.subplots(len(stacks), len(kinds), squeeze=False)
    for row, stack in enumerate(stacks):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            layers = (hists if kind == "count_hist" else freqs).get(stack, [])
            if not layers:
                ax.set_axis_off()
                continue
            palette = _colors(max(layer for layer, _ in layers) + 1)
            if kind == "count_hist":
                x_max = 0.0
                for layer, name in layers:
                    share = np.asarray(stats[name], dtype=np.float64).ravel()
                    edges = np.linspace(0.0, 100.0, share.size + 1)
                    ax.stairs(100 * share, edges, color=palette[layer], label=f"layer {layer:02d}")
                    used = np.nonzero(share > 0)[0]
                    if used.size:
                        x_max = max(x_max, edges[used[-1] + 1])
                # Sparse maps put all mass in the first bins: zoom to the used range.
                ax.set_xlim(0, min(100.0, 1.1 * x_max) if x_max else 100.0)
                ax.set_xlabel("nonzero entries per token (% of d_ff)")
                ax.set_ylabel("share of tokens (%)")
                ax.set_title(f"{stack}: per-token nonzero count")
            else:
                for layer, name in layers:
                    freq = np.sort(np.asarray(stats[name], dtype=np.float64).ravel())[::-1]
                    rank = 100 * (np.arange(freq.size) + 0.5) / freq.size
                    ax.plot(rank, 100 * freq, color=palette[layer], lw=1.2, label=f"layer {layer:02d}")
                ax.set_xlabel("neurons, most active first (% of d_ff)")
                ax.set_ylabel("tokens on which the neuron is nonzero (%)")
                ax.set_title(f"{stack}: per-neuron activation frequency")
            ax.grid(True, alpha=0.3)
            _depth_key(fig, ax, [layer for layer, _ in layers])
    fig.suptitle(f"Neuron usage ({split}, step {step})")
    return fig


def reliability_figure(stats: dict[str, np.ndarray], split: str, step: int) -> Figure | None:
    """Reliability diagram from `calibration/*` [M] (lazy_jax.calibration): left, the accuracy of
    each confidence bin (bars over the bin) and its mean confidence (dots) against the diagonal;
    right, the number of predictions per bin. Empty bins (NaN) get no bar. None without them."""
    keys = ("calibration/count", "calibration/confidence", "calibration/accuracy")
    if not all(k in stats for k in keys):
        return None
    count_M, conf_M, acc_M = (np.asarray(stats[k], dtype=np.float64).ravel() for k in keys)
    num_bins = count_M.size
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    used = count_M > 0
    total = count_M.sum()
    ece = float(np.abs(acc_M[used] - conf_M[used]) @ count_M[used] / total) if total > 0 else float("nan")
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax, ax_count = fig.subplots(1, 2)
    ax.bar(edges[:-1][used], acc_M[used], width=1.0 / num_bins, align="edge", edgecolor="black", label="accuracy")
    ax.plot(conf_M[used], acc_M[used], "o", color="tab:red", ms=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top softmax probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {ece:.4f}")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(True, alpha=0.3)
    ax_count.bar(edges[:-1], count_M, width=1.0 / num_bins, align="edge", edgecolor="black")
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence (top softmax probability)")
    ax_count.set_ylabel("predictions")
    ax_count.set_title("predictions per bin")
    ax_count.grid(True, alpha=0.3)
    fig.suptitle(f"Reliability diagram ({split}, step {step})")
    return fig


def union_figure(stats: dict[str, np.ndarray], sizes: list[int], split: str, step: int) -> Figure | None:
    """Per stack: share of neurons active on at least one of n pooled tokens against n (log 2 axis),
    per layer; solid: random tokens of the batch (union_random/<stack>/layer_<ii>), dashed:
    consecutive tokens of a sequence (union_consecutive/..., NaN where a sequence is shorter)."""
    randoms = _layers_by_stack(stats, "union_random")
    if not randoms or not sizes:
        return None
    fig = Figure(figsize=(5.5 * len(randoms), 4.2), layout="constrained")
    axes = fig.subplots(1, len(randoms), sharey=True, squeeze=False)[0]
    for ax, (stack, layers) in zip(axes, randoms.items()):
        palette = _colors(max(layer for layer, _ in layers) + 1)
        for layer, name in layers:
            union = np.asarray(stats[name], dtype=np.float64).ravel()
            ax.plot(sizes, 100 * union, "o-", color=palette[layer], ms=3, lw=1.2, label=f"layer {layer:02d}")
            consecutive = stats.get(name.replace("union_random/", "union_consecutive/", 1))
            if consecutive is not None:
                ax.plot(sizes, 100 * np.asarray(consecutive, dtype=np.float64).ravel(), "--", color=palette[layer])
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("pooled tokens n")
        ax.set_title(f"{stack} (solid: random tokens, dashed: consecutive)")
        ax.grid(True, which="both", alpha=0.3)
        _depth_key(fig, ax, [layer for layer, _ in layers])
    axes[0].set_ylabel("neurons active on any of the n tokens (% of d_ff)")
    fig.suptitle(f"Union of active neurons ({split}, step {step})")
    return fig
