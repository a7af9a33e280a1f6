"""Random-access tensorflow-datasets sources, read without TensorFlow.

A dataset is found on disk in the standard tfds layout

    DATA_DIR/<name>[/<config>]/<version>/{dataset_info.json, features.json,
                                          <name>-<split>.array_record-XXXXX-of-YYYYY}

and opened with `tfds.builder_from_directory(...).as_data_source(split)`, which
decodes examples with NumPy/PIL. This is the one code path for real datasets
(`cifar10`, `mnist`, `imagenet2012`, ...) and for the offline datasets this
project prepares itself (`lazy_jax.data.offline`). We do not go through
`tfds.data_source(name)`: for unknown or missing names it consults the tfds
registry, remote indexes and TensorFlow, which gives misleading errors offline.

Names: `name`, `name:1.2.0`, `name/config`, `name/config:1.2.0`. Without a
version the highest prepared version is used.

Data dir: the `data_dir` argument, else $TFDS_DATA_DIR, else
~/tensorflow_datasets (the tfds default). It may be gs://BUCKET/PATH: it is listed through
etils.epath (gcsfs) and the array_record files are read by array_record's own GCS client (both
use the machine's Google application default credentials). Offline datasets are prepared on a
local disk only: for a gs:// data dir, prepare them locally and copy them there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from lazy_jax import workdir as wd
from lazy_jax.data import offline
from lazy_jax.errors import InputError

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def resolve_data_dir(data_dir: str | None = None) -> str:
    """Returns the data dir to use: argument, $TFDS_DATA_DIR, or tfds default (`~` expanded).

    A URI other than gs://BUCKET/... is refused (InputError naming it and where it came from).
    """
    if data_dir:
        text, source = os.fspath(data_dir), "data_dir (config.data.data_dir)"
    elif os.environ.get("TFDS_DATA_DIR"):
        text, source = os.environ["TFDS_DATA_DIR"], "$TFDS_DATA_DIR"
    else:
        return os.path.expanduser(os.path.join("~", "tensorflow_datasets"))
    wd.location_path(text, source)  # refuses other schemes and gs:// without a bucket
    return text if wd.is_remote(text) else os.path.expanduser(text)


def _split_name(name: str) -> tuple[str, str | None]:
    """'cifar10:3.0.2' -> ('cifar10', '3.0.2'); 'mnist' -> ('mnist', None)."""
    if ":" in name:
        base, version = name.split(":", 1)
        if not _VERSION_RE.match(version):
            raise InputError(f"Bad dataset version in {name!r}: expected name:MAJOR.MINOR.PATCH.")
        return base, version
    return name, None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in version.split("."))


def _subdirs(directory: epath.Path) -> list[str]:
    """Names of the directories in `directory` (local or gs://); [] if it is not a directory."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def _prepared_versions(dataset_dir: str) -> list[str]:
    """Versions under dataset_dir (local or gs://) that hold a finished dataset_info.json."""
    directory = epath.Path(dataset_dir)
    return sorted(
        (v for v in _subdirs(directory) if _VERSION_RE.match(v) and (directory / v / "dataset_info.json").is_file()),
        key=_version_key,
    )


def available_datasets(data_dir: str) -> list[str]:
    """Names ('name' or 'name/config') of prepared datasets in data_dir (local or gs://)."""
    found = []
    for name in _subdirs(epath.Path(data_dir)):
        if name.startswith((".", "downloads")):
            continue
        name_dir = epath.Path(data_dir) / name
        if _prepared_versions(os.fspath(name_dir)):
            found.append(name)
        for config in _subdirs(name_dir):
            if not _VERSION_RE.match(config) and _prepared_versions(os.fspath(name_dir / config)):
                found.append(f"{name}/{config}")
    return found


def _missing_dataset_error(name: str, data_dir: str, searched: str) -> InputError:
    available = available_datasets(data_dir)
    return InputError(
        f"Dataset {name!r} not found: no prepared version under {searched!r} "
        f"(data dir {data_dir!r}, from the data_dir argument, else $TFDS_DATA_DIR, "
        f"else ~/tensorflow_datasets). "
        f"Prepared datasets in that data dir: {available or 'none'}. "
        f"Offline datasets this project prepares itself: "
        f"{sorted(offline.OFFLINE_DATASETS)} (automatically on first use, or "
        f"`python -m lazy_jax.data.prepare --dataset=NAME --data_dir=DIR`). "
        f"Other tfds datasets must be built elsewhere in array_record format "
        f"(`tfds build NAME --file_format=array_record`) and copied into the "
        f"data dir."
    )


def dataset_dir(name: str, data_dir: str | None = None) -> str:
    """Directory DATA_DIR/name[/config]/version of a prepared dataset.

    Offline datasets (`digits`, `mnist5k`) are prepared here when missing.

    Raises:
      ValueError: the dataset is not prepared in the data dir.
    """
    data_dir = resolve_data_dir(data_dir)
    base, version = _split_name(name)
    # A data dir that is a file, or under one, is named before anything reads or prepares in it.
    wd.check_writable_dir(data_dir, "data dir", writable=False)
    searched = os.path.join(data_dir, *base.split("/"))
    if base in offline.OFFLINE_DATASETS and version in (None, str(offline.OFFLINE_DATASETS[base].VERSION)):
        prepared = str(offline.OFFLINE_DATASETS[base].VERSION) in _prepared_versions(searched)
        if wd.is_remote(data_dir) and not prepared:
            raise InputError(
                f"Dataset {base!r} is not prepared in the data dir {data_dir!r}, and offline datasets are "
                f"prepared on a local disk only: run `python -m lazy_jax.data.prepare --dataset={base} "
                f"--data_dir=DIR` and copy DIR/{base} to {searched!r} (`gcloud storage cp -r DIR/{base} "
                f"{data_dir}/`)"
            )
        if not wd.is_remote(data_dir):
            if not prepared:  # preparing writes into the data dir: a read-only one is named here
                wd.check_writable_dir(data_dir, "data dir", writable=True)
            offline.prepare(base, data_dir)
    versions = _prepared_versions(searched)
    if version is not None:
        versions = [v for v in versions if v == version]
    if not versions:
        raise _missing_dataset_error(name, data_dir, searched)
    return os.path.join(searched, versions[-1])


def load_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Read-only tfds builder (metadata and data) of a prepared dataset."""
    return tfds.builder_from_directory(dataset_dir(name, data_dir))


def _check_split(builder: tfds.core.DatasetBuilder, name: str, split: str) -> int:
    """Returns the number of examples of `split`; clear errors if none."""
    splits = builder.info.splits
    try:
        num_examples = splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
        available = {k: v.num_examples for k, v in splits.items()}
        raise InputError(
            f"Dataset {name!r} at {os.fspath(builder.data_dir)!r} has no split "
            f"{split!r}; available splits (examples): {available}. "
            f'tfds slicing like "train[:90%]" is allowed.'
        ) from e
    if num_examples == 0:
        raise InputError(
            f"Split {split!r} of dataset {name!r} at {os.fspath(builder.data_dir)!r} is empty (0 examples)."
        )
    return num_examples


def split_size(builder: tfds.core.DatasetBuilder, name: str, split: str) -> int:
    """Number of examples of a split, from the metadata (no data scan)."""
    return _check_split(builder, name, split)


def _prepare_again(name: str, dataset_dir: str) -> str:
    """How to replace the files of a prepared dataset (`name` as the config gives it)."""
    base, _ = _split_name(name)
    data_dir = os.path.dirname(dataset_dir)
    for _ in base.split("/"):
        data_dir = os.path.dirname(data_dir)
    from lazy_jax.data import text_corpus  # pylint: disable=g-import-not-at-top  (it imports this module)

    if base in offline.OFFLINE_DATASETS or base in text_corpus.OFFLINE_TEXT_DATASETS:
        return (
            f"prepare it again: delete {dataset_dir!r} and run `python -m lazy_jax.data.prepare --dataset={base} "
            f"--data_dir={data_dir}` (or start the run again, which prepares it on first use)"
        )
    return f"build it again (`tfds build {base} --file_format=array_record`) and put it in place of {dataset_dir!r}"


class CheckedSource(Sequence):
    """A tfds data source of one split whose read errors name the dataset, the split and the remedy.

    array_record raises a bare RuntimeError ("Corrupted Riegeli/records file", "open() failed",
    "ArrayRecord file should be at least 64KB big") deep in its reader when a file is truncated,
    corrupt or missing, e.g. after a copy that did not finish; this turns it into an InputError.
    """

    def __init__(self, source, name: str, split: str, dataset_dir: str):
        self._source, self._name, self._split, self._dir = source, name, split, dataset_dir

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        return self._read(lambda: self._source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return self._read(lambda: self._source.__getitems__(indices))

    def _read(self, read):
        try:
            return read()
        except (RuntimeError, OSError) as e:
            raise InputError(
                f"Dataset {self._name!r} split {self._split!r} cannot be read from {self._dir!r} "
                f"({type(e).__name__}: {' '.join(str(e).split())}): its array_record files are truncated, corrupt "
                f"or missing; {_prepare_again(self._name, self._dir)}"
            ) from e


def open_split(builder: tfds.core.DatasetBuilder, name: str, split: str) -> CheckedSource:
    """The random-access source of `split` of a prepared dataset, read errors named (see CheckedSource)."""
    return CheckedSource(builder.as_data_source(split=split), name, split, os.fspath(builder.data_dir))


def load_source(name: str, split: str, data_dir: str | None = None) -> Sequence[dict[str, Any]]:
    """Random-access source of decoded examples (dicts of NumPy values).

    Supports `len(source)`, `source[i]` and `source.__getitems__(indices)`.

    Args:
      name: tfds name, e.g. 'mnist5k', 'cifar10', 'imagenet2012:5.1.0'.
      split: tfds split, e.g. 'train', 'test', 'train[:90%]'.
      data_dir: tfds data dir; None = $TFDS_DATA_DIR, else ~/tensorflow_datasets.

    Raises:
      ValueError: unknown / unprepared dataset, missing or empty split, or a
        dataset stored in a format without random access (tfrecord); reads
        raise InputError when its files are truncated or corrupt.
    """
    builder = load_builder(name, data_dir)
    _check_split(builder, name, split)
    file_format = builder.info.file_format
    if file_format is not None and file_format.value not in ("array_record", "parquet"):
        raise InputError(
            f"Dataset {name!r} at {os.fspath(builder.data_dir)!r} is stored as "
            f"{file_format.value}; random access needs array_record. Rebuild it "
            f"with `tfds build {name} --file_format=array_record`."
        )
    return open_split(builder, name, split)
