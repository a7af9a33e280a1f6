"""Dropout in training: a new mask every step, the same mask on any mesh, none at evaluation.

The train step draws its dropout key from (seed, step). From the same parameters, optimizer
state and batch, two steps may then differ only through their masks: the loss must change with
the step when dropout is on and must not when it is off. And since JAX's default threefry keys are
partitionable, one device and an 8-device mesh must give the same step (configs/t5.py says why).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import sharding as shd
from lazy_jax.config_base import load_config
from lazy_jax.data import span_corruption
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.train import Experiment
from tests.model_helpers import VIT_TINY, random_variables

VOCAB = 128


def vit_case(dropout_rate):
    c = load_config("configs/vit.py:test")
    c.model.update(dropout_rate=dropout_rate, **VIT_TINY)
    c.optimizer.schedule = "constant"  # the optimizer's own step count starts the warm-up at lr 0
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, size=(16, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, size=(16,)).astype(np.int32),
    }
    return c, DataSpec(example_batch=batch, num_classes=10), batch


def t5_case(dropout_rate):
    """configs/t5.py:test (dropout after the MLP activation, on attention and residuals) on random rows."""
    c = load_config("configs/t5.py:test")
    c.model.dropout_rate = dropout_rate
    c.optimizer.schedule = "constant"
    rng = np.random.default_rng(0)
    rows = [(rng.integers(2, VOCAB, size=n), rng.integers(2, VOCAB, size=m)) for n, m in zip(range(17, 33), [9, 5] * 8)]
    batch = span_corruption.pad_rows(rows, c.data.inputs_length, c.data.targets_length)
    return c, DataSpec(example_batch=batch, vocab_size=VOCAB, padded_vocab_size=VOCAB), batch


CASES = {"vit": vit_case, "t5": t5_case}


def random_state(exp, config, batch):
    """The initial state with random parameters (the zero head of a fresh ViT hides any dropout)."""
    state = exp.init_state(config.seed)
    params = random_variables(exp.model, {k: v[:1] for k, v in batch.items()})["params"]
    return state.replace(params=jax.device_put(params, exp.state_sharding.params))


def train_step_at(exp, state, batch, step):
    """exp.train_step from a copy of `state` with its step counter set to `step` (the state is donated)."""
    with jax.set_mesh(exp.mesh):
        copy = jax.tree.map(jnp.copy, state)
        copy = copy.replace(step=jax.device_put(jnp.asarray(step, jnp.int32), exp.state_sharding.step))
        new_state, metrics = exp.train_step(copy, shd.global_batch(batch, exp.mesh))
    return jax.device_get(new_state.params), jax.device_get(metrics)


def one_device(config):
    config.mesh.update(data=1, fsdp=1, model=1)
    return jax.devices()[:1]


@pytest.mark.parametrize("kind", ["vit"])  # T5's (slow to compile) steps are checked on the mesh below
def test_dropout_mask_changes_with_the_step(kind):
    losses = {}
    for rate in (0.0, 0.3):
        config, data, batch = CASES[kind](rate)
        exp = Experiment(config, data, devices=one_device(config))
        state = random_state(exp, config, batch)
        runs = [train_step_at(exp, state, batch, step) for step in (5, 5, 6)]
        losses[rate] = [float(m["loss"]) for _, m in runs]
        # The same step is the same mask: bit-identical loss and parameters.
        assert losses[rate][0] == losses[rate][1]
        jax.tree.map(np.testing.assert_array_equal, runs[0][0], runs[1][0])
        if rate:  # another step, another mask: the loss and the update change
            assert abs(losses[rate][2] - losses[rate][0]) > 1e-4 * losses[rate][0], losses[rate]
            diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), runs[0][0], runs[2][0]))
            assert max(diffs) > 0
        else:  # no dropout: the loss (computed before the update) does not depend on the step
            assert losses[rate][2] == losses[rate][0]
    # Dropout is really applied in training, and not at evaluation (exp and state: dropout 0.3).
    assert abs(losses[0.3][0] - losses[0.0][0]) > 1e-3 * losses[0.0][0], losses
    with jax.set_mesh(exp.mesh):
        evals = [jax.device_get(exp.eval_step(state.params, shd.global_batch(batch, exp.mesh))) for _ in range(2)]
    jax.tree.map(np.testing.assert_array_equal, evals[0], evals[1])
    np.testing.assert_allclose(evals[0]["task"]["loss"] / evals[0]["task"]["weight"], losses[0.0][0], rtol=1e-5)


@pytest.mark.parametrize("kind", list(CASES))
def test_dropout_is_the_same_on_any_mesh(kind):
    """One device and a 2 x 2 x 2 (data, fsdp, model) mesh: the same step; for T5 also a new mask per step."""
    assert len(jax.devices()) == 8
    config, data, batch = CASES[kind](0.3)
    single = Experiment(config, data, devices=one_device(config))
    state = random_state(single, config, batch)
    _, want = train_step_at(single, state, batch, 3)

    config, data, batch = CASES[kind](0.3)
    config.mesh.update(data=2, fsdp=2, model=2)
    sharded = Experiment(config, data, devices=jax.devices())
    assert sharded.mesh.size == 8
    state = random_state(sharded, config, batch)
    _, got = train_step_at(sharded, state, batch, 3)
    _, other_mask = train_step_at(sharded, state, batch, 4)
    # Another step's mask moves the gradient far past the tolerance, so a mesh-dependent mask fails.
    assert abs(other_mask["grad_norm"] - want["grad_norm"]) > 1e-2 * want["grad_norm"], (other_mask, want)
    assert set(got) == set(want)
    # Loss, gradient norm and statistics; not the parameters: Adam's first update is sign-like, so
    # a gradient entry near 0 may flip with the order of a sum.
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-5, err_msg=k)
