"""Activation sparsity: the one MLP block, the one Top-k and the one statistics reducer.

Shape letters as in the legend of `lazy_jax.models` (B batch, T tokens, D width, F the MLP's
hidden width d_ff, N histogram bins, L layers).

Every model builds its MLPs from `MlpBlock`; nothing else computes activation maps or their
statistics. Definitions (docs/design.md):
- activation map `a_BTF` = act(x @ W_in) (after Top-k when k > 0): the map that multiplies W_out.
- nonzero_frac = mean over valid tokens of count(a > 0) / d_ff, reduced on the device in f32.
- Top-k keeps, per token, entries >= the k-th largest of that token's row; zeros stay zeros;
  the mask carries no gradient. k = 0 means dense. The threshold comes from an exact bisection
  by default; `jax.lax.top_k` is the reference it is tested against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lazy_jax import sparse_mlp
from lazy_jax.errors import InputError
from lazy_jax.topk import kth_largest_pallas, kth_largest_radix, positive_bits

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "silu": nn.silu,
    "squared_relu": lambda x: jnp.square(nn.relu(x)),
}


def check_topk(k: int, d_ff: int, *, key: str = "topk", width_name: str = "d_ff") -> None:
    """The one check of a Top-k k (the spec builders call it): 0 <= k <= the MLP width `d_ff`.

    `key` names the config key in the message (`model.topk`), `width_name` the width (the Mixer's
    token MLP is `tokens_mlp_dim` wide).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 0 or k > d_ff:
        raise InputError(f"{key}={k!r} is not allowed: use an integer 0 <= k <= {width_name}={d_ff} (0 = dense)")


def kth_largest_reference(a_BTF: Array, k: int) -> Array:
    """[..., 1]: the k-th largest entry of each row, by `jax.lax.top_k` (the reference)."""
    return jax.lax.top_k(a_BTF, k)[0][..., -1:]


def kth_largest_positive(a_BTF: Array, k: int) -> Array:
    """[..., 1]: the k-th largest of max(row, 0), found exactly by bisection on the bit pattern.

    Non-negative floats order like their bits read as integers, so the threshold is built one
    bit at a time from the top: keep a bit if at least k entries are >= the candidate. That is
    15 (bf16) or 31 (f32) passes of compare-and-count over the row, each a fused row reduction,
    where `jax.lax.top_k` sorts. On an H200, Top-k (k=128) this way cost ViT-B/16 13% of its
    dense training throughput, against 36% with `jax.lax.top_k` (README). Entries <= 0 enter
    as 0, so where a row has fewer than k positives the result is 0; `topk_mask` keeps only
    positives, so both thresholds give the same mask.
    """
    bits_BTF = positive_bits(a_BTF, "bisection")
    kth_BT1 = jnp.zeros((*a_BTF.shape[:-1], 1), bits_BTF.dtype)
    for bit in reversed(range(8 * a_BTF.dtype.itemsize - 1)):  # the sign bit is 0
        candidate_BT1 = kth_BT1 | (1 << bit)
        count_BT1 = jnp.sum(bits_BTF >= candidate_BT1, axis=-1, keepdims=True, dtype=jnp.int32)
        kth_BT1 = jnp.where(count_BT1 >= k, candidate_BT1, kth_BT1)
    return jax.lax.bitcast_convert_type(kth_BT1, a_BTF.dtype)


def kth_largest_auto(a_BTF: Array, k: int) -> Array:
    """The default: the Pallas kernel on GPUs (each device on its own rows under a mesh), else the
    bisection. Both give the same threshold.

    On an H200 the kernel took ViT-B/16's Top-k training step from 1.22x the dense one to 1.002x,
    T5-Base's from 1.13x to 1.005x (docs/performance.md), and a batch-1 decoding step of a T5-11B
    shape (4 layers, one call) from 0.891 to 0.808 ms a token (docs/inference.md): there the
    bisection's 15 dependent passes over one row cost ~44 us a layer. Where the mesh splits a row
    over devices (the 'mlp' axis sharded), or the row is too wide to hold, it keeps the bisection.
    """
    # kth_largest_pallas itself keeps the bisection where the kernel cannot take the map.
    return (kth_largest_pallas if jax.default_backend() == "gpu" else kth_largest_positive)(a_BTF, k)


TOPK_IMPLS: dict[str, Callable[[Array, int], Array]] = {
    "auto": kth_largest_auto,  # the default: 'pallas' where it pays and is safe, else 'bisect'
    "bisect": kth_largest_positive,  # exact, 15 XLA passes over a bf16 map; much faster on GPUs than 'lax'
    "radix": kth_largest_radix,  # exact, 4-bit digits: 4 passes over a bf16 row (lazy_jax/topk.py)
    "pallas": kth_largest_pallas,  # exact, the bisection from one read of the map (a GPU kernel, lazy_jax/topk.py)
    "lax": kth_largest_reference,
}


