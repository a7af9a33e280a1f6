"""Measure the activation sparsity of any checkpoint over a dataset split: report.md, figures, one JSON.

    python -m lazy_jax.measure --workdir=runs/vit --dataset=digits --split=test
    python -m lazy_jax.measure --hf_t5=PATH --dataset=pydocs --split=validation --inputs_length=128 --out=DIR

The model is a trained run's newest checkpoint (its config.json) or a Hugging Face T5 v1.0
checkpoint (`models.t5_convert.load_hf_t5`, which refuses gated/GELU T5s by name). Its forward
pass (eval mode) runs over the split's eval batches (`input_pipeline.eval_batches`; padding never
counts) and gives, per MLP layer:
- the nonzero share (nonzero_frac of docs/design.md), token-weighted over the batches;
- the neuron-frequency histogram of the paper's Figure 3: the share of neurons by the share of
  tokens they are active on, in log-spaced bins from 1e-4 to 1, dead neurons (never active) and
  the share active on under 10% of tokens;
- the per-token nonzero-count histogram (`count_hist_bins` equal bins of [0, d_ff]);
- the union curve (`sparsity.union_active_frac`): the share of neurons active on at least one of
  n pooled tokens, n = 1, 2, 4, ..., for random tokens of a batch and for consecutive tokens of
  one sequence; how far batched inference can still skip W_out rows;
- the FLOP table of `lazy_jax.flops` at the measured shares.

The statistics come from the model itself (`neuron_freq` and `count_hist_bins` switched on in
config.model); the union is reduced on the device from each MlpBlock's activation map, caught
with `nn.intercept_methods` on its `wo` Dense and added to that block's statistics, so it flows
out of loops and nn.scan alike. Bad input (no checkpoint, a checkpoint of another shape, a gated
HF model, an unknown dataset or split, union sizes beyond the tokens of a batch) is refused
before any batch runs; only --out (default WORKDIR/measure/) is written. --workdir and --out may
be gs://BUCKET/PATH (etils.epath paths, as the trainer's); the outputs are drawn locally and copied.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from etils import epath

from lazy_jax import flops, input_pipeline, report, sparsity, xla_flags
from lazy_jax import sharding as shd
from lazy_jax import workdir as wd
from lazy_jax.errors import InputError

FREQ_EDGES = np.logspace(-4, 0, 17)  # 4 bins a decade, 1e-4 .. 1 (Figure 3); below 1e-4 joins the first
RARE = 0.1  # "active on under 10% of tokens"
JSON_NAME = "measure.json"


@dataclasses.dataclass
class Measured:
    """What `measure` loaded: the config it ran, the experiment (model, mesh) and the parameters."""

    config: ml_collections.ConfigDict
    exp: Any
    params: Any
    source: str
    step: int


# ----------------------------------------------------------------------------- loading


def _set_data(config, dataset: str | None, split: str | None, data_dir: str | None, batch_size: int | None) -> None:
    with config.unlocked():
        if dataset is not None:
            config.data.name = dataset
        if split is not None:
            config.data.eval_split = split
        if data_dir is not None:
            config.data.data_dir = data_dir
        if batch_size is not None:
            config.eval_batch_size = batch_size


def _stat_overrides(config, count_hist_bins: int) -> None:
    with config.unlocked():
        config.model.neuron_freq = True
        config.model.count_hist_bins = count_hist_bins
        # measure draws its own union curve; the run's eval-time union sizes could exceed --batch_size.
        config.model.union_sizes = ""


def _experiment(config):
    from lazy_jax.train import Experiment

    data = input_pipeline.data_spec(config)  # an unknown dataset or split is refused here
    exp = Experiment(config, data)
    shd.check_batch_size(config.eval_batch_size, exp.mesh, "batch_size")
    return exp


def load_workdir(workdir, *, dataset, split, data_dir, batch_size, count_hist_bins) -> Measured:
    """The run's config.json and newest checkpoint, refused if their shapes differ; reads the workdir only."""
    from lazy_jax.checkpoint import Checkpointer, ModelMismatchError, NoReadableCheckpointError, param_shapes

    workdir = wd.workdir_path(workdir)
    config_path, ckpt_dir = workdir / wd.CONFIG, workdir / wd.CHECKPOINTS_DIR
    if not config_path.is_file():
        raise InputError(f"--workdir={workdir}: no {wd.CONFIG}; give the workdir of a training run")
    if not ckpt_dir.is_dir():  # checked here: the Checkpointer would create it
        raise InputError(f"--workdir={workdir}: no {wd.CHECKPOINTS_DIR}/; the run has saved no checkpoint")
    config = ml_collections.ConfigDict(json.loads(wd.read_text(config_path)))
    _set_data(config, dataset, split, data_dir, batch_size)
    _stat_overrides(config, count_hist_bins)
    exp = _experiment(config)
    ckpt = Checkpointer(ckpt_dir, async_save=False)
    shapes = param_shapes(exp.abstract_state.params)
    try:
        steps = ckpt.all_steps()
        if steps:  # the newest checkpoint's shapes, in measure's words (restore_latest's advice is the trainer's)
            _check_shapes(workdir, ckpt.directory, steps[-1], ckpt.read_meta(steps[-1]), shapes, dataset)
        state, meta = ckpt.restore_latest(exp.abstract_state, shapes, optimizer=config.optimizer.to_dict())
    except (ModelMismatchError, NoReadableCheckpointError) as e:
        # The first sentence says what differs or what is unreadable; the rest is the trainer's remedy.
        what = str(e).split("; resume with")[0].split(". Check the storage")[0]
        raise InputError(
            f"--workdir={workdir}: {what}; measure needs the config the run was trained with (its {wd.CONFIG}) "
            "and reads the checkpoint only, nothing was changed"
        ) from None
    finally:
        ckpt.close()
    if state is None:
        raise InputError(f"--workdir={workdir}: {wd.CHECKPOINTS_DIR}/ holds no checkpoint")
    return Measured(config, exp, state.params, f"workdir {workdir}", int(meta.get("step", jax.device_get(state.step))))


