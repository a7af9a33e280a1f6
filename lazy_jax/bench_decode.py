"""Dense vs sparse-W_out greedy decoding of T5 decoders, one process, one table.

    python -m lazy_jax.bench_decode                 # the H200 runs of docs/inference.md (their --plan there)
    python -m lazy_jax.bench_decode --tiny          # seconds on a CPU: checks the script runs

Batch B greedy decoding of 128 tokens after a 512-token prompt (`models.t5.decode_from_encoded`:
the whole loop in one jit, cross-attention keys/values from the prompt once) with decoders of
T5-Base, T5-3B and T5-11B shape, bf16 weights and activations, Top-k at k = 3% of d_ff in every
MLP. The weights are random: Top-k keeps exactly k neurons of every token whatever the weights,
so the sparsity, and the bytes read, are those of a trained Top-k model by construction (which
neurons are active is not: random tokens spread over all neurons, the worst case for the
union over a batch). The encoder output is random too (the encoder is not timed).

Per token a decoder layer reads self-attention q/k/v/o, cross-attention q/o and both MLP
matrices, and the cached keys and values (the prompt's for cross-attention, 34 MB a layer at
T5-11B's 128 heads x 128 d_kv and 512 positions); W_out is ~28% of the weight bytes, so skipping
97% of it bounds the speedup at `limit` = all bytes / (all bytes - 0.97 W_out), the LM head (V x D)
included. Every row prints that limit next to the measured speedup; `union` is the measured share
of neurons active for at least one of the B sequences (`sparsity.union_active_frac` on layer 0's
map of B random tokens), the share of W_out rows the sparse path still reads.

    python -m lazy_jax.bench_decode --workdir=runs/t5_pydocs --input_file=prompts.jsonl

times a trained run instead (its newest checkpoint, batch 1, each prompt of the JSONL file as
`lazy_jax.generate` reads it, `--max_decode_len` tokens each without stopping at EOS), dense
against the sparse kernel, with the share of tokens both give alike: the exactness check of the
kernel on a model whose logits are not near ties. `--predictor RANK:ROWS` adds the approximate
W_in predictor's row (`lazy_jax.predictor`: its token agreement with the exact path and its loss
change); `--impls ...,predicted,predicted@1[:threshold]` times it on the random models (2k and k
rows of W_in; `:threshold`, k on average past a fitted threshold). `--topk_impl` picks how the
random models' Top-k finds its k-th largest (what a decoding step spends on selection),
`--decode_attention` how a step attends to its cache (`lazy_jax.decode_attention`), `--check`
first compares the kernels with XLA, and `--profile_dir=DIR` traces one timed decode of every
row into DIR/<shape>_b<batch>_<impl> (`lazy_jax.profiling`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lazy_jax import predictor, profiling, sparse_mlp, sparsity, xla_flags
from lazy_jax.errors import InputError
from lazy_jax.models import attention
from lazy_jax.models.t5 import T5, decode_from_encoded, default_model_config, t5_spec

PROMPT_LEN, DECODE_LEN, TOPK_FRAC = 512, 128, 0.03
# (name, size, decoder layers timed). T5-3B and T5-11B time 8 and 4 of their 24 layers (the first
# calls' budget); the -full shapes all 24 (11.3 GB of T5-11B weights, on one H200).
SHAPES = (
    ("T5-Base", "base", 12),
    ("T5-3B", "3B", 8),
    ("T5-11B", "11B", 4),
    ("T5-3B-full", "3B", 24),
    ("T5-11B-full", "11B", 24),
)
SWEEP_SHAPE = "T5-3B"
IMPLS = ("off", "pallas", "gather", "predicted")
# 'predicted' (lazy_jax.predictor, approximate): rank d_model / 16, and twice Top-k's k rows of W_in
# ('predicted@N': N times k rows, 'predicted@N:threshold' past a threshold; `--impls` takes both).
PREDICTOR_RANK_FRAC, PREDICTOR_ROWS_PER_K = 1 / 16, 2


TOPK_IMPL = "auto"  # --topk_impl (the model's default; docs/inference.md's rounds before 13 ran 'bisect')


def model_config(size: str, layers: int, **dims) -> ml_collections.ConfigDict:
    c = default_model_config(size)
    c.topk_impl = TOPK_IMPL
    c.update(dict(num_decoder_layers=layers, num_encoder_layers=1, dtype="bfloat16", dropout_rate=0.0, **dims))
    c.vocab_size = 32128
    spec_dims = t5_spec(c)
    c.topk = max(1, round(TOPK_FRAC * spec_dims.d_ff))
    return c


def build(config, impl: str) -> T5:
    spec = t5_spec(config)
    return T5(dataclasses.replace(spec, mlp=dataclasses.replace(spec.mlp, sparse_decode=impl)))


def random_params(model: T5, seed: int = 0) -> dict:
    """Decoder and embedding parameters (the encoder is not needed), matrices in bf16, N(0, 1/fan_in)."""
    one = jnp.zeros((1, 1), jnp.int32)
    batch = dict(encoder_input_tokens=one, decoder_input_tokens=one, decoder_target_tokens=one)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))["params"]
    shapes = {k: v for k, v in shapes.items() if k != "encoder"}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: hasattr(x, "unbox"))
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), len(leaves))  # fast to compile

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def normal(key, shape, scale):
        return (jax.random.normal(key, shape, jnp.float32) * scale).astype(jnp.bfloat16)

    out = []
    for key, leaf in zip(keys, leaves):
        shape = tuple((leaf.unbox() if hasattr(leaf, "unbox") else leaf).shape)
        if len(shape) < 2:
            out.append(jnp.ones(shape, jnp.float32))  # norm scales
        elif len(shape) == 2 and shape[-1] == model.spec.num_heads:
            out.append(normal(key, shape, 0.1).astype(jnp.float32))  # relative-position table
        else:
            fan_in = shape[1] if shape[0] == model.spec.vocab_size else int(np.prod(shape[:-1]))
            out.append(normal(key, shape, fan_in**-0.5))
    return jax.tree.unflatten(treedef, out)


def step_bytes(
    spec, active_share: float = TOPK_FRAC, prompt_len: float = PROMPT_LEN, decode_len: int = DECODE_LEN
) -> dict[str, float]:
    """Bytes one decoding step reads, and the byte-count limit when only `active_share` of W_out's
    rows are read: `weights` (bf16, the LM head included), `w_out` (W_out's share of them),
    `cache` (bf16 keys and values: the prompt's `prompt_len` positions for cross-attention, and the
    decoder's own, (decode_len + 1) / 2 positions on average), `limit` = all bytes / (all bytes -
    skipped W_out), and `limit_weights`, the same without the cache (the count before round 19)."""
    d, hk, f, layers = spec.d_model, spec.num_heads * spec.d_kv, spec.d_ff, spec.num_decoder_layers
    # self q/k/v/o, cross q/o, W_in and W_out a layer, and the LM head
    weights = 2 * (layers * ((4 + 2) * d * hk + 2 * d * f) + spec.vocab_size * d)
    cache = 2 * layers * 2 * hk * (prompt_len + (decode_len + 1) / 2)
    skipped = (1 - active_share) * 2 * layers * d * f
    total = weights + cache
    return dict(
        weights=weights,
        w_out=2 * layers * d * f,
        cache=cache,
        total=total,
        limit=total / (total - skipped),
        limit_weights=weights / (weights - skipped),
    )


def predicted_bytes_limit(
    spec, rows: int, rank: int, w_out_rows: int, prompt_len: float = PROMPT_LEN, decode_len: int = DECODE_LEN
) -> float:
    """All bytes of a dense step over those the predicted path reads: the attention matrices and
    the KV cache, `rows` rows of W_in, `w_out_rows` rows of W_out, the predictor (u [D, R],
    v [R, F]) and the LM head."""
    d, f = spec.d_model, spec.d_ff
    dense = step_bytes(spec, 1.0, prompt_len, decode_len)
    skipped = 2 * spec.num_decoder_layers * ((2 * f - rows - w_out_rows) * d - rank * (d + f))
    return dense["total"] / (dense["total"] - skipped)


def predictor_settings(spec, impl: str = "predicted") -> tuple[int, int, bool]:
    """(rank, rows, threshold) of the random models' predictor: rank PREDICTOR_RANK_FRAC of
    d_model, rows PREDICTOR_ROWS_PER_K times k, or N times k for impl 'predicted@N' (@1: no second
    selection), chosen as the top rows, or past a fitted threshold for 'predicted@N:threshold'."""
    per_k, _, mode = impl.partition("@")[2].partition(":")
    rows = min(spec.d_ff, round(float(per_k or PREDICTOR_ROWS_PER_K) * spec.mlp.topk))
    return max(1, int(spec.d_model * PREDICTOR_RANK_FRAC)), rows, mode == "threshold"


def union_share(model: T5, params: dict, batch: int, seed: int = 1) -> float:
    """Share of layer 0's neurons active for at least one of `batch` random tokens (Top-k map)."""
    mlp = params["decoder"]["layers_0"]["mlp"]
    x = jax.random.normal(jax.random.key(seed), (batch, model.spec.d_model), jnp.float32)
    x = (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True))).astype(jnp.bfloat16)
    a_BF = sparsity.topk_mask(jax.nn.relu(x @ mlp["wi"]["kernel"]), model.spec.mlp.topk)
    union, _ = sparsity.union_active_frac(a_BF[None], None, (batch,))
    return float(union[0])


