"""Label noise (config.data.label_noise): which labels are replaced, by what, and the train rows'
accuracies on the noisy- and clean-labelled examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import input_pipeline, tasks
from lazy_jax import sharding as shd
from lazy_jax.config_base import load_config
from lazy_jax.data import infinite, stream, vision
from lazy_jax.errors import InputError
from lazy_jax.train import Experiment

N_TRAIN = 1497  # digits' training split
EPOCH_BATCH = 499  # 3 steps = exactly one epoch


def _config(data_dir, **overrides):
    config = vision.default_config("digits")
    config.data_dir = data_dir
    config.update(overrides)
    return config


def _steps(config, n, batch_size=EPOCH_BATCH, start_step=0):
    it = vision.train_batches(config, global_batch_size=batch_size, start_step=start_step)
    return [next(it) for _ in range(n)]


def _by_index(batches, batch_size, start_step=0, n=N_TRAIN):
    """{example index: (label, noisy)} over the batches (an example seen twice must agree with itself)."""
    seen = {}
    for step, batch in enumerate(batches, start_step):
        positions = stream.local_positions(step, batch_size, 0, 1)
        for i, label, noisy in zip(stream.example_indices(positions, n, 0, 0), batch["label"], batch["label_noisy"]):
            assert seen.setdefault(int(i), (int(label), bool(noisy))) == (int(label), bool(noisy)), i
    return seen


@pytest.mark.parametrize("noise,want", [(0.4, 599), (0.8, 1198), (1.0, N_TRAIN), (0.0003, 0)])
def test_noisy_share_is_exact_and_only_noisy_labels_change(digits_dir, noise, want):
    clean = _steps(_config(digits_dir), 3)
    noisy = _steps(_config(digits_dir, label_noise=noise), 3)
    noisy_N = np.concatenate([b["label_noisy"] for b in noisy])
    assert noisy_N.dtype == bool and noisy_N.sum() == want == round(noise * N_TRAIN)
    true_N = np.concatenate([b["label"] for b in clean])
    label_N = np.concatenate([b["label"] for b in noisy])
    np.testing.assert_array_equal(label_N[~noisy_N], true_N[~noisy_N])
    for c, x in zip(clean, noisy):
        np.testing.assert_array_equal(c["image"], x["image"])
    if want > 500:
        # Uniform over the 10 classes: ~1/10 equal the true label, every class drawn.
        assert 0.05 < np.mean(label_N[noisy_N] == true_N[noisy_N]) < 0.15
        assert np.all(np.bincount(label_N[noisy_N], minlength=10) > want / 20)


def test_no_noise_leaves_batches_unchanged(digits_dir):
    (plain,) = _steps(_config(digits_dir), 1, batch_size=64)
    (zero,) = _steps(_config(digits_dir, label_noise=0.0), 1, batch_size=64)
    assert set(zero) == {"image", "label"}
    for key in plain:
        np.testing.assert_array_equal(plain[key], zero[key])


def test_same_labels_every_epoch_after_resume_and_at_any_batch_size(digits_dir):
    config = _config(digits_dir, label_noise=0.4)
    two_epochs = _by_index(_steps(config, 6), EPOCH_BATCH)
    resumed = _by_index(_steps(config, 2, start_step=4), EPOCH_BATCH, start_step=4)
    other_batch = _by_index(_steps(config, 30, batch_size=100), 100)
    assert len(two_epochs) == N_TRAIN
    for seen in (resumed, other_batch):
        assert all(two_epochs[i] == v for i, v in seen.items())
    # The set is chosen by shuffle_seed alone, not by the training seed.
    seeded = vision.train_batches(config, global_batch_size=EPOCH_BATCH, start_step=0, seed=5)
    positions = stream.local_positions(0, EPOCH_BATCH, 0, 1)
    batch = next(seeded)
    for i, label in zip(stream.example_indices(positions, N_TRAIN, 0, 5), batch["label"]):
        assert two_epochs[int(i)][0] == label
    # Another shuffle_seed chooses another set.
    noisy_N = vision.label_noise_table(N_TRAIN, 10, 0.4, 0)[0]
    other_N = vision.label_noise_table(N_TRAIN, 10, 0.4, 1)[0]
    np.testing.assert_array_equal(noisy_N, [two_epochs[i][1] for i in range(N_TRAIN)])
    assert other_N.sum() == noisy_N.sum() and (other_N != noisy_N).any()


def test_eval_labels_stay_clean(digits_dir):
    clean = list(vision.eval_batches(_config(digits_dir), global_batch_size=128))
    noisy = list(vision.eval_batches(_config(digits_dir, label_noise=0.8), global_batch_size=128))
    for c, x in zip(clean, noisy, strict=True):
        assert set(x) == {"image", "label", "mask"}
        for key in c:
            np.testing.assert_array_equal(c[key], x[key])


def test_infinite_source_keeps_the_noisy_labels_of_its_source_images(digits_dir):
    config = _config(digits_dir, label_noise=0.4, infinite=True)
    batches = _steps(config, 3)  # through vision.train_batches: the infinite source
    finite = _by_index(_steps(_config(digits_dir, label_noise=0.4), 3), EPOCH_BATCH)
    assert _by_index(batches, EPOCH_BATCH) == finite
    direct = infinite.train_batches(config, global_batch_size=EPOCH_BATCH, start_step=2)
    np.testing.assert_array_equal(next(direct)["image"], batches[2]["image"])


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"label_noise": -0.1}, r"data\.label_noise=-0\.1 is not allowed: use a number P with 0 <= P <= 1"),
        ({"label_noise": 1.5}, r"data\.label_noise=1\.5 is not allowed"),
        ({"label_noise": 0.4, "random_labels": True}, r"data\.label_noise=0\.4 with data\.random_labels=True"),
        ({"random_inputs": True, "infinite": True}, r"data\.random_inputs=True with data\.infinite=True on 'digits'"),
    ],
)
def test_bad_label_noise_is_refused_by_name(digits_dir, overrides, named):
    config = _config(digits_dir, **overrides)
    with pytest.raises(InputError, match=named):
        vision.dataset_spec(config)
    with pytest.raises(InputError, match=named):
        vision.train_batches(config, global_batch_size=8, start_step=0)


def test_sums_and_train_metrics_against_numpy():
    rng = np.random.default_rng(0)
    logits_BC = rng.normal(size=(64, 10)).astype(np.float32)
    label_B = rng.integers(0, 10, 64).astype(np.int32)
    label_B[:20] = logits_BC[:20].argmax(-1)  # some hits on either side
    noisy_B = rng.random(64) < 0.4
    batch = {"label": jnp.asarray(label_B), "label_noisy": jnp.asarray(noisy_B)}
    sums = tasks.classification_sums(jnp.asarray(logits_BC), batch)
    hit_B = logits_BC.argmax(-1) == label_B
    want = {
        "correct_noisy": hit_B[noisy_B].sum(),
        "weight_noisy": noisy_B.sum(),
        "correct_clean": hit_B[~noisy_B].sum(),
        "weight_clean": (~noisy_B).sum(),
    }
    for key, value in want.items():
        assert float(sums[key]) == value, key
    metrics = tasks.train_metrics(sums)
    np.testing.assert_allclose(float(metrics["accuracy_noisy_labels"]), hit_B[noisy_B].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy_clean_labels"]), hit_B[~noisy_B].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy"]), hit_B.mean(), rtol=1e-6)
    # A masked (padding) example counts on neither side; a batch with no noisy example has no such accuracy.
    masked = tasks.classification_sums(jnp.asarray(logits_BC), {**batch, "mask": jnp.asarray(~noisy_B, jnp.float32)})
    assert float(masked["weight_noisy"]) == 0 and float(masked["weight_clean"]) == (~noisy_B).sum()
    assert np.isnan(float(tasks.train_metrics(masked)["accuracy_noisy_labels"]))
    assert set(tasks.train_metrics(tasks.classification_sums(jnp.asarray(logits_BC), {"label": label_B}))) == {
        "loss",
        "accuracy",
    }


def test_train_step_reports_noisy_and_clean_accuracy(digits_dir):
    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.data.label_noise = 0.4
    config.model.update(width=16, num_heads=1, depth=1, d_ff=32)
    exp = Experiment(config, input_pipeline.data_spec(config))
    batch = next(input_pipeline.train_batches(config, 0, 0, 1))
    with jax.set_mesh(exp.mesh):
        _, metrics = exp.train_step(exp.init_state(0), shd.global_batch(batch, exp.mesh))
    noisy_B = batch["label_noisy"]
    assert 0 < noisy_B.sum() < len(noisy_B)
    noisy, clean = float(metrics["accuracy_noisy_labels"]), float(metrics["accuracy_clean_labels"])
    # The two accuracies split the batch's accuracy by their example counts.
    mixed = (noisy * noisy_B.sum() + clean * (~noisy_B).sum()) / len(noisy_B)
    np.testing.assert_allclose(float(metrics["accuracy"]), mixed, rtol=1e-6)