def check_topk_impl(impl: str, *, key: str = "topk_impl") -> None:
    if impl not in TOPK_IMPLS:
        raise InputError(f"{key}={impl!r} is unknown; allowed: {sorted(TOPK_IMPLS)}")


def topk_mask(a_BTF: Array, k: int, impl: str = "auto", *, scores_BTF: Array | None = None) -> Array:
    """Keeps the entries of each row >= its k-th largest value (and > 0); the rest become 0.

    `impl` picks how the k-th largest value is found (a key of TOPK_IMPLS; 'lax' is
    jax.lax.top_k, the reference); all give the same threshold on every row with at least k
    positives and so the same mask. The mask is a constant for autodiff: dropped entries get
    zero gradient, kept entries the gradient of the activation itself.
    `scores_BTF`: where the threshold is found instead of `a_BTF`, for a = ReLU(scores): every
    implementation finds the k-th largest of max(row, 0) (or, 'lax', one that keeps the same
    positives), so the pre-activation gives the same mask, and the ReLU'd map need not be
    written out for the threshold's read (a 'pallas' kernel's input is materialised).
    """
    if k == 0:
        return a_BTF
    check_topk_impl(impl)
    scores_BTF = a_BTF if scores_BTF is None else scores_BTF
    kth_BT1 = jax.lax.stop_gradient(TOPK_IMPLS[impl](scores_BTF, k))  # no backward pass through it
    keep_BTF = (a_BTF >= kth_BT1) & (a_BTF > 0)  # boolean: carries no gradient
    return jnp.where(keep_BTF, a_BTF, jnp.zeros_like(a_BTF))


def activation_stats(
    a_BTF: Array, mask_BT: Array | None, *, neuron_freq: bool = False, count_hist_bins: int = 0
) -> dict[str, Array]:
    """Reduces an activation map to its sparsity statistics, on the device, in f32.

    Returns a dict with
      nonzero_frac: scalar, mean over valid tokens of the share of entries > 0;
      num_tokens:   scalar, the number of valid tokens (the weight for combining batches);
      neuron_freq:  [F], share of valid tokens on which each neuron is > 0 (if asked);
      count_hist:   [N], share of valid tokens whose nonzero count falls in each of
                    `count_hist_bins` equal-width bins of [0, d_ff] (if asked).
    """
    d_ff = a_BTF.shape[-1]
    on_BTF = (a_BTF > 0).astype(jnp.float32)
    if mask_BT is None:
        mask_BT = jnp.ones(a_BTF.shape[:-1], jnp.float32)
    mask_BT = mask_BT.astype(jnp.float32)
    num_tokens = jnp.sum(mask_BT)
    denom = jnp.maximum(num_tokens, 1.0)
    count_BT = jnp.sum(on_BTF, axis=-1)
    stats = {
        "nonzero_frac": jnp.sum(count_BT * mask_BT) / (denom * d_ff),
        "num_tokens": num_tokens,
    }
    if neuron_freq:
        stats["neuron_freq"] = jnp.einsum("...f,...->f", on_BTF, mask_BT) / denom
    if count_hist_bins:
        bin_BT = jnp.clip(jnp.floor(count_BT * count_hist_bins / d_ff), 0, count_hist_bins - 1)
        onehot_BTN = jax.nn.one_hot(bin_BT.astype(jnp.int32), count_hist_bins, dtype=jnp.float32)
        stats["count_hist"] = jnp.einsum("...n,...->n", onehot_BTN, mask_BT) / denom
    return stats


UNION_SEED = 0x0A10  # the random pooling groups are the same in every run