_DECODERS: dict[tuple[int, int], tuple[T5, object]] = {}


def _decoder(model: T5, decode_len: int):
    """One jitted decode per model and length, so the prompts of a trained run compile once (not
    per prompt; the model is kept with it, so its id is not reused)."""
    key = (id(model), decode_len)
    if key not in _DECODERS:
        fn = jax.jit(lambda v, e, m: decode_from_encoded(model, v, e, m, decode_len, eos_id=None))
        _DECODERS[key] = (model, fn)
    return _DECODERS[key][1]


def time_decode(
    model: T5,
    params: dict,
    batch: int,
    repeats: int,
    encoded=None,
    mask=None,
    decode_len: int = DECODE_LEN,
    profile_dir: str | None = None,
    predictor: dict | None = None,
) -> dict:
    """Median time of decoding `decode_len` tokens (no EOS stop) from `encoded` (default: random);
    `compile_s` is the first call's time (compile included only the first time a model and length
    are decoded). `predictor`: the collection a 'predicted' model reads (`lazy_jax.predictor`)."""
    if encoded is None:
        encoded = jax.random.normal(jax.random.key(2), (batch, PROMPT_LEN, model.spec.d_model), jnp.bfloat16)
        mask = jnp.ones((batch, PROMPT_LEN), jnp.bool_)
    fn = _decoder(model, decode_len)
    variables = {"params": params} if predictor is None else {"params": params, "predictor": predictor}
    start = time.perf_counter()
    tokens, steps = jax.block_until_ready(fn(variables, encoded, mask))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(variables, encoded, mask))
        times.append(time.perf_counter() - start)
    if profile_dir:
        with profiling.trace(profile_dir):
            jax.block_until_ready(fn(variables, encoded, mask))
    sec = statistics.median(times)
    assert int(steps) == decode_len
    return dict(
        tokens=np.asarray(tokens),
        ms_per_token=1e3 * sec / decode_len,
        tokens_per_s=batch * decode_len / sec,
        compile_s=compile_s,
        spread=(max(times) - min(times)) / sec,
    )


