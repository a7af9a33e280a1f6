"""Losses per task, as weighted sums so batches (and padded eval batches) combine exactly.

`task_sums(task, logits, batch)` returns {'loss': sum, 'correct': sum, 'weight': sum,
'z_loss': sum}; the train loss is loss/weight (+ z_loss/weight), metrics are ratios
(`train_metrics`). A classification batch with 'label_noisy' (label noise, lazy_jax.data.vision)
adds the hits and weights of its noisy-labelled and clean-labelled examples apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lazy_jax.errors import InputError

TASKS = ("classification", "seq2seq")


def z_loss_sum(z_loss: float, logits, weight):
    """sum of weight * z_loss * logsumexp(logits)^2 (t5x's z-loss). With z_loss == 0 (a Python
    number, the default) no logsumexp over the classes or the vocabulary is built at all: 0 * it
    would still be computed (and be NaN where it overflows)."""
    if z_loss == 0.0:
        return jnp.zeros((), jnp.float32)
    return jnp.sum(weight * z_loss * jnp.square(jax.nn.logsumexp(logits, -1)))


def classification_sums(logits_BC, batch, z_loss: float = 0.0):
    weight_B = target_weights(batch)
    labels_B = batch["label"]
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B)
    correct_B = (jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32)
    sums = {
        "loss": jnp.sum(loss_B * weight_B),
        "correct": jnp.sum(correct_B * weight_B),
        "weight": jnp.sum(weight_B),
        "z_loss": z_loss_sum(z_loss, logits_BC, weight_B),
    }
    if "label_noisy" in batch:
        # Hits on a replaced label are against that (random) label: memorisation.
        noisy_B = batch["label_noisy"].astype(jnp.float32) * weight_B
        clean_B = weight_B - noisy_B
        sums.update(
            correct_noisy=jnp.sum(correct_B * noisy_B),
            weight_noisy=jnp.sum(noisy_B),
            correct_clean=jnp.sum(correct_B * clean_B),
            weight_clean=jnp.sum(clean_B),
        )
    return sums


def train_metrics(sums) -> dict:
    """A train batch's sums -> {'loss', 'accuracy'}, and with label noise 'accuracy_noisy_labels' and
    'accuracy_clean_labels' (NaN when the batch holds no example of that kind)."""
    weight = jnp.maximum(sums["weight"], 1.0)
    metrics = {"loss": sums["loss"] / weight, "accuracy": sums["correct"] / weight}
    for kind in ("noisy", "clean"):
        if f"weight_{kind}" in sums:
            w = sums[f"weight_{kind}"]
            metrics[f"accuracy_{kind}_labels"] = jnp.where(
                w > 0, sums[f"correct_{kind}"] / jnp.maximum(w, 1.0), jnp.nan
            )
    return metrics


def target_weights(batch):
    """The weight of each prediction a task's loss and accuracy count: [B] per example (0 on padded
    eval rows), or [B, T] per decoder target token for seq2seq: the batch's 'decoder_loss_weights'
    (else targets > 0) times the row mask."""
    if "decoder_target_tokens" not in batch:
        return batch.get("mask", jnp.ones(batch["label"].shape[:1], jnp.float32)).astype(jnp.float32)
    targets_BT = batch["decoder_target_tokens"]
    weight_BT = batch["decoder_loss_weights"] if "decoder_loss_weights" in batch else targets_BT > 0
    weight_BT = weight_BT.astype(jnp.float32)
    if "mask" in batch:
        weight_BT = weight_BT * batch["mask"][:, None].astype(jnp.float32)
    return weight_BT


def seq2seq_sums(logits_BTV, batch, z_loss: float = 0.0):
    """Token cross-entropy and token accuracy on decoder targets.

    Token weights are the batch's 'decoder_loss_weights' when it has them (the text loader's:
    1 on real target tokens, 0 on padding), else targets > 0; rows with 'mask' 0 (eval padding)
    carry no weight. z-loss: z_loss * logsumexp(logits)^2 per weighted token (as t5x).
    """
    targets_BT = batch["decoder_target_tokens"]
    weight_BT = target_weights(batch)
    loss_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    correct_BT = (jnp.argmax(logits_BTV, -1) == targets_BT).astype(jnp.float32)
    return {
        "loss": jnp.sum(loss_BT * weight_BT),
        "correct": jnp.sum(correct_BT * weight_BT),
        "weight": jnp.sum(weight_BT),
        "z_loss": z_loss_sum(z_loss, logits_BTV, weight_BT),
    }


def task_sums(task: str, logits, batch, z_loss: float = 0.0):
    if task == "classification":
        return classification_sums(logits, batch, z_loss)
    if task == "seq2seq":
        return seq2seq_sums(logits, batch, z_loss)
    raise InputError(f"task={task!r} is unknown; allowed: {list(TASKS)}")
