"""Greedy generation with a T5: prompts from JSONL in, continuations to JSONL out.

    python -m lazy_jax.generate --workdir=runs/t5_pydocs --input_file=prompts.jsonl --output_file=out.jsonl
    python -m lazy_jax.generate --hf_t5=PATH --input_file=... --output_file=... --sparse --batch_size=1

The model is a trained run's newest checkpoint (its config.json and tokenizer) or a Hugging Face
T5 v1.0 directory (`models.t5_convert`; its `spiece.model` is the tokenizer). Each input line is
a JSON object with "text" (tokenized by the model's SentencePiece model, EOS appended) or
"input_ids" (a list of ints); each output line repeats it with "output_ids" (up to EOS) and
"output_text". Decoding is `models.t5.greedy_decode`: the weights cast to the compute dtype once,
cross-attention keys/values computed once per prompt, the whole loop in one jit. Prompts are
batched in input order, padded to a power-of-two length (few compilations).

`--sparse` reads only the active rows of each MLP's W_out per decoding step
(`lazy_jax.sparse_mlp`, Pallas kernel on a GPU): the same tokens as the dense path. It needs
exact zeros, so a ReLU (or squared-ReLU) model or one with Top-k; elsewhere it is refused. Off a
GPU it falls back to the dense matmul (exact, nothing to gain there). Batches above
`SPARSE_MAX_BATCH` also decode densely: the union of active neurons over the batch grows with
it and the gain ends (docs/inference.md, measured on an H200).
Bad input (no checkpoint, both or neither of --workdir/--hf_t5, a gated/GELU model, --sparse
without exact zeros, an empty input, a malformed line) is one line `error: ...`, exit 2, and
nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lazy_jax import sparse_mlp, xla_flags
from lazy_jax import workdir as wd
from lazy_jax.data import tokenizer as tokenizer_lib
from lazy_jax.errors import InputError

SPARSE_MAX_BATCH = 1  # measured: at batch 4 (union 11.5%) the sparse kernel no longer gains (docs/inference.md)
MIN_INPUT_LEN = 8


@dataclasses.dataclass
class Loaded:
    model_config: ml_collections.ConfigDict
    params: Any
    tokenizer: tokenizer_lib.SentencePieceTokenizer | None
    source: str


# ----------------------------------------------------------------------------- loading


def load_workdir(workdir) -> Loaded:
    """A training run's config.json, tokenizer and newest checkpoint's parameters (read only)."""
    from lazy_jax import input_pipeline
    from lazy_jax.checkpoint import Checkpointer, param_shapes
    from lazy_jax.data import text_corpus
    from lazy_jax.train import Experiment

    workdir = Path(workdir)
    config_path, ckpt_dir = workdir / wd.CONFIG, workdir / wd.CHECKPOINTS_DIR
    if not config_path.is_file():
        raise InputError(f"--workdir={workdir}: no {wd.CONFIG}; give the workdir of a T5 training run")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text(encoding="utf-8")))
    if config.model.get("name") != "t5":
        raise InputError(f"--workdir={workdir}: a {config.model.get('name')!r} run; generation needs a T5 run")
    if not ckpt_dir.is_dir():  # checked here: the Checkpointer would create it
        raise InputError(f"--workdir={workdir}: no {wd.CHECKPOINTS_DIR}/; the run has saved no checkpoint")
    exp = Experiment(config, input_pipeline.data_spec(config))
    ckpt = Checkpointer(ckpt_dir, async_save=False)
    try:
        state, _ = ckpt.restore_latest(
            exp.abstract_state, param_shapes(exp.abstract_state.params), optimizer=config.optimizer.to_dict()
        )
    finally:
        ckpt.close()
    if state is None:
        raise InputError(f"--workdir={workdir}: {wd.CHECKPOINTS_DIR}/ holds no checkpoint")
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.vocab_size = exp.model.spec.vocab_size
    return Loaded(model_config, jax.device_get(state.params), text_corpus.load_tokenizer(config.data), str(workdir))


def load_hf(path) -> Loaded:
    """A Hugging Face T5 v1.0 directory; a gated/GELU T5 is refused from its config.json alone."""
    from lazy_jax.models import t5_convert

    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise InputError(f"--hf_t5={path}: no config.json; give a Hugging Face T5 model directory")
    t5_convert.model_config_from_hf(json.loads(config_path.read_text(encoding="utf-8")))
    try:
        model_config, params = t5_convert.load_hf_t5(path, dropout_rate=0.0)
    except FileNotFoundError as e:
        raise InputError(f"--hf_t5={path}: {e}") from None
    spm = Path(path) / "spiece.model"
    return Loaded(model_config, params, tokenizer_lib.load(str(spm)) if spm.is_file() else None, str(path))


def sparse_impl(model_config, sparse: bool, batch_size: int) -> str:
    """The sparse_mlp implementation generation uses: 'off' unless --sparse can gain here."""
    if not sparse:
        return "off"
    act, topk = model_config.get("activation", "relu"), model_config.get("topk", 0)
    if not sparse_mlp.has_exact_zeros(act, topk):
        raise InputError(
            f"--sparse needs exact zeros in the MLP activations: activation={act!r} with topk=0 has none; "
            f"use a model with activation in {list(sparse_mlp.EXACT_ZERO_ACTIVATIONS)} or Top-k"
        )
    if not sparse_mlp.on_gpu():
        print("generate: --sparse falls back to the dense matmul off a GPU (exact, nothing to gain)", file=sys.stderr)
        return "off"
    if batch_size > SPARSE_MAX_BATCH:
        print(
            f"generate: --sparse decodes densely at --batch_size={batch_size} > {SPARSE_MAX_BATCH}: the union of "
            "active neurons over the batch leaves too little to skip (docs/inference.md)",
            file=sys.stderr,
        )
        return "off"
    return "pallas"


def build_model(model_config, impl: str):
    """The T5 of `model_config` in eval form (no dropout) with MLPs decoding by `impl`."""
    from lazy_jax.models.t5 import T5, t5_spec

    spec = t5_spec(model_config)
    spec = dataclasses.replace(spec, dropout_rate=0.0, mlp=dataclasses.replace(spec.mlp, sparse_decode=impl))
    return T5(spec)


# ----------------------------------------------------------------------------- prompts


def read_prompts(path, tokenizer, max_input_len: int) -> list[dict]:
    """[{'row': the JSON object, 'ids': np.int32 prompt}] of a JSONL file; refuses bad lines by number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--input_file={path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"--input_file={path} line {number}: not JSON ({e.msg})") from None
        rows.append({"row": row, "ids": _prompt_ids(row, tokenizer, f"--input_file={path} line {number}")})
        if len(rows[-1]["ids"]) > max_input_len:
            raise InputError(
                f"--input_file={path} line {number}: the prompt has {len(rows[-1]['ids'])} tokens, more than "
                f"--max_input_len={max_input_len}"
            )
    if not rows:
        raise InputError(f"--input_file={path} holds no prompt (empty file)")
    return rows


