"""T5 v1.0 (ReLU MLP, no gating) encoder-decoder, as in t5x and Hugging Face's T5ForConditionalGeneration.

Architecture: one embedding shared by encoder input, decoder input and the output logits (the
decoder output is scaled by d_model**-0.5 before the tied logits); pre-norm RMS layer norms
(no bias, no mean subtraction, computed in f32); no biases anywhere; attention without the
1/sqrt(d_kv) scaling (folded into the query initialisation); relative position biases
(bidirectional in the encoder, causal in the decoder) computed once per stack and shared by all
its layers; dropout after the embedding, on attention probabilities, after the MLP activation
(in `MlpBlock`), on every residual branch and after the final norm of each stack.

`T5(t5_spec(config.model, vocab_size=...))` (or `models.get_model(config.model, vocab_size=...)`)
`.apply(variables, batch, train=...)` takes t5x-named batches
  {'encoder_input_tokens' [B,S] int32, 'decoder_input_tokens' [B,T], 'decoder_target_tokens' [B,T]}
(0 = padding; optional 'encoder_mask' [B,S] / 'decoder_mask' [B,T] override the token masks,
which are encoder_input_tokens > 0 and decoder_target_tokens > 0 since the decoder input starts
with 0 as BOS; optional 'encoder_segment_ids' [B,S] / 'decoder_segment_ids' [B,T] of packed rows)
and returns (logits [B,T,V] float32, {'encoder': stats [L], 'decoder': stats [L]}), L being the
layers of each stack. Shape letters: the legend in `lazy_jax.models`.
Padding never counts in the statistics. Attention masks only padded keys (and future keys in
the decoder), as Hugging Face does; outputs at padded query positions are defined but unused.

Packed rows (several examples per row, t5x packing): with segment ids, a token attends only to
keys of its own segment (encoder self-attention, decoder self- and cross-attention: decoder
segment s reads encoder segment s). 'encoder_positions' / 'decoder_positions' are not needed:
relative position biases depend only on the distance of two tokens, and inside one contiguous
segment that distance is the same as in an unpacked row; the decoder input restarts with BOS at
each segment (the data does that). So a packed example gives the same logits and statistics as
the same example alone in a padded row.

Methods for `apply(..., method=...)`: `T5.encode(tokens)` -> (encoded [B,S,D], stats),
`T5.decode(encoded, encoder_mask, decoder_input_tokens, ...)` -> (logits, stats); the module
function `greedy_decode(model, variables, tokens, max_decode_len)` decodes with a KV cache
(`decode_from_encoded`: the whole loop in one `lax.while_loop`, cross-attention keys and values
computed once per prompt); `lazy_jax.generate` is the command around it.

Config fields (config.model, see `default_model_config`):
  name            't5'
  size            'tiny' | 'small' | 'base' | 'large' | '3B' | '11B' | 'custom' (sets the dimensions)
  vocab_size      32128 for the released checkpoints; -1 = the data's (the tokenizer's, padded)
  d_model, num_heads, d_kv, d_ff, num_encoder_layers, num_decoder_layers:
                  None = from `size`; an int overrides it ('custom' needs all of them), also
                  from the command line (--config.model.d_ff=1024)
  relative_attention_num_buckets (32), relative_attention_max_distance (128), layer_norm_epsilon (1e-6)
  dtype           'float32' | 'bfloat16': activations; parameters stay float32, norms, softmax and
                  logits are computed in float32
  dropout_rate    T5 dropout rate (0.1 for pre-training in the paper's setup, 0 to fine-tune)
  activation      'relu' (T5 v1.0); any key of sparsity.ACTIVATIONS to measure other choices
  topk            Top-k per token in every MLP (same k per layer); 0 = dense
  topk_impl       how the k-th largest is found: 'auto' (default: 'pallas' on GPUs, else 'bisect'),
                  'bisect', 'radix', 'pallas' or 'lax' (jax.lax.top_k); sparsity.TOPK_IMPLS
  scan_layers     nn.scan over the layers of each stack (params get a leading 'layers' axis)
  remat_policy    'none' | 'minimal' | 'full' | 'save_dots' (models.stack.REMAT_POLICIES)
  neuron_freq     also return per-neuron activation frequency [d_ff] per layer
  count_hist_bins histogram of per-token nonzero counts (0 = off)
Logical axis names: params 'vocab', 'embed', 'heads', 'kv', 'mlp', 'relpos_buckets' and
'layers' (scan); activations 'batch', 'length', 'embed', 'heads', 'kv', 'mlp'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lazy_jax import decode_attention
from lazy_jax.errors import InputError
from lazy_jax.models import attention, checks
from lazy_jax.models.stack import StackSettings, layer_stack
from lazy_jax.sparse_mlp import on_gpu
from lazy_jax.sparsity import MlpSettings

Array = jax.Array

# size: (d_model, num_heads, num_encoder_layers, num_decoder_layers, d_ff, d_kv)
T5_SIZES = {
    "tiny": (64, 2, 2, 2, 256, 32),
    "small": (512, 8, 6, 6, 2048, 64),
    "base": (768, 12, 12, 12, 3072, 64),
    "large": (1024, 16, 24, 24, 4096, 64),
    "3B": (1024, 32, 24, 24, 16384, 128),  # d_kv 128 (heads x d_kv = 4096 != d_model), as released
    "11B": (1024, 128, 24, 24, 65536, 128),
}
DIM_FIELDS = ("d_model", "num_heads", "num_encoder_layers", "num_decoder_layers", "d_ff", "d_kv")
MASK_LOGIT = -1e10  # finite, so a row with no valid key gives a uniform softmax, not NaN


def default_model_config(size: str = "base") -> ml_collections.ConfigDict:
    """The T5 v1.0 model config; see the module docstring for the fields."""
    if size not in T5_SIZES and size != "custom":
        raise InputError(f"T5 size={size!r} is unknown; allowed: {[*T5_SIZES, 'custom']}")
    return ml_collections.ConfigDict(
        dict(
            name="t5",
            size=size,
            vocab_size=32128,
            **{f: ml_collections.config_dict.placeholder(int) for f in DIM_FIELDS},  # None = from `size`
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            layer_norm_epsilon=1e-6,
            **checks.COMMON_DEFAULTS,
            **checks.STACK_DEFAULTS,
        )
    )


def t5_dims(config) -> dict[str, int]:
    """Resolves {d_model, num_heads, num_encoder_layers, num_decoder_layers, d_ff, d_kv} of a config."""
    size = config.get("size", "custom")
    if size not in T5_SIZES and size != "custom":
        raise InputError(f"model.size={size!r} is unknown; allowed: {[*T5_SIZES, 'custom']}")
    if size == "custom":
        missing = [f for f in DIM_FIELDS if config.get(f) is None]
        if missing:
            raise InputError(f"model.size='custom' needs model.{missing[0]}; set all of {list(DIM_FIELDS)}")
        return {f: checks.positive_int(f, config[f]) for f in DIM_FIELDS}
    return checks.sizes(config, DIM_FIELDS, T5_SIZES[size])


@dataclasses.dataclass(frozen=True)
class T5Spec:
    """Resolved, validated, hashable hyper-parameters of T5 and its submodules; built by `t5_spec` only."""

    vocab_size: int
    d_model: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    d_ff: int
    d_kv: int
    num_buckets: int
    max_distance: int
    eps: float
    dtype: Any
    dropout_rate: float  # everywhere: embeddings, attention, residual branches, stack outputs (and in mlp)
    mlp: MlpSettings
    stack: StackSettings


def t5_spec(config_model, *, num_classes: int | None = None, vocab_size: int | None = None) -> T5Spec:
    """config.model of a T5 and the data's vocabulary size -> its spec; checks every model value."""
    del num_classes  # a sequence model has no classes
    c = config_model
    dims = t5_dims(c)
    buckets, max_distance = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    if not checks.is_int(buckets) or buckets < 4 or buckets % 2:
        raise InputError(f"model.relative_attention_num_buckets={buckets!r} is not allowed: use an even integer >= 4")
    if not checks.is_int(max_distance) or max_distance <= buckets // 2:
        # Below this the logarithmic buckets are empty (log(max_distance / max_exact) <= 0).
        raise InputError(
            f"model.relative_attention_max_distance={max_distance!r} is not allowed: use an integer "
            f"> relative_attention_num_buckets // 2 = {buckets // 2}"
        )
    eps = c["layer_norm_epsilon"]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise InputError(f"model.layer_norm_epsilon={eps!r} is not allowed: use a number 0 < eps < 1")
    # Other activations are allowed (to study them); T5 v1.0 and the HF loader are ReLU.
    return T5Spec(
        vocab_size=checks.data_size(c, "vocab_size", vocab_size, "the data's vocabulary size"),
        **dims,
        num_buckets=int(buckets),
        max_distance=int(max_distance),
        eps=float(eps),
        dtype=checks.dtype(c),
        dropout_rate=checks.dropout_rate(c),
        mlp=checks.mlp_settings(c, {"d_ff": dims["d_ff"]}),
        stack=checks.stack_settings(c),
    )