def default_plan(shapes, sweep_shape: str, sweep_batches) -> list[tuple[str, int]]:
    """(shape name, batch): batch 1 of each shape, then the batch sweep of one shape."""
    return [(n, 1) for n, _, _ in shapes] + [(sweep_shape, b) for b in sweep_batches if b != 1]


def parse_plan(text: str, shapes) -> list[tuple[str, int]]:
    """'T5-11B-full:1,T5-3B:4' -> [(name, batch)], every name one of `shapes`."""
    names = [n for n, _, _ in shapes]
    plan = []
    for item in text.split(","):
        name, _, batch = item.rpartition(":")
        if name not in names or not batch.isdigit() or int(batch) < 1:
            raise InputError(f"--plan item {item!r} is not NAME:BATCH with NAME one of {names} and BATCH >= 1")
        plan.append((name, int(batch)))
    return plan


def parse_impls(text: str) -> tuple[str, ...]:
    """'off,pallas,predicted@1:threshold' -> the names, each of IMPLS or predicted@N[:threshold]."""
    impls = tuple(text.split(","))
    for impl in impls:
        per_k, _, mode = impl.partition("@")[2].partition(":")
        known = impl in IMPLS or (
            impl.startswith("predicted@") and per_k.replace(".", "", 1).isdigit() and mode in ("", "threshold")
        )
        if not known:
            raise InputError(f"--impls item {impl!r} is not one of {list(IMPLS)} or predicted@N[:threshold]")
    return impls


def parse_predictor(text: str, model) -> tuple[int, int, bool]:
    """'RANK:ROWS[:threshold]' -> (rank, rows, threshold), checked against the model."""
    rank, _, rest = text.partition(":")
    rows, _, mode = rest.partition(":")
    if not rank.isdigit() or not rows.isdigit() or mode not in ("", "threshold"):
        raise InputError(f"--predictor={text!r} is not RANK:ROWS[:threshold] (two integers, e.g. 32:128)")
    predictor.predicted_model(model, int(rows))
    return predictor.check_rank(int(rank), model.spec.d_model), int(rows), mode == "threshold"


