"""An approximate sparse MLP for decoding: predict the active neurons, read only their W_in rows.

The exact sparse path (`sparse_mlp`) can skip W_out's inactive rows only: which neurons are
active is known after h = x @ W_in, which reads all of W_in. After Deja Vu, a cheap predictor
guesses the active set first, so most of W_in is not read either:

    scores_F = (x_D @ u_DR) @ v_RF          a rank-R approximation of x @ W_in
    keep_F   = the `rows` largest scores > 0 (the one Top-k, `sparsity.topk_mask`), or, with
               `predicted_model(..., threshold=True)`, scores > a per-layer threshold fitted to
               keep `rows` on average (Deja Vu's way: no selection, a count that varies)
    h_F      = x . W_in[:, f] for f in keep, 0 elsewhere   (`compact_rows_matvec`: those rows only)

and the block goes on as before (ReLU, Top-k k <= rows, the sparse W_out of the kept neurons;
with rows = k the predictor's set is the Top-k set and the second selection is skipped, and at
batch 1 on a GPU the whole block is one kernel, `fused_predicted_mlp`: scores, rows, ReLU, W_out).
When the predictor misses a neuron the exact path keeps, the output differs: this path is
approximate, reported with its token agreement and loss change against the exact one
(`bench_decode --workdir ... --predictor RANK:ROWS`, docs/inference.md).

The predictor needs no training: `fit` takes the rank-R approximation of W_in that is best for
the MLP's inputs (their second moment C from calibration inputs, shrunk by SHRINK towards
isotropic, else C = I: the truncated SVD),
    min_P E ||x W_in - x P||^2 over rank(P) <= R,  P = C^-1/2 [C^1/2 W_in]_R,
so u v = P with u = C^-1/2 U_R and v = U_R^T C^1/2 W_in (U_R: the top R left singular vectors
of C^1/2 W_in). At full rank (R = D) and rows = d_ff the path is the exact one.

The decode step reads them from a `predictor` collection beside `params`, the same tree as the
decoder's MLPs: {'decoder': {'layers_i': {'mlp': {'u', 'v', 'wi_t'[, 'threshold']}}}} (`fit_decoder`); `wi_t`
is W_in transposed [F, D] so that a neuron's weights are one contiguous row (a column of W_in
would be D loads spread over the whole matrix). It adds W_in's bytes to the device memory.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lazy_jax import sparse_mlp, sparsity
from lazy_jax.errors import InputError

Array = jax.Array
NAMES = ("u", "v", "wi_t")
SHRINK = 0.1  # share of the isotropic second moment mixed into the calibration's (`fit`)
THRESHOLD_SAMPLES = 256  # random inputs a threshold is fitted on without calibration inputs


def check_rows(rows: int, d_ff: int, topk: int) -> int:
    """rows: W_in rows read per token, topk (when > 0) <= rows <= d_ff."""
    if not isinstance(rows, int | np.integer) or not max(1, topk) <= rows <= d_ff:
        raise InputError(f"predictor rows={rows!r} must be an integer in [max(1, topk)={max(1, topk)}, d_ff={d_ff}]")
    return int(rows)


def check_rank(rank: int, d_model: int) -> int:
    if not isinstance(rank, int | np.integer) or not 1 <= rank <= d_model:
        raise InputError(f"predictor rank={rank!r} must be an integer in [1, d_model={d_model}]")
    return int(rank)


def predicted_model(model, rows: int, threshold: bool = False):
    """`model` (a T5) decoding with the predictor: `rows` rows of W_in and the sparse W_out a token
    (threshold=True: the rows whose score passes the threshold `fit_decoder(rows=...)` fitted)."""
    spec = model.spec
    if not sparse_mlp.has_exact_zeros(spec.mlp.activation, spec.mlp.topk):
        raise InputError(f"the predictor needs exact zeros (ReLU or Top-k), not activation={spec.mlp.activation!r}")
    rows = check_rows(rows, spec.d_ff, spec.mlp.topk)
    mlp = dataclasses.replace(spec.mlp, sparse_decode="predicted", predictor_rows=rows, predictor_threshold=threshold)
    return type(model)(dataclasses.replace(spec, mlp=mlp))


def fit(wi_DF: Array, rank: int, x_ND: Array | None = None, dtype=None) -> dict[str, Array]:
    """{'u' [D, R], 'v' [R, F], 'wi_t' [F, D]} in `dtype` (default W_in's): x u v is the rank-R
    approximation of x W_in best in the mean over the rows of x_ND (None: over isotropic x)."""
    d = wi_DF.shape[0]
    rank = check_rank(rank, d)
    w_DF = jnp.asarray(wi_DF, jnp.float32)
    if x_ND is None:
        root_DD = inv_root_DD = jnp.eye(d, dtype=jnp.float32)
    else:
        x_ND = jnp.asarray(x_ND, jnp.float32)
        c_DD = x_ND.T @ x_ND / x_ND.shape[0]
        # Shrunk towards isotropic: C^-1/2 would amplify directions the calibration never took.
        c_DD = (1 - SHRINK) * c_DD + SHRINK * jnp.trace(c_DD) / d * jnp.eye(d)
        evals, evecs = jnp.linalg.eigh(c_DD)
        root_DD = (evecs * jnp.sqrt(evals)[None, :]) @ evecs.T
        inv_root_DD = (evecs / jnp.sqrt(evals)[None, :]) @ evecs.T
    m_DF = root_DD @ w_DF
    _, left_DD = jnp.linalg.eigh(m_DF @ m_DF.T)  # ascending: the top R are the last columns
    u_DR = left_DD[:, ::-1][:, :rank]
    dtype = dtype or wi_DF.dtype
    return dict(u=(inv_root_DD @ u_DR).astype(dtype), v=(u_DR.T @ m_DF).astype(dtype), wi_t=w_DF.T.astype(dtype))


def decoder_mlps(params: dict) -> list[str]:
    """The decoder's layer names that hold an MLP, in order ('layers_0', ...); a loop, not scan."""
    decoder = params["decoder"]
    if "layers" in decoder:
        raise InputError("the predictor needs a decoder built as a loop of layers, not scan_layers=True")
    names = sorted((k for k in decoder if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
    return [n for n in names if "mlp" in decoder[n]]


def fit_decoder(
    params: dict, rank: int, inputs: dict[str, Array] | None = None, dtype=None, rows: int | None = None
) -> dict:
    """The `predictor` collection of a T5 decoder: `fit` of each layer's W_in, on that layer's
    MLP inputs `inputs[layer]` [N, D] when given (`decoder_mlp_inputs`), else isotropic; with
    `rows`, also each layer's `threshold` (`fit_threshold`)."""
    out = {}
    for i, name in enumerate(decoder_mlps(params)):
        wi_DF = params["decoder"][name]["mlp"]["wi"]["kernel"]
        x_ND = None if inputs is None else inputs[name]
        out[name] = {"mlp": fit(wi_DF, rank, x_ND, dtype)}
        if rows:
            if x_ND is None:  # RMSNorm's output at unit scale: entries of unit variance
                x_ND = jax.random.normal(jax.random.key(i), (THRESHOLD_SAMPLES, wi_DF.shape[0]), jnp.float32)
            out[name]["mlp"]["threshold"] = fit_threshold(out[name]["mlp"], x_ND, rows)
    return {"decoder": out}


def fit_threshold(pred: dict[str, Array], x_ND: Array, rows: int) -> Array:
    """The score above which `rows` rows lie on average: the mean over the inputs x_ND of each
    one's rows-th largest score (a scalar; Deja Vu's thresholded predictor, no selection)."""
    scores_NF = predicted_scores(jnp.asarray(x_ND), pred)
    return jnp.mean(jax.lax.top_k(scores_NF.astype(jnp.float32), rows)[0][:, -1])


def decoder_mlp_inputs(model, variables: dict, batch: dict) -> dict[str, Array]:
    """{layer: [N, D]} the decoder MLPs' inputs (the pre-MLP norm's output) at the N target
    positions of `batch` (T5's teacher-forced forward: the same inputs decoding sees)."""
    _, state = model.apply(
        {"params": variables["params"]},
        batch,
        capture_intermediates=lambda mdl, method: mdl.name == "pre_mlp_layer_norm" and method == "__call__",
        mutable=["intermediates"],
    )
    valid_N = np.asarray(batch["decoder_target_tokens"]).reshape(-1) > 0
    layers = state["intermediates"]["decoder"]
    return {
        name: jnp.asarray(layers[name]["pre_mlp_layer_norm"]["__call__"][0]).reshape(valid_N.size, -1)[valid_N]
        for name in decoder_mlps(variables["params"])
    }


def predicted_scores(x_BD: Array, pred: dict[str, Array]) -> Array:
    """(x u) v [B, F]: the rank-R approximation of x W_in, in the predictor's dtype."""
    return (x_BD.astype(pred["u"].dtype) @ pred["u"]) @ pred["v"]


def predicted_keep(x_BD: Array, pred: dict[str, Array], rows: int, topk_impl: str = "auto") -> Array:
    """[B, F] bool: the neurons the predictor keeps, the `rows` highest positive scores, or with a
    `threshold` in `pred` the scores above it (`rows` on average, no selection)."""
    scores_BF = predicted_scores(x_BD, pred)
    if "threshold" in pred:
        return scores_BF > pred["threshold"].astype(scores_BF.dtype)
    return sparsity.topk_mask(scores_BF, rows, topk_impl) > 0


def predicted_preactivation(x_BD: Array, pred: dict[str, Array], rows: int, topk_impl: str = "auto") -> Array:
    """h [B, F] in x's dtype: x . W_in's row f for the `rows` highest positive predicted scores
    of each row of x (with a `threshold` in `pred`: the scores above it), 0 elsewhere. Batch 1 on
    a GPU reads only those rows (`compact_rows_matvec`); otherwise the same numbers come from the
    dense product (what a CPU and larger batches get)."""
    wi_FD = pred["wi_t"]
    keep_BF = predicted_keep(x_BD, pred, rows, topk_impl)
    if sparse_mlp.use_compact(x_BD.shape[0], *wi_FD.shape):  # the W_out kernel's conditions
        h_BF = jax.jit(compact_rows_matvec)(wi_FD, x_BD[0], keep_BF[0])[None]
    else:
        h_BF = jnp.where(keep_BF, x_BD.astype(wi_FD.dtype) @ wi_FD.T, 0)
    return h_BF.astype(x_BD.dtype)


# ----------------------------------------------------------------------------- the kernel


def _compact_rows_kernel(x_ref, keep_ref, w_ref, o_ref, *, chunk: int, group: int, block_d: int):
    """o [chunk] = w[f] . x for the kept rows f of chunk p, 0 elsewhere: the rows loaded by index,
    `group` at a time (sparse_mlp.compact_group), the values put back in place without a scatter."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    p = pl.program_id(0)
    m_C = keep_ref[pl.ds(p * chunk, chunk)] != 0
    count = jnp.sum(m_C.astype(jnp.int32))

    def body(g, h_C):
        hit_RC, local_R, valid_R = sparse_mlp.compact_group(m_C, g, group)
        rows_R1 = (p * chunk + local_R)[:, None]
        v_R = jnp.zeros((group,), jnp.float32)
        for j in range(w_ref.shape[1] // block_d):  # written out: the loads go out together
            cols_1D = (j * block_d + jnp.arange(block_d, dtype=jnp.int32))[None, :]
            w_RD = plgpu.load(w_ref.at[rows_R1, cols_1D], mask=valid_R[:, None], other=0.0).astype(jnp.float32)
            x_1D = x_ref[pl.ds(j * block_d, block_d)].astype(jnp.float32)[None, :]
            v_R = v_R + jnp.sum(w_RD * x_1D, axis=1)
        return h_C + jnp.sum(jnp.where(hit_RC, v_R[:, None], 0.0), axis=0)

    o_ref[...] = lax.fori_loop(0, (count + group - 1) // group, body, jnp.zeros((chunk,), jnp.float32))


def compact_rows_matvec(
    w_FD: Array, x_D: Array, keep_F: Array, *, interpret: bool | None = None, chunk=None, block_d=None
) -> Array:
    """h [F] f32 = w_FD @ x_D where keep_F, 0 elsewhere, the rows not kept never loaded: each
    program compacts its chunk of keep_F and loads those rows whole, `COMPACT_GROUP` at a time."""
    from jax.experimental import pallas as pl

    f, d = w_FD.shape
    tiles = sparse_mlp.compact_tiles(f, d, chunk or sparse_mlp.COMPACT_CHUNK, block_d or sparse_mlp.COMPACT_BLOCK_D)
    if tiles is None:
        raise ValueError(f"the compacted rows kernel does not tile a [{f}, {d}] matrix")
    chunk, block_d = tiles
    interpret = not sparse_mlp.on_gpu() if interpret is None else interpret
    return pl.pallas_call(
        functools.partial(_compact_rows_kernel, chunk=chunk, group=sparse_mlp.COMPACT_GROUP, block_d=block_d),
        grid=(f // chunk,),
        in_specs=[pl.no_block_spec, pl.no_block_spec, pl.no_block_spec],
        out_specs=pl.BlockSpec((chunk,), lambda p: (p,)),
        out_shape=jax.ShapeDtypeStruct((f,), jnp.float32),
        interpret=interpret,
        name="compact_predicted_rows",
    )(x_D.astype(w_FD.dtype), keep_F.astype(jnp.int32), w_FD)


# ----------------------------------------------------------------------------- the fused block

FUSED_MAX_D = 4096  # a program holds group x D weights of each matrix in registers


def fused_chunk(d_ff: int, d_model: int, chunk: int = sparse_mlp.COMPACT_CHUNK) -> int | None:
    """The neurons a program of the fused kernel takes (F in power-of-two chunks), or None where
    it does not apply: D not a power of two of at most FUSED_MAX_D (one load holds whole rows)."""
    tiles = sparse_mlp.compact_tiles(d_ff, d_model, chunk)
    return None if tiles is None or d_model & (d_model - 1) or d_model > FUSED_MAX_D else tiles[0]


def fused_applies(d_ff: int, d_model: int) -> bool:
    """Whether the fused kernel serves a batch-1 decoding step on this device (a GPU)."""
    return sparse_mlp.on_gpu() and fused_chunk(d_ff, d_model) is not None


def _fused_kernel(x_ref, xu_ref, v_ref, thr_ref, keep_ref, wi_ref, wo_ref, o_ref, a_ref, *, chunk, group, act_dtype):
    """Program p, neurons [p * chunk, (p + 1) * chunk): which to keep (the scores u . v past the
    threshold, or `keep`), then group by group the kept rows of W_in (transposed) and of W_out by
    index: a = relu(x . W_in row) (rounded as the block rounds h), o += a * W_out row.
    o_ref [D]: this chunk's share of the output; a_ref [chunk]: its activations, 0 where not kept."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    p = pl.program_id(0)
    d = x_ref.shape[0]
    if keep_ref is None:
        r = xu_ref.shape[0]
        cols_C = p * chunk + jnp.arange(chunk, dtype=jnp.int32)
        v_RC = plgpu.load(v_ref.at[jnp.arange(r, dtype=jnp.int32)[:, None], cols_C[None, :]])
        scores_C = jnp.sum(xu_ref[...].astype(jnp.float32)[:, None] * v_RC.astype(jnp.float32), axis=0)
        m_C = scores_C.astype(v_RC.dtype).astype(jnp.float32) > thr_ref[0].astype(jnp.float32)
    else:
        m_C = keep_ref[pl.ds(p * chunk, chunk)] != 0
    count = jnp.sum(m_C.astype(jnp.int32))
    x_1D = x_ref[...].astype(jnp.float32)[None, :]
    cols_1D = jnp.arange(d, dtype=jnp.int32)[None, :]

    def body(g, carry):
        o_D, a_C = carry
        hit_RC, local_R, valid_R = sparse_mlp.compact_group(m_C, g, group)
        rows_R1 = (p * chunk + local_R)[:, None]
        load = lambda ref: plgpu.load(ref.at[rows_R1, cols_1D], mask=valid_R[:, None], other=0.0).astype(jnp.float32)
        h_R = jnp.sum(load(wi_ref) * x_1D, axis=1)
        a_R = jnp.maximum(h_R.astype(act_dtype).astype(jnp.float32), 0.0)
        o_D = o_D + jnp.sum(a_R[:, None] * load(wo_ref), axis=0)
        return o_D, a_C + jnp.sum(jnp.where(hit_RC, a_R[:, None], 0.0), axis=0)

    init = (jnp.zeros((d,), jnp.float32), jnp.zeros((chunk,), jnp.float32))
    o_D, a_C = lax.fori_loop(0, (count + group - 1) // group, body, init)
    o_ref[...], a_ref[...] = o_D, a_C.astype(a_ref.dtype)


def fused_predicted_mlp(
    x_D: Array,
    pred: dict[str, Array],
    wo_FD: Array,
    keep_F: Array | None = None,
    *,
    interpret: bool | None = None,
    chunk: int | None = None,
    num_warps: int | None = None,
) -> tuple[Array, Array]:
    """The predicted ReLU block of one token in one kernel, no second selection: -> (a [F] in x's
    dtype, y [D] f32 = a @ wo_FD). The kept neurons: `keep_F`, else those whose score (x . u) . v
    passes pred['threshold'] (scored inside the kernel, no [F] scores written). Only the kept
    rows of W_in (pred['wi_t']) and W_out are read; the chunks' shares of y are summed outside.
    `chunk` and `num_warps` override the defaults (benchmarks/sparse_kernels.py --fused)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    wi_FD = pred["wi_t"]
    f, d = wi_FD.shape
    chunk = fused_chunk(f, d, chunk or sparse_mlp.COMPACT_CHUNK)
    if chunk is None:
        raise ValueError(f"the fused predicted kernel does not tile a [{f}, {d}] block")
    interpret = not sparse_mlp.on_gpu() if interpret is None else interpret
    scored = keep_F is None
    xu_R = (x_D.astype(pred["u"].dtype) @ pred["u"]) if scored else None  # as predicted_scores rounds it
    group = sparse_mlp.COMPACT_GROUP
    kernel = functools.partial(_fused_kernel, chunk=chunk, group=group, act_dtype=x_D.dtype)
    if scored:
        kernel = functools.partial(_scoring, kernel)
        inputs = (x_D.astype(wi_FD.dtype), xu_R, pred["v"], pred["threshold"].reshape(1), wi_FD, wo_FD)
    else:
        kernel = functools.partial(_given_rows, kernel)
        inputs = (x_D.astype(wi_FD.dtype), keep_F.astype(jnp.int32), wi_FD, wo_FD)
    partial_PD, a_F = pl.pallas_call(
        kernel,
        grid=(f // chunk,),
        in_specs=[pl.no_block_spec] * len(inputs),
        out_specs=[pl.BlockSpec((None, d), lambda p: (p, 0)), pl.BlockSpec((chunk,), lambda p: (p,))],
        out_shape=[jax.ShapeDtypeStruct((f // chunk, d), jnp.float32), jax.ShapeDtypeStruct((f,), x_D.dtype)],
        interpret=interpret,
        compiler_params=None if num_warps is None else plgpu.CompilerParams(num_warps=num_warps),
        name="fused_predicted_mlp",
    )(*inputs)
    return a_F, jnp.sum(partial_PD, axis=0)


def _scoring(kernel, x_ref, xu_ref, v_ref, thr_ref, wi_ref, wo_ref, o_ref, a_ref):  # the threshold's rows
    kernel(x_ref, xu_ref, v_ref, thr_ref, None, wi_ref, wo_ref, o_ref, a_ref)


def _given_rows(kernel, x_ref, keep_ref, wi_ref, wo_ref, o_ref, a_ref):  # rows kept outside (the top scores)
    kernel(x_ref, None, None, None, keep_ref, wi_ref, wo_ref, o_ref, a_ref)
