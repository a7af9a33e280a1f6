"""Tests of the infinite image source (lazy_jax.data.infinite) on the offline digits."""

import ml_collections
import numpy as np
import pytest

from lazy_jax.data import infinite, sources, stream, vision
from lazy_jax.errors import InputError

BATCH = 32


@pytest.fixture(scope="module")
def digits(digits_dir):
    """(config.data, uint8 train images [N, 8, 8, 1], labels [N]) read straight from the tfds source."""
    config = vision.default_config("digits")
    config.data_dir = digits_dir
    source = sources.load_source("digits", "train", digits_dir)
    examples = source.__getitems__(list(range(len(source))))
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.int32)
    return config, images, labels


def _batches(config, start_step, n=1, **kwargs):
    it = infinite.train_batches(config, global_batch_size=BATCH, start_step=start_step, **kwargs)
    return [next(it) for _ in range(n)]


def test_warp_at_shifted_coordinates_is_a_numpy_shift():
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 2)).astype(np.uint8)
    rows, cols = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
    out = infinite.warp(image, np.stack([rows + 1, cols - 2]))  # read one row down, two columns left
    want = np.zeros((6, 7, 2))
    want[:5, 2:] = image[1:, :5]
    np.testing.assert_allclose(out, want, atol=1e-9)
    np.testing.assert_allclose(infinite.warp(image, np.stack([rows, cols])), image, atol=1e-9)


def test_draws_are_fixed_by_their_key_and_differ_between_keys(digits):
    _, images, labels = digits
    same = np.repeat(images[:1], 4, axis=0)  # one source image four times
    kwargs = dict(step=5, positions_N=np.arange(4), seed=3)
    a, la = infinite.deformed_batch(same, labels[[0] * 4], **kwargs)
    b, _ = infinite.deformed_batch(same, labels[[0] * 4], **kwargs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, labels[[0] * 4])
    for i in range(4):  # two draws of the same image differ (positions, steps, seeds)
        for j in range(i):
            assert not np.array_equal(a[i], a[j])
    for other in (dict(kwargs, step=6), dict(kwargs, seed=4)):
        c, _ = infinite.deformed_batch(same, labels[[0] * 4], **other)
        assert all(not np.array_equal(a[i], c[i]) for i in range(4))


def test_resume_and_process_split_are_exact(digits):
    config, _, _ = digits
    run = _batches(config, 0, n=4)
    resumed = _batches(config, 3)[0]
    for key in ("image", "label"):
        np.testing.assert_array_equal(run[3][key], resumed[key])
    halves = [_batches(config, 2, process_index=p, process_count=2)[0] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), run[2]["image"])


def test_labels_are_the_sources_and_a_source_seen_again_is_drawn_anew(digits):
    config, images, labels = digits
    n = len(labels)
    positions = np.arange(BATCH, dtype=np.int64)
    first = stream.example_indices(positions, n, 0, 0)
    # The same source image one epoch later (stream positions n + ...): find a step holding it.
    later_step = next(
        s
        for s in range(n // BATCH, 3 * n // BATCH)
        if first[0] in stream.example_indices(s * BATCH + positions, n, 0, 0)
    )
    later_pos = list(stream.example_indices(later_step * BATCH + positions, n, 0, 0)).index(first[0])
    b0, b1 = _batches(config, 0)[0], _batches(config, later_step)[0]
    np.testing.assert_array_equal(b0["label"], labels[first])
    np.testing.assert_array_equal(b1["label"], labels[stream.example_indices(later_step * BATCH + positions, n, 0, 0)])
    assert not np.array_equal(b0["image"][0], b1["image"][later_pos])
    # Both are still that image, deformed: closer to it than most other images of its class.
    flat = images.reshape(len(images), -1).astype(np.float64) / 127.5 - 1
    same_class = flat[(labels == labels[first[0]]) & (np.arange(n) != first[0])]
    for image in (b0["image"][0], b1["image"][later_pos]):
        corr_N = np.corrcoef(image.ravel(), np.concatenate([flat[first[0]][None], same_class]))[0, 1:]
        assert corr_N[0] > np.quantile(corr_N[1:], 0.9), (corr_N[0], np.quantile(corr_N[1:], 0.9))


def test_pixel_statistics_stay_in_range(digits):
    config, images, _ = digits
    batch = np.concatenate([b["image"] for b in _batches(config, 0, n=4)])
    assert batch.dtype == np.float32 and batch.shape == (4 * BATCH, 8, 8, 1)
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    real = images.astype(np.float64) / 127.5 - 1  # the normalisation of vision.train_batches
    # Deformations move ink, they neither create nor erase much of it.
    assert abs(batch.mean() - real.mean()) < 0.12, (batch.mean(), real.mean())
    assert abs(batch.std() - real.std()) < 0.1, (batch.std(), real.std())
    assert (batch > 0.9).mean() > 0.02  # strokes keep their full intensity somewhere


def test_config_data_is_a_vision_config(digits):
    config, _, _ = digits
    assert isinstance(config, ml_collections.ConfigDict)
    assert set(_batches(config, 0)[0]) == {"image", "label"}


# -- data.infinite=True: the digits go through this source, other datasets get one pass --------


def test_infinite_digits_run_past_the_split_through_vision(digits):
    config, _, _ = digits
    on = config.copy_and_resolve_references()
    on.infinite = True
    past_the_split = 2 * len(digits[2]) // BATCH  # the second epoch of source images
    vision.check_infinite_data(on, total_steps=10**6, global_batch_size=BATCH)  # no bound
    via_vision = next(vision.train_batches(on, global_batch_size=BATCH, start_step=past_the_split))
    direct = _batches(config, past_the_split)[0]
    for key in ("image", "label"):
        np.testing.assert_array_equal(via_vision[key], direct[key])


def test_a_resume_may_change_the_batch_size_or_seeds(digits, tmp_path):
    """Every draw is keyed by its step, so a resumed run draws only new ones: run.py's infinite-data
    resume check (which refuses such changes for a one-pass split) lets the source through."""
    from lazy_jax import run

    config = ml_collections.ConfigDict(dict(task="classification", batch_size=32, seed=1, data=digits[0].to_dict()))
    config.data.infinite = True
    meta = {"batch_size": 16, "seed": 0, "shuffle_seed": 0}
    run._check_resume(config, tmp_path, 3, meta)  # no error
    config.data.name = "cifar10"  # no source: one pass, and a resume must keep its stream
    with pytest.raises(InputError, match=r"batch_size=16, and this config has batch_size=32"):
        run._check_resume(config, tmp_path, 3, meta)


def test_random_inputs_are_refused(digits):
    config, _, _ = digits
    noise = config.copy_and_resolve_references()
    noise.random_inputs = True
    with pytest.raises(InputError, match=r"random_inputs=True is not allowed with the infinite source"):
        _batches(noise, 0)