def relative_position_bucket(
    relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """T5's bucket of `memory_position - query_position` (Mesh TensorFlow / HF, same float32 steps).

    Half the buckets (per direction when bidirectional) are exact distances, the rest grow
    logarithmically up to `max_distance`; farther distances share the last bucket. Causal
    (bidirectional=False) maps every future position (relative_position > 0) to bucket 0.
    Static shapes only: computed in numpy at trace time.
    """
    rel = np.asarray(relative_position, np.int64)
    bucket = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket += (rel > 0).astype(np.int64) * num_buckets
        n = np.abs(rel)
    else:
        n = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(n.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    large = max_exact + np.where(n < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return bucket + np.where(n < max_exact, n, large)


def _ones_init(key, shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


class RmsNorm(nn.Module):
    """T5 layer norm: x / rms(x) * scale, in f32, no bias, no mean subtraction."""

    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x_BTD: Array) -> Array:
        scale_D = self.param("scale", nn.with_logical_partitioning(_ones_init, ("embed",)), (x_BTD.shape[-1],))
        x32 = x_BTD.astype(jnp.float32)
        y32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y32 * scale_D[None, None]).astype(self.dtype)


class Embedder(nn.Module):
    """The shared token embedding [V, D]: lookup, and `attend` for the tied f32 logits."""

    vocab_size: int
    d_model: int
    dtype: Any

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.vocab_size, self.d_model),
        )

    def __call__(self, tokens_BT: Array) -> Array:
        return jnp.take(self.embedding, tokens_BT, axis=0).astype(self.dtype)

    def attend(self, y_BTD: Array) -> Array:
        return jnp.einsum("btd,vd->btv", y_BTD, self.embedding.astype(self.dtype), preferred_element_type=jnp.float32)