def _check_shapes(workdir, ckpt_dir, step: int, meta: dict, shapes: dict, dataset: str | None) -> None:
    """InputError naming the parameters whose shapes differ between the checkpoint and the model of config.json."""
    stored = meta.get("param_shapes")
    if stored is None or stored == shapes:
        return
    keys = [k for k in sorted(set(stored) | set(shapes)) if stored.get(k) != shapes.get(k)]
    detail = ", ".join(f"{k}: checkpoint {stored.get(k)} vs config {shapes.get(k)}" for k in keys[:4])
    more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
    why = (
        f"; --dataset={dataset} gives the model other classes or another image shape than the run's data"
        if dataset is not None
        else ""
    )
    raise InputError(
        f"--workdir={workdir}: the checkpoint at {ckpt_dir}/{step} has parameters of other shapes than the model "
        f"its {wd.CONFIG} builds ({detail}{more}){why}; measure needs the config the run was trained with "
        "(and a dataset of the same classes and image shape); nothing was changed"
    )


def load_hf(path, *, dataset, split, data_dir, batch_size, count_hist_bins, inputs_length) -> Measured:
    """A Hugging Face T5 v1.0 directory on a text dataset (pydocs unless `dataset`)."""
    from lazy_jax.checkpoint import param_shapes
    from lazy_jax.config_base import base_config
    from lazy_jax.data import text
    from lazy_jax.models import t5_convert

    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise InputError(f"--hf_t5={path}: no config.json; give a Hugging Face T5 model directory")
    # The config alone first: a gated/GELU T5 is refused by name before its weights are read.
    t5_convert.model_config_from_hf(json.loads(config_path.read_text(encoding="utf-8")))
    try:
        model_config, params = t5_convert.load_hf_t5(path)
    except FileNotFoundError as e:
        raise InputError(f"--hf_t5={path}: {e}") from None
    if not isinstance(inputs_length, int) or isinstance(inputs_length, bool) or inputs_length < 2:
        raise InputError(f"--inputs_length={inputs_length!r} is not allowed: use an integer >= 2")
    config = base_config()
    config.task = "seq2seq"
    config.model = model_config
    config.data = text.default_config(dataset or "pydocs", inputs_length=inputs_length)
    _set_data(config, None, split, data_dir, batch_size if batch_size is not None else 64)
    _stat_overrides(config, count_hist_bins)
    exp = _experiment(config)
    want, got = param_shapes(exp.abstract_state.params), param_shapes(params)
    if want != got:
        diff = [k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)][:3]
        raise InputError(f"--hf_t5={path}: converted parameters do not fit the model: {diff}")
    params = jax.device_put(params, exp.state_sharding.params)
    return Measured(config, exp, params, f"Hugging Face T5 {path}", 0)


