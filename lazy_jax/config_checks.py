"""Checks a config before any work is done; each error names the value and what is allowed.

Unknown keys are refused by ml_collections itself (configs are locked); this checks values.
Dataset names are checked by the data layer, the mesh against the devices by `sharding`.
"""

from __future__ import annotations

import math

from lazy_jax.models.stack import check_remat_policy, dtype_of
from lazy_jax.optim import OPTIMIZERS, SCHEDULES
from lazy_jax.sparsity import ACTIVATIONS, check_topk, check_topk_impl
from lazy_jax.tasks import TASKS


def mlp_widths(model) -> list[int]:
    """The d_ff of every MLP of the model named by config.model (what Top-k's k is checked against)."""
    if model.name == "vit":
        from lazy_jax.models.vit import VIT_SIZES, parse_variant

        return [parse_variant(model.variant, VIT_SIZES)[0][3]]
    if model.name == "mixer":
        from lazy_jax.models.mixer import MIXER_SIZES
        from lazy_jax.models.vit import parse_variant

        (_, _, d_tok, d_ch), _ = parse_variant(model.variant, MIXER_SIZES)
        return [d_tok, d_ch]
    if model.name == "mlp":
        return [model.d_ff]
    if model.name == "t5":
        from lazy_jax.models.t5 import t5_dims

        return [t5_dims(model)["d_ff"]]
    raise ValueError(f"model.name={model.name!r} is unknown; allowed: ['vit', 'mixer', 'mlp', 't5']")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} is not allowed: use a positive integer")


def _nonnegative_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} is not allowed: use an integer >= 0")


FLOAT32_MAX = 3.4028234663852886e38  # larger values overflow to inf in the float32 optimizer state


def validate_config(config) -> None:
    _nonnegative_int("seed", config.seed)  # seeds numpy's generators, which refuse negatives
    if "shuffle_seed" in config.data:
        _nonnegative_int("data.shuffle_seed", config.data.shuffle_seed)
    if config.task not in TASKS:
        raise ValueError(f"task={config.task!r} is unknown; allowed: {list(TASKS)}")
    for name in (
        "batch_size",
        "eval_batch_size",
        "total_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        _positive_int(name, config[name])
    m = config.model
    if m.activation not in ACTIVATIONS:
        raise ValueError(f"model.activation={m.activation!r} is unknown; allowed: {sorted(ACTIVATIONS)}")
    dtype_of(m.dtype)
    if "remat_policy" in m:
        check_remat_policy(m.remat_policy)
    for d_ff in mlp_widths(m):
        check_topk(m.topk, d_ff)
    if "topk_impl" in m:
        check_topk_impl(m.topk_impl)
    if "vocab_size" in m and (
        not isinstance(m.vocab_size, int)
        or isinstance(m.vocab_size, bool)
        or (m.vocab_size <= 0 and m.vocab_size != -1)
    ):
        raise ValueError(
            f"model.vocab_size={m.vocab_size!r} is not allowed: use a positive integer or -1 "
            "(= the tokenizer's size, padded to a multiple of 128)"
        )
    if "num_classes" in m and (
        not isinstance(m.num_classes, int)
        or isinstance(m.num_classes, bool)
        or (m.num_classes <= 0 and m.num_classes != -1)
    ):
        raise ValueError(
            f"model.num_classes={m.num_classes!r} is not allowed: use a positive integer or -1 "
            "(= the dataset's number of classes)"
        )
    if not isinstance(m.dropout_rate, (int, float)) or not 0.0 <= m.dropout_rate < 1.0:
        raise ValueError(f"model.dropout_rate={m.dropout_rate!r} is not allowed: use 0 <= rate < 1")
    if not isinstance(m.count_hist_bins, int) or m.count_hist_bins < 0:
        raise ValueError(f"model.count_hist_bins={m.count_hist_bins!r} is not allowed: use an integer >= 0 (0 = off)")
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r} is unknown; allowed: {list(OPTIMIZERS)}")
    if opt.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt.schedule!r} is unknown; allowed: {list(SCHEDULES)}")
    for name in ("learning_rate", "grad_clip_norm", "weight_decay"):
        v = opt[name]
        if (
            not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v < 0
            or v > FLOAT32_MAX
            or (name == "learning_rate" and v == 0)
        ):
            raise ValueError(
                f"optimizer.{name}={v!r} is not allowed: use a finite float32 number "
                f"{'> 0' if name == 'learning_rate' else '>= 0'}"
            )
    for name in ("b1", "b2"):
        if name in opt and (not isinstance(opt[name], (int, float)) or not 0.0 <= opt[name] < 1.0):
            raise ValueError(f"optimizer.{name}={opt[name]!r} is not allowed: use 0 <= {name} < 1")
    if "end_lr_frac" in opt and (not isinstance(opt.end_lr_frac, (int, float)) or not 0.0 <= opt.end_lr_frac <= 1.0):
        raise ValueError(f"optimizer.end_lr_frac={opt.end_lr_frac!r} is not allowed: use 0 <= end_lr_frac <= 1")
    if not isinstance(opt.warmup_steps, int) or opt.warmup_steps < 0:
        raise ValueError(f"optimizer.warmup_steps={opt.warmup_steps!r} is not allowed: use an integer >= 0")
    if not isinstance(config.z_loss, (int, float)) or not math.isfinite(config.z_loss) or config.z_loss < 0:
        raise ValueError(f"z_loss={config.z_loss!r} is not allowed: use a finite number >= 0")


def check_num_classes(model, dataset_classes: int, dataset: str) -> None:
    """Labels past the model's classes would give a NaN loss at the first step, not an error."""
    if model.num_classes < dataset_classes:
        raise ValueError(
            f"model.num_classes={model.num_classes} is less than the {dataset_classes} classes of "
            f"{dataset!r}: use -1 (= the dataset's) or a number >= {dataset_classes}"
        )