def union_active_frac(
    a_BTF: Array, mask_BT: Array | None, sizes: tuple[int, ...], *, consecutive: bool = False, seed: int = UNION_SEED
) -> tuple[Array, Array]:
    """Share of neurons active on at least one of n pooled tokens, for each n of `sizes`, on the device.

    Pooled tokens are groups of n valid tokens (padding never counts): with `consecutive`, windows
    [k*n, (k+1)*n) of each sequence's valid tokens in order; else windows of one random order of
    all the batch's valid tokens (fixed by `seed`). Larger groups are unions of smaller ones, so
    with every group full the curve rises with n; at n = 1 it is `activation_stats`' nonzero_frac,
    to the bit (both divide the same integer count). Its growth says how many W_out rows a batch
    of n tokens still skips.

    Returns (union_S, groups_S): the mean share over the full groups of each size and their number
    (the weight for combining batches; 0 where fewer than n valid tokens exist, and then union 0).
    """
    if a_BTF.ndim != 3:
        raise InputError(f"union_active_frac takes an activation map [B, T, F], got shape {a_BTF.shape}")
    b, t, d_ff = a_BTF.shape
    available = t if consecutive else b * t
    for n in sizes:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= available:
            where = f"a sequence of {t} tokens" if consecutive else f"a batch of {b} x {t} tokens"
            raise InputError(f"union size n={n!r} is not allowed: use an integer 1 <= n <= {available} ({where})")
    valid_BT = jnp.ones((b, t), bool) if mask_BT is None else mask_BT > 0
    on_BTF = a_BTF > 0
    if consecutive:
        # Each row's valid tokens first, in order (a stable sort), so windows never span padding.
        order_BT = jnp.argsort(~valid_BT, axis=1, stable=True)
    else:
        on_BTF, valid_BT = on_BTF.reshape(1, b * t, d_ff), valid_BT.reshape(1, b * t)
        score_BT = jax.random.uniform(jax.random.key(seed), valid_BT.shape)
        order_BT = jnp.argsort(jnp.where(valid_BT, score_BT, 2.0), axis=1)  # padding last
    on_BTF = jnp.take_along_axis(on_BTF, order_BT[..., None], axis=1)
    count_B1 = jnp.sum(valid_BT, axis=1, keepdims=True)
    union, groups = [], []
    for n in sizes:
        g = on_BTF.shape[1] // n
        pooled_BGF = jnp.any(on_BTF[:, : g * n].reshape(on_BTF.shape[0], g, n, d_ff), axis=2)
        full_BG = (jnp.arange(1, g + 1) * n)[None, :] <= count_B1
        active = jnp.sum(jnp.where(full_BG, jnp.sum(pooled_BGF, axis=-1, dtype=jnp.int32), 0))
        num = jnp.sum(full_BG).astype(jnp.float32)
        # As activation_stats: an f32 integer count over (groups * d_ff).
        union.append(active.astype(jnp.float32) / (jnp.maximum(num, 1.0) * d_ff))
        groups.append(num)
    return jnp.stack(union), jnp.stack(groups)


def union_stats(a_BTF: Array, mask_BT: Array | None, sizes: tuple[int, ...]) -> dict[str, Array]:
    """`union_active_frac` for random and consecutive pooling, each [S] over all `sizes`.

    A sequence holds only T tokens: consecutive sizes n > T get union 0 and 0 groups (so NaN
    once finalized), keeping both vectors aligned with `sizes`.
    """
    union_r, groups_r = union_active_frac(a_BTF, mask_BT, sizes)
    fits = tuple(n for n in sizes if n <= a_BTF.shape[1])
    union_c, groups_c = jnp.zeros(0, jnp.float32), jnp.zeros(0, jnp.float32)
    if fits:
        union_c, groups_c = union_active_frac(a_BTF, mask_BT, fits, consecutive=True)
    missing = jnp.zeros(len(sizes) - len(fits), jnp.float32)
    return {
        "union_random": union_r,
        "union_random_groups": groups_r,
        "union_consecutive": jnp.concatenate([union_c, missing]),
        "union_consecutive_groups": jnp.concatenate([groups_c, missing]),
    }


