"""ECE (lazy_jax.calibration) against a hand-worked example and a per-example NumPy computation.

The NumPy reference follows Guo et al. 2017 literally: bin m holds the predictions whose
confidence lies in ((m-1)/M, m/M], ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import calibration
from lazy_jax.train import calibration_sums


def numpy_ece(logits_NC, labels_N, num_bins=15):
    """Per-example softmax in float64, then Guo et al.'s sum over bins."""
    z = logits_NC - logits_NC.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    conf, hits = probs.max(-1), probs.argmax(-1) == labels_N
    ece = 0.0
    for m in range(num_bins):
        in_bin = (conf > m / num_bins) & (conf <= (m + 1) / num_bins)
        if in_bin.any():
            ece += in_bin.mean() * abs(hits[in_bin].mean() - conf[in_bin].mean())
    return ece


def two_class_logits(p_top, top_class):
    """Logits whose softmax puts p_top on top_class (of 2)."""
    logits = np.zeros((len(p_top), 2))
    logits[np.arange(len(p_top)), top_class] = np.log(np.asarray(p_top) / (1 - np.asarray(p_top)))
    return logits.astype(np.float32)


def test_hand_worked_example():
    # Confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.58 (right), and a padded row.
    # Bins of width 1/15: 0.95 -> bin 14 (14/15 = 0.933..), 0.55 and 0.58 -> bin 8 (8/15 = 0.533.., 9/15 = 0.6).
    # Bin 14: 2 predictions, confidence sum 1.90, 1 hit -> |1 - 1.90| = 0.90
    # Bin 8:  2 predictions, confidence sum 1.13, 2 hits -> |2 - 1.13| = 0.87
    # ECE = (0.90 + 0.87) / 4 = 0.4425
    logits = two_class_logits([0.95, 0.95, 0.55, 0.58, 0.99], [0, 1, 1, 0, 0])
    labels = np.array([0, 0, 1, 0, 1])
    weights = np.array([1, 1, 1, 1, 0], np.float32)
    sums = calibration.bin_sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    out = calibration.metrics({k: np.asarray(v) for k, v in sums.items()})
    assert out["ece"] == pytest.approx(0.4425, abs=1e-6)
    count = np.zeros(15)
    count[[8, 14]] = 2
    np.testing.assert_array_equal(out["calibration/count"], count)
    np.testing.assert_allclose(out["calibration/confidence"][[8, 14]], [0.565, 0.95], rtol=1e-6)
    np.testing.assert_allclose(out["calibration/accuracy"][[8, 14]], [1.0, 0.5])
    assert np.isnan(out["calibration/accuracy"][0]) and np.isnan(out["calibration/confidence"][0])


def test_random_logits_equal_numpy_and_any_batching():
    rng = np.random.default_rng(0)
    n, c = 300, 10
    logits = (rng.normal(size=(n, c)) * rng.uniform(0.2, 4.0, size=(n, 1))).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    want = numpy_ece(logits.astype(np.float64), labels)
    assert 0.02 < want < 0.9

    def ece_in_batches(batch_size):
        total = None
        for start in range(0, n, batch_size):  # the last batch padded with weight-0 rows
            pad = max(0, start + batch_size - n)
            lg = np.concatenate([logits[start : start + batch_size], np.zeros((pad, c), np.float32)])
            lb = np.concatenate([labels[start : start + batch_size], np.zeros(pad, int)])
            w = np.concatenate([np.ones(batch_size - pad), np.zeros(pad)]).astype(np.float32)
            sums = {k: np.asarray(v, np.float64) for k, v in calibration.bin_sums(lg, lb, w).items()}
            total = sums if total is None else {k: total[k] + sums[k] for k in total}
        return calibration.metrics(total)

    eight, twenty_four = ece_in_batches(8), ece_in_batches(24)  # 300 = 37 * 8 + 4 = 12 * 24 + 12
    assert eight["ece"] == pytest.approx(want, abs=1e-6)
    assert twenty_four["ece"] == pytest.approx(eight["ece"], abs=1e-7)
    np.testing.assert_array_equal(eight["calibration/count"], twenty_four["calibration/count"])
    assert eight["calibration/count"].sum() == n


def test_t5_token_level_ece_counts_only_weighted_target_tokens():
    """seq2seq: one prediction per target token, weighted by decoder_loss_weights x the row mask."""
    rng = np.random.default_rng(1)
    b, t, v = 3, 7, 11
    logits = (2 * rng.normal(size=(b, t, v))).astype(np.float32)
    targets = rng.integers(1, v, size=(b, t)).astype(np.int32)
    loss_weights = (rng.uniform(size=(b, t)) < 0.7).astype(np.float32)
    mask = np.array([1, 1, 0], np.float32)  # the last row is eval padding
    batch = {"decoder_target_tokens": targets, "decoder_loss_weights": loss_weights, "mask": mask}
    sums = calibration_sums("seq2seq", jnp.asarray(logits), {k: jnp.asarray(x) for k, x in batch.items()})
    got = calibration.metrics({k: np.asarray(x) for k, x in sums.items()})
    keep = (loss_weights * mask[:, None]) > 0
    assert got["calibration/count"].sum() == keep.sum()
    assert got["ece"] == pytest.approx(numpy_ece(logits[keep].astype(np.float64), targets[keep]), abs=1e-6)
    # Without decoder_loss_weights a token counts where its target is > 0 (as tasks.seq2seq_sums).
    targets[0, :3] = 0
    batch = {"decoder_target_tokens": jnp.asarray(targets)}
    sums = calibration_sums("seq2seq", jnp.asarray(logits), batch)
    assert float(np.sum(sums["count"])) == (targets > 0).sum()
