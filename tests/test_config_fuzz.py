"""Random `--config.key=value` overrides: each is accepted and trains a step, or refused by name.

Overrides go through ml_collections' config_flags, the parser of `python -m lazy_jax.main`, on a
fresh absl FlagValues per example. A refusal must be an error of lazy_jax's own checks, of
ml_collections or of absl's flag parsing (the innermost frame of the traceback is in one of them)
whose message names the key or the value; a crash from inside JAX, Flax, optax or NumPy fails.
"""

import os
import tempfile
import traceback
from pathlib import Path

from absl import flags
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ml_collections import config_flags

from lazy_jax.run import NonFiniteError, train_and_evaluate

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


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 15)),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides())
def test_config_overrides_run_or_are_refused_by_name(digits_dir, pairs):
    base = dict(BASE, **{"data.data_dir": digits_dir, "model.scan_layers": True})
    argv = ["main", CONFIG] + [f"--config.{k}={v}" for k, v in base.items()]
    argv += [f"--config.{k}={v}" for k, v in pairs]
    with tempfile.TemporaryDirectory() as workdir:
        try:
            config = parse(argv)
            out = train_and_evaluate(config, workdir)
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