def _prompt_ids(row, tokenizer, where: str) -> np.ndarray:
    if isinstance(row, dict) and isinstance(row.get("text"), str):
        if tokenizer is None:
            raise InputError(f"{where}: 'text' needs a tokenizer, and this model has none: give 'input_ids'")
        ids = np.append(tokenizer.encode(row["text"]), tokenizer_lib.EOS_ID).astype(np.int32)
    elif isinstance(row, dict) and isinstance(row.get("input_ids"), list) and row["input_ids"]:
        ids = row["input_ids"]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise InputError(f"{where}: 'input_ids' must be positive integers (0 is padding)")
        ids = np.asarray(ids, np.int32)
    else:
        raise InputError(f"{where}: expected a JSON object with 'text' (a string) or 'input_ids' (a list of ints)")
    if not len(ids):
        raise InputError(f"{where}: the prompt is empty")
    return ids


def batches(prompts: list[dict], batch_size: int):
    """Batches of [batch_size, L] int32 in input order; L a power of two; the last batch filled with
    copies of its first prompt (no new active neurons) -> (tokens, number of real rows)."""
    for start in range(0, len(prompts), batch_size):
        chunk = [p["ids"] for p in prompts[start : start + batch_size]]
        length = max(MIN_INPUT_LEN, 1 << (max(map(len, chunk)) - 1).bit_length())
        tokens = np.zeros((batch_size, length), np.int32)
        for i in range(batch_size):
            ids = chunk[i] if i < len(chunk) else chunk[0]
            tokens[i, : len(ids)] = ids
        yield tokens, len(chunk)


# ----------------------------------------------------------------------------- the run


def check_args(workdir, hf_t5, batch_size, max_decode_len, max_input_len) -> None:
    if (workdir is None) == (hf_t5 is None):
        raise InputError("give one of --workdir=RUN_DIR (a trained T5 run) and --hf_t5=PATH (a Hugging Face T5 v1.0)")
    for name, value in (
        ("batch_size", batch_size),
        ("max_decode_len", max_decode_len),
        ("max_input_len", max_input_len),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"--{name}={value!r} is not allowed: use a positive integer")


