"""Checks a config before any work is done; each error names the value and what is allowed.

Unknown keys are refused by ml_collections itself (configs are locked); this checks values.
Dataset names are checked by the data layer, the mesh against the devices by `sharding`, and
config.model by its spec builder (`lazy_jax.models.model_spec`, called by `get_model`).
"""

from __future__ import annotations

import math

from lazy_jax.errors import InputError
from lazy_jax.optim import OPTIMIZERS, SCHEDULES
from lazy_jax.tasks import TASKS


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}={value!r} is not allowed: use a positive integer")


def _nonnegative_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{name}={value!r} is not allowed: use an integer >= 0")


FLOAT32_MAX = 3.4028234663852886e38  # larger values overflow to inf in the float32 optimizer state


def validate_config(config) -> None:
    _nonnegative_int("seed", config.seed)  # seeds numpy's generators, which refuse negatives
    if "shuffle_seed" in config.data:
        _nonnegative_int("data.shuffle_seed", config.data.shuffle_seed)
    if config.task not in TASKS:
        raise InputError(f"task={config.task!r} is unknown; allowed: {list(TASKS)}")
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
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise InputError(f"optimizer.name={opt.name!r} is unknown; allowed: {list(OPTIMIZERS)}")
    if opt.schedule not in SCHEDULES:
        raise InputError(f"optimizer.schedule={opt.schedule!r} is unknown; allowed: {list(SCHEDULES)}")
    for name in ("learning_rate", "grad_clip_norm", "weight_decay"):
        v = opt[name]
        if (
            not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v < 0
            or v > FLOAT32_MAX
            or (name == "learning_rate" and v == 0)
        ):
            raise InputError(
                f"optimizer.{name}={v!r} is not allowed: use a finite float32 number "
                f"{'> 0' if name == 'learning_rate' else '>= 0'}"
            )
    for name in ("b1", "b2"):
        if name in opt and (not isinstance(opt[name], (int, float)) or not 0.0 <= opt[name] < 1.0):
            raise InputError(f"optimizer.{name}={opt[name]!r} is not allowed: use 0 <= {name} < 1")
    if "end_lr_frac" in opt and (not isinstance(opt.end_lr_frac, (int, float)) or not 0.0 <= opt.end_lr_frac <= 1.0):
        raise InputError(f"optimizer.end_lr_frac={opt.end_lr_frac!r} is not allowed: use 0 <= end_lr_frac <= 1")
    if not isinstance(opt.warmup_steps, int) or opt.warmup_steps < 0:
        raise InputError(f"optimizer.warmup_steps={opt.warmup_steps!r} is not allowed: use an integer >= 0")
    if not isinstance(config.z_loss, (int, float)) or not math.isfinite(config.z_loss) or config.z_loss < 0:
        raise InputError(f"z_loss={config.z_loss!r} is not allowed: use a finite number >= 0")