def run(shapes, plan, repeats: int, budget_s: float, log, impls=IMPLS, profile_dir=None) -> list[dict]:
    rows, start = [], time.perf_counter()
    by_name = {n: (s, layers) for n, s, layers in shapes}
    plan = [(n, *by_name[n], b) for n, b in plan]
    built = {}
    for name, size, layers, batch in plan:
        if time.perf_counter() - start > budget_s:
            log(f"skipped {name} batch {batch}: past the {budget_s:.0f} s budget")
            continue
        config = model_config(size, layers) if isinstance(size, str) else model_config("base", layers, **size)
        if name not in built:
            built.clear()  # one size's weights on the device at a time
            built[name] = random_params(build(config, "off"))
        params = built[name]
        dense_model = build(config, "off")
        limit = step_bytes(dense_model.spec)
        union = union_share(dense_model, params, batch)
        base = None
        for impl in impls if batch == 1 else ("off", "pallas"):
            try:
                prof = profile_dir and os.path.join(profile_dir, f"{name}_b{batch}_{impl}")
                model, pred, row_limit = build(config, impl), None, limit["limit"]
                if impl.startswith("predicted"):  # timing only: a random model's predictor picks rows at random
                    rank, rows_read, threshold = predictor_settings(dense_model.spec, impl)
                    model = predictor.predicted_model(dense_model, rows_read, threshold)
                    pred = predictor.fit_decoder(params, rank, rows=rows_read if threshold else None)
                    row_limit = predicted_bytes_limit(dense_model.spec, rows_read, rank, dense_model.spec.mlp.topk)
                r = time_decode(model, params, batch, repeats, profile_dir=prof, predictor=pred)
            except Exception as e:  # one variant failing must not lose the others' numbers
                log(f"{name} b={batch} {impl}: FAILED {type(e).__name__}: {str(e)[:2000]}")
                continue
            if impl == "off":
                base = r
            # Share of decoded tokens equal to the dense path's (a random model's logits have near
            # ties that bf16 rounding can flip; after a flip the sequences part).
            same = None if base is None else float(np.mean(r["tokens"] == base["tokens"]))
            row = dict(
                shape=name,
                layers=layers,
                d_ff=dense_model.spec.d_ff,
                k=dense_model.spec.mlp.topk,
                batch=batch,
                impl=impl,
                ms_per_token=r["ms_per_token"],
                tokens_per_s=r["tokens_per_s"],
                speedup=None if base is None else base["ms_per_token"] / r["ms_per_token"],
                limit=row_limit,
                union=union,
                same_tokens=same,
                compile_s=r["compile_s"],
                spread=r["spread"],
            )
            rows.append(row)
            log(json.dumps(row))
    return rows