class RelativePositionBias(nn.Module):
    """Per-head bias of every (query, key) pair from its relative-position bucket: [1, H, T, S]."""

    spec: T5Spec
    bidirectional: bool

    @nn.compact
    def __call__(self, q_len: int, k_len: int) -> Array:
        s = self.spec
        table_NH = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), ("relpos_buckets", "heads")
            ),
            (s.num_buckets, s.num_heads),
        )
        rel_TS = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
        bucket_TS = relative_position_bucket(
            rel_TS, bidirectional=self.bidirectional, num_buckets=s.num_buckets, max_distance=s.max_distance
        )
        bucket_TS = jnp.asarray(bucket_TS, jnp.int32)
        if attention.SETTINGS.relpos == "onehot":  # exact: one nonzero term per sum, at full precision
            onehot_TSN = jax.nn.one_hot(bucket_TS, s.num_buckets, dtype=jnp.float32)
            bias_HTS = jnp.einsum("tsn,nh->hts", onehot_TSN, table_NH, precision=jax.lax.Precision.HIGHEST)
            return bias_HTS[None].astype(jnp.float32)
        bias_TSH = jnp.take(table_NH, bucket_TS, axis=0)
        return jnp.transpose(bias_TSH, (2, 0, 1))[None].astype(jnp.float32)