# ----------------------------------------------------------------------------- the union on the device


def powers_of_two(limit: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(int(math.log2(limit)) + 1)) if limit >= 1 else ()


def union_sizes(b: int, t: int, sizes: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(random sizes, consecutive sizes) for a block of B x T tokens: the given ones (consecutive: those
    <= T, a sequence has no more), else powers of two up to B x T and T."""
    if sizes is None:
        return powers_of_two(b * t), powers_of_two(t)
    return tuple(sizes), tuple(n for n in sizes if n <= t)


def _is_block_wo(module) -> bool:
    return isinstance(module, nn.Dense) and module.name == "wo" and isinstance(module.parent, sparsity.MlpBlock)


def forward_stats(model, rules, sizes: Sequence[int] | None):
    """params, batch -> aux, each MlpBlock's statistics with union_random / union_consecutive [S] and
    their group counts added (sparsity.union_active_frac on the map the block hands its `wo`)."""

    def apply(params, batch):
        maps = []

        def interceptor(next_fun, args, kwargs, context):
            module = context.module
            if context.method_name == "__call__" and _is_block_wo(module):
                maps.append(args[0])
            if context.method_name != "__call__" or not isinstance(module, sparsity.MlpBlock):
                return next_fun(*args, **kwargs)
            y, stats = next_fun(*args, **kwargs)
            a_BTF = maps.pop()
            mask_BT = args[1] if len(args) > 1 else kwargs.get("mask_BT")
            random_S, consecutive_S = union_sizes(a_BTF.shape[0], a_BTF.shape[1], sizes)
            u_r, g_r = sparsity.union_active_frac(a_BTF, mask_BT, random_S)
            u_c, g_c = sparsity.union_active_frac(a_BTF, mask_BT, consecutive_S, consecutive=True)
            extra = dict(union_random=u_r, union_random_groups=g_r, union_consecutive=u_c, union_consecutive_groups=g_c)
            return y, {**stats, **extra}

        with nn.intercept_methods(interceptor), nn.logical_axis_rules(rules):
            _, aux = model.apply({"params": params}, batch, train=False)
        return aux

    return apply


# ----------------------------------------------------------------------------- the run


def measure(
    *,
    workdir: str | None = None,
    hf_t5: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    num_batches: int | None = None,
    out: str | None = None,
    batch_size: int | None = None,
    sizes: Sequence[int] | None = None,
    count_hist_bins: int = 32,
    inputs_length: int = 512,
    progress: bool = True,
) -> epath.Path:
    """Runs the measurement and writes report.md, the figures and measure.json into `out`; returns `out`."""
    if (workdir is None) == (hf_t5 is None):
        raise InputError("give one of --workdir=RUN_DIR (a trained run) and --hf_t5=PATH (a Hugging Face T5 v1.0)")
    if hf_t5 is not None and out is None:
        raise InputError("--hf_t5 needs --out=DIR: measure writes nowhere else")
    for name, value, low in (("num_batches", num_batches, 1), ("batch_size", batch_size, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise InputError(f"--{name}={value!r} is not allowed: use a positive integer")
    if not isinstance(count_hist_bins, int) or isinstance(count_hist_bins, bool) or count_hist_bins < 1:
        raise InputError(f"--count_hist_bins={count_hist_bins!r} is not allowed: use a positive integer")
    if sizes is not None:
        sizes = tuple(sizes)
        bad = [n for n in sizes if not isinstance(n, int) or isinstance(n, bool) or n < 1]
        if bad or not sizes:
            raise InputError(f"--union_sizes={list(sizes)!r} is not allowed: use positive integers, e.g. 1,2,4,8")
    common = dict(
        dataset=dataset, split=split, data_dir=data_dir, batch_size=batch_size, count_hist_bins=count_hist_bins
    )
    if workdir is not None:
        m = load_workdir(workdir, **common)
    else:
        m = load_hf(hf_t5, inputs_length=inputs_length, **common)
    out_dir = wd.location_path(out, "--out") if out is not None else wd.workdir_path(workdir) / "measure"
    if not wd.is_remote(out_dir):
        wd.check_writable_dir(out_dir, "--out")

    batches = iter(input_pipeline.eval_batches(m.config, 0, 1))
    first = next(batches, None)
    if first is None:
        raise InputError(f"the split {m.config.data.eval_split!r} of {m.config.data.name!r} is empty")
    exp = m.exp
    apply = forward_stats(exp.model, exp.rules, sizes)
    with jax.set_mesh(exp.mesh):
        shapes = _block_tokens(exp.model, exp.rules, m.params, shd.global_batch(first, exp.mesh))
    if sizes is not None:
        for stack, (b, t) in shapes.items():
            too_big = [n for n in sizes if n > b * t]
            if too_big:
                raise InputError(
                    f"--union_sizes {too_big} are larger than the {b} x {t} = {b * t} tokens of a batch of "
                    f"{stack!r}: use sizes <= {b * t} (or a larger --batch_size)"
                )
    from lazy_jax.train import weighted_stats

    step = jax.jit(lambda p, batch: weighted_stats(apply(p, batch)), out_shardings=exp.replicated)

    total, count = None, 0
    bar = _progress(num_batches, progress)
    with jax.set_mesh(exp.mesh):
        for local in _chain(first, batches):
            if num_batches is not None and count >= num_batches:
                break
            sums = jax.device_get(step(m.params, shd.global_batch(local, exp.mesh)))
            sums = jax.tree.map(lambda x: np.asarray(x, np.float64), sums)
            total = sums if total is None else jax.tree.map(np.add, total, sums)
            count += 1
            bar.update(1)
    bar.close()
    results = finalize(total, shapes, sizes)
    results["meta"] = dict(
        source=m.source,
        step=m.step,
        dataset=m.config.data.name,
        split=m.config.data.eval_split,
        batches=count,
        batch_size=m.config.eval_batch_size,
    )
    with wd.local_output_dir(out_dir) as local:
        write_outputs(local, m, results)
    return out_dir


def _block_tokens(model, rules, params, batch) -> dict[str, tuple[int, int]]:
    """{stack: (B, T)} of its MLP blocks' activation maps, by an abstract trace (nothing is computed)."""
    found: dict[tuple[str, ...], tuple[int, int]] = {}

    def trace(p, b):
        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and _is_block_wo(context.module):
                found[tuple(context.module.path)] = tuple(int(d) for d in args[0].shape[:2])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor), nn.logical_axis_rules(rules):
            return model.apply({"params": p}, b, train=False)[1]

    stacks = jax.eval_shape(trace, params, batch)
    shapes = {}
    for stack in stacks:
        # A block belongs to the stack its path names (T5's encoder, the Mixer's token_mlp); a model
        # with one stack (ViT, MLP) names none, and all its blocks agree.
        mine = {v for k, v in found.items() if stack in k} or set(found.values())
        if len(mine) != 1:
            raise AssertionError(f"MLP blocks of {stack!r} have maps of several shapes: {sorted(mine)}")
        shapes[stack] = mine.pop()
    return shapes


