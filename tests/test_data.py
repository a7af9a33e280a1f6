"""Tests of the vision data layer: offline tfds datasets, sources and loader."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lazy_jax.data import cache, offline, sources, stream, vision


@pytest.fixture(scope="module")
def data_dir(digits_dir, mnist5k_dir):
    """The session's data dir, holding digits and mnist5k (prepared by conftest's fixtures)."""
    return mnist5k_dir


def _config(data_dir, **overrides):
    config = vision.default_config()
    config.data_dir = data_dir
    config.update(overrides)
    return config


def _all(source, key):
    return np.asarray([ex[key] for ex in source.__getitems__(list(range(len(source))))])


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


# --- Offline datasets -------------------------------------------------------


@pytest.mark.parametrize(
    "name,hw,sizes",
    [
        ("digits", (8, 8), {"train": 1497, "test": 300}),
        ("mnist5k", (28, 28), {"train": 4000, "test": 1000}),
    ],
)
def test_offline_sizes_shapes_and_balance(data_dir, name, hw, sizes):
    for split, size in sizes.items():
        source = sources.load_source(name, split, data_dir=data_dir)
        assert len(source) == size
        example = source[0]
        assert example["image"].shape == (*hw, 1) and example["image"].dtype == np.uint8
        counts = np.bincount(_all(source, "label"), minlength=10)
        assert counts.shape == (10,) and counts.sum() == size
        # Stratified: every class holds its share, up to rounding.
        if name == "mnist5k":
            assert (counts == size // 10).all()
        else:
            assert counts.min() >= 0.09 * size and counts.max() <= 0.11 * size


@pytest.mark.parametrize("name,test_size", [("digits", 300), ("mnist5k", 1000)])
def test_offline_split_is_seeded_stratified_and_disjoint(data_dir, name, test_size):
    train = _all(sources.load_source(name, "train", data_dir=data_dir), "index")
    test = _all(sources.load_source(name, "test", data_dir=data_dir), "index")
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(len(train) + len(test)))
    _, labels = offline.OFFLINE_DATASETS[name]()._load_raw()
    mask = offline.stratified_test_mask(labels, test_size, offline.SPLIT_SEED)
    assert set(test) == set(np.flatnonzero(mask))
    np.testing.assert_array_equal(mask, offline.stratified_test_mask(labels, test_size, offline.SPLIT_SEED))
    assert (mask != offline.stratified_test_mask(labels, test_size, 1)).any()


def test_digits_pixels_scaled_from_sklearn(data_dir):
    from sklearn import datasets

    raw = datasets.load_digits().images
    source = sources.load_source("digits", "test", data_dir=data_dir)
    for example in source.__getitems__([0, 1, 2]):
        expected = np.round(raw[example["index"]] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(example["image"][:, :, 0], expected)
    assert _all(source, "image").max() == 255


def test_prepare_is_idempotent_and_leaves_no_temp(data_dir):
    assert not offline.prepare("mnist5k", data_dir)
    assert not offline.prepare("digits", data_dir)
    assert {"digits", "mnist5k"} <= set(os.listdir(data_dir))
    assert not [f for f in os.listdir(data_dir) if f.startswith(".")], "no temporary dirs left"


def test_prepare_builds_once_and_on_first_use(tmp_path):
    assert offline.prepare("digits", str(tmp_path))  # explicitly, as the CLI does: built
    assert not offline.prepare("digits", str(tmp_path))
    sources.load_source("mnist5k", "train", data_dir=str(tmp_path))  # prepared on first use
    assert sorted(os.listdir(tmp_path)) == ["digits", "mnist5k"]


def test_prepare_cli_noop_message(data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "lazy_jax.data.prepare", "--dataset=digits", f"--data_dir={data_dir}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "already prepared" in result.stdout


# --- Real dataset names -----------------------------------------------------


class _TinyCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A 'cifar10' in the standard tfds layout (RGB PNG images), 20 + 5 examples."""

    name = "cifar10"
    VERSION = tfds.core.Version("3.0.2")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20), "test": self._generate_examples(5)}

    def _generate_examples(self, n):
        import PIL.Image

        for i in range(n):
            buffer = io.BytesIO()
            PIL.Image.fromarray(_tiny_cifar10_image(i % 10)).save(buffer, "PNG")
            yield i, {"id": f"train_{i}", "image": buffer.getvalue(), "label": i % 10}