class Attention(nn.Module):
    """Multi-head attention without 1/sqrt(d_kv) scaling (T5); optional KV cache for decoding.

    `decode=True` (self-attention only): x is one position [B,1,D] at `decode_step`; keys and
    values are written into the 'cache' collection ([B, S, H, K] with S = max_len, created on
    first use), and attention reads all S cached positions.
    `cross_cache=True` (cross-attention while decoding): the keys and values of the encoder
    output are kept in the 'cache' collection ('cross_key', 'cross_value'): computed and stored
    when kv_BSD is given, read from the cache when kv_BSD is None (once per prompt, not per step).
    """

    spec: T5Spec
    train: bool = False

    @nn.compact
    def __call__(
        self,
        x_BTD: Array,
        kv_BSD: Array,
        bias_1HTS: Array | None,
        mask_B1TS: Array | None,
        *,
        decode: bool = False,
        decode_step: Array | None = None,
        max_len: int | None = None,
        cross_cache: bool = False,
    ):
        s = self.spec
        d, h, k = s.d_model, s.num_heads, s.d_kv
        normal = lambda std: nn.initializers.normal(stddev=std)
        qkv_names = ("embed", "heads", "kv")
        # The query init carries T5's 1/sqrt(d_kv) (attention logits are not scaled).
        wq = self.param("query", nn.with_logical_partitioning(normal((d * k) ** -0.5), qkv_names), (d, h, k))
        wk = self.param("key", nn.with_logical_partitioning(normal(d**-0.5), qkv_names), (d, h, k))
        wv = self.param("value", nn.with_logical_partitioning(normal(d**-0.5), qkv_names), (d, h, k))
        wo = self.param(
            "out", nn.with_logical_partitioning(normal((h * k) ** -0.5), ("heads", "kv", "embed")), (h, k, d)
        )
        dt = s.dtype
        proj = lambda x, w: nn.with_logical_constraint(
            jnp.einsum("btd,dhk->bthk", x, w.astype(dt)), ("batch", "length", "heads", "kv")
        )
        q_BTHK = proj(x_BTD, wq)
        if cross_cache and kv_BSD is None:
            k_BSHK, v_BSHK = self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value")
        else:
            k_BSHK, v_BSHK = proj(kv_BSD, wk), proj(kv_BSD, wv)
        if cross_cache and kv_BSD is not None:
            self.put_variable("cache", "cross_key", k_BSHK)
            self.put_variable("cache", "cross_value", v_BSHK)
        if decode:
            b = x_BTD.shape[0]
            cached_k = self.variable("cache", "cached_key", jnp.zeros, (b, max_len, h, k), dt)
            cached_v = self.variable("cache", "cached_value", jnp.zeros, (b, max_len, h, k), dt)
            at = (0, decode_step, 0, 0)
            cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BSHK.astype(dt), at)
            cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BSHK.astype(dt), at)
            k_BSHK, v_BSHK = cached_k.value, cached_v.value
        if (decode or cross_cache) and x_BTD.shape[1] == 1 and decode_attention.use_kernel(k_BSHK.shape):
            # One query per sequence against the cache: one kernel reads it once (f32 softmax).
            bias_HS = None if bias_1HTS is None else bias_1HTS[0, :, 0]
            ok_BS = jnp.ones(k_BSHK.shape[:2], jnp.bool_) if mask_B1TS is None else mask_B1TS[:, 0, 0]
            ok_BS = jnp.broadcast_to(ok_BS, k_BSHK.shape[:2])
            # Inside a jit: Flax's nn.scan (scanned layers) refuses a bare pallas_call in its body.
            kernel = jax.jit(decode_attention.decode_attention, static_argnames="interpret")
            out_B1HK = kernel(q_BTHK[:, 0], k_BSHK, v_BSHK, bias_HS, ok_BS, interpret=not on_gpu())[:, None]
            return jnp.einsum("bthk,hkd->btd", out_B1HK, wo.astype(dt))
        # Logits, bias and softmax in f32, or in the activation dtype (attention.SETTINGS.logits).
        logits_dt = jnp.float32 if attention.SETTINGS.logits == "float32" else dt
        logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK, preferred_element_type=logits_dt)
        if bias_1HTS is not None:
            logits_BHTS = logits_BHTS + bias_1HTS.astype(logits_dt)
        if mask_B1TS is not None:
            logits_BHTS = jnp.where(mask_B1TS, logits_BHTS, jnp.asarray(MASK_LOGIT, logits_dt))
        probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1).astype(dt)
        probs_BHTS = nn.Dropout(s.dropout_rate)(probs_BHTS, deterministic=not self.train)
        out_BTHK = jnp.einsum("bhts,bshk->bthk", probs_BHTS, v_BSHK)
        return jnp.einsum("bthk,hkd->btd", out_BTHK, wo.astype(dt))


def _dropout(spec: T5Spec, train: bool, x: Array) -> Array:
    return nn.Dropout(spec.dropout_rate)(x, deterministic=not train)


def _residual(spec: T5Spec, train: bool, x_BTD: Array, y_BTD: Array) -> Array:
    return nn.with_logical_constraint(x_BTD + _dropout(spec, train, y_BTD), ("batch", "length", "embed"))