def _chain(first, rest):
    yield first
    yield from rest


class _Bar:
    """A plain-text progress bar on stderr (tqdm when installed)."""

    def __init__(self, total, enabled):
        self.n, self.total, self.enabled = 0, total, enabled

    def update(self, k):
        self.n += k
        if self.enabled:
            of = f"/{self.total}" if self.total else ""
            print(f"\rmeasure: batch {self.n}{of}", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            print(file=sys.stderr, flush=True)


def _progress(total, enabled):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Bar(total, enabled)
    return tqdm(total=total, desc="measure", unit="batch", disable=not enabled, file=sys.stderr)


# ----------------------------------------------------------------------------- results


def freq_histogram(freq_F: np.ndarray) -> np.ndarray:
    """[len(FREQ_EDGES) - 1]: share of the live neurons' ... of all neurons in each log bin (dead ones excluded)."""
    live = freq_F[freq_F > 0]
    counts, _ = np.histogram(np.clip(live, FREQ_EDGES[0], FREQ_EDGES[-1]), bins=FREQ_EDGES)
    return counts / max(freq_F.size, 1)


def finalize(total, shapes, sizes) -> dict[str, Any]:
    """Host sums over batches -> per-stack, per-layer results (plain lists, for the JSON)."""
    stacks = {}
    for stack in sorted(total):
        s = total[stack]
        tokens_L = np.maximum(s["num_tokens"], 1.0)
        per_token = {
            k: s[k] / tokens_L.reshape((-1,) + (1,) * (s[k].ndim - 1))
            for k in ("nonzero_frac", "neuron_freq", "count_hist")
        }
        per_group = {k: s[k] / np.maximum(s[k + "_groups"], 1.0) for k in ("union_random", "union_consecutive")}
        freq_LF = per_token["neuron_freq"]
        b, t = shapes[stack]
        random_S, consecutive_S = union_sizes(b, t, sizes)
        layers = []
        for i in range(freq_LF.shape[0]):
            freq_F = freq_LF[i]
            layers.append(
                dict(
                    layer=i,
                    nonzero_frac=float(per_token["nonzero_frac"][i]),
                    tokens=int(s["num_tokens"][i]),
                    d_ff=int(freq_F.size),
                    dead_frac=float(np.mean(freq_F <= 0)),
                    rare_frac=float(np.mean(freq_F < RARE)),
                    freq_hist=freq_histogram(freq_F).tolist(),
                    count_hist=per_token["count_hist"][i].tolist(),
                    union_random=per_group["union_random"][i].tolist(),
                    union_random_groups=s["union_random_groups"][i].astype(int).tolist(),
                    union_consecutive=per_group["union_consecutive"][i].tolist(),
                    union_consecutive_groups=s["union_consecutive_groups"][i].astype(int).tolist(),
                )
            )
        stacks[stack] = dict(
            tokens_per_batch=[b, t],
            union_random_sizes=list(random_S),
            union_consecutive_sizes=list(consecutive_S),
            layers=layers,
        )
    return dict(freq_edges=FREQ_EDGES.tolist(), rare_below=RARE, stacks=stacks)


def nonzero_metrics(results) -> dict[str, float]:
    aux = {
        stack: {"nonzero_frac": np.array([layer["nonzero_frac"] for layer in v["layers"]])}
        for stack, v in results["stacks"].items()
    }
    return {k: float(v) for k, v in sparsity.stats_to_metrics(aux).items()}


def write_outputs(out_dir: Path, m: Measured, results) -> None:
    from clu import parameter_overview

    # The measured config and parameter table: provenance, and what flops.report_rows reads.
    (out_dir / wd.CONFIG).write_text(m.config.to_json_best_effort(indent=2), encoding="utf-8")
    overview = parameter_overview.get_parameter_overview(m.exp.abstract_state.params, include_stats=False)
    (out_dir / wd.PARAMETERS).write_text(overview + "\n", encoding="utf-8")
    metrics = nonzero_metrics(results)
    results["nonzero"] = metrics
    table = flops.report_rows(out_dir, [{"step": m.step, "split": "eval", **metrics}])
    results["flops"] = None if table is None else dict(header=table[0], rows=table[1])
    (out_dir / JSON_NAME).write_text(json.dumps(results, indent=1), encoding="utf-8")
    figures = draw_figures(out_dir, results)
    (out_dir / "report.md").write_text(report_markdown(results, figures), encoding="utf-8")


def report_markdown(results, figures: list[str]) -> str:
    meta = results["meta"]
    md = [
        "# Activation sparsity measured",
        "",
        f"{meta['source']} (step {meta['step']}) on `{meta['dataset']}` split `{meta['split']}`: "
        f"{meta['batches']} batch(es) of {meta['batch_size']}, padding excluded.",
        "",
        "## Per layer",
        "",
        "nonzero: mean share of a token's MLP activations that are > 0. dead: neurons never active. "
        f"under {RARE:.0%}: neurons active on fewer than {RARE:.0%} of the tokens (dead included). "
        "union n: share of neurons active on at least one of n pooled tokens (random tokens of a batch "
        "/ consecutive tokens of a sequence).",
        "",
    ]
    rows = []
    for stack, v in results["stacks"].items():
        rs, cs = v["union_random_sizes"], v["union_consecutive_sizes"]
        for layer in v["layers"]:
            rows.append(
                [
                    stack,
                    f"{layer['layer']:02d}",
                    str(layer["tokens"]),
                    report.pct(layer["nonzero_frac"]),
                    report.pct(layer["dead_frac"]),
                    report.pct(layer["rare_frac"]),
                    f"{report.pct(layer['union_random'][-1])} (n={rs[-1]})",
                    f"{report.pct(layer['union_consecutive'][-1])} (n={cs[-1]})" if cs else "-",
                ]
            )
    header = ["stack", "layer", "tokens", "nonzero", "dead", f"under {RARE:.0%}", "union, random", "union, consecutive"]
    md += report.md_table(header, rows)
    md += ["", "## Union of active neurons", ""]
    for stack, v in results["stacks"].items():
        for kind in ("random", "consecutive"):
            sizes = v[f"union_{kind}_sizes"]
            if not sizes:
                continue
            md += [f"{stack}, {kind} tokens:", ""]
            body = [[f"{layer['layer']:02d}", *map(report.pct, layer[f"union_{kind}"])] for layer in v["layers"]]
            md += report.md_table(["layer", *(f"n={n}" for n in sizes)], body) + [""]
    md += ["## FLOPs", ""]
    if results["flops"] is None:
        md += ["No FLOP table for this model (see the warning printed by lazy_jax.flops).", ""]
    else:
        md += [flops.REPORT_NOTE, "", *report.md_table(results["flops"]["header"], results["flops"]["rows"]), ""]
    md += ["## Figures", "", *(f"![{f}]({f})" for f in figures), "", f"Numbers: `{JSON_NAME}`.", ""]
    return "\n".join(md)


def draw_figures(out_dir: Path, results) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacks = results["stacks"]
    names = []

    def panels(title):
        fig, axes = plt.subplots(1, len(stacks), figsize=(max(7.0, 5.5 * len(stacks)), 4.5), squeeze=False)
        fig.suptitle(title, fontsize=11)
        return fig, axes[0]

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)

    fig, axes = panels("Nonzero share of MLP activations per layer")
    for ax, (stack, v) in zip(axes, stacks.items()):
        fracs = [100 * layer["nonzero_frac"] for layer in v["layers"]]
        ax.bar(range(len(fracs)), fracs, color="tab:blue")
        ax.set(title=stack, xlabel="layer", ylabel="nonzero (%)", xticks=range(len(fracs)))
    save(fig, "nonzero.png")

    edges = np.asarray(results["freq_edges"])
    centres = np.sqrt(edges[:-1] * edges[1:])
    fig, axes = panels("Neurons by activation frequency (the paper's Fig. 3); dead ones in the legend")
    for ax, (stack, v) in zip(axes, stacks.items()):
        cmap = plt.get_cmap("viridis", max(len(v["layers"]), 2))
        for layer in v["layers"]:
            label = f"layer {layer['layer']} (dead {report.pct(layer['dead_frac'])})"
            ax.plot(
                centres, 100 * np.asarray(layer["freq_hist"]), marker="o", ms=3, color=cmap(layer["layer"]), label=label
            )
        ax.set_xscale("log")
        ax.set(title=stack, xlabel="share of tokens a neuron is active on", ylabel="share of neurons (%)")
        ax.legend(fontsize=7)
    save(fig, "neuron_freq.png")

    fig, axes = panels("Tokens by their number of nonzero activations")
    for ax, (stack, v) in zip(axes, stacks.items()):
        cmap = plt.get_cmap("viridis", max(len(v["layers"]), 2))
        for layer in v["layers"]:
            hist = 100 * np.asarray(layer["count_hist"])
            x = (np.arange(len(hist)) + 0.5) / len(hist) * 100
            ax.plot(x, hist, marker="o", ms=3, color=cmap(layer["layer"]), label=f"layer {layer['layer']}")
        ax.set(
            title=stack, xlabel="nonzero activations of a token (% of d_ff, bin centres)", ylabel="share of tokens (%)"
        )
        ax.legend(fontsize=7)
    save(fig, "count_hist.png")

    fig, axes = panels(
        "Neurons active on any of n pooled tokens\n(solid: random tokens of a batch, dashed: consecutive tokens)"
    )
    for ax, (stack, v) in zip(axes, stacks.items()):
        cmap = plt.get_cmap("viridis", max(len(v["layers"]), 2))
        for layer in v["layers"]:
            color = cmap(layer["layer"])
            ax.plot(
                v["union_random_sizes"],
                100 * np.asarray(layer["union_random"]),
                "-o",
                ms=3,
                color=color,
                label=f"layer {layer['layer']}",
            )
            if v["union_consecutive_sizes"]:
                ax.plot(v["union_consecutive_sizes"], 100 * np.asarray(layer["union_consecutive"]), "--", color=color)
        ax.set_xscale("log", base=2)
        ax.set(title=stack, xlabel="tokens pooled (n)", ylabel="neurons active on any (%)", ylim=(0, 102))
        ax.legend(fontsize=7)
    save(fig, "union.png")
    return names


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> None:
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        sizes = None if f.union_sizes is None else [_int(v, "union_sizes") for v in f.union_sizes.split(",")]
        out = measure(
            workdir=f.workdir,
            hf_t5=f.hf_t5,
            dataset=f.dataset,
            split=f.split,
            data_dir=f.data_dir,
            num_batches=f.num_batches,
            out=f.out,
            batch_size=f.batch_size,
            sizes=sizes,
            count_hist_bins=f.count_hist_bins,
            inputs_length=f.inputs_length,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(out / "report.md")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--{name}: {value!r} is not an integer") from None


if __name__ == "__main__":
    xla_flags.apply()  # before the first computation initialises a backend
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "a training run's workdir: its config.json and newest checkpoint")
    flags.DEFINE_string("hf_t5", None, "a Hugging Face T5 v1.0 (ReLU) model directory")
    flags.DEFINE_string("dataset", None, "tfds name of the data (default: the run's; pydocs for --hf_t5)")
    flags.DEFINE_string("split", None, "split to measure on (default: the run's eval split)")
    flags.DEFINE_string("data_dir", None, "tfds data dir (default: the run's, else $TFDS_DATA_DIR)")
    flags.DEFINE_integer("num_batches", None, "measure at most this many batches (default: the whole split)")
    flags.DEFINE_integer("batch_size", None, "batch size (default: the run's eval_batch_size; 64 for --hf_t5)")
    flags.DEFINE_string("out", None, "output directory (default: WORKDIR/measure; needed with --hf_t5)")
    flags.DEFINE_string(
        "union_sizes", None, "comma-separated n for the union curve (default: 1, 2, 4, ... up to a batch)"
    )
    flags.DEFINE_integer("count_hist_bins", 32, "bins of the per-token nonzero-count histogram")
    flags.DEFINE_integer("inputs_length", 512, "encoder length for --hf_t5 (targets from T5's span helper)")
    app.run(main)