def _tiny_cifar10_image(label):
    """The (lossless PNG) image of every _TinyCifar10 example with this label: random pixels, so a
    resize that is not PIL's bilinear one (nearest, strided, transposed, per-image mean) shows."""
    return np.random.default_rng(label).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def test_real_dataset_name_in_standard_layout(tmp_path):
    _TinyCifar10(data_dir=str(tmp_path), file_format="array_record").download_and_prepare(
        download_dir=str(tmp_path / "downloads")
    )
    assert os.path.isfile(tmp_path / "cifar10" / "3.0.2" / "dataset_info.json")
    config = _config(str(tmp_path), name="cifar10", image_size=16)
    spec = vision.dataset_spec(config)
    assert spec == dict(image_shape=(16, 16, 3), num_classes=10, num_train=20, num_eval=5)
    batch = next(vision.train_batches(config, global_batch_size=4, start_step=0))
    assert batch["image"].shape == (4, 16, 16, 3)
    eval_batch = next(vision.eval_batches(config, global_batch_size=8))
    np.testing.assert_array_equal(eval_batch["mask"], [1] * 5 + [0] * 3)
    # Every image is PIL's bilinear resize of its RGB original (the label says which), scaled to [-1, 1].
    import PIL.Image

    rows = [(batch["image"][r], batch["label"][r]) for r in range(4)]
    rows += [(eval_batch["image"][r], eval_batch["label"][r]) for r in range(5)]
    for image, label in rows:
        original = PIL.Image.fromarray(_tiny_cifar10_image(label), "RGB")
        want = np.asarray(original.resize((16, 16), PIL.Image.BILINEAR), np.float32) / 127.5 - 1.0
        np.testing.assert_allclose(image, want, atol=1e-6, err_msg=f"label {label}")
    assert np.std(batch["image"]) > 0.1  # not constant
    # Same name via $TFDS_DATA_DIR when no data_dir is given.
    os.environ["TFDS_DATA_DIR"] = str(tmp_path)
    try:
        assert len(sources.load_source("cifar10:3.0.2", "train")) == 20
    finally:
        del os.environ["TFDS_DATA_DIR"]


# --- Loader -----------------------------------------------------------------


def test_dataset_spec(data_dir):
    assert vision.dataset_spec(_config(data_dir)) == dict(
        image_shape=(28, 28, 1), num_classes=10, num_train=4000, num_eval=1000
    )
    assert vision.dataset_spec(_config(data_dir, name="digits", image_size=16)) == dict(
        image_shape=(16, 16, 1), num_classes=10, num_train=1497, num_eval=300
    )


def test_default_config_name_and_size():
    assert (vision.default_config().name, vision.default_config().image_size) == ("mnist5k", None)
    c = vision.default_config("imagenet21k", image_size=224)
    assert (c.name, c.image_size, c.eval_split) == ("imagenet21k", 224, "test")
    c = vision.default_config("digits")
    c.image_size = 16  # None is a placeholder of an int: a size can be set later (--config.data.image_size).
    assert c.image_size == 16


def test_decoded_split_is_reused(data_dir):
    config = _config(data_dir, name="digits")
    first = next(vision.eval_batches(config, global_batch_size=64))
    made = cache.stats()["vision.decoded_splits"].misses
    np.testing.assert_array_equal(next(vision.eval_batches(config, global_batch_size=64))["image"], first["image"])
    assert cache.stats()["vision.decoded_splits"].misses == made


def test_bounded_cache_drops_the_least_recently_used():
    lru = cache.BoundedCache("test.lru", max_entries=2)
    made = []

    def get(key):
        return lru.get(key, lambda: made.append(key) or 10 * key)

    assert [get(1), get(2), get(1), get(3)] == [10, 20, 10, 30]  # 3 drops 2: 1 was used after it.
    assert get(1) == 10 and get(2) == 20 and made == [1, 2, 3, 2]
    assert len(lru) == 2 and cache.stats()["test.lru"] == (2, 2, 4)
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        cache.BoundedCache("test.empty", max_entries=0)