class MlpBlock(nn.Module):
    """Dense -> activation -> optional Top-k -> Dense; returns (y, statistics).

    The models build it with `spec.mlp.block(...)` (`MlpSettings`), whose spec builder checked
    the settings (activation, Top-k k against d_ff, topk_impl); the block itself checks nothing.

    Attributes:
      d_ff: hidden width.
      activation: a key of ACTIVATIONS (ReLU for the paper; GELU etc. to measure other models).
      topk: keep the k largest entries per token; 0 = dense.
      topk_impl: how the k-th largest value is found: a key of TOPK_IMPLS, 'auto' by default.
      use_bias: ViT/Mixer MLPs have biases, T5 v1.0 has none.
      dropout_rate: dropout after the activation (as in T5) and nowhere else.
      neuron_freq, count_hist_bins: the optional statistics of `activation_stats`.
      union_sizes: at evaluation only (train=False; not at init, nor in cached decoding),
        `union_active_frac` of the map for these pool sizes n, random tokens of the batch
        (`union_random` [S]) and consecutive tokens of a sequence (`union_consecutive` [S]; sizes
        past the sequence's length get no group), each with its group counts (`*_groups` [S],
        the weights for combining batches). The train step never computes it: its cost is unchanged.
      sparse_decode: a key of sparse_mlp.IMPLS; when not 'off', `wo` reads only the rows of
        W_out active for some sequence, and only when decoding (eval, one position per sequence).
        'predicted' (approximate) also reads only `predictor_rows` rows of W_in a token, those
        a predictor from the `predictor` collection picks, in cached decoding (`lazy_jax.predictor`);
        with `predictor_threshold`, the rows whose score passes the collection's fitted threshold
        (`predictor_rows` on average), no selection.
      out_features: width of the output (None = the input width; a 2-layer MLP classifier
        sets it to the number of classes).
    """

    d_ff: int
    activation: str = "relu"
    topk: int = 0
    topk_impl: str = "auto"
    use_bias: bool = True
    dropout_rate: float = 0.0
    neuron_freq: bool = False
    count_hist_bins: int = 0
    union_sizes: tuple[int, ...] = ()
    sparse_decode: str = "off"
    predictor_rows: int = 0
    predictor_threshold: bool = False
    out_features: int | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.xavier_uniform()
    bias_init: Callable = nn.initializers.normal(stddev=1e-6)
    # Logical names of the activations' leading axes (before the feature axis).
    act_axes: tuple[str, ...] = ("batch", "length")
    # Logical name of the input (and default output) feature axis; the Mixer's token MLP mixes
    # patches, so it names them 'length'.
    embed_axis: str = "embed"

    @nn.compact
    def __call__(self, x_BTD: Array, mask_BT: Array | None = None, *, train: bool = False):
        d_model = x_BTD.shape[-1]
        dense = lambda feats, names, name, **kw: nn.Dense(
            feats,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, names),
            bias_init=nn.with_logical_partitioning(self.bias_init, names[1:]),
            name=name,
            **kw,
        )
        cached_decoding = (
            not train and x_BTD.shape[1] == 1 and self.is_mutable_collection("cache") and not self.is_initializing()
        )
        predicting = self.sparse_decode == "predicted" and cached_decoding
        # A predictor of k rows has picked its k already (ReLU zeros the negatives; ties in its
        # scores, or its threshold, may keep a few more): no second selection.
        topk = 0 if predicting and self.predictor_rows == self.topk else self.topk
        if predicting and not topk and self.activation == "relu" and x_BTD.shape[0] == 1:
            from lazy_jax import predictor  # it builds on this module

            if predictor.fused_applies(self.d_ff, d_model):  # one kernel for the whole block
                a_BTF, y_BTD = self._fused_predicted(x_BTD)
                return y_BTD, activation_stats(
                    a_BTF, mask_BT, neuron_freq=self.neuron_freq, count_hist_bins=self.count_hist_bins
                )
        if predicting:
            h_BTF = self._predicted_preactivation(x_BTD)
        else:
            h_BTF = dense(self.d_ff, (self.embed_axis, "mlp"), "wi")(x_BTD)
        scores_BTF = None
        if topk and self.activation == "relu":
            # The threshold is found on the pre-activation (the same mask, see topk_mask). The
            # barrier makes h one rounded tensor for the threshold and the mask alike: XLA may
            # otherwise keep excess precision in one fusion and not the other, and lose a tie.
            h_BTF = scores_BTF = jax.lax.optimization_barrier(h_BTF)
        a_BTF = ACTIVATIONS[self.activation](h_BTF)
        a_BTF = topk_mask(a_BTF, topk, self.topk_impl, scores_BTF=scores_BTF)
        a_BTF = nn.with_logical_constraint(a_BTF, (*self.act_axes, "mlp"))
        stats = activation_stats(a_BTF, mask_BT, neuron_freq=self.neuron_freq, count_hist_bins=self.count_hist_bins)
        # Not at init (one example), nor when decoding with a KV cache (one position per sequence).
        if self.union_sizes and not train and not self.is_initializing() and not self.is_mutable_collection("cache"):
            stats.update(union_stats(a_BTF, mask_BT, self.union_sizes))
        a_BTF = nn.Dropout(self.dropout_rate)(a_BTF, deterministic=not train)
        out_names = ("mlp", self.embed_axis) if self.out_features is None else ("mlp", "classes")
        sparse_dot = sparse_mlp.wo_dot_general(self.sparse_decode, a_BTF.shape, train)  # decoding only
        y_BTD = dense(self.out_features or d_model, out_names, "wo", dot_general=sparse_dot)(a_BTF)
        return y_BTD, stats

    def _predictor(self) -> dict[str, Array]:
        from lazy_jax import predictor  # it builds on this module

        names = predictor.NAMES + (("threshold",) if self.predictor_threshold else ())
        if not all(self.has_variable("predictor", n) for n in names):
            raise InputError(
                f"sparse_decode='predicted' needs a 'predictor' collection with {list(names)} "
                f"for {'/'.join(self.scope.path)} (lazy_jax.predictor.fit_decoder"
                f"{', rows=...' if self.predictor_threshold else ''})"
            )
        return {n: self.get_variable("predictor", n) for n in names}

    def _predicted_preactivation(self, x_B1D: Array) -> Array:
        from lazy_jax import predictor

        pred = self._predictor()
        return predictor.predicted_preactivation(x_B1D[:, 0], pred, self.predictor_rows, self.topk_impl)[:, None]

    def _fused_predicted(self, x_11D: Array) -> tuple[Array, Array]:
        """(a [1, 1, F], y [1, 1, D]) of one token by `predictor.fused_predicted_mlp`: the kept
        rows by the threshold inside the kernel, or the top `predictor_rows` scores."""
        from lazy_jax import predictor

        pred, x_D = self._predictor(), x_11D[0, 0]
        keep_F = None  # the threshold: scored in the kernel
        if not self.predictor_threshold:
            keep_F = predictor.predicted_keep(x_D[None], pred, self.predictor_rows, self.topk_impl)[0]
        wo = self.variables["params"]["wo"]
        # Inside a jit: Flax's nn.scan (scanned layers) refuses a bare pallas_call in its body.
        a_F, y_D = jax.jit(predictor.fused_predicted_mlp)(x_D.astype(self.dtype), pred, wo["kernel"], keep_F)
        if "bias" in wo:
            y_D = y_D + wo["bias"]
        return a_F[None, None], y_D.astype(self.dtype)[None, None]