def _attention_sublayer(
    spec: T5Spec,
    train: bool,
    x_BTD: Array,
    kv_BSD: Array | None,
    bias_1HTS: Array | None,
    mask_B1TS: Array,
    *,
    norm: str,
    name: str,
    **decode,
) -> Array:
    """x + Attention(norm(x)) attending to kv_BSD (None: to norm(x) itself, i.e. self-attention;
    with decode['cross_cache'], to the cached encoder keys and values)."""
    h_BTD = RmsNorm(spec.eps, spec.dtype, name=norm)(x_BTD)
    kv_BSD = h_BTD if kv_BSD is None and not decode.get("cross_cache") else kv_BSD
    y_BTD = Attention(spec, train, name=name)(h_BTD, kv_BSD, bias_1HTS, mask_B1TS, **decode)
    return _residual(spec, train, x_BTD, y_BTD)


def _mlp_sublayer(spec: T5Spec, train: bool, x_BTD: Array, token_mask_BT: Array) -> tuple[Array, dict]:
    """x + Mlp(norm(x)), the last sublayer of both stacks' layers; -> (x, MlpBlock stats)."""
    h_BTD = RmsNorm(spec.eps, spec.dtype, name="pre_mlp_layer_norm")(x_BTD)
    mlp = spec.mlp.block(
        spec.d_ff,
        spec.dtype,
        use_bias=False,
        kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
        name="mlp",
    )
    y_BTD, stats = mlp(h_BTD, token_mask_BT, train=train)
    return _residual(spec, train, x_BTD, y_BTD), stats


class EncoderLayer(nn.Module):
    """x + SelfAttention(norm(x)); x + Mlp(norm(x)). Returns (x, MlpBlock stats)."""

    spec: T5Spec
    train: bool = False

    @nn.compact
    def __call__(self, x_BTD, bias_1HTT, mask_B1TT, token_mask_BT):
        s, train = self.spec, self.train
        x_BTD = _attention_sublayer(
            s, train, x_BTD, None, bias_1HTT, mask_B1TT, norm="pre_attention_layer_norm", name="attention"
        )
        return _mlp_sublayer(s, train, x_BTD, token_mask_BT)


class DecoderLayer(nn.Module):
    """x + CausalSelfAttention(norm(x)); x + CrossAttention(norm(x), encoded); x + Mlp(norm(x))."""

    spec: T5Spec
    train: bool = False
    decode: bool = False
    max_len: int | None = None

    @nn.compact
    def __call__(self, x_BTD, encoded_BSD, self_bias_1HTS, self_mask_B1TS, cross_mask_B1TS, token_mask_BT, decode_step):
        s, train = self.spec, self.train
        x_BTD = _attention_sublayer(
            s,
            train,
            x_BTD,
            None,
            self_bias_1HTS,
            self_mask_B1TS,
            norm="pre_self_attention_layer_norm",
            name="self_attention",
            decode=self.decode,
            decode_step=decode_step,
            max_len=self.max_len,
        )
        # While decoding, cross-attention keys/values are cached: computed from `encoded` when it is
        # given (the first step), read from the cache when it is None (every later step).
        x_BTD = _attention_sublayer(
            s,
            train,
            x_BTD,
            encoded_BSD,
            None,
            cross_mask_B1TS,
            norm="pre_cross_attention_layer_norm",
            name="encoder_decoder_attention",
            cross_cache=self.decode,
        )
        return _mlp_sublayer(s, train, x_BTD, token_mask_BT)


def _stack_output(spec: T5Spec, train: bool, x_BTD: Array, norm: str) -> Array:
    """The final norm of a stack, then dropout."""
    return _dropout(spec, train, RmsNorm(spec.eps, spec.dtype, name=norm)(x_BTD))


def _same_segment(query_segments_BT: Array, key_segments_BS: Array) -> Array:
    """[B,1,T,S] True where query and key belong to the same packed example."""
    return query_segments_BT[:, None, :, None] == key_segments_BS[:, None, None, :]