def test_train_batch_format(data_dir):
    batch = next(vision.train_batches(_config(data_dir), global_batch_size=32, start_step=0))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert batch["image"].min() == -1.0 and batch["image"].max() == 1.0
    assert 0 <= batch["label"].min() and batch["label"].max() < 10


def test_train_batches_deterministic_and_seeded(data_dir):
    config = _config(data_dir, name="digits")
    a = _take(vision.train_batches(config, global_batch_size=64, start_step=0), 3)
    b = _take(vision.train_batches(config, global_batch_size=64, start_step=0), 3)
    _assert_batches_equal(a, b)
    c = next(vision.train_batches(config, global_batch_size=64, start_step=0, seed=1))
    assert not np.array_equal(a[0]["image"], c["image"])
    d = next(vision.train_batches(_config(data_dir, name="digits", shuffle_seed=1), global_batch_size=64, start_step=0))
    assert not np.array_equal(a[0]["image"], d["image"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume_across_epochs(data_dir, num_workers):
    # digits train has 1497 examples: 128-batches cross an epoch boundary at step 11.
    config = _config(data_dir, name="digits", num_workers=num_workers)
    full = _take(vision.train_batches(config, global_batch_size=128, start_step=0), 15)
    tail = _take(vision.train_batches(config, global_batch_size=128, start_step=9), 6)
    _assert_batches_equal(full[9:], tail)


def test_epochs_are_permutations_and_reshuffled():
    n = 1000
    first = stream.example_indices(np.arange(n), n, 0, 0)
    second = stream.example_indices(np.arange(n, 2 * n), n, 0, 0)
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))
    assert not np.array_equal(first, second)


def test_process_shards_union_is_global_batch(data_dir):
    config = _config(data_dir)
    single = _take(vision.train_batches(config, global_batch_size=64, start_step=3), 2)
    shards = [
        _take(vision.train_batches(config, global_batch_size=64, start_step=3, process_index=p, process_count=2), 2)
        for p in range(2)
    ]
    for step in range(2):
        assert shards[0][step]["image"].shape[0] == 32
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                np.concatenate([shards[0][step][key], shards[1][step][key]]), single[step][key]
            )