@dataclasses.dataclass(frozen=True)
class MlpSettings:
    """The `MlpBlock` attributes a model's config sets once for all its MLPs (`spec.mlp`).

    Built and checked by `lazy_jax.models.checks.mlp_settings` only; each MLP adds what is its
    own (width, dtype, name, biases, ...) in `block`.
    """

    activation: str
    topk: int
    topk_impl: str
    dropout_rate: float  # after the activation; 0 in models whose MLPs have no dropout (the ViT)
    neuron_freq: bool
    count_hist_bins: int
    union_sizes: tuple[int, ...]  # eval only; () = off
    sparse_decode: str = "off"  # sparse_mlp.IMPLS: read only active rows of W_out when decoding
    predictor_rows: int = 0  # sparse_decode='predicted': rows of W_in read a token (lazy_jax.predictor)
    predictor_threshold: bool = False  # ... those past a fitted threshold (on average), not the top rows

    def block(self, d_ff: int, dtype: Any, **attributes) -> MlpBlock:
        """An `MlpBlock` of width d_ff in dtype with these settings; `attributes` are its other attributes."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return MlpBlock(d_ff=d_ff, dtype=dtype, **settings, **attributes)


def stack_layer_stats(per_layer: list[dict[str, Array]]) -> dict[str, Array]:
    """[{name: x}] per layer -> {name: x stacked on a leading layer axis} (what nn.scan gives)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)


VECTOR_STATS = ("neuron_freq", "count_hist", "union_random", "union_consecutive")


def stats_to_metrics(aux: dict[str, dict[str, Array]]) -> dict[str, Array]:
    """Names the statistics of `aux` ({stack: {stat: [L, ...]}}) as the metrics of docs/design.md.

    Scalars: nonzero_frac/<stack>/layer_<ii>, nonzero_frac/<stack>/mean, nonzero_frac/mean
    (unweighted mean over all layers of all stacks). Vectors: neuron_freq/<stack>/layer_<ii>
    [F], count_hist/<stack>/layer_<ii> [N], and at evaluation union_random/<stack>/layer_<ii>
    and union_consecutive/<stack>/layer_<ii> [S] (one entry per model.union_sizes). Stays on
    the device.
    """
    metrics: dict[str, Array] = {}
    all_layers = []
    for stack in sorted(aux):
        stats = aux[stack]
        frac_L = stats["nonzero_frac"]
        for i in range(frac_L.shape[0]):
            metrics[f"nonzero_frac/{stack}/layer_{i:02d}"] = frac_L[i]
            for vec in VECTOR_STATS:
                if vec in stats:
                    metrics[f"{vec}/{stack}/layer_{i:02d}"] = stats[vec][i]
        metrics[f"nonzero_frac/{stack}/mean"] = jnp.mean(frac_L)
        all_layers.append(frac_L)
    if all_layers:
        metrics["nonzero_frac/mean"] = jnp.mean(jnp.concatenate(all_layers))
    return metrics
