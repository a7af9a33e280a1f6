"""Random `--config.key=value` overrides: each is accepted and trains a step, or refused by name.

Overrides go through ml_collections' config_flags, the parser of `python -m lazy_jax.main`, on a
fresh absl FlagValues per example. A refusal must be an error of lazy_jax's own checks, of
ml_collections or of absl's flag parsing (the innermost frame of the traceback is in one of them)
whose message names the key or the value; a crash from inside JAX, Flax, optax or NumPy fails.
The hypothesis examples are few and mostly refused, so explicit cases follow: plausible settings
of every key that must train a step, and bad values whose refusal must name the key.
"""

import ast
import json
import os
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ml_collections import config_flags

from lazy_jax.run import NonFiniteError, train_and_evaluate
from lazy_jax.workdir import CONFIG as CONFIG_JSON

REPO = Path(__file__).resolve().parents[1]
CONFIG = f"--config={REPO}/configs/vit.py:local,dataset=digits,variant=Mu/4"
BASE = dict(
    batch_size=16,
    eval_batch_size=64,
    total_steps=1,
    log_every_steps=1,
    eval_every_steps=1,
    checkpoint_every_steps=1,
    async_checkpointing=False,
)  # scan_layers: faster compiles
OWN_CODE = ("lazy_jax", "ml_collections", os.path.join("absl", "flags"))

KEYS = [
    "seed",
    "batch_size",
    "eval_batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "z_loss",
    "task",
    "optimizer.name",
    "optimizer.learning_rate",
    "optimizer.b1",
    "optimizer.b2",
    "optimizer.weight_decay",
    "optimizer.schedule",
    "optimizer.warmup_steps",
    "optimizer.end_lr_frac",
    "optimizer.grad_clip_norm",
    "mesh.data",
    "mesh.fsdp",
    "mesh.model",
    "model.variant",
    "model.pool",
    "model.num_classes",
    "model.dtype",
    "model.activation",
    "model.topk",
    "model.dropout_rate",
    "model.remat_policy",
    "model.neuron_freq",
    "model.count_hist_bins",
    "data.name",
    "data.train_split",
    "data.eval_split",
    "data.image_size",
    "data.random_labels",
    "data.random_inputs",
    "data.shuffle_seed",
    "data.num_workers",
    "not_a_key",
    "model.not_a_key",
    "optimizer.lr",
]
GENERIC = [
    "-1",
    "0",
    "1",
    "2",
    "-3",
    "0.5",
    "-0.25",
    "3.5",
    "1e40",
    "-1e40",
    "1e-30",
    "nan",
    "inf",
    "-inf",
    "12345678901234567890",
    "abc",
    "True",
    "False",
    "None",
    "''",
    "[1, 2]",
    "relu",
    "Mu/2",
    "test[:0]",
]
PLAUSIBLE = {  # values a user would type for that key, so accepted overrides also get drawn
    "task": ["seq2seq"],
    "optimizer.name": ["adafactor", "sgd"],
    "optimizer.schedule": ["rsqrt", "constant"],
    "model.variant": ["Mu/8", "Mu/16", "Ti/4", "Mu/0", "Mu/4x"],
    "model.pool": ["gap", "max"],
    "model.dtype": ["bfloat16", "float16", "int8", "float64"],
    "model.activation": ["gelu", "squared_relu", "tanh"],
    "model.topk": ["8", "512", "513"],
    "model.remat_policy": ["full", "minimal", "nothing_saveable"],
    "data.name": ["mnist5k", "no_such_data"],
    "data.train_split": ["train[:32]", "validation", "train[:1]"],
    "data.eval_split": ["test[:10]", "train"],
    "data.image_size": ["4", "16"],
    "mesh.model": ["4", "8", "16"],
    "mesh.fsdp": ["2", "8"],
    "model.num_classes": ["3", "1000"],
    "optimizer.b1": ["0.99", "1.5"],
}
# Memory or time grows with these; the fuzzing keeps them small (their huge values are the user's call).
UNBOUNDED = {
    "batch_size",
    "eval_batch_size",
    "data.image_size",
    "model.count_hist_bins",
    "data.num_workers",
    "model.num_classes",
    "optimizer.warmup_steps",
}


@st.composite
def overrides(draw):
    chosen = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True))
    out = []
    for key in chosen:
        values = GENERIC + PLAUSIBLE.get(key, [])
        if key in UNBOUNDED:
            values = [v for v in values if v not in ("1e40", "12345678901234567890", "inf")]
        out.append((key, draw(st.sampled_from(values))))
    return out