def generate(
    *,
    input_file: str,
    output_file: str,
    workdir: str | None = None,
    hf_t5: str | None = None,
    sparse: bool = False,
    batch_size: int = 8,
    max_decode_len: int = 64,
    max_input_len: int = 512,
    progress: bool = True,
) -> dict:
    """Decodes every prompt of `input_file` greedily into `output_file`; -> a summary (tokens/s, ...)."""
    from lazy_jax.models.t5 import decode_params, greedy_decode

    check_args(workdir, hf_t5, batch_size, max_decode_len, max_input_len)
    if not Path(output_file).parent.is_dir():
        raise InputError(f"--output_file={output_file}: its directory does not exist")
    loaded = load_workdir(workdir) if workdir is not None else load_hf(hf_t5)
    impl = sparse_impl(loaded.model_config, sparse, batch_size)
    prompts = read_prompts(input_file, loaded.tokenizer, max_input_len)
    model = build_model(loaded.model_config, impl)
    params = jax.device_put(decode_params(loaded.params, model.spec.dtype))
    decode = jax.jit(greedy_decode, static_argnums=(0, 3))
    outputs, generated, seconds = [], 0, 0.0
    bar = _progress(len(prompts), progress)
    for tokens, real in batches(prompts, batch_size):
        start = time.perf_counter()
        out = np.asarray(decode(model, {"params": params}, jnp.asarray(tokens), max_decode_len))
        seconds += time.perf_counter() - start
        for ids in out[:real]:
            ids = _until_eos(ids)
            generated += len(ids)
            outputs.append(ids)
        bar.update(real)
    bar.close()
    tmp = Path(f"{output_file}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for prompt, ids in zip(prompts, outputs):
            row = dict(prompt["row"]) if isinstance(prompt["row"], dict) else {"input": prompt["row"]}
            row["output_ids"] = ids
            if loaded.tokenizer is not None:
                row["output_text"] = loaded.tokenizer.decode(ids)
            f.write(json.dumps(row) + "\n")
    tmp.replace(output_file)
    return dict(
        prompts=len(prompts),
        tokens=generated,
        seconds=seconds,
        tokens_per_s=generated / max(seconds, 1e-9),
        sparse=impl,
    )


def _until_eos(ids: np.ndarray) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[: ids.index(tokenizer_lib.EOS_ID) + 1] if tokenizer_lib.EOS_ID in ids else ids


class _Bar:
    """A plain-text progress bar on stderr, where tqdm is not installed."""

    def __init__(self, total: int, enabled: bool):
        self.n, self.total, self.enabled = 0, total, enabled

    def update(self, k: int) -> None:
        self.n += k
        if self.enabled:
            print(f"\rgenerate: {self.n}/{self.total} prompts", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Bar(total, enabled)
    return tqdm(total=total, desc="generate", unit="prompt", disable=not enabled, file=sys.stderr)


def main(argv) -> None:
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        summary = generate(
            workdir=f.workdir,
            hf_t5=f.hf_t5,
            input_file=f.input_file,
            output_file=f.output_file,
            sparse=f.sparse,
            batch_size=f.batch_size,
            max_decode_len=f.max_decode_len,
            max_input_len=f.max_input_len,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{summary['prompts']} prompts, {summary['tokens']} tokens in {summary['seconds']:.2f} s "
        f"({summary['tokens_per_s']:.1f} tokens/s, compilation included; sparse MLP: {summary['sparse']})"
    )


if __name__ == "__main__":
    xla_flags.apply(defaults=xla_flags.DECODING)  # before the first computation initialises a backend
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "a T5 training run's workdir: its config.json and newest checkpoint")
    flags.DEFINE_string("hf_t5", None, "a Hugging Face T5 v1.0 (ReLU) model directory")
    flags.DEFINE_string("input_file", None, "JSONL prompts: one object a line with 'text' or 'input_ids'")
    flags.DEFINE_string("output_file", None, "JSONL outputs: each input object with 'output_ids', 'output_text'")
    flags.DEFINE_bool("sparse", False, "read only the active rows of W_out when decoding (exact)")
    flags.DEFINE_integer("batch_size", 8, "prompts decoded together")
    flags.DEFINE_integer("max_decode_len", 64, "tokens generated per prompt at most (EOS stops earlier)")
    flags.DEFINE_integer("max_input_len", 512, "longest prompt allowed, in tokens")
    flags.mark_flags_as_required(["input_file", "output_file"])
    app.run(main)
