"""Image classification batches from tfds datasets, with exact resume.

Path of a batch: tfds array_record source (lazy_jax.data.sources) -> example
indices of the step (lazy_jax.data.stream) -> uint8 images and labels ->
float32 images in [-1, 1] -> dict {'image': [b, H, W, C], 'label': [b]}
(+ 'label_noisy': bool [b] when label_noise > 0).

`config_data` fields (see `default_config`):
  name           tfds name, e.g. 'mnist5k', 'digits', 'cifar10', 'imagenet2012'
                 ('name:1.0.0' / 'name/config' allowed).
  train_split    tfds split to train on ('train'; slices like 'train[:90%]' ok).
  eval_split     tfds split to evaluate on ('test').
  data_dir       tfds data dir; None = $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  image_size     None = native size; int S > 0 = resize (PIL bilinear, aspect
                 ratio not kept) to S x S. Needed for variable-size datasets.
  infinite       False; True = "infinite data": no example is ever seen twice.
                 Digit datasets (INFINITE_SOURCE_DATASETS: digits, mnist5k,
                 mnist) then draw from the infinite source
                 (lazy_jax.data.infinite: every draw a fresh random deformation
                 of a source image), for any number of steps. Any other dataset
                 is read once, in one shuffled pass: the step that would start a
                 second pass raises InputError (`check_infinite_data` raises it
                 before training).
  random_labels  False; True = the label of training example i is replaced by
                 a uniform random class drawn once per example from
                 shuffle_seed (the paper's random-label experiment). Eval
                 batches keep the real labels.
  random_inputs  False; True = training image i is replaced by standard
                 Gaussian noise (in the normalized input space) drawn once per
                 example from shuffle_seed. Eval batches keep the real images.
  label_noise    0.0; P in [0, 1] = exactly round(P * N) of the N training
                 labels (Python's round) are replaced by a label drawn uniformly
                 from all classes, so about 1/num_classes of the replaced labels
                 equal the true one, as in the paper's label-noise setup (Zhang
                 et al. 2017 corrupt each label with probability P instead; an
                 exact count makes the share exact). Which examples, and their new
                 labels, are drawn once from shuffle_seed: the same at every
                 epoch, after a resume and at any batch size. Train batches then
                 carry 'label_noisy' (True where the label was replaced, even if
                 the drawn label is the true one); eval batches keep the real
                 labels and have no such field.
  shuffle_seed   0; with the `seed` argument of `train_batches` it fixes the
                 order of the training stream; alone it fixes random labels, random
                 inputs and label noise (so they do not change with the training
                 seed).
  num_workers    0 = build batches in the calling thread; k > 0 = grain builds
                 batches in k threads, prefetching ahead (for datasets that
                 are decoded per batch; cached datasets need none).

Images are scaled to [0, 1] and normalized with mean 0.5 / std 0.5, i.e. to
[-1, 1]. No augmentation: in particular no random horizontal flip, which
would be wrong for digits / MNIST (flipped digits are other shapes).

Splits whose decoded images take under CACHE_LIMIT_BYTES are decoded once and
kept in memory (digits, mnist5k, mnist, cifar10); a batch is then one NumPy
gather. Larger ones (imagenet) are decoded per batch from the array_record
files; use num_workers > 0 there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import grain
import ml_collections
import numpy as np

from lazy_jax.data import cache, sources, stream
from lazy_jax.errors import InputError

CACHE_LIMIT_BYTES = 500 * 2**20
_RANDOM_LABELS_TAG = 0x1ABE1
_RANDOM_INPUTS_TAG = 0x2015E
_LABEL_NOISE_TAG = 0x4015E
# Digit datasets the infinite source (lazy_jax.data.infinite) deforms: elastic and affine
# warps keep a digit a digit (InfiMNIST); they are no model of natural images.
INFINITE_SOURCE_DATASETS = frozenset({"digits", "mnist5k", "mnist"})
# Splits under CACHE_LIMIT_BYTES, decoded once per (dataset dir, split, size) per process; 8
# bounds the memory of a process that goes through many datasets.
_DECODED_SPLITS = cache.BoundedCache("vision.decoded_splits", max_entries=8)
_RANDOM_LABEL_TABLES = cache.BoundedCache("vision.random_label_tables", max_entries=4)
_LABEL_NOISE_TABLES = cache.BoundedCache("vision.label_noise_tables", max_entries=4)


def default_config(name: str = "mnist5k", image_size: int | None = None) -> ml_collections.ConfigDict:
    """The `config.data` fields of an image task with their defaults (documented above)."""
    return ml_collections.ConfigDict(
        dict(
            name=name,
            train_split="train",
            eval_split="test",
            data_dir=ml_collections.config_dict.placeholder(str),
            image_size=ml_collections.config_dict.placeholder(int) if image_size is None else image_size,
            infinite=False,
            random_labels=False,
            random_inputs=False,
            label_noise=0.0,
            shuffle_seed=0,
            num_workers=0,
        )
    )


def _keys(builder) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    return "image", "label"


def check_image_size(image_size) -> None:
    """config.data.image_size is None (the dataset's own size) or a positive integer."""
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0):
        raise InputError(
            f"data.image_size={image_size!r} is not allowed: use a positive integer S (images are resized to "
            "S x S), or None for the dataset's own size"
        )