class Encoder(nn.Module):
    spec: T5Spec

    @nn.compact
    def __call__(self, x_BTD: Array, token_mask_BT: Array, *, segment_ids_BT: Array | None = None, train: bool = False):
        s = self.spec
        t = x_BTD.shape[1]
        bias_1HTT = RelativePositionBias(s, bidirectional=True, name="relpos_bias")(t, t)
        mask_B1TT = jnp.broadcast_to(token_mask_BT[:, None, None, :], (x_BTD.shape[0], 1, t, t))
        if segment_ids_BT is not None:
            mask_B1TT = mask_B1TT & _same_segment(segment_ids_BT, segment_ids_BT)
        x_BTD, stats = layer_stack(
            "layers",
            EncoderLayer,
            dict(spec=s, train=train),
            s.num_encoder_layers,
            _dropout(s, train, x_BTD),
            bias_1HTT,
            mask_B1TT,
            token_mask_BT.astype(jnp.float32),
            settings=s.stack,
        )
        return _stack_output(s, train, x_BTD, "encoder_norm"), stats


class Decoder(nn.Module):
    spec: T5Spec

    @nn.compact
    def __call__(
        self,
        y_BTD: Array,
        encoded_BSD: Array,
        encoder_mask_BS: Array,
        token_mask_BT: Array | None,
        *,
        segment_ids_BT: Array | None = None,
        encoder_segment_ids_BS: Array | None = None,
        train: bool = False,
        decode: bool = False,
        max_len: int | None = None,
    ):
        s = self.spec
        b, t = y_BTD.shape[:2]
        relpos = RelativePositionBias(s, bidirectional=False, name="relpos_bias")
        if decode:
            if t != 1 or max_len is None:
                raise ValueError(
                    f"decode=True takes one position at a time (got length {t}) and max_len (got {max_len!r})"
                )
            step = self.variable("cache", "decode_step", lambda: jnp.zeros((), jnp.int32))
            decode_step = step.value
            step.value = decode_step + 1
            # Self-attention keys are the S = max_len cache positions; only keys <= step are valid.
            self_bias_1HTS = jax.lax.dynamic_slice_in_dim(relpos(max_len, max_len), decode_step, 1, axis=2)
            self_mask_B1TS = jnp.broadcast_to(jnp.arange(max_len) <= decode_step, (b, 1, 1, max_len))
        else:
            decode_step = None
            self_bias_1HTS = relpos(t, t)  # keys are the T positions themselves: S = T
            self_mask_B1TS = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), jnp.bool_)), (b, 1, t, t))
            if token_mask_BT is not None:
                self_mask_B1TS = self_mask_B1TS & token_mask_BT[:, None, None, :].astype(jnp.bool_)
            if segment_ids_BT is not None:
                self_mask_B1TS = self_mask_B1TS & _same_segment(segment_ids_BT, segment_ids_BT)
        cross_mask_B1TS = jnp.broadcast_to(
            encoder_mask_BS[:, None, None, :].astype(jnp.bool_), (b, 1, t, encoder_mask_BS.shape[1])
        )
        if (segment_ids_BT is None) != (encoder_segment_ids_BS is None):
            raise ValueError("packed rows need both decoder and encoder segment ids (got only one of them)")
        if segment_ids_BT is not None:
            if decode:
                raise ValueError("decode=True (KV-cache decoding) does not take packed rows (segment ids)")
            cross_mask_B1TS = cross_mask_B1TS & _same_segment(segment_ids_BT, encoder_segment_ids_BS)
        stats_mask_BT = jnp.ones((b, t), jnp.float32) if token_mask_BT is None else token_mask_BT.astype(jnp.float32)
        y_BTD, stats = layer_stack(
            "layers",
            DecoderLayer,
            dict(spec=s, train=train, decode=decode, max_len=max_len),
            s.num_decoder_layers,
            _dropout(s, train, y_BTD),
            encoded_BSD,
            self_bias_1HTS,
            self_mask_B1TS,
            cross_mask_B1TS,
            stats_mask_BT,
            decode_step,
            settings=s.stack,
        )
        return _stack_output(s, train, y_BTD, "decoder_norm"), stats


