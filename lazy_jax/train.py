"""The jitted train and eval steps over a device mesh, and the state they update.

`Experiment` holds what a run compiles: model, optimizer, mesh, the state's shardings (decided
from `jax.eval_shape`, before anything is materialised) and the two jitted steps:
  train_step(state, batch) -> (state, metrics)   state donated; metrics reduced on the device
  eval_step(params, batch) -> sums               weighted sums that combine over batches exactly
Metrics hold loss, accuracy, learning rate, gradient norm and the sparsity statistics named as
in docs/design.md (`sparsity.stats_to_metrics`); eval metrics also the calibration (`ece` and
its per-bin vectors, `lazy_jax.calibration`) and, when model.union_sizes asks, the union of
active neurons (weighted by its groups, not by tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lazy_jax import calibration
from lazy_jax import sharding as shd
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import get_model
from lazy_jax.models.checks import union_sizes
from lazy_jax.optim import make_optimizer
from lazy_jax.sparsity import stats_to_metrics
from lazy_jax.tasks import target_weights, task_sums, train_metrics


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _fit(sharding: NamedSharding, shape) -> NamedSharding:
    """Drops mesh axes from dimensions they do not divide (e.g. 3 heads on a 4-way model axis)."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    for i, axes in enumerate(spec):
        if axes is None:
            continue
        size = np.prod([sharding.mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))])
        if shape[i] % size:
            spec[i] = None
    return NamedSharding(sharding.mesh, P(*spec))


def state_shardings(abstract_boxed: Any, mesh, rules) -> Any:
    """Shardings of the unboxed state from the logical names on its boxed leaves.

    Optimizer leaves whose rank differs from their parameter's (Adafactor's factored moments)
    are replicated.
    """
    is_box = lambda x: isinstance(x, nn.Partitioned)
    spec = lambda x: P(*x.names) if is_box(x) and len(x.names) == x.value.ndim else P()
    logical = jax.tree.map(spec, abstract_boxed, is_leaf=is_box)
    mesh_shardings = nn.logical_to_mesh_sharding(logical, mesh, rules)
    shapes = jax.tree.map(lambda x: x.value.shape if is_box(x) else x.shape, abstract_boxed, is_leaf=is_box)
    return jax.tree.map(_fit, mesh_shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding))


def _weight_of(stats: dict, name: str):
    """What statistic `name` of a stack is weighted by when batches combine: its groups
    (`<name>_groups`, the union of active neurons) or the valid tokens; None for the weights."""
    if name == "num_tokens" or name.endswith("_groups"):
        return None
    return stats.get(f"{name}_groups", stats["num_tokens"])


def _per_layer(w, v):
    """w [L] or [L, S] broadcast against v [L, ...] (explicitly: rank promotion is an error in tests)."""
    return w.reshape(w.shape + (1,) * (v.ndim - w.ndim))


def weighted_stats(aux: dict) -> dict:
    """Per-batch statistics (means) -> sums that add over batches: each times its weight."""
    out = {}
    for stack, stats in aux.items():
        out[stack] = {}
        for k, v in stats.items():
            w = _weight_of(stats, k)
            out[stack][k] = v if w is None else v * _per_layer(w, v)
    return out


def finalize_eval(sums: dict) -> dict[str, float | np.ndarray]:
    """Eval sums (host numpy) -> metrics: loss, accuracy, calibration and the weighted statistics.

    A statistic whose weight is 0 (no group of a union size) is NaN, not 0: nothing was measured.
    """
    weight = max(float(sums["task"]["weight"]), 1.0)
    metrics = {"loss": float(sums["task"]["loss"]) / weight, "accuracy": float(sums["task"]["correct"]) / weight}
    metrics.update(calibration.metrics(sums["calibration"]))
    aux = {}
    for stack, stats in sums["stats"].items():
        aux[stack] = {}
        for k, v in stats.items():
            w = _weight_of(stats, k)
            if w is None:
                continue
            w = _per_layer(np.asarray(w, np.float64), np.asarray(v))
            if f"{k}_groups" not in stats:  # token-weighted, as the train step's (0 where no token)
                aux[stack][k] = np.asarray(v) / np.maximum(w, 1.0)
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                aux[stack][k] = np.where(w > 0, np.asarray(v) / w, np.nan)
    metrics.update({k: np.asarray(v) for k, v in stats_to_metrics(aux).items()})
    return metrics


def calibration_sums(task: str, logits, batch) -> dict:
    """`calibration.bin_sums` over the predictions the task's accuracy counts, with its weights
    (`tasks.target_weights`): one per example, or per target token for seq2seq."""
    labels = batch["label"] if task == "classification" else batch["decoder_target_tokens"]
    return calibration.bin_sums(logits, labels, target_weights(batch))