def has_infinite_source(config_data: ml_collections.ConfigDict) -> bool:
    """Whether data.infinite=True draws from the infinite source (a digit dataset), not one pass over the split."""
    base = str(config_data.name).split(":")[0].split("/")[0]
    return bool(config_data.infinite) and base in INFINITE_SOURCE_DATASETS


def label_noise_of(config_data: ml_collections.ConfigDict) -> float:
    """config.data.label_noise (0 for a data config made before the field existed)."""
    return config_data.get("label_noise", 0.0)


def check_data_config(config_data: ml_collections.ConfigDict) -> None:
    """The values of an image data config that no dataset can take; InputError naming the value."""
    check_image_size(config_data.image_size)
    noise = label_noise_of(config_data)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0.0 <= noise <= 1.0:
        raise InputError(
            f"data.label_noise={noise!r} is not allowed: use a number P with 0 <= P <= 1 (the share of training "
            "labels replaced by random ones)"
        )
    if noise > 0 and config_data.random_labels:
        raise InputError(
            f"data.label_noise={noise!r} with data.random_labels=True is not allowed: random labels already replace "
            "every label; use one of them (label_noise=1.0 replaces every label too, and reports the accuracies)"
        )
    if has_infinite_source(config_data) and config_data.random_inputs:
        raise InputError(
            f"data.random_inputs=True with data.infinite=True on {config_data.name!r} is not allowed: the infinite "
            "source deforms the real digits, and noise has no digit to deform; use one of them"
        )


def _image_shape(builder, name: str, image_size: int | None) -> tuple[int, int, int]:
    image_key, _ = _keys(builder)
    shape = tuple(builder.info.features[image_key].shape)
    if len(shape) != 3 or shape[-1] is None:
        raise InputError(
            f"Dataset {name!r}: image feature {image_key!r} has shape {shape}; expected [H, W, C] with known C."
        )
    if image_size:
        return (int(image_size), int(image_size), shape[-1])
    if None in shape:
        raise InputError(
            f"Dataset {name!r} has variable image size {shape}; set config.data.image_size to resize to a fixed size."
        )
    return shape


def _resize(image_HWC: np.ndarray, size: int) -> np.ndarray:
    import PIL.Image  # pylint: disable=g-import-not-at-top

    if image_HWC.shape[:2] == (size, size):
        return image_HWC
    channels = [
        PIL.Image.fromarray(image_HWC[:, :, c]).resize((size, size), PIL.Image.BILINEAR)
        for c in range(image_HWC.shape[-1])
    ]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