class T5(nn.Module):
    """T5 v1.0 encoder-decoder: `T5(t5_spec(config.model, vocab_size=...))` (see the module docstring)."""

    spec: T5Spec

    def setup(self):
        s = self.spec
        self.token_embedder = Embedder(s.vocab_size, s.d_model, s.dtype)
        self.encoder = Encoder(s)
        self.decoder = Decoder(s)

    def encode(
        self,
        encoder_input_tokens: Array,
        encoder_mask: Array | None = None,
        *,
        encoder_segment_ids: Array | None = None,
        train: bool = False,
    ):
        """-> (encoded [B,S,D] in the activation dtype, encoder stats [L])."""
        if encoder_mask is None:
            encoder_mask = encoder_input_tokens > 0
        x_BTD = self.token_embedder(encoder_input_tokens)
        return self.encoder(x_BTD, encoder_mask.astype(jnp.bool_), segment_ids_BT=encoder_segment_ids, train=train)

    def decode(
        self,
        encoded: Array,
        encoder_mask: Array,
        decoder_input_tokens: Array,
        decoder_mask: Array | None = None,
        *,
        decoder_segment_ids: Array | None = None,
        encoder_segment_ids: Array | None = None,
        train: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ):
        """-> (logits [B,T,V] f32, decoder stats [L]).

        decoder_mask [B,T] (None = every position valid) masks padded keys and the statistics;
        decoder_segment_ids / encoder_segment_ids (packed rows, both or neither) keep attention
        inside each example.
        decode=True runs one position with the KV cache ('cache' collection, mutable) of
        length max_decode_length.
        """
        y_BTD = self.token_embedder(decoder_input_tokens)
        y_BTD, stats = self.decoder(
            y_BTD,
            encoded,
            encoder_mask,
            decoder_mask,
            segment_ids_BT=decoder_segment_ids,
            encoder_segment_ids_BS=encoder_segment_ids,
            train=train,
            decode=decode,
            max_len=max_decode_length,
        )
        # T5 v1.0 ties the output layer to the embedding and rescales the decoder output first.
        logits_BTV = self.token_embedder.attend(y_BTD * (self.spec.d_model**-0.5))
        return nn.with_logical_constraint(logits_BTV, ("batch", "length", "vocab")), stats

    def __call__(self, batch: dict, *, train: bool = False):
        missing = [k for k in ("encoder_input_tokens", "decoder_input_tokens") if k not in batch]
        if missing or ("decoder_target_tokens" not in batch and "decoder_mask" not in batch):
            raise ValueError(
                f"T5 batch needs 'encoder_input_tokens', 'decoder_input_tokens' and "
                f"'decoder_target_tokens' (or 'decoder_mask'); got keys {sorted(batch)}"
            )
        enc_mask = batch.get("encoder_mask")
        if enc_mask is None:
            enc_mask = batch["encoder_input_tokens"] > 0
        dec_mask = batch.get("decoder_mask")
        if dec_mask is None:
            # The decoder input starts with BOS = 0, so its padding is read off the targets (as t5x).
            dec_mask = batch["decoder_target_tokens"] > 0
        enc_seg, dec_seg = batch.get("encoder_segment_ids"), batch.get("decoder_segment_ids")
        if (enc_seg is None) != (dec_seg is None):
            raise ValueError(
                f"a packed T5 batch needs both 'encoder_segment_ids' and 'decoder_segment_ids'; "
                f"got keys {sorted(batch)}"
            )
        encoded, enc_stats = self.encode(
            batch["encoder_input_tokens"], enc_mask, encoder_segment_ids=enc_seg, train=train
        )
        logits, dec_stats = self.decode(
            encoded,
            enc_mask,
            batch["decoder_input_tokens"],
            dec_mask,
            decoder_segment_ids=dec_seg,
            encoder_segment_ids=enc_seg,
            train=train,
        )
        return logits, {"encoder": enc_stats, "decoder": dec_stats}


def decode_params(params, dtype) -> dict:
    """The parameters as decoding reads them: every matrix cast to the compute dtype once.

    The model casts each weight to its dtype where it is used (`w.astype(dt)`), so casting the
    matrices beforehand gives the same numbers and spares reading f32 weights at every step.
    Norm scales and the relative-position table stay float32 (they are used in float32).
    """

    def cast(path, x):
        keep = x.ndim < 2 or any(getattr(k, "key", None) == "rel_embedding" for k in path)
        return x if keep or not jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)

    return jax.tree_util.tree_map_with_path(cast, params)