def trained_rows(
    workdir: str,
    input_file: str,
    decode_len: int,
    repeats: int,
    log,
    profile_dir=None,
    predictor_setting=None,
    calibration_file=None,
) -> list[dict]:
    """Batch-1 decoding of a trained run's newest checkpoint, dense against the Pallas kernel
    (and, with `predictor_setting` = (rank, rows, threshold), the approximate 'predicted' path).

    Every prompt of `input_file` is encoded once (not timed), then decoded `decode_len` tokens by
    each implementation; ms/token is the sum over prompts of the median decode time, divided by
    the tokens. `union` is the run's last eval share of nonzero decoder activations (at batch 1
    the union is the token's own active set); `limit` is the byte-count bound at that share.
    The kernel's row also compares logits step by step (`logit_check`): both implementations
    replay the dense path's tokens (`models.t5.forced_decode_logits`), and at the first step
    where the kernel's own greedy tokens part from the dense ones, the dense logits' top-2 gap
    is set beside the largest logit difference of that step: a gap under the difference is a
    near tie that the summation order decided, not a wrong product.
    The 'predicted' row's predictor is fitted on the decoder MLP inputs of the dense path's own
    greedy outputs for these prompts (in-sample), or for those of `calibration_file` (held out);
    it reports its tokens' agreement with the exact path and the loss change: the mean
    cross-entropy of the dense tokens under its replayed logits minus the dense path's own.
    """
    from lazy_jax import generate as gen
    from lazy_jax.models.t5 import T5, decode_params, forced_decode_logits

    loaded = gen.load_workdir(workdir)
    prompts = gen.read_prompts(input_file, loaded.tokenizer, PROMPT_LEN)
    share = _last_eval_share(workdir)
    dense = gen.build_model(loaded.model_config, "off")
    params = jax.device_put(decode_params(loaded.params, dense.spec.dtype))
    encode = jax.jit(lambda p, t: dense.apply({"params": p}, t, t > 0, method=T5.encode)[0])
    inputs = [jnp.asarray(ids_BT) for ids_BT, _ in gen.batches(prompts, 1)]
    encoded = [encode(params, ids_BT) for ids_BT in inputs]
    forced = jax.jit(forced_decode_logits, static_argnums=0)

    def replay(model, tokens_PL, pred=None):  # each prompt's logits [1, L, V] when fed the tokens tokens_PL[p]
        variables = {"params": params} if pred is None else {"params": params, "predictor": pred}
        return [forced(model, variables, e, t > 0, jnp.asarray(d[None])) for e, t, d in zip(encoded, inputs, tokens_PL)]

    rows, base, exact_tokens = [], None, None
    for impl in ("off", "pallas") + (("predicted",) if predictor_setting else ()):
        model, pred = dense if impl == "off" else gen.build_model(loaded.model_config, impl), None
        if impl == "predicted":
            rank, rows_read, threshold = predictor_setting
            model = predictor.predicted_model(dense, rows_read, threshold)
            if calibration_file:  # held-out prompts, decoded densely for their decoder inputs
                held = gen.read_prompts(calibration_file, loaded.tokenizer, PROMPT_LEN)
                held = [jnp.asarray(ids_BT) for ids_BT, _ in gen.batches(held, 1)]
                decode = _decoder(dense, decode_len)
                held_tokens = [np.asarray(decode({"params": params}, encode(params, t), t > 0)[0])[0] for t in held]
                calibration = _calibration_inputs(dense, params, held, held_tokens)
            else:
                calibration = _calibration_inputs(dense, params, inputs, base["tokens"])
            pred = predictor.fit_decoder(params, rank, calibration, rows=rows_read if threshold else None)
        seconds, tokens = 0.0, []
        for i, (ids_BT, enc_BSD) in enumerate(zip(inputs, encoded)):
            prof = profile_dir and i == 0 and os.path.join(profile_dir, f"trained_{impl}")
            r = time_decode(model, params, 1, repeats, enc_BSD, ids_BT > 0, decode_len, prof, predictor=pred)
            seconds += r["ms_per_token"] * decode_len / 1e3
            tokens.append(r["tokens"])
        tokens = np.concatenate(tokens)
        ms = 1e3 * seconds / (len(prompts) * decode_len)
        f = loaded.model_config.get("d_ff") or dense.spec.d_ff
        prompt_len = float(np.mean([np.sum(ids_BT > 0) for ids_BT in inputs]))
        limit = step_bytes(dense.spec, share, prompt_len, decode_len)["limit"] if share is not None else float("nan")
        row = dict(
            shape=f"trained {os.path.basename(os.path.normpath(workdir))} (d_ff {f})",
            layers=dense.spec.num_decoder_layers,
            d_ff=f,
            k=dense.spec.mlp.topk,
            batch=1,
            impl=impl,
            ms_per_token=ms,
            tokens_per_s=1e3 / ms,
            speedup=None if base is None else base["ms_per_token"] / ms,
            limit=limit,
            union=share if share is not None else float("nan"),
            same_tokens=None if base is None else float(np.mean(tokens == base["tokens"])),
            prompts=len(prompts),
        )
        if base is None:
            base = dict(row, tokens=tokens, logits=replay(dense, tokens))
        elif impl == "pallas":
            exact_tokens = tokens
            row["logit_check"] = logit_check(base["logits"], replay(model, base["tokens"]), base["tokens"], tokens)
        else:
            share_read = min(rows_read, (share or 1.0) * f) / f
            row["limit"] = predicted_bytes_limit(
                dense.spec, rows_read, rank, round(share_read * f), prompt_len, decode_len
            )
            row["same_tokens_as_exact"] = float(np.mean(tokens == exact_tokens))
            loss_exact = _mean_nll(base["logits"], base["tokens"])
            loss_predicted = _mean_nll(replay(model, base["tokens"], pred), base["tokens"])
            row.update(predictor_rank=rank, predictor_rows=rows_read, threshold=threshold, loss_exact=loss_exact)
            row.update(calibration=calibration_file or "in-sample")
            row.update(loss_predicted=loss_predicted, loss_change=loss_predicted - loss_exact)
        rows.append(row)
        log(json.dumps(row))
    return rows


