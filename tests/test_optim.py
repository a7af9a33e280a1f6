"""Learning-rate schedules against their formulas, and Adafactor's factored moments after a step.

The formulas are written here from the schedules' definitions (lazy_jax/optim.py's docstring,
optax's warm-up + cosine, T5's 1/sqrt(max(step, 10^4))), not taken from the code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lazy_jax import optim
from lazy_jax import sharding as shd
from lazy_jax.config_base import base_config, load_config
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.train import Experiment
from tests.model_helpers import random_variables

STEPS = [0, 1, 50, 99, 100, 101, 400, 2500, 9999, 10_000, 10_001, 40_000, 100_000, 524_288, 600_000]


def optimizer(**overrides):
    opt = base_config().optimizer
    opt.update(overrides)
    return opt


def values(schedule, steps=STEPS):
    return np.asarray([float(schedule(jnp.asarray(s, jnp.int32))) for s in steps])


def warmup_cosine(step, lr, warmup, total, end_frac):
    """Linear 0 -> lr over `warmup` steps, then half a cosine from lr to end_frac*lr at step `total`, then flat."""
    end = lr * end_frac
    if step < warmup:
        return lr * step / warmup
    if step >= total:
        return end
    return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("lr,warmup,total,end_frac", [(1e-3, 100, 10_000, 0.0), (3e-3, 50, 600_000, 0.1)])
def test_warmup_cosine(lr, warmup, total, end_frac):
    got = values(
        optim.learning_rate_schedule(optimizer(learning_rate=lr, warmup_steps=warmup, end_lr_frac=end_frac), total)
    )
    want = [warmup_cosine(s, lr, warmup, total, end_frac) for s in STEPS]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * lr)  # f32 cosine near its end
    assert got[STEPS.index(warmup)] == pytest.approx(lr)  # the peak


def test_rsqrt():
    """Linear warm-up to lr, then lr * sqrt(warmup / step); lr=0.01, warmup=10^4 is 1/sqrt(step) after it."""
    lr, warmup = 0.01, 10_000
    got = values(optim.learning_rate_schedule(optimizer(schedule="rsqrt", learning_rate=lr, warmup_steps=warmup), 1000))
    want = [lr * s / warmup if s < warmup else lr * math.sqrt(warmup / s) for s in STEPS]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    after = [i for i, s in enumerate(STEPS) if s >= warmup]
    np.testing.assert_allclose(got[after], [1 / math.sqrt(STEPS[i]) for i in after], rtol=1e-5)
    assert got[STEPS.index(2500)] == pytest.approx(0.0025)  # a quarter of the way up


def test_t5_rsqrt_is_t5s_schedule():
    """Raffel et al.: 1/sqrt(max(step, 10^4)): 0.01 for the first 10^4 steps (no ramp), then the decay."""
    got = values(
        optim.learning_rate_schedule(optimizer(schedule="t5_rsqrt", learning_rate=0.01, warmup_steps=10_000), 524_288)
    )
    np.testing.assert_allclose(got, [1 / math.sqrt(max(s, 10_000)) for s in STEPS], rtol=1e-5)
    assert got[0] == pytest.approx(0.01) and got[STEPS.index(40_000)] == pytest.approx(0.005)


@pytest.mark.parametrize("schedule", ["rsqrt", "t5_rsqrt"])
def test_rsqrt_without_warmup(schedule):
    """warmup_steps=0 decays as lr / sqrt(step) from step 1 (no division by zero, nothing infinite)."""
    got = values(optim.learning_rate_schedule(optimizer(schedule=schedule, learning_rate=0.5, warmup_steps=0), 100))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[1:], [0.5 / math.sqrt(s) for s in STEPS[1:]], rtol=1e-5)


def test_constant():
    got = values(optim.learning_rate_schedule(optimizer(schedule="constant", learning_rate=7e-4, warmup_steps=100), 10))
    np.testing.assert_allclose(got, 7e-4, rtol=1e-7)


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(InputError, match="optimizer.schedule='cosine'"):
        optim.learning_rate_schedule(optimizer(schedule="cosine"), 100)


# ----------------------------------------------------------------------------- Adafactor
def test_adafactor_trains_a_step_with_factored_moments():
    """One step of the tiny ViT: the second moments of a [128, 512] kernel are a row and a column,
    equal (Adafactor's first step: decay 1 - 1^-0.8 = 0) to the means of the clipped squared gradient."""
    config = load_config("configs/vit.py:test")
    config.optimizer.update(name="adafactor", schedule="constant", learning_rate=1e-2)
    config.mesh.update(data=1, fsdp=1, model=1)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, size=(16, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, size=(16,)).astype(np.int32),
    }
    exp = Experiment(config, DataSpec(example_batch=batch, num_classes=10), devices=jax.devices()[:1])
    # Random parameters: with the zero-initialised head every gradient but the head's would be zero.
    params = jax.device_get(random_variables(exp.model, batch)["params"])  # host copies: the step donates the state
    state = exp.init_state(config.seed).replace(params=params)

    def loss_fn(p):  # mean cross-entropy, written out
        logits_BC, _ = exp.model.apply({"params": p}, batch, train=False)
        return jnp.mean(
            jax.nn.logsumexp(logits_BC, -1) - jnp.take_along_axis(logits_BC, batch["label"][:, None], 1)[:, 0]
        )

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    norm = math.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    assert norm > config.optimizer.grad_clip_norm  # so the clipping before Adafactor matters
    clipped = jax.tree.map(lambda g: np.asarray(g) * config.optimizer.grad_clip_norm / norm, grads)

    with jax.set_mesh(exp.mesh):
        new, metrics = exp.train_step(state, shd.global_batch(batch, exp.mesh))
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-4)

    (moments,) = [s for s in jax.tree.leaves(new.opt_state, is_leaf=lambda x: isinstance(x, optax.FactoredState))
                  if isinstance(s, optax.FactoredState)]  # fmt: skip
    assert int(moments.count) == 1
    g_wi = clipped["encoderblock_0"]["mlp"]["wi"]["kernel"]
    assert g_wi.shape == (128, 512)
    v_row, v_col = (np.asarray(m["encoderblock_0"]["mlp"]["wi"]["kernel"]) for m in (moments.v_row, moments.v_col))
    assert v_row.shape == (128,) and v_col.shape == (512,)  # factored: 640 numbers, not 65536
    assert moments.v["encoderblock_0"]["mlp"]["wi"]["kernel"].shape == (1,)
    np.testing.assert_allclose(v_row, np.mean(g_wi**2, axis=1), rtol=1e-3)
    np.testing.assert_allclose(v_col, np.mean(g_wi**2, axis=0), rtol=1e-3)
    # A vector (the head's bias) keeps a full second moment.
    g_bias = clipped["head"]["bias"]
    np.testing.assert_allclose(moments.v["head"]["bias"], g_bias**2 + 1e-30, rtol=1e-3)
    # The step moved every parameter that has a gradient.
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), new.params, params)
    assert min(jax.tree.leaves(moved)) > 0, moved
    assert {x.dtype for x in jax.tree.leaves(new.opt_state)} <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