def check_union_sizes(config, data: DataSpec) -> None:
    """model.union_sizes must fit the tokens of one eval batch in every MLP (eval_batch_size x its
    tokens per example): traced once, abstractly, before any work (the model refuses too large a
    size when its eval step is traced, which would be after training)."""
    sizes = union_sizes(config.model)
    if not sizes:
        return
    model = get_model(config.model, **data.model_sizes(config.model))
    one = {k: jnp.asarray(v[:1]) for k, v in data.example_batch.items()}
    batch = {k: jax.ShapeDtypeStruct((config.eval_batch_size, *v.shape[1:]), v.dtype) for k, v in one.items()}
    params = nn.unbox(jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, one, train=False)))["params"]
    try:
        jax.eval_shape(lambda p, b: model.apply({"params": p}, b, train=False), params, batch)
    except InputError as e:
        raise InputError(
            f"model.union_sizes={config.model.union_sizes!r} does not fit an eval batch of eval_batch_size="
            f"{config.eval_batch_size}: {e}; use smaller sizes or a larger eval_batch_size"
        ) from None


class Experiment:
    """Model, optimizer, mesh and the jitted steps of one config."""

    def __init__(self, config, data: DataSpec, devices=None):
        """`data` is the data's spec (`input_pipeline.data_spec`, or synthetic in the benchmark):
        the model gets its sizes as arguments, and its structure from the example batch."""
        self.config = config
        self.mesh = shd.make_mesh(config.mesh, devices)
        self.rules = shd.rules_of(config)
        data_sizes = data.model_sizes(config.model)
        self.model = get_model(config.model, **data_sizes)
        # What the model was built with where the config says -1 (= the data's), for config.json.
        # Only sizes that are config keys (num_classes, vocab_size); the image shape is the data's alone.
        self.model_sizes = {
            k: v if config.model[k] == -1 else config.model[k] for k, v in data_sizes.items() if k in config.model
        }
        self.tx, self.schedule = make_optimizer(config.optimizer, config.total_steps)
        self._example = {k: jnp.asarray(v[:1]) for k, v in data.example_batch.items()}

        abstract_boxed = jax.eval_shape(self._init_boxed, jax.random.key(0))
        self.state_sharding = state_shardings(abstract_boxed, self.mesh, self.rules)
        self.abstract_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            nn.unbox(abstract_boxed),
            self.state_sharding,
        )
        self.batch_sharding = shd.batch_sharding(self.mesh)
        self.replicated = shd.replicated(self.mesh)
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=(0,),
        )
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.state_sharding.params, self.batch_sharding),
            out_shardings=self.replicated,
        )

    # -- state -----------------------------------------------------------------------------
    def _init_boxed(self, rng) -> TrainState:
        with nn.logical_axis_rules(self.rules):
            params = self.model.init({"params": rng, "dropout": rng}, self._example, train=False)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params))

    def init_state(self, seed: int) -> TrainState:
        with jax.set_mesh(self.mesh):
            return jax.jit(lambda r: nn.unbox(self._init_boxed(r)), out_shardings=self.state_sharding)(
                jax.random.key(seed)
            )

    # -- steps -----------------------------------------------------------------------------
    def _apply(self, params, batch, train: bool, rng=None):
        with nn.logical_axis_rules(self.rules):
            return self.model.apply(
                {"params": params}, batch, train=train, rngs={"dropout": rng} if rng is not None else None
            )

    def _train_step(self, state: TrainState, batch):
        cfg = self.config
        rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)

        def loss_fn(params):
            logits, aux = self._apply(params, batch, True, rng)
            sums = task_sums(cfg.task, logits, batch, cfg.z_loss)
            weight = jnp.maximum(sums["weight"], 1.0)
            return (sums["loss"] + sums["z_loss"]) / weight, (sums, aux)

        (_, (sums, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **train_metrics(sums),
            "learning_rate": self.schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
            **stats_to_metrics(aux),
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def _eval_step(self, params, batch):
        logits, aux = self._apply(params, batch, False)
        return {
            "task": task_sums(self.config.task, logits, batch),
            "calibration": calibration_sums(self.config.task, logits, batch),
            "stats": weighted_stats(aux),
        }

    def evaluate(self, params, local_batches, should_stop: Callable[[], bool] | None = None) -> dict | None:
        """Runs eval_step over an iterable of host-local batches; returns finalized metrics.

        `should_stop()` is asked before every batch: a preemption must not wait for a long eval.
        If it says True the eval stops there and returns None (a partial eval is no metric). With
        several processes it must answer the same on all of them (the eval step is collective).
        """
        total = None
        with jax.set_mesh(self.mesh):
            for local in local_batches:
                if should_stop is not None and should_stop():
                    return None
                # Each batch's sums come to the host (a few numbers) and are added there. Adding
                # them on the devices queued dozens of small multi-device programs behind the
                # collective eval step; on a CPU mesh of fake devices XLA's in-process collective
                # then now and then waited forever for participants stuck behind its in-flight
                # limit (seen in the test suite on 2 cores).
                out = jax.device_get(self.eval_step(params, shd.global_batch(local, self.mesh)))
                total = out if total is None else jax.tree.map(np.add, total, out)
        if total is None:
            raise InputError(f"the eval split {self.config.data.eval_split!r} of {self.config.data.name!r} is empty")
        return finalize_eval(total)