def parse(argv):
    """`python -m lazy_jax.main`'s config parsing, on fresh flag values."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def innermost_file(exc: BaseException) -> str:
    return traceback.extract_tb(exc.__traceback__)[-1].filename


def run(data_dir, pairs, workdir):
    """`python -m lazy_jax.main --config=... <BASE> <pairs>`, in-process: parse, then train."""
    base = dict(BASE, **{"data.data_dir": data_dir, "model.scan_layers": True})
    argv = ["main", CONFIG] + [f"--config.{k}={v}" for k, v in base.items()]
    argv += [f"--config.{k}={v}" for k, v in pairs]
    return train_and_evaluate(parse(argv), workdir)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 15)),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides())
def test_config_overrides_run_or_are_refused_by_name(digits_dir, pairs):
    with tempfile.TemporaryDirectory() as workdir:
        try:
            out = run(digits_dir, pairs, workdir)
        except (flags.Error, ValueError, TypeError, KeyError, AttributeError, NonFiniteError) as e:
            where = innermost_file(e)
            assert any(f"{os.sep}{part}{os.sep}" in where for part in OWN_CODE), (
                f"{pairs}: {type(e).__name__} from inside {where}: {e}"
            )
            message = str(e)
            named = [k.split(".")[-1] for k, _ in pairs] + [v.strip("'") for _, v in pairs]
            assert any(n and n in message for n in named), f"{pairs}: the error does not name them: {message}"
            event(f"refused: {type(e).__name__}")
            return
        event("accepted: trained a step")
        assert out["train"] is not None and out["eval"] is not None, pairs
        assert (Path(workdir) / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- explicit cases
# Plausible settings of every key that must train a step (grouped where they are independent, as
# each run compiles a model), and values that must be refused with the key (or value) named.
ACCEPTED = [
    [("model.topk", "8"), ("model.topk_impl", "lax"), ("model.neuron_freq", "True"), ("model.count_hist_bins", "4")],
    [("model.topk", "8"), ("model.dtype", "bfloat16"), ("model.remat_policy", "full")],
    [("optimizer.name", "adafactor"), ("optimizer.schedule", "t5_rsqrt"), ("optimizer.warmup_steps", "0")],
    [("model.remat_policy", "minimal"), ("model.pool", "gap"), ("model.activation", "gelu"), ("z_loss", "1e-4")],
    [("model.remat_policy", "save_dots"), ("model.activation", "squared_relu"), ("model.dropout_rate", "0.1")],
    [("data.random_labels", "True"), ("data.random_inputs", "True"), ("data.shuffle_seed", "3"), ("seed", "7")],
    [
        ("data.train_split", "train[:32]"),
        ("data.eval_split", "test[:10]"),
        ("data.infinite", "True"),
        ("data.label_noise", "0.4"),
    ],
    [("model.variant", "Mu/8"), ("data.image_size", "16"), ("model.num_classes", "1000"), ("optimizer.b1", "0.95")],
    [("mesh.model", "4"), ("mesh.fsdp", "2"), ("optimizer.schedule", "rsqrt"), ("optimizer.grad_clip_norm", "0")],
    [("model.scan_layers", "False"), ("optimizer.schedule", "constant"), ("optimizer.weight_decay", "0")],
    [("data.name", "mnist5k"), ("data.num_workers", "2"), ("keep_checkpoints", "1")],
]


def literal(text):
    """'8' -> 8, 'True' -> True, '1e-4' -> 0.0001; text that is no Python literal stays text ('train[:32]')."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolved(workdir, key):
    value = json.loads((Path(workdir) / CONFIG_JSON).read_text())
    for part in key.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("pairs", ACCEPTED, ids=lambda pairs: ",".join(f"{k}={v}" for k, v in pairs))
def test_plausible_overrides_train_a_step(digits_dir, pairs, tmp_path):
    out = run(digits_dir, pairs, tmp_path)
    assert out["train"] is not None and out["eval"] is not None, pairs
    assert np.isfinite(out["train"]["loss"]) and np.isfinite(out["eval"]["loss"])
    for key, value in pairs:  # the run used the values given (config.json holds what it trained)
        assert resolved(tmp_path, key) == literal(value), key
    if ("model.topk", "8") in pairs:  # Top-k was applied: at most 8 of ViT-Mu's 512, but for ties
        # at the threshold, which all stay and are common in bf16's 8-bit mantissa
        slack = 2 if ("model.dtype", "bfloat16") in pairs else 1
        assert out["train"]["nonzero_frac/mean"] <= slack * 8 / 512 + 1e-6