def test_eval_batches_cover_split_once_with_padding_mask(data_dir):
    config = _config(data_dir, name="digits")
    batches = list(vision.eval_batches(config, global_batch_size=128))
    assert len(batches) == 3  # 300 = 128 + 128 + 44
    assert all(b["image"].shape == (128, 8, 8, 1) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.dtype == np.float32 and mask.sum() == 300 and (mask[300:] == 0).all()
    labels = np.concatenate([b["label"] for b in batches])
    true = _all(sources.load_source("digits", "test", data_dir=data_dir), "label")
    np.testing.assert_array_equal(labels[:300], true)
    assert (labels[300:] == 0).all() and (batches[-1]["image"][44:] == 0).all()
    # Two processes: same number of batches, blocks concatenate to the global batch.
    shards = [
        list(vision.eval_batches(config, global_batch_size=128, process_index=p, process_count=2)) for p in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 3
    for k in range(3):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(np.concatenate([shards[0][k][key], shards[1][k][key]]), batches[k][key])


def test_random_labels_fixed_per_example(data_dir):
    config = _config(data_dir, name="digits")
    random_config = _config(data_dir, name="digits", random_labels=True)
    # Two epochs (1497 / 499 = 3 steps each): same example -> same random label.
    real = _take(vision.train_batches(config, global_batch_size=499, start_step=0), 6)
    rand = _take(vision.train_batches(random_config, global_batch_size=499, start_step=0), 6)
    label_of = {}
    for r, x in zip(real, rand):
        np.testing.assert_array_equal(r["image"], x["image"])
        for image, label in zip(r["image"], x["label"]):
            assert label_of.setdefault(image.tobytes(), label) == label
    agree = np.mean(np.concatenate([r["label"] == x["label"] for r, x in zip(real, rand)]))
    assert agree < 0.3  # ~10% by chance.
    # Eval keeps the real labels.
    e = next(vision.eval_batches(random_config, global_batch_size=64))
    np.testing.assert_array_equal(e["label"], next(vision.eval_batches(config, global_batch_size=64))["label"])


def test_random_inputs_fixed_per_example(data_dir):
    config = _config(data_dir, name="digits", random_inputs=True)
    real = _take(vision.train_batches(_config(data_dir, name="digits"), global_batch_size=499, start_step=0), 6)
    rand = _take(vision.train_batches(config, global_batch_size=499, start_step=0), 6)
    noise_of = {}
    for r, x in zip(real, rand):
        np.testing.assert_array_equal(r["label"], x["label"])
        for image, noise in zip(r["image"], x["image"]):
            np.testing.assert_array_equal(noise_of.setdefault(image.tobytes(), noise), noise)
    images = np.concatenate([x["image"] for x in rand])
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05


# --- Errors -----------------------------------------------------------------


def test_missing_dataset_error(data_dir):
    with pytest.raises(ValueError) as e:
        sources.load_source("cifar10", "train", data_dir=data_dir)
    message = str(e.value)
    for part in ("'cifar10'", data_dir, "digits", "mnist5k", "lazy_jax.data.prepare"):
        assert part in message
    with pytest.raises(ValueError, match=r"'nosuch'.*not found"):
        vision.dataset_spec(_config(data_dir, name="nosuch"))


def test_missing_and_empty_split_errors(data_dir):
    with pytest.raises(ValueError, match=r"'mnist5k'.*no split 'validation'.*'train': 4000"):
        sources.load_source("mnist5k", "validation", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"'train\[:0\]'.*'digits'.*empty"):
        next(
            vision.train_batches(
                _config(data_dir, name="digits", train_split="train[:0]"), global_batch_size=8, start_step=0
            )
        )


def test_indivisible_batch_error(data_dir):
    with pytest.raises(ValueError, match=r"global_batch_size=10.*process_count=3"):
        next(vision.train_batches(_config(data_dir), global_batch_size=10, start_step=0, process_count=3))
    with pytest.raises(ValueError, match=r"global_batch_size=10.*process_count=4"):
        next(vision.eval_batches(_config(data_dir), global_batch_size=10, process_count=4))
    with pytest.raises(ValueError, match=r"process_index=2 not in \[0, 2\)"):
        next(vision.eval_batches(_config(data_dir), global_batch_size=10, process_index=2, process_count=2))


def test_infinite_data_without_a_source_is_one_pass(data_dir, monkeypatch):
    """A dataset the infinite source cannot deform is read in one pass (digits stand in for one here)."""
    monkeypatch.setattr(vision, "INFINITE_SOURCE_DATASETS", frozenset())
    config = _config(data_dir, name="digits", infinite=True)
    vision.check_infinite_data(config, total_steps=11, global_batch_size=128)  # 1408 <= 1497.
    with pytest.raises(
        ValueError, match=r"step 11 .*1497 examples.*batch size 128.*an endless stream of new examples exists only for"
    ):
        vision.check_infinite_data(config, total_steps=12, global_batch_size=128)
    vision.check_infinite_data(_config(data_dir, name="digits"), 10**6, 128)  # Off: no-op.
    # Same stream as without `infinite` (its first epoch, where nothing repeats) ...
    batches = vision.train_batches(config, global_batch_size=128, start_step=0)
    _assert_batches_equal(
        _take(batches, 11),
        _take(vision.train_batches(_config(data_dir, name="digits"), global_batch_size=128, start_step=0), 11),
    )
    # ... until the step that would start the second epoch.
    with pytest.raises(ValueError, match=r"step 11 "):
        next(batches)
    with pytest.raises(ValueError, match=r"step 11 "):
        next(vision.train_batches(config, global_batch_size=128, start_step=11))
