"""Forward FLOPs of a model and the share that its activation sparsity could skip (the paper's Sec. 3.1).

`forward_flops(spec, image_shape=...)` (vision models) or `forward_flops(spec, inputs_length=...,
targets_length=...)` (T5) gives one `PartFlops` per part of the model: the ViT, Mixer or MLP
whole, T5's encoder and decoder separately. Each holds FLOPs per token of that part, split into
attention, the first MLP layer (W_in, per layer), the second MLP layer (W_out, per layer) and
the rest. `skippable(parts, nonzero)` gives, from measured per-layer nonzero shares s, the
share of all FLOPs W_out could skip ((1 - s) of each layer's W_out: a zero activation
multiplies a whole row of W_out by zero), and the bound if W_in were skipped too (a predictor
names the nonzero neurons before W_in runs).

Convention:
- A multiply-add is 2 FLOPs; only matrix products count. Biases, norms, softmax, activations,
  residual adds, pooling and embedding lookups (a gather) are left out: O(D) per token
  against the O(D^2) of the products.
- Attention products are counted as the model computes them: the full T x S scores and the
  probabilities times values, also where a causal or padding mask throws part away.
- Per token: a part's FLOPs per example divided by its tokens per example. ViT: T = patches
  (+1 class token when pool='cls'); the patch projection runs on the patches, the head once per
  example. Mixer: T = patches; its token-mixing MLP runs once per channel (D rows of T), which
  is 2 * D * tokens_mlp_dim per token and layer for each of W_in and W_out. The 2-layer MLP:
  one token per example. T5: the encoder at inputs_length S, the decoder at targets_length T
  with self-attention over T and cross-attention over S; the cross-attention keys and values
  (2 x 2 * D * H * K per encoder position and layer) belong to the decoder's attention, per
  decoder token S / T times that; the tied logits (2 * D * V per decoder token) are the
  decoder's rest, and the embedding lookups cost nothing.

`report_rows(workdir)` gives the FLOP table of a finished run (header and rows for a markdown
table), from its config.json, parameters.txt and last eval row of metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from lazy_jax import workdir as wd
from lazy_jax.errors import InputError
from lazy_jax.workdir import CONFIG, PARAMETERS

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MlpLayerFlops:
    """FLOPs per token of one MLP layer's two products; `stack` and `layer` name its nonzero_frac metric."""

    stack: str
    layer: int
    first: float  # W_in: d_model -> d_ff
    second: float  # W_out: d_ff -> d_model

    @property
    def metric(self) -> str:
        return f"nonzero_frac/{self.stack}/layer_{self.layer:02d}"


@dataclasses.dataclass(frozen=True)
class PartFlops:
    """Forward FLOPs per token of one part of a model, and its tokens per example."""

    name: str
    tokens: int
    attention: float
    rest: float
    mlp_layers: tuple[MlpLayerFlops, ...]

    @property
    def mlp_first(self) -> float:
        return sum(m.first for m in self.mlp_layers)

    @property
    def mlp_second(self) -> float:
        return sum(m.second for m in self.mlp_layers)

    @property
    def total(self) -> float:
        return self.attention + self.mlp_first + self.mlp_second + self.rest