class SplitReader:
    """uint8 images and int labels of one split, by example index."""

    def __init__(self, name: str, split: str, data_dir: str | None, image_size: int | None):
        check_image_size(image_size)
        builder = sources.load_builder(name, data_dir)
        self.num_examples = sources.split_size(builder, name, split)
        self.image_shape = _image_shape(builder, name, image_size)
        self.num_classes = builder.info.features[_keys(builder)[1]].num_classes
        self._keys = _keys(builder)
        self._image_size = image_size
        self._source = sources.load_source(name, split, data_dir)
        self._cached = None
        if self.num_examples * math.prod(self.image_shape) < CACHE_LIMIT_BYTES:
            self._cached = _DECODED_SPLITS.get((str(builder.data_dir), split, image_size), self.decode_all)

    def decode(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decodes examples `indices` from the array_record files."""
        image_key, label_key = self._keys
        examples = self._source.__getitems__([int(i) for i in indices])
        images = [np.asarray(ex[image_key], np.uint8) for ex in examples]
        if self._image_size:
            images = [_resize(im, self._image_size) for im in images]
        images_NHWC = np.stack(images).reshape(len(examples), *self.image_shape)
        labels_N = np.asarray([ex[label_key] for ex in examples], np.int32)
        return images_NHWC, labels_N

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is not None:
            images_NHWC, labels_N = self._cached
            return images_NHWC[indices], labels_N[indices]
        return self.decode(indices)

    def decode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split, decoded in chunks."""
        chunks = [
            self.decode(np.arange(i, min(i + 4096, self.num_examples))) for i in range(0, self.num_examples, 4096)
        ]
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def normalize(images_NHWC: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 [-1, 1] (scale to [0, 1], mean 0.5, std 0.5)."""
    return images_NHWC.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _random_label_table(num_examples: int, num_classes: int, shuffle_seed: int) -> np.ndarray:
    def make() -> np.ndarray:
        rng = np.random.default_rng([shuffle_seed, _RANDOM_LABELS_TAG])
        return rng.integers(0, num_classes, size=num_examples).astype(np.int32)

    return _RANDOM_LABEL_TABLES.get((num_examples, num_classes, shuffle_seed), make)


def label_noise_table(
    num_examples: int, num_classes: int, label_noise: float, shuffle_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy_N bool, noisy_label_N int32): which of the split's examples get a random label, and which.

    Exactly round(label_noise * num_examples) examples, a uniform random subset; their labels are
    uniform over all classes (one may equal the true label). A function of the example index and
    shuffle_seed alone, so every epoch, resume and batch size sees the same labels; it never reads
    the true labels, so a large split needs no label scan.
    """

    def make() -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([shuffle_seed, _LABEL_NOISE_TAG])
        chosen = rng.choice(num_examples, size=round(label_noise * num_examples), replace=False)
        noisy_N = np.zeros(num_examples, bool)
        noisy_N[chosen] = True
        noisy_label_N = np.zeros(num_examples, np.int32)
        noisy_label_N[chosen] = rng.integers(0, num_classes, size=len(chosen))
        return noisy_N, noisy_label_N

    return _LABEL_NOISE_TABLES.get((num_examples, num_classes, float(label_noise), shuffle_seed), make)


def train_labels(
    config_data: ml_collections.ConfigDict, indices: np.ndarray, labels: np.ndarray, reader: SplitReader
) -> dict[str, np.ndarray]:
    """The training labels of examples `indices` (true labels `labels`): {'label'} with random labels or
    label noise applied, and 'label_noisy' when label_noise > 0. The one place both sources take them from."""
    shuffle_seed = int(config_data.shuffle_seed)
    if config_data.random_labels:
        labels = _random_label_table(reader.num_examples, reader.num_classes, shuffle_seed)[indices]
    noise = label_noise_of(config_data)
    if not noise:
        return {"label": labels.astype(np.int32)}
    noisy_N, noisy_label_N = label_noise_table(reader.num_examples, reader.num_classes, noise, shuffle_seed)
    noisy_b = noisy_N[indices]
    return {"label": np.where(noisy_b, noisy_label_N[indices], labels).astype(np.int32), "label_noisy": noisy_b}


def _random_images(indices: np.ndarray, shape: tuple[int, ...], shuffle_seed: int) -> np.ndarray:
    return np.stack(
        [
            np.random.default_rng([shuffle_seed, _RANDOM_INPUTS_TAG, int(i)]).standard_normal(shape, dtype=np.float32)
            for i in indices
        ]
    )


def iterate_steps(make_batch, steps: range, num_workers: int) -> Iterator[dict[str, np.ndarray]]:
    """make_batch over steps, in order; k > 0 workers = grain threads prefetching."""
    if num_workers <= 0:
        return map(make_batch, steps)
    dataset = grain.MapDataset.range(steps.start, steps.stop).map(make_batch)
    return iter(
        dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_workers, prefetch_buffer_size=2 * num_workers))
    )


def _infinite_error(config_data, step: int, num_examples: int, global_batch_size: int):
    return InputError(
        f"infinite data (config.data.infinite=True): step {step} needs stream "
        f"positions [{step * global_batch_size}, {(step + 1) * global_batch_size}) "
        f"but {config_data.name!r} split {config_data.train_split!r} has only "
        f"{num_examples} examples, so at global batch size {global_batch_size} "
        f"some example would be seen twice (at most "
        f"{num_examples // global_batch_size} steps); an endless stream of new examples exists only for "
        f"{sorted(INFINITE_SOURCE_DATASETS)} (deformed digits)."
    )


