"""Prepares an offline dataset as a tfds array_record dataset.

    python -m lazy_jax.data.prepare --dataset=mnist5k --data_dir=DIR
    python -m lazy_jax.data.prepare --dataset=pydocs            # text + its SentencePiece model

Images: digits, mnist5k (lazy_jax.data.offline). Text: pydocs, the Python standard library's
documentation, with the SentencePiece model trained on its train split (4000 pieces + 100
sentinels), and pydocs_kjv (pydocs plus Debian's bible-kjv text) (lazy_jax.data.text_corpus).
Without --data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets. Idempotent: an
already prepared dataset is left alone. The loaders also prepare these
datasets on first use, so this is only needed to prepare ahead (e.g. once on
a shared file system before a multi-host run).
"""

from __future__ import annotations

import time

from absl import app, flags

from lazy_jax.data import offline, sources, text_corpus

_DATASET = flags.DEFINE_enum(
    "dataset",
    None,
    sorted(offline.OFFLINE_DATASETS) + list(text_corpus.OFFLINE_TEXT_DATASETS),
    "Offline dataset to prepare.",
    required=True,
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir (default $TFDS_DATA_DIR, else ~/tensorflow_datasets).")


def prepare(name: str, data_dir: str) -> tuple[bool, str]:
    """Prepares `name` in `data_dir`; returns (built now, its version directory)."""
    if name in text_corpus.OFFLINE_TEXT_DATASETS:
        built = text_corpus.prepare_pydocs(data_dir, add_bible_kjv=name == "pydocs_kjv")
        return built, text_corpus.version_dir(name, data_dir)
    return offline.prepare(name, data_dir), offline.version_dir(name, data_dir)


def main(argv):
    del argv
    data_dir = sources.resolve_data_dir(_DATA_DIR.value)
    name = _DATASET.value
    start = time.perf_counter()
    built, version_dir = prepare(name, data_dir)
    if built:
        print(f"Prepared {name!r} in {version_dir} ({time.perf_counter() - start:.1f} s).")
    else:
        print(f"{name!r} is already prepared in {version_dir}; nothing to do.")


if __name__ == "__main__":
    app.run(main)
