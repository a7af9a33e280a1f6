"""Evaluation over padded batches equals a NumPy computation over the unpadded eval split.

The digits test split has 300 examples; eval batch sizes that do not divide it leave a last
batch padded with mask 0, which must count in neither the loss, the accuracy nor the statistics.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from lazy_jax import input_pipeline
from lazy_jax.config_base import load_config
from lazy_jax.data import sources
from lazy_jax.sparsity import MlpBlock
from lazy_jax.train import Experiment
from tests.model_helpers import random_variables
from tests.test_calibration import numpy_ece

NUM_TEST = 300  # digits' test split


def digits_test_split(data_dir):
    """All test examples, read from the tfds source and normalized here: images [N, 8, 8, 1] in [-1, 1], labels [N]."""
    source = sources.load_source("digits", "test", data_dir)
    examples = [source[i] for i in range(len(source))]
    images_NHWC = np.stack([np.asarray(ex["image"], np.float32) for ex in examples]) / 127.5 - 1.0
    labels_N = np.asarray([ex["label"] for ex in examples], np.int64)
    return images_NHWC.astype(np.float32), labels_N


def reference_metrics(model, variables, images_NHWC, labels_N):
    """Loss, accuracy, per-layer nonzero share and ECE of every example at once, in NumPy.

    The activation maps are taken from the un-jitted model (the input of each MLP's `wo`)."""
    maps = []

    def record(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and m.name == "wo" and isinstance(m.parent, MlpBlock):
            maps.append(np.asarray(args[0]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        logits_NC, _ = model.apply(variables, {"image": images_NHWC}, train=False)
    logits_NC = np.asarray(logits_NC, np.float64)
    top_N = logits_NC.max(-1)
    logsumexp_N = top_N + np.log(np.exp(logits_NC - top_N[:, None]).sum(-1))
    loss = float(np.mean(logsumexp_N - logits_NC[np.arange(len(labels_N)), labels_N]))
    accuracy = float(np.mean(logits_NC.argmax(-1) == labels_N))
    nonzero_L = [float((a_NTF > 0).mean()) for a_NTF in maps]
    return loss, accuracy, nonzero_L, numpy_ece(logits_NC, labels_N)


@pytest.mark.parametrize("eval_batch_size", [64, 56])  # 300 = 4 * 64 + 44 = 5 * 56 + 20
def test_padded_eval_matches_numpy_over_unpadded_examples(digits_dir, eval_batch_size):
    assert NUM_TEST % eval_batch_size
    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.eval_batch_size = eval_batch_size  # over the 8-device data-parallel mesh
    exp = Experiment(config, input_pipeline.data_spec(config))
    images_NHWC, labels_N = digits_test_split(digits_dir)
    assert images_NHWC.shape == (NUM_TEST, 8, 8, 1)
    # Random parameters: the initial head is zero, which would make every logit (and the accuracy) trivial.
    variables = random_variables(exp.model, {"image": images_NHWC[:1]}, seed=1)

    batches = list(input_pipeline.eval_batches(config, 0, 1))
    assert len(batches) == -(-NUM_TEST // eval_batch_size)
    assert [float(b["mask"].sum()) for b in batches][-1] == NUM_TEST % eval_batch_size  # padded
    got = exp.evaluate(variables["params"], batches)

    loss, accuracy, nonzero_L, ece = reference_metrics(exp.model, variables, images_NHWC, labels_N)
    assert 0 < accuracy < 1 and len(set(nonzero_L)) > 1  # nothing here is a trivial value
    # Counting the padded rows (zero images, label 0) would move every metric past the tolerances.
    num_pad = -NUM_TEST % eval_batch_size
    with_pad = reference_metrics(
        exp.model,
        variables,
        np.concatenate([images_NHWC, np.zeros((num_pad, 8, 8, 1), np.float32)]),
        np.concatenate([labels_N, np.zeros(num_pad, np.int64)]),
    )
    assert abs(with_pad[0] - loss) > 1e-3 * loss and np.abs(np.subtract(with_pad[2], nonzero_L)).max() > 1e-3
    assert abs(with_pad[3] - ece) > 1e-3 and ece > 0.01
    # ECE from exact per-bin sums: the same at either batch size as over the 300 examples at once.
    assert got["ece"] == pytest.approx(ece, abs=1e-6)
    assert got["calibration/count"].sum() == NUM_TEST
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    assert got["accuracy"] == pytest.approx(accuracy, abs=1e-9)  # the same hits of 300
    assert len(nonzero_L) == 6
    for i, frac in enumerate(nonzero_L):
        np.testing.assert_allclose(got[f"nonzero_frac/encoder/layer_{i:02d}"], frac, rtol=1e-5, err_msg=str(i))
    np.testing.assert_allclose(got["nonzero_frac/encoder/mean"], np.mean(nonzero_L), rtol=1e-5)
    np.testing.assert_allclose(got["nonzero_frac/mean"], np.mean(nonzero_L), rtol=1e-5)


def test_eval_with_one_batch_of_everything_matches_padded_eval(digits_dir):
    """Padding only changes how the split is cut: one unpadded batch of all 300 gives the same metrics."""
    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.mesh.update(data=1, fsdp=1, model=1)
    exp = Experiment(config, input_pipeline.data_spec(config), devices=jax.devices()[:1])
    images_NHWC, labels_N = digits_test_split(digits_dir)
    params = random_variables(exp.model, {"image": images_NHWC[:1]}, seed=2)["params"]
    whole = exp.evaluate(params, [{"image": images_NHWC, "label": labels_N.astype(np.int32)}])
    config.eval_batch_size = 128  # 300 = 2 * 128 + 44
    padded = exp.evaluate(params, input_pipeline.eval_batches(config, 0, 1))
    assert set(whole) == set(padded)
    for k in whole:
        np.testing.assert_allclose(padded[k], whole[k], rtol=1e-5, err_msg=k)
