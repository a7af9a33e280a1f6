"""Optimizers and learning-rate schedules from config.optimizer."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from lazy_jax.errors import InputError

SCHEDULES = ("warmup_cosine", "rsqrt", "t5_rsqrt", "constant")
OPTIMIZERS = ("adamw", "adafactor")


def learning_rate_schedule(opt, total_steps: int):
    """warmup_cosine: linear warm-up, then cosine to end_lr_frac*lr.
    rsqrt: linear warm-up, then lr*sqrt(warmup/step) (T5's inverse square root: lr=0.01 and
    warmup=10k give 1/sqrt(step) after warm-up).
    t5_rsqrt: T5's own schedule, lr*sqrt(warmup/max(step, warmup)): constant lr during the
    warm-up steps (no ramp), then the same decay (lr=0.01, warmup=10k: 1/sqrt(max(step, 10^4)),
    Raffel et al. 2020, Sec. 3.1.2)."""
    lr, warmup = opt.learning_rate, opt.warmup_steps
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=lr * opt.end_lr_frac,
        )
    if opt.schedule == "rsqrt":
        w = max(warmup, 1)
        return lambda step: lr * jnp.minimum(step / w, jnp.sqrt(w / jnp.maximum(step, w)))
    if opt.schedule == "t5_rsqrt":
        w = max(warmup, 1)
        return lambda step: lr * jnp.sqrt(w / jnp.maximum(step, w))
    if opt.schedule == "constant":
        return optax.constant_schedule(lr)
    raise InputError(f"optimizer.schedule={opt.schedule!r} is unknown; allowed: {list(SCHEDULES)}")


def make_optimizer(opt, total_steps: int):
    """Returns (optax transformation, schedule)."""
    schedule = learning_rate_schedule(opt, total_steps)
    if opt.name == "adamw":
        base = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    elif opt.name == "adafactor":
        base = optax.adafactor(schedule, multiply_by_parameter_scale=True, weight_decay_rate=opt.weight_decay or None)
    else:
        raise InputError(f"optimizer.name={opt.name!r} is unknown; allowed: {list(OPTIMIZERS)}")
    parts = [optax.clip_by_global_norm(opt.grad_clip_norm)] if opt.grad_clip_norm > 0 else []
    return optax.chain(*parts, base), schedule