def _calibration_inputs(model, params, inputs, tokens_PL) -> dict:
    """{layer: [N, D]}: the decoder MLP inputs when each prompt's decoder is fed its tokens."""
    per_prompt = []
    for ids_BT, out_L in zip(inputs, tokens_PL):
        target = jnp.asarray(out_L[None])
        shifted = jnp.pad(target[:, :-1], ((0, 0), (1, 0)))  # BOS = 0 first, as decoding
        batch = dict(encoder_input_tokens=ids_BT, decoder_input_tokens=shifted, decoder_target_tokens=target)
        per_prompt.append(predictor.decoder_mlp_inputs(model, {"params": params}, batch))
    return {name: jnp.concatenate([p[name] for p in per_prompt]) for name in per_prompt[0]}


def _mean_nll(logits, tokens_PL) -> float:
    """Mean cross-entropy of each prompt's tokens [L] under its logits [1, L, V]."""
    nll = [
        -np.take_along_axis(np.asarray(jax.nn.log_softmax(lg[0].astype(jnp.float32))), np.asarray(t)[:, None], 1)
        for lg, t in zip(logits, tokens_PL)
    ]
    return float(np.mean(np.concatenate(nll)))


def logit_check(dense_logits, sparse_logits, dense_tokens, sparse_tokens) -> dict:
    """Per prompt: logits [1, L, V] of both paths on the dense tokens, and each path's own greedy
    tokens [L] -> the largest logit difference, and for each prompt whose tokens part, the step,
    the dense top-2 gap there and that step's largest difference (see trained_rows)."""
    worst, partings = 0.0, []
    for p, (d_LV, s_LV, d_L, s_L) in enumerate(zip(dense_logits, sparse_logits, dense_tokens, sparse_tokens)):
        d_LV, s_LV = np.asarray(d_LV[0], np.float32), np.asarray(s_LV[0], np.float32)
        diff_L = np.abs(d_LV - s_LV).max(-1)
        worst = max(worst, float(diff_L.max()))
        differ = np.nonzero(np.asarray(d_L) != np.asarray(s_L))[0]
        if len(differ):
            step = int(differ[0])
            top2 = np.sort(d_LV[step])[-2:]
            partings.append(
                dict(prompt=p, step=step, top2_gap=float(top2[1] - top2[0]), max_logit_diff=float(diff_L[step]))
            )
    return dict(
        max_logit_diff=worst,
        partings=partings,
        all_at_near_ties=all(x["top2_gap"] <= x["max_logit_diff"] for x in partings),
    )


def _last_eval_share(workdir: str) -> float | None:
    """The run's last eval share of nonzero decoder activations, or None without one."""
    from lazy_jax import workdir as wd

    shares = [
        float(r["nonzero_frac/decoder/mean"])
        for r in wd.read_metrics(workdir)
        if r.get("split") == "eval" and "nonzero_frac/decoder/mean" in r
    ]
    return shares[-1] if shares else None


CHECK_SHAPES = ((1, 3072, 768), (1, 65536, 1024), (4, 16384, 1024), (64, 16384, 1024))  # (B, F, D)


def check_kernels(log, shapes=CHECK_SHAPES) -> None:
    """Each implementation against the f32 sums of the same bf16 products, at the benchmark's
    shapes: ||y - exact|| / ||exact|| (bf16 rounding of the output alone is ~2e-3)."""
    for b, f, d in shapes:
        k1, k2, k3 = jax.random.split(jax.random.key(b + f), 3)
        a_BF = jax.nn.relu(jax.random.normal(k1, (b, f), jnp.float32))
        a_BF = jnp.where(jax.random.uniform(k3, (b, f)) < 2 * TOPK_FRAC, a_BF, 0).astype(jnp.bfloat16)
        w_FD = jax.random.normal(k2, (f, d), jnp.bfloat16)
        exact = jnp.dot(a_BF.astype(jnp.float32), w_FD.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        errs = {}
        for impl in IMPLS:
            y = jax.jit(sparse_mlp.sparse_matmul, static_argnums=2)(a_BF, w_FD, impl).astype(jnp.float32)
            errs[impl] = float(jnp.linalg.norm(y - exact) / jnp.linalg.norm(exact))
        log(f"check b={b} F={f} D={d}: relative error " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))


# (B, S, H, K, positions kept, bias): T5-11B's cross-attention over a 512-token prompt, its own
# cache at step 40 of 128 (relative-position bias), T5-Base's over an odd prompt, a batch of 4.
ATTENTION_CHECKS = ((1, 512, 128, 128, 512, False), (1, 128, 128, 128, 41, True), (1, 37, 12, 64, 37, False))
ATTENTION_CHECKS += ((4, 512, 32, 128, 300, False),)