@dataclasses.dataclass(frozen=True)
class Skippable:
    """Shares of a part's (or the whole model's) FLOPs that activation sparsity could skip."""

    second: float  # W_out's rows of zero activations
    both: float  # and W_in's columns of them too (predictor-style bound)
    nonzero: float  # mean nonzero share over the part's MLP layers (unweighted, as nonzero_frac/mean)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _image_geometry(spec, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(patches, channels) of an image [height, width, channels] under the spec's patch (VALID convolution)."""
    h, w, c = image_shape
    patch = spec.patch
    patches = (h // patch) * (w // patch)
    if not patches:
        raise InputError(f"image_shape={image_shape!r} is smaller than one {patch}x{patch} patch")
    return patches, c


def _vit(spec, image_shape) -> tuple[PartFlops, ...]:
    patches, c = _image_geometry(spec, image_shape)
    t = patches + (spec.pool == "cls")
    d, f = spec.width, spec.d_ff
    # q, k, v and out projections 4 x 2 * D * D; scores and values 2 x 2 * T * D (H * K = D).
    attention = spec.depth * (8 * d * d + 4 * t * d)
    rest = (patches * 2 * spec.patch * spec.patch * c * d + 2 * d * spec.num_classes) / t
    mlp = tuple(MlpLayerFlops("encoder", i, 2 * d * f, 2 * f * d) for i in range(spec.depth))
    return (PartFlops("vit", t, float(attention), float(rest), mlp),)


def _mixer(spec, image_shape) -> tuple[PartFlops, ...]:
    t, c = _image_geometry(spec, image_shape)
    d, ft, fc = spec.width, spec.tokens_mlp_dim, spec.channels_mlp_dim
    mlp = []
    for i in range(spec.depth):
        # D rows of T patches through T -> Ft -> T: 2 * D * T * Ft per example, per token 2 * D * Ft.
        mlp += [
            MlpLayerFlops("token_mlp", i, 2 * d * ft, 2 * ft * d),
            MlpLayerFlops("channel_mlp", i, 2 * d * fc, 2 * fc * d),
        ]
    rest = (t * 2 * spec.patch * spec.patch * c * d + 2 * d * spec.num_classes) / t
    return (PartFlops("mixer", t, 0.0, float(rest), tuple(mlp)),)


def _mlp(spec, image_shape) -> tuple[PartFlops, ...]:
    d_in = math.prod(image_shape)
    layer = MlpLayerFlops("encoder", 0, 2 * d_in * spec.d_ff, 2 * spec.d_ff * spec.num_classes)
    return (PartFlops("mlp", 1, 0.0, 0.0, (layer,)),)


def _t5(spec, inputs_length, targets_length) -> tuple[PartFlops, ...]:
    for name, value in (("inputs_length", inputs_length), ("targets_length", targets_length)):
        if not _positive_int(value):
            raise InputError(f"{name}={value!r} is not allowed for a T5Spec: give a positive integer")
    s, t = inputs_length, targets_length
    d, f, hk = spec.d_model, spec.d_ff, spec.num_heads * spec.d_kv
    projections = 8 * d * hk  # q, k, v, out: 4 x 2 * D * (H * K)
    enc_attention = spec.num_encoder_layers * (projections + 4 * s * hk)
    # Self-attention over T; cross-attention: q and out per decoder token, k and v per encoder
    # position (S / T of them per decoder token), scores and values over S.
    cross = 4 * d * hk + 4 * d * hk * s / t + 4 * s * hk
    dec_attention = spec.num_decoder_layers * (projections + 4 * t * hk + cross)
    mlp = lambda stack, n: tuple(MlpLayerFlops(stack, i, 2 * d * f, 2 * f * d) for i in range(n))
    return (
        PartFlops("encoder", s, float(enc_attention), 0.0, mlp("encoder", spec.num_encoder_layers)),
        PartFlops(
            "decoder", t, float(dec_attention), float(2 * d * spec.vocab_size), mlp("decoder", spec.num_decoder_layers)
        ),
    )


def forward_flops(
    spec,
    *,
    image_shape: Sequence[int] | None = None,
    inputs_length: int | None = None,
    targets_length: int | None = None,
) -> tuple[PartFlops, ...]:
    """Forward FLOPs per token of each part of the model `spec` (a `lazy_jax.models.model_spec`).

    Vision models (ViTSpec, MixerSpec, MlpSpec) take `image_shape` (height, width, channels);
    T5Spec takes `inputs_length` and `targets_length`. The convention: the module docstring.
    """
    from lazy_jax.models import mixer, mlp, t5, vit

    vision = {vit.ViTSpec: _vit, mixer.MixerSpec: _mixer, mlp.MlpSpec: _mlp}
    if isinstance(spec, t5.T5Spec):
        if image_shape is not None:
            raise InputError("image_shape is not allowed for a T5Spec: give inputs_length and targets_length")
        return _t5(spec, inputs_length, targets_length)
    if type(spec) in vision:
        if inputs_length is not None or targets_length is not None:
            raise InputError(
                f"inputs_length / targets_length are not allowed for a {type(spec).__name__}: give image_shape"
            )
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(_positive_int(v) for v in shape):
            raise InputError(
                f"image_shape={image_shape!r} is not allowed for a {type(spec).__name__}: "
                "give (height, width, channels), positive integers"
            )
        return vision[type(spec)](spec, shape)
    raise InputError(f"no FLOP count for {type(spec).__name__}; allowed: ViTSpec, MixerSpec, MlpSpec, T5Spec")


def _share(nonzero: Mapping[str, Any], layer: MlpLayerFlops) -> float:
    if layer.metric not in nonzero:
        raise InputError(f"no nonzero share for {layer.metric}: the model has this MLP layer; give its share")
    try:
        value = float(nonzero[layer.metric])
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{layer.metric}={nonzero[layer.metric]!r} is not allowed: a nonzero share is in [0, 1]")
    return value


def skippable(parts: Sequence[PartFlops], nonzero: Mapping[str, Any]) -> dict[str, Skippable]:
    """{part name: Skippable}, and 'all' (weighted by each part's tokens) when there are several parts.

    `nonzero` maps `nonzero_frac/<stack>/layer_<ii>` to the layer's nonzero share, as a metrics
    row does (a row can be passed as is).
    """
    out, sums = {}, [0.0, 0.0, 0.0]  # FLOPs per example: total, W_out skippable, W_in + W_out skippable
    shares_all = []
    for part in parts:
        shares = [_share(nonzero, m) for m in part.mlp_layers]
        second = sum((1 - s) * m.second for s, m in zip(shares, part.mlp_layers))
        both = sum((1 - s) * (m.first + m.second) for s, m in zip(shares, part.mlp_layers))
        out[part.name] = Skippable(second / part.total, both / part.total, sum(shares) / len(shares))
        for i, v in enumerate((part.total, second, both)):
            sums[i] += part.tokens * v
        shares_all += shares
    if len(parts) > 1:
        out["all"] = Skippable(sums[1] / sums[0], sums[2] / sums[0], sum(shares_all) / len(shares_all))
    return out


def per_example(parts: Sequence[PartFlops]) -> float:
    """Forward FLOPs of one example: every part's FLOPs per token times its tokens."""
    return sum(p.tokens * p.total for p in parts)


# ----------------------------------------------------------------------------- a run's FLOPs

_PARAM_ROW_RE = re.compile(r"^\|\s*(?P<name>[^|\s]+)\s*\|\s*\((?P<shape>[\d,\s]*)\)\s*\|")
_TOTAL_RE = re.compile(r"^Total:\s*(?P<count>[\d,]+)")


@dataclasses.dataclass(frozen=True)
class ParameterTable:
    """What a run's parameters.txt (clu's parameter overview) says: shapes by name, total count."""

    shapes: dict[str, tuple[int, ...]]
    total: int | None


def read_parameters(workdir: wd.PathLike) -> ParameterTable | None:
    """The workdir's parameters.txt (local or gs://), or None if there is none."""
    path = epath.Path(workdir) / PARAMETERS
    if not path.is_file():
        return None
    shapes, total = {}, None
    for line in wd.read_text(path).splitlines():
        if m := _PARAM_ROW_RE.match(line):
            shapes[m["name"]] = tuple(int(v) for v in m["shape"].replace(",", " ").split())
        elif m := _TOTAL_RE.match(line):
            total = int(m["count"].replace(",", ""))
    return ParameterTable(shapes, total)


def _shape_ending(shapes: Mapping[str, tuple[int, ...]], suffix: str) -> tuple[int, ...] | None:
    """The shape of the first parameter named `suffix` or ending in `/suffix` (scanned layers add a prefix axis)."""
    for name in sorted(shapes):
        if name == suffix or name.endswith("/" + suffix):
            return shapes[name]
    return None


def image_shape_from_parameters(spec, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int, int] | None:
    """An image shape giving the model its number of patches and channels, read off its parameters.

    Only the patch count and the channels enter the FLOPs, so (patch, patch * patches, channels)
    serves when the patches do not form a square. None if the parameters do not say.
    """
    from lazy_jax.models import mixer, mlp, vit

    if isinstance(spec, mlp.MlpSpec):
        wi = _shape_ending(shapes, "mlp/wi/kernel")
        return None if wi is None else (wi[-2], 1, 1)
    if isinstance(spec, vit.ViTSpec):
        kernel, pos = _shape_ending(shapes, "embedding/kernel"), _shape_ending(shapes, "pos_embedding")
        patches = None if pos is None else pos[-2] - (spec.pool == "cls")
    elif isinstance(spec, mixer.MixerSpec):
        kernel, token_wi = _shape_ending(shapes, "stem/kernel"), _shape_ending(shapes, "token_mlp/wi/kernel")
        patches = None if token_wi is None else token_wi[-2]
    else:
        return None
    if kernel is None or patches is None or patches <= 0:
        return None
    side = math.isqrt(patches)
    rows, cols = (side, side) if side * side == patches else (1, patches)
    return (spec.patch * rows, spec.patch * cols, kernel[-2])


def _config_model(config: Mapping[str, Any]):
    import ml_collections

    return ml_collections.ConfigDict(dict(config["model"]))


@dataclasses.dataclass(frozen=True)
class RunFlops:
    """A run's FLOPs per part and the shares its last logged nonzero fractions could skip."""

    parts: tuple[PartFlops, ...]
    skip: dict[str, Skippable]
    split: str
    step: int


def run_flops(workdir: wd.PathLike, rows: Sequence[Mapping[str, Any]]) -> RunFlops | None:
    """FLOPs of the run in `workdir` with the nonzero shares of its last eval row (else last train row).

    The model comes from config.json (whose model sizes are the resolved ones), the image shape
    of a vision model from parameters.txt, T5's lengths from config.data. None, with a warning
    saying why, when one of them is missing or no row holds every layer's share.
    """
    from lazy_jax import report
    from lazy_jax.models import model_spec
    from lazy_jax.models.t5 import T5Spec

    workdir = epath.Path(workdir)
    config = report.read_config(workdir)
    if config is None or "model" not in config:
        logger.warning("%s: no %s with a model; no FLOP table", workdir, CONFIG)
        return None
    try:
        spec = model_spec(_config_model(config))
        if isinstance(spec, T5Spec):
            data = config.get("data", {})
            parts = forward_flops(
                spec, inputs_length=data.get("inputs_length"), targets_length=data.get("targets_length")
            )
        else:
            table = read_parameters(workdir)
            image_shape = None if table is None else image_shape_from_parameters(spec, table.shapes)
            if image_shape is None:
                logger.warning("%s: %s does not give the input's shape; no FLOP table", workdir, PARAMETERS)
                return None
            parts = forward_flops(spec, image_shape=image_shape)
    except (InputError, KeyError, TypeError) as e:
        logger.warning("%s: no FLOP table for the model of %s (%s)", workdir, CONFIG, e)
        return None
    needed = [m.metric for p in parts for m in p.mlp_layers]
    for split in ("eval", "train"):
        for row in reversed(report.split_rows(rows, split)):
            if all(k in row for k in needed):
                try:
                    return RunFlops(parts, skippable(parts, row), split, int(row["step"]))
                except InputError as e:
                    logger.warning("%s: step %s (%s): %s", workdir, row["step"], split, e)
    logger.warning("%s: no metrics row holds the nonzero share of every MLP layer; no FLOP table", workdir)
    return None


def format_flops(value: float) -> str:
    """1.234e9 -> '1.23 G', 3.5e4 -> '35.0 k' (FLOPs, three significant digits)."""
    if value == 0:
        return "0"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:#.3g}".rstrip(".") + f" {prefix}"
    return f"{value:#.3g}".rstrip(".")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


REPORT_NOTE = (
    "Forward FLOPs per token (a multiply-add is 2 FLOPs; matrix products only; attention at the "
    "lengths in `tokens`), each with its share of the part's total; `all` is the whole model's "
    "FLOPs per example over its tokens. Skippable: the share of the FLOPs that the measured "
    "nonzero shares let W_out skip (a zero activation multiplies a row of W_out), and the bound if "
    "a predictor let W_in skip its columns too (lazy_jax/flops.py)."
)


def report_rows(workdir: wd.PathLike, rows: Sequence[Mapping[str, Any]] | None = None):
    """(header, rows) of the run's FLOP table, for a markdown table under REPORT_NOTE; None: see `run_flops`.

    `rows` are the workdir's metrics rows (read from metrics.jsonl when None). One row per part
    (T5: encoder, decoder, and all), FLOPs per token, and the shares the nonzero fractions of the
    run's last eval row could skip; the header names that row's split and step.
    """
    from lazy_jax.workdir import read_metrics

    result = run_flops(workdir, read_metrics(workdir) if rows is None else rows)
    if result is None:
        return None
    header = ["part", "tokens", "attention", "MLP W_in", "MLP W_out", "rest", "total"]
    header += [f"nonzero ({result.split} step {result.step})", "W_out skippable", "W_in + W_out skippable"]
    kinds = {p.name: [p.tokens * v for v in (p.attention, p.mlp_first, p.mlp_second, p.rest)] for p in result.parts}
    body = [_row(p.name, p.tokens, kinds[p.name], result.skip[p.name]) for p in result.parts]
    if "all" in result.skip:
        summed = [sum(kind) for kind in zip(*kinds.values())]
        body.append(_row("all", sum(p.tokens for p in result.parts), summed, result.skip["all"]))
    return header, body


def _row(name: str, tokens: int, flops_per_example, skip: Skippable) -> list[str]:
    """A table row: FLOPs per token of each kind with its share, the total, the skippable shares."""
    total = sum(flops_per_example)
    cells = [f"{format_flops(v / tokens)} ({_pct(v / total)})" for v in flops_per_example]
    return [
        name,
        str(tokens),
        *cells,
        format_flops(total / tokens),
        _pct(skip.nonzero),
        _pct(skip.second),
        _pct(skip.both),
    ]