def decode_from_encoded(
    model: T5,
    variables: dict,
    encoded_BSD: Array,
    encoder_mask_BS: Array,
    max_decode_len: int,
    *,
    eos_id: int | None = 1,
) -> tuple[Array, Array]:
    """Greedy decoding from an encoder output, in one `lax.while_loop`: -> (tokens [B, L], steps).

    The first step (BOS = 0) runs with `encoded` and fills the KV cache, cross-attention keys and
    values included; the later steps read them from the cache. The loop stops after L tokens or
    once every row has emitted `eos_id` (a row's tokens after its EOS are 0); `steps` is the
    number of tokens decoded. eos_id may be a traced int (-1 never matches) or None.
    """
    variables = {k: v for k, v in variables.items() if k != "cache"}
    b = encoded_BSD.shape[0]

    def step(cache, tokens_B, encoded):
        cache, logits_BV = _decode_step(model, variables, cache, tokens_B, encoded, encoder_mask_BS, max_decode_len)
        return cache, jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

    def advance(done_B, next_B):
        next_B = jnp.where(done_B, 0, next_B)
        return next_B, done_B if eos_id is None else done_B | (next_B == eos_id)

    cache, first_B = step(None, jnp.zeros((b,), jnp.int32), encoded_BSD)
    first_B, done_B = advance(jnp.zeros((b,), jnp.bool_), first_B)
    out_BL = jnp.zeros((b, max_decode_len), jnp.int32).at[:, 0].set(first_B)

    def cond(carry):
        i, _, _, done_B, _ = carry
        return (i < max_decode_len) & ~jnp.all(done_B)

    def body(carry):
        i, cache, tokens_B, done_B, out_BL = carry
        cache, next_B = step(cache, tokens_B, None)
        next_B, done_B = advance(done_B, next_B)
        out_BL = jax.lax.dynamic_update_slice_in_dim(out_BL, next_B[:, None], i, axis=1)
        return i + 1, cache, next_B, done_B, out_BL

    steps, _, _, _, out_BL = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, first_B, done_B, out_BL))
    return out_BL, steps


def _decode_step(model, variables, cache, tokens_B, encoded, encoder_mask_BS, max_decode_len):
    """One cached decoding step: -> (cache, f32 logits [B, V]). `encoded` is given at the first
    step (it fills the cache, cross-attention keys and values included) and None after."""
    state = variables if cache is None else {**variables, "cache": cache}
    (logits_B1V, _), new_vars = model.apply(
        state,
        encoded,
        encoder_mask_BS,
        tokens_B[:, None],
        decode=True,
        max_decode_length=max_decode_len,
        method=T5.decode,
        mutable=["cache"],
    )
    return new_vars["cache"], logits_B1V[:, 0].astype(jnp.float32)


def forced_decode_logits(model: T5, variables: dict, encoded_BSD: Array, encoder_mask_BS: Array, tokens_BL: Array):
    """The logits [B, L, V] that cached decoding gives at each step when fed BOS and then
    `tokens_BL[:, :-1]` (teacher forcing): the same steps as `decode_from_encoded`, so two
    implementations can be compared step by step on one token history."""
    variables = {k: v for k, v in variables.items() if k != "cache"}
    b, length = tokens_BL.shape
    cache, first_BV = _decode_step(
        model, variables, None, jnp.zeros((b,), jnp.int32), encoded_BSD, encoder_mask_BS, length
    )

    def body(cache, tokens_B):
        cache, logits_BV = _decode_step(model, variables, cache, tokens_B, None, encoder_mask_BS, length)
        return cache, logits_BV

    _, rest_LBV = jax.lax.scan(body, cache, jnp.moveaxis(tokens_BL[:, :-1], 1, 0))
    return jnp.concatenate([first_BV[:, None], jnp.moveaxis(rest_LBV, 0, 1)], axis=1)


def greedy_decode(
    model: T5, variables: dict, encoder_input_tokens: Array, max_decode_len: int, *, eos_id: int | None = 1
) -> Array:
    """Greedy decoding with a KV cache: -> tokens [B, max_decode_len] int32.

    Starts from BOS = 0; after a row emits `eos_id` its later tokens are 0 (padding); eos_id may
    be a traced int (-1 never matches) or None. Jit it with `jax.jit(greedy_decode, static_argnums=(0, 3))`.
    Encodes, then `decode_from_encoded` (the matrices cast to the compute dtype once, `decode_params`).
    """
    variables = {**variables, "params": decode_params(variables["params"], model.spec.dtype)}
    enc_mask_BS = encoder_input_tokens > 0
    encoded_BSD, _ = model.apply(variables, encoder_input_tokens, enc_mask_BS, method=T5.encode)
    return decode_from_encoded(model, variables, encoded_BSD, enc_mask_BS, max_decode_len, eos_id=eos_id)[0]
