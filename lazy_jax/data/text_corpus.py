"""The text datasets on disk: the offline pydocs corpus, its SentencePiece model, and which
dataset directory and tokenizer a text config names.

'pydocs' is the Python standard library's documentation (lazy_jax.data.pydocs); 'pydocs_kjv'
adds Debian's King James Bible text. Both are tfds array_record datasets built here, with a
SentencePiece model (SPM_PIECES pieces, T5's ids) trained on their train split and stored next to
them. `prepare_pydocs` builds one atomically; the loaders call it on first use, and
`python -m lazy_jax.data.prepare --dataset=pydocs` (or pydocs_kjv) calls it ahead. Any other
tfds dataset with a TEXT_FEATURE field (c4/en) is read where it is, with the model at spm_path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import ml_collections
import tensorflow_datasets as tfds
from etils import epath

from lazy_jax import workdir as wd
from lazy_jax.data import offline, pydocs, sources
from lazy_jax.data import tokenizer as tokenizer_lib
from lazy_jax.errors import InputError

TEXT_FEATURE = "text"
SPM_FILENAME = "sentencepiece.model"
SPM_PIECES = 4000  # Offline vocabulary: 4000 pieces + 100 extra ids = 4100.
SPM_MAX_SENTENCES = 30_000


class _PydocsBuilder(offline.OfflineBuilder, skip_registration=True):
    """The Python standard library's documentation as a text dataset (see lazy_jax.data.pydocs)."""

    name = "pydocs"
    ADD_BIBLE_KJV = False

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Docstrings of the Python standard library (modules, classes, functions, "
                "methods) and pydoc help topics, one document per module / topic, sorted by "
                "key; split by a hash of the key (5% validation)."
                + (" Plus the King James Bible, one document per chapter." if self.ADD_BIBLE_KJV else "")
            ),
            features=tfds.features.FeaturesDict(
                {
                    TEXT_FEATURE: tfds.features.Text(),
                    "key": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        documents = pydocs.harvest_stdlib_in_subprocess()
        if self.ADD_BIBLE_KJV:
            documents.update(pydocs.read_bible_kjv())
        self.split_documents = pydocs.split_documents(documents)
        return {split: self._generate_examples(docs) for split, docs in self.split_documents.items()}

    def _generate_examples(self, docs):
        for key, text in docs:
            yield key, {TEXT_FEATURE: text, "key": key}


class _PydocsKjvBuilder(_PydocsBuilder, skip_registration=True):
    name = "pydocs_kjv"
    ADD_BIBLE_KJV = True


OFFLINE_TEXT_DATASETS = {"pydocs": _PydocsBuilder, "pydocs_kjv": _PydocsKjvBuilder}


def version_dir(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, name, str(OFFLINE_TEXT_DATASETS[name].VERSION))


def _is_prepared(name: str, data_dir: str) -> bool:
    """Whether the data dir (local or gs://) holds the finished dataset and its SentencePiece model."""
    return all((epath.Path(version_dir(name, data_dir)) / f).is_file() for f in ("dataset_info.json", SPM_FILENAME))


def train_tokenizer(train_documents: Sequence[str], model_path: str) -> None:
    """Trains the offline SentencePiece model (unigram, SPM_PIECES pieces, T5 ids) on lines of text."""
    lines = [line.strip() for doc in train_documents for line in doc.splitlines()]
    tokenizer_lib.train_sentencepiece(lines, model_path, vocab_size=SPM_PIECES, max_sentences=SPM_MAX_SENTENCES)


def prepare_pydocs(data_dir: str | None = None, add_bible_kjv: bool = False) -> bool:
    """Prepares 'pydocs' (or 'pydocs_kjv') and its SentencePiece model in `data_dir`.

    Idempotent; builds in a temporary directory inside the data dir and renames
    the finished version directory into place. Returns True if built now. A gs://
    data dir is only read: an object store has no atomic rename to build in, so a
    dataset missing there is an InputError saying to prepare locally and copy.
    """
    name = "pydocs_kjv" if add_bible_kjv else "pydocs"
    data_dir = sources.resolve_data_dir(data_dir)
    if wd.is_remote(data_dir):
        if _is_prepared(name, data_dir):
            return False
        raise InputError(
            f"Dataset {name!r} is not prepared in the data dir {data_dir!r}, and offline datasets are prepared on "
            f"a local disk only: run `python -m lazy_jax.data.prepare --dataset={name} --data_dir=DIR` and copy "
            f"DIR/{name} to {data_dir}/{name} (`gcloud storage cp -r DIR/{name} {data_dir}/`)"
        )
    offline.remove_abandoned_builds(name, data_dir)  # temporary directories of killed preparations
    if _is_prepared(name, data_dir):
        return False
    if add_bible_kjv:
        pydocs.require_bible_kjv()  # Fail before the (longer) build.
    start = time.perf_counter()

    def add_tokenizer(builder, built_dir):
        train_tokenizer([text for _, text in builder.split_documents["train"]], os.path.join(built_dir, SPM_FILENAME))

    built = offline.build_atomically(
        name, OFFLINE_TEXT_DATASETS[name], data_dir, version_dir(name, data_dir), finish=add_tokenizer
    )
    logging.info("Prepared %r in %.1f s", name, time.perf_counter() - start)
    return built


def dataset_name(config_data: ml_collections.ConfigDict) -> str:
    """The tfds name the config reads: name, or 'pydocs_kjv' for pydocs with add_bible_kjv."""
    if config_data.add_bible_kjv:
        if config_data.name not in ("pydocs", "pydocs_kjv"):
            raise InputError(f'add_bible_kjv=True only goes with name "pydocs", got {config_data.name!r}')
        return "pydocs_kjv"
    return config_data.name


def prepared_dataset_dir(config_data: ml_collections.ConfigDict) -> str:
    """Version dir of the dataset; offline ones are prepared on first use."""
    name = dataset_name(config_data)
    if name in OFFLINE_TEXT_DATASETS:
        prepare_pydocs(config_data.data_dir, add_bible_kjv=name == "pydocs_kjv")
    return sources.dataset_dir(name, config_data.data_dir)


def load_tokenizer(config_data: ml_collections.ConfigDict) -> tokenizer_lib.SentencePieceTokenizer:
    """The configured SentencePiece model (spm_path, else the prepared corpus's) with T5's 100 extra ids."""
    if config_data.spm_path:
        return tokenizer_lib.load(os.path.expanduser(config_data.spm_path))
    if dataset_name(config_data) not in OFFLINE_TEXT_DATASETS:
        raise InputError(
            f"config.data.spm_path is None, which means the offline pydocs vocabulary, but "
            f"dataset {config_data.name!r} needs its own: set spm_path to a SentencePiece "
            "model, e.g. T5's cc_all.32000/sentencepiece.model"
        )
    return tokenizer_lib.load(os.path.join(prepared_dataset_dir(config_data), SPM_FILENAME))


def as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def corpus_word_count(config_data: ml_collections.ConfigDict, split: str) -> int:
    """Whitespace-separated words of a split (for reports and tests)."""
    builder = tfds.builder_from_directory(prepared_dataset_dir(config_data))
    source = sources.open_split(builder, dataset_name(config_data), split)
    return sum(len(as_str(source[i][TEXT_FEATURE]).split()) for i in range(len(source)))