REFUSED = [
    ([("optimizer.name", "sgd")], "optimizer.name='sgd'"),
    ([("optimizer.schedule", "cosine")], "optimizer.schedule='cosine'"),
    ([("optimizer.learning_rate", "0")], "optimizer.learning_rate=0"),
    ([("optimizer.learning_rate", "nan")], "optimizer.learning_rate=nan"),
    ([("optimizer.b1", "1.5")], "optimizer.b1=1.5"),
    ([("optimizer.end_lr_frac", "2.0")], "optimizer.end_lr_frac=2.0"),
    ([("optimizer.warmup_steps", "-1")], "optimizer.warmup_steps=-1"),
    ([("optimizer.grad_clip_norm", "-1.0")], "optimizer.grad_clip_norm=-1.0"),
    ([("model.dtype", "float16")], "model.dtype='float16'"),
    ([("model.topk", "513")], "model.topk=513"),
    ([("model.topk", "-1")], "model.topk=-1"),
    ([("model.topk_impl", "sort")], "model.topk_impl='sort'"),
    ([("model.remat_policy", "nothing_saveable")], "model.remat_policy='nothing_saveable'"),
    ([("model.pool", "max")], "model.pool='max'"),
    ([("model.activation", "tanh")], "model.activation='tanh'"),
    ([("model.variant", "Mu/0")], "model.variant='Mu/0'"),
    ([("model.variant", "Mu/4x")], "model.variant='Mu/4x'"),
    ([("model.variant", "X/4")], "model.variant='X/4'"),
    ([("model.num_classes", "3")], "model.num_classes=3"),
    ([("model.dropout_rate", "1.5")], "model.dropout_rate=1.5"),
    ([("model.count_hist_bins", "-1")], "model.count_hist_bins=-1"),
    ([("model.neuron_freq", "maybe")], "model.neuron_freq"),
    ([("data.name", "no_such_data")], "no_such_data"),
    ([("data.train_split", "validation")], "validation"),
    ([("data.eval_split", "test[:0]")], "test[:0]"),
    ([("data.image_size", "3")], "data.image_size"),
    ([("data.infinite", "True"), ("data.random_inputs", "True")], "data.random_inputs=True"),
    ([("data.label_noise", "1.5")], "data.label_noise=1.5"),
    ([("data.label_noise", "0.4"), ("data.random_labels", "True")], "data.random_labels=True"),
    ([("data.shuffle_seed", "-1")], "data.shuffle_seed=-1"),
    ([("mesh.model", "16")], "mesh"),
    ([("batch_size", "0")], "batch_size=0"),
    ([("batch_size", "12")], "batch_size=12"),
    ([("eval_batch_size", "-1")], "eval_batch_size=-1"),
    ([("keep_checkpoints", "0")], "keep_checkpoints=0"),
    ([("total_steps", "0")], "total_steps=0"),
    ([("seed", "-1")], "seed=-1"),
    ([("z_loss", "-1.0")], "z_loss=-1.0"),
    ([("task", "seq2seq")], "task='seq2seq'"),
    ([("task", "translation")], "task='translation'"),
    ([("not_a_key", "1")], "not_a_key"),
    ([("model.not_a_key", "1")], "not_a_key"),
]


def _refused_id(case):
    pairs = case.values[0] if hasattr(case, "marks") else case[0]
    return ",".join(f"{k}={v}" for k, v in pairs)


@pytest.mark.parametrize("pairs,named", REFUSED, ids=[_refused_id(c) for c in REFUSED])
def test_bad_overrides_are_refused_by_name(digits_dir, pairs, named, tmp_path):
    with pytest.raises((flags.Error, ValueError, TypeError, KeyError, AttributeError)) as e:
        run(digits_dir, pairs, tmp_path)
    where = innermost_file(e.value)
    assert any(f"{os.sep}{part}{os.sep}" in where for part in OWN_CODE), f"{type(e.value).__name__} from {where}"
    assert named in str(e.value), f"{pairs}: the error does not name {named!r}: {type(e.value).__name__}: {e.value}"