def train_batches(
    config_data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    start_step: int,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Host-local training batches for steps start_step, start_step + 1, ...

    The batch of step s is a pure function of (config_data, seed, s,
    process_index, process_count); see lazy_jax.data.stream for the layout.
    With data.infinite=True on a digit dataset the batches come from the
    infinite source (`lazy_jax.data.infinite.train_batches`).

    Yields:
      {'image': float32 [b, H, W, C] in [-1, 1], 'label': int32 [b]}
      (+ 'label_noisy': bool [b] when label_noise > 0),
      b = global_batch_size // process_count.
    """
    check_data_config(config_data)
    if has_infinite_source(config_data):
        from lazy_jax.data import infinite  # it builds on this module

        shard = dict(process_index=process_index, process_count=process_count)
        return infinite.train_batches(
            config_data, global_batch_size=global_batch_size, start_step=start_step, seed=seed, **shard
        )
    b = stream.local_batch_size(global_batch_size, process_count, process_index)
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    reader = SplitReader(config_data.name, config_data.train_split, config_data.data_dir, config_data.image_size)
    n = reader.num_examples
    shuffle_seed = int(config_data.shuffle_seed)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        positions = stream.local_positions(step, global_batch_size, process_index, process_count)
        indices = stream.example_indices(positions, n, shuffle_seed, seed)
        images_u8, labels = reader.get(indices)
        if config_data.random_inputs:
            images = _random_images(indices, reader.image_shape, shuffle_seed)
        else:
            images = normalize(images_u8)
        assert images.shape[0] == b
        return {"image": images, **train_labels(config_data, indices, labels, reader)}

    if not config_data.infinite:
        return iterate_steps(make_batch, range(start_step, 2**62), config_data.num_workers)
    max_steps = n // global_batch_size

    def bounded():
        yield from iterate_steps(make_batch, range(start_step, max(start_step, max_steps)), config_data.num_workers)
        raise _infinite_error(config_data, max(start_step, max_steps), n, global_batch_size)

    return bounded()


def eval_batches(
    config_data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    transform_u8: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Host-local batches over the whole eval split once, in dataset order.

    Global batch k holds examples [k*B, (k+1)*B); the last one is padded to B
    with zero images, label 0 and mask 0. Process p gets the contiguous block
    p of each global batch, so all processes yield the same number of batches.
    `transform_u8(images_u8, example_indices)`, if given, changes the decoded uint8 images before
    normalisation (the input corruptions of `lazy_jax.data.corruptions`).

    Yields:
      {'image': float32 [b, H, W, C], 'label': int32 [b], 'mask': float32 [b]}.
    """
    stream.local_batch_size(global_batch_size, process_count, process_index)
    reader = SplitReader(config_data.name, config_data.eval_split, config_data.data_dir, config_data.image_size)
    n = reader.num_examples

    def make_batch(k: int) -> dict[str, np.ndarray]:
        positions = stream.local_positions(k, global_batch_size, process_index, process_count)
        valid = positions < n
        indices = np.where(valid, positions, 0)
        images_u8, labels = reader.get(indices)
        if transform_u8 is not None:
            images_u8 = transform_u8(images_u8, indices)
        images = normalize(images_u8)
        images[~valid] = 0.0
        return {"image": images, "label": np.where(valid, labels, 0).astype(np.int32), "mask": valid.astype(np.float32)}

    return iterate_steps(make_batch, range(-(-n // global_batch_size)), config_data.num_workers)


def dataset_spec(config_data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes and sizes from the tfds metadata (no data scan).

    Returns:
      dict(image_shape=(H, W, C), num_classes=int, num_train=int, num_eval=int).
    """
    check_data_config(config_data)
    builder = sources.load_builder(config_data.name, config_data.data_dir)
    return dict(
        image_shape=_image_shape(builder, config_data.name, config_data.image_size),
        num_classes=int(builder.info.features[_keys(builder)[1]].num_classes),
        num_train=sources.split_size(builder, config_data.name, config_data.train_split),
        num_eval=sources.split_size(builder, config_data.name, config_data.eval_split),
    )


def check_infinite_data(config_data: ml_collections.ConfigDict, total_steps: int, global_batch_size: int) -> None:
    """Raises InputError if `total_steps` would repeat a training example.

    A no-op unless config_data.infinite is True, and for the digit datasets, whose infinite source
    never runs out.
    """
    if not config_data.infinite or has_infinite_source(config_data):
        return
    num_train = dataset_spec(config_data)["num_train"]
    if total_steps * global_batch_size > num_train:
        raise _infinite_error(config_data, num_train // global_batch_size, num_train, global_batch_size)
