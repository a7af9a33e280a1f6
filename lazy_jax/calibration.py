"""Expected calibration error (ECE) from exact per-bin sums, so batches combine exactly.

Naeini et al. 2015 / Guo et al. 2017: predictions are put in M = 15 equal-width bins of their
confidence (the top softmax probability), bin m holding confidences in ((m-1)/M, m/M]; then
    ECE = sum_m |hits_m - conf_m| / N,
hits_m and conf_m the (weighted) sums of correct predictions and of confidences in bin m, N the
total weight. `bin_sums` returns those sums on the device; they add over batches (and padded
rows carry weight 0), so an eval's ECE is that of all its examples, never a mean of batch ECEs.
One implementation for every task: classification gives one prediction per example, T5 one per
non-padding target token (the weights of `tasks.seq2seq_sums`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_BINS = 15


def bin_sums(logits_NC: jax.Array, labels_N: jax.Array, weight_N: jax.Array, num_bins: int = NUM_BINS) -> dict:
    """{'count', 'confidence', 'hits'}: [M] weighted sums per confidence bin, in f32, on the device.

    logits_NC may have more leading axes (`[B, T, V]` with labels and weights [B, T]). A hit is
    argmax == label, as the accuracy of `lazy_jax.tasks`.
    """
    logits_NC = logits_NC.astype(jnp.float32)
    # The top softmax probability without the full softmax: exp(max - logsumexp).
    conf_N = jnp.exp(jnp.max(logits_NC, -1) - jax.nn.logsumexp(logits_NC, -1)).reshape(-1)
    hits_N = (jnp.argmax(logits_NC, -1) == labels_N).astype(jnp.float32).reshape(-1)
    weight_N = weight_N.astype(jnp.float32).reshape(-1)
    bin_N = jnp.clip(jnp.ceil(conf_N * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    onehot_NM = jax.nn.one_hot(bin_N, num_bins, dtype=jnp.float32) * weight_N[:, None]
    return {
        "count": jnp.sum(onehot_NM, 0),
        # Sums of products, not matmuls: TPUs and GPUs would run those at reduced precision.
        "confidence": jnp.sum(onehot_NM * conf_N[:, None], 0),
        "hits": jnp.sum(onehot_NM * hits_N[:, None], 0),
    }


def metrics(sums: dict) -> dict[str, float | np.ndarray]:
    """Host sums (numpy) -> {'ece': fraction in [0, 1], 'calibration/count' [M],
    'calibration/confidence' [M] (mean confidence per bin), 'calibration/accuracy' [M]} (NaN in
    empty bins)."""
    count_M = np.asarray(sums["count"], np.float64)
    conf_M = np.asarray(sums["confidence"], np.float64)
    hits_M = np.asarray(sums["hits"], np.float64)
    total = count_M.sum()
    ece = float(np.abs(hits_M - conf_M).sum() / total) if total > 0 else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = lambda s: np.where(count_M > 0, s / count_M, np.nan)
        return {
            "ece": ece,
            "calibration/count": count_M,
            "calibration/confidence": per_bin(conf_M),
            "calibration/accuracy": per_bin(hits_M),
        }