def check_attention(log, shapes=ATTENTION_CHECKS) -> None:
    """The decode attention kernel against XLA's f32 attention on the same bf16 inputs."""
    from lazy_jax import decode_attention as da

    for b, s, h, k, kept, bias in shapes:
        k1, k2, k3, k4 = jax.random.split(jax.random.key(s + h), 4)
        q, keys, values = (
            jax.random.normal(kk, shape, jnp.bfloat16)
            for kk, shape in zip((k1, k2, k3), ((b, h, k), (b, s, h, k), (b, s, h, k)))
        )
        bias_HS = jax.random.normal(k4, (h, s), jnp.float32) if bias else None
        ok_BS = jnp.broadcast_to(jnp.arange(s) < kept, (b, s))
        fn = jax.jit(da.decode_attention, static_argnames="interpret")
        y = fn(q, keys, values, bias_HS, ok_BS, interpret=not sparse_mlp.on_gpu()).astype(jnp.float32)
        exact = da.reference(q.astype(jnp.float32), keys, values, bias_HS, ok_BS)
        err = float(jnp.linalg.norm(y - exact) / jnp.linalg.norm(exact))
        log(f"check decode attention B={b} S={s} H={h} K={k} kept={kept} bias={bias}: relative error {err:.2e}")


def check_fused(log, shapes=((65536, 1024), (16384, 1024))) -> None:
    """The fused predicted-block kernel (threshold scored inside it) against XLA on the same bf16
    inputs: rows kept by one and not the other (with their scores' distance to the threshold, in
    bf16 steps of the threshold: summation order can flip a score within one), the activations'
    error on the rows both keep, and the output's against XLA's product of the kernel's own a."""
    for f, d in shapes:
        ks = jax.random.split(jax.random.key(f + d), 3)
        wi_DF = (jax.random.normal(ks[0], (d, f), jnp.float32) * d**-0.5).astype(jnp.bfloat16)
        wo_FD = jax.random.normal(ks[1], (f, d), jnp.bfloat16)
        x_ND = jax.random.normal(ks[2], (8, d), jnp.bfloat16)
        pred = predictor.fit(wi_DF, max(1, d // 16))
        pred["threshold"] = predictor.fit_threshold(pred, x_ND.astype(jnp.float32), round(TOPK_FRAC * f))
        fused = jax.jit(predictor.fused_predicted_mlp, static_argnames="interpret")
        for x_D in x_ND[:4]:
            a_F, y_D = fused(x_D, pred, wo_FD, interpret=not sparse_mlp.on_gpu())
            scores_F = predictor.predicted_scores(x_D, pred).astype(jnp.float32)
            keep_F = predictor.predicted_keep(x_D[None], pred, 0)[0]  # the unfused path's rows
            relu_F = jax.nn.relu((x_D @ wi_DF).astype(jnp.float32))
            want_a = jnp.where(keep_F, relu_F, 0)
            got_keep = a_F != 0
            both = keep_F & got_keep
            flips = (keep_F & (relu_F > 0)) != got_keep  # a kept row whose ReLU is 0 cannot show
            ulp = float(jnp.abs(pred["threshold"].astype(jnp.float32))) * 2.0**-7
            gap = float(jnp.max(jnp.where(flips, jnp.abs(scores_F - pred["threshold"]), 0))) / ulp
            a_err = jnp.max(jnp.abs(jnp.where(both, a_F.astype(jnp.float32) - want_a, 0)))
            a_err = float(a_err / jnp.maximum(jnp.max(want_a), 1e-30))
            y_want = a_F.astype(jnp.float32) @ wo_FD.astype(jnp.float32)
            y_err = float(jnp.linalg.norm(y_D - y_want) / jnp.maximum(jnp.linalg.norm(y_want), 1e-30))
            log(
                f"check fused F={f} D={d}: kept {int(jnp.sum(got_keep))} (XLA {int(jnp.sum(keep_F & (want_a != 0)))}), "
                f"flipped {int(jnp.sum(flips))} (largest {gap:.2f} bf16 steps from the threshold), "
                f"a error {a_err:.2e} on rows both keep, y relative error {y_err:.2e}"
            )


def table(rows) -> str:
    head = "| shape (decoder layers) | batch | impl | ms/token | tokens/s | speedup | limit | union | same tokens |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.3f}x"
        same = "-" if r["same_tokens"] is None else f"{100 * r['same_tokens']:.0f}%"
        out.append(
            f"| {r['shape']} ({r['layers']}) | {r['batch']} | {r['impl']} | {r['ms_per_token']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {sp} | {r['limit']:.3f}x | {100 * r['union']:.1f}% | {same} |"
        )
    return "\n".join(out)


def main(argv=None) -> None:
    global TOPK_IMPL
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes, a CPU check that the script runs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--check", action="store_true", help="first compare each implementation with exact sums")
    p.add_argument("--budget_s", type=float, default=300.0, help="start no new size after this many seconds")
    p.add_argument("--plan", default="", help="NAME:BATCH,... of SHAPES to run (default: default_plan)")
    p.add_argument("--sweep_batches", default="1,4,16,64", help=f"batch sizes for {SWEEP_SHAPE}")
    p.add_argument("--impls", default=",".join(IMPLS), help="implementations at batch 1")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="where bench_decode.json/.log go")
    p.add_argument(
        "--topk_impl",
        default=TOPK_IMPL,
        help="the random models' Top-k selection: auto (the kernel on a GPU), bisect, radix, pallas or lax",
    )
    p.add_argument("--profile_dir", default=None, help="trace one timed decode of every row here")
    p.add_argument(
        "--decode_attention",
        default=attention.SETTINGS.decode,
        help="cached attention while decoding: auto (the Pallas kernel on a GPU), xla or pallas",
    )
    p.add_argument("--workdir", default=None, help="time this trained T5 run instead (needs --input_file)")
    p.add_argument("--input_file", default=None, help="JSONL prompts for --workdir, as lazy_jax.generate reads")
    p.add_argument("--max_decode_len", type=int, default=DECODE_LEN, help="tokens decoded per prompt (--workdir)")
    p.add_argument(
        "--predictor",
        default="",
        help="RANK:ROWS[:threshold]: with --workdir, also the approximate 'predicted' path (lazy_jax.predictor)",
    )
    p.add_argument(
        "--calibration_file", default=None, help="JSONL prompts to fit --predictor on (default: --input_file)"
    )
    a = p.parse_args(argv)
    if a.workdir and not a.input_file:
        p.error("--workdir needs --input_file=PROMPTS.jsonl (one object a line with 'text' or 'input_ids')")
    if (a.predictor or a.calibration_file) and not a.workdir or a.calibration_file and not a.predictor:
        p.error("--predictor needs --workdir, and --calibration_file needs --predictor")
    try:
        sparsity.check_topk_impl(a.topk_impl, key="--topk_impl")
        attention.set_attention(decode=a.decode_attention)
        plan = parse_plan(a.plan, SHAPES) if a.plan else None
        impls = parse_impls(a.impls)
        predictor_setting = None
        if a.workdir:  # a bad workdir or prompt file: one line, before anything is written
            from lazy_jax import generate as gen

            loaded = gen.load_workdir(a.workdir)
            gen.read_prompts(a.input_file, loaded.tokenizer, PROMPT_LEN)
            if a.predictor:
                predictor_setting = parse_predictor(a.predictor, gen.build_model(loaded.model_config, "off"))
            if a.calibration_file:
                gen.read_prompts(a.calibration_file, loaded.tokenizer, PROMPT_LEN)
    except InputError as e:
        p.exit(2, f"error: {e}\n")
    TOPK_IMPL = a.topk_impl
    logf = open(os.path.join(a.out, "bench_decode.log"), "w")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"topk_impl={a.topk_impl}; decode_attention={a.decode_attention}"
    )
    if a.check:
        check_kernels(log, ((1, 512, 64), (4, 256, 64)) if a.tiny else CHECK_SHAPES)
        check_attention(log, ((1, 37, 2, 32, 20, True),) if a.tiny else ATTENTION_CHECKS)
        check_fused(log, ((512, 64),) if a.tiny else ((65536, 1024), (16384, 1024)))
    if a.workdir:
        rows = trained_rows(
            a.workdir,
            a.input_file,
            a.max_decode_len,
            a.repeats,
            log,
            a.profile_dir,
            predictor_setting,
            a.calibration_file,
        )
    elif a.tiny:
        tiny = dict(d_model=64, num_heads=2, d_kv=32, d_ff=512)
        shapes = (("tiny-a", tiny, 2), ("tiny-b", tiny, 3), ("tiny-c", tiny, 1))
        rows = run(shapes, default_plan(shapes, "tiny-b", (1, 4)), 2, a.budget_s, log, IMPLS, a.profile_dir)
    else:
        if plan is None:  # --plan, e.g. T5-11B-full:1,T5-3B:4, else the default
            plan = default_plan(SHAPES, SWEEP_SHAPE, tuple(int(b) for b in a.sweep_batches.split(",")))
        rows = run(SHAPES, plan, a.repeats, a.budget_s, log, impls, a.profile_dir)
    with open(os.path.join(a.out, "bench_decode.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    xla_flags.apply(defaults=xla_flags.DECODING)  # before the first computation initialises a backend
    main()
