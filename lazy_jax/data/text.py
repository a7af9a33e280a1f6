"""T5 span-corruption batches from tfds text datasets, with exact resume.

Path of a batch: tfds array_record source (lazy_jax.data.sources; field 'text')
-> SentencePiece ids (lazy_jax.data.tokenizer) -> raw chunks of the length
`random_spans_helper` gives (568 tokens for 512 inputs) -> span corruption
(lazy_jax.data.span_corruption) -> rows with the t5x feature names.

`config_data` fields (see `default_config`):
  name                    'pydocs' (prepared here, offline) or 'c4/en' (a tfds
                          array_record copy in the data dir); any tfds dataset
                          with a 'text' feature works.
  train_split             'train'.
  eval_split              'validation'.
  data_dir                tfds data dir; None = $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  spm_path                SentencePiece model file; None = the model trained on the
                          pydocs corpus when it was prepared (only for pydocs; c4/en
                          needs T5's sentencepiece.model). 100 extra ids (sentinels)
                          are appended after its pieces, as in T5.
  inputs_length           512: encoder length. The raw chunk length comes from
                          `random_spans_helper` (512 -> 568 raw tokens).
  targets_length          114: decoder length; must be >= what the helper needs.
  noise_density           0.15.
  mean_noise_span_length  3.0.
  pack                    False: T5's own span_corruption: documents of the window
                          are concatenated, split into raw-length chunks, one
                          corrupted example per row, padded with 0.
                          True: documents are split on their own (no raw
                          concatenation across documents), and the corrupted
                          examples are packed into rows with
                          encoder/decoder_segment_ids and _positions (t5x packing).
  truncate                False: an example longer than a row is an error; True: cut.
  shuffle_seed            0; with the `seed` argument it fixes the document order
                          and the noise.
  add_bible_kjv           False; True (only with name 'pydocs') reads 'pydocs_kjv':
                          pydocs plus Debian's King James Bible text (the bible-kjv
                          packages must be installed when it is prepared).

Exact resume. The training stream is an endless sequence of documents: epoch e
is a seeded permutation of the split. Global rows are cut into windows of
WINDOW_ROWS rows; window w reads documents from stream position w * D on (D =
documents per window: WINDOW_ROWS times the documents per row that the
pipeline gives on a fixed sample of the split) and turns them into its rows,
reading past w * D + D only if its rows are not full yet (then the next window
repeats a few documents) and dropping what is left when they are (so an epoch is
about, not exactly, one pass over the split). So a row is a pure
function of (shuffle_seed, seed, global row index), the batch of step s holds
global rows [s*B, (s+1)*B), process p of P gets rows [s*B + p*b, s*B + (p+1)*b)
(b = B / P), and the process-local batches, concatenated, are the
single-process batch.

Eval: the eval split once in file order, through the same pipeline with a fixed
noise seed; the last global batch is padded with all-zero rows and 'mask' 0.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from lazy_jax.data import offline, pydocs, sources, span_corruption, stream
from lazy_jax.data import tokenizer as tokenizer_lib

TEXT_FEATURE = "text"
SPM_FILENAME = "sentencepiece.model"
SPM_PIECES = 4000  # Offline vocabulary: 4000 pieces + 100 extra ids = 4100.
SPM_MAX_SENTENCES = 30_000
WINDOW_ROWS = 64
SAMPLE_DOCUMENTS = 256
# Splits up to this many documents are tokenized once and kept in memory.
CACHE_MAX_DOCUMENTS = 200_000
EVAL_NOISE_SEED = 0xE7A1
_TRAIN_NOISE_TAG = 0x7A1
_LARGE_SPLIT = 2**25  # Above this, document order uses index_shuffle (no permutation array).


def default_config() -> ml_collections.ConfigDict:
    """The `config.data` fields of a text task with their defaults (documented above)."""
    return ml_collections.ConfigDict(
        dict(
            name="pydocs",
            train_split="train",
            eval_split="validation",
            data_dir=ml_collections.config_dict.placeholder(str),
            spm_path=ml_collections.config_dict.placeholder(str),
            inputs_length=512,
            targets_length=114,
            noise_density=0.15,
            mean_noise_span_length=3.0,
            pack=False,
            truncate=False,
            shuffle_seed=0,
            add_bible_kjv=False,
        )
    )


# ---------------------------------------------------------------------------
# The offline pydocs datasets (tfds, array_record) and their SentencePiece model.


class _PydocsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The Python standard library's documentation as a text dataset (see lazy_jax.data.pydocs)."""

    name = "pydocs"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    ADD_BIBLE_KJV = False

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # As lazy_jax.data.offline: no checksums/metadata to look up.
        return None

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
                    "text": tfds.features.Text(),
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
            yield key, {"text": text, "key": key}


class _PydocsKjvBuilder(_PydocsBuilder, skip_registration=True):
    name = "pydocs_kjv"
    ADD_BIBLE_KJV = True


OFFLINE_TEXT_DATASETS = {"pydocs": _PydocsBuilder, "pydocs_kjv": _PydocsKjvBuilder}


def _version_dir(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, name, str(OFFLINE_TEXT_DATASETS[name].VERSION))


def _is_prepared(name: str, data_dir: str) -> bool:
    version_dir = _version_dir(name, data_dir)
    return all(os.path.isfile(os.path.join(version_dir, f)) for f in ("dataset_info.json", SPM_FILENAME))


def train_tokenizer(train_documents: Sequence[str], model_path: str) -> None:
    """Trains the offline SentencePiece model (unigram, SPM_PIECES pieces, T5 ids) on lines of text."""
    lines = [line.strip() for doc in train_documents for line in doc.splitlines()]
    tokenizer_lib.train_sentencepiece(lines, model_path, vocab_size=SPM_PIECES, max_sentences=SPM_MAX_SENTENCES)


def prepare_pydocs(data_dir: str | None = None, add_bible_kjv: bool = False) -> bool:
    """Prepares 'pydocs' (or 'pydocs_kjv') and its SentencePiece model in `data_dir`.

    Idempotent; builds in a temporary directory inside the data dir and renames
    the finished version directory into place. Returns True if built now.
    """
    name = "pydocs_kjv" if add_bible_kjv else "pydocs"
    data_dir = sources.resolve_data_dir(data_dir)
    if _is_prepared(name, data_dir):
        return False
    if add_bible_kjv:
        pydocs.require_bible_kjv()  # Fail before the (longer) build.
    start = time.perf_counter()

    def add_tokenizer(builder, built_dir):
        train_tokenizer([text for _, text in builder.split_documents["train"]], os.path.join(built_dir, SPM_FILENAME))

    built = offline.build_atomically(
        name, OFFLINE_TEXT_DATASETS[name], data_dir, _version_dir(name, data_dir), finish=add_tokenizer
    )
    logging.info("Prepared %r in %.1f s", name, time.perf_counter() - start)
    return built


def _dataset_name(config_data) -> str:
    if config_data.add_bible_kjv:
        if config_data.name not in ("pydocs", "pydocs_kjv"):
            raise ValueError(f'add_bible_kjv=True only goes with name "pydocs", got {config_data.name!r}')
        return "pydocs_kjv"
    return config_data.name


def _prepared_dataset_dir(config_data) -> str:
    """Version dir of the dataset; offline ones are prepared on first use."""
    name = _dataset_name(config_data)
    if name in OFFLINE_TEXT_DATASETS:
        prepare_pydocs(config_data.data_dir, add_bible_kjv=name == "pydocs_kjv")
    return sources.dataset_dir(name, config_data.data_dir)


def load_tokenizer(config_data) -> tokenizer_lib.SentencePieceTokenizer:
    """The configured SentencePiece model with T5's 100 extra ids."""
    if config_data.spm_path:
        return _tokenizer(os.path.expanduser(config_data.spm_path))
    if _dataset_name(config_data) not in OFFLINE_TEXT_DATASETS:
        raise ValueError(
            f"config.data.spm_path is None, which means the offline pydocs vocabulary, but "
            f"dataset {config_data.name!r} needs its own: set spm_path to a SentencePiece "
            "model, e.g. T5's cc_all.32000/sentencepiece.model"
        )
    return _tokenizer(os.path.join(_prepared_dataset_dir(config_data), SPM_FILENAME))


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> tokenizer_lib.SentencePieceTokenizer:
    return tokenizer_lib.SentencePieceTokenizer(path)


# ---------------------------------------------------------------------------
# Documents -> rows.


class _Lengths:
    """Row geometry from the config, checked once."""

    def __init__(self, config_data, vocab_size: int, num_sentinels: int):
        self.inputs_length = int(config_data.inputs_length)
        self.targets_length = int(config_data.targets_length)
        self.density = float(config_data.noise_density)
        self.mean_span = float(config_data.mean_noise_span_length)
        self.raw_length, needed_targets = span_corruption.random_spans_helper(
            self.inputs_length, self.density, self.mean_span
        )
        if self.targets_length < needed_targets:
            raise ValueError(
                f"targets_length={self.targets_length} is too short: inputs_length="
                f"{self.inputs_length} with noise_density={self.density} and "
                f"mean_noise_span_length={self.mean_span} gives targets of {needed_targets} tokens"
            )
        spans = span_corruption.num_noise_spans(self.raw_length, self.density, self.mean_span)
        if spans > num_sentinels:
            raise ValueError(
                f"chunks of {self.raw_length} tokens need up to {spans} sentinels but the "
                f"vocabulary has {num_sentinels} extra ids"
            )
        self.vocab_size = vocab_size
        self.num_sentinels = num_sentinels
        self.pack = bool(config_data.pack)
        self.truncate = bool(config_data.truncate)

    def corrupt(self, chunk: np.ndarray, key: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return span_corruption.span_corrupt(
            chunk,
            np.random.default_rng(list(key)),
            vocab_size=self.vocab_size,
            num_sentinels=self.num_sentinels,
            noise_density=self.density,
            mean_noise_span_length=self.mean_span,
        )

    def to_batch(self, rows: list[list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, np.ndarray]:
        if self.pack:
            return span_corruption.pack_rows(rows, self.inputs_length, self.targets_length)
        return span_corruption.pad_rows(
            [row[0] for row in rows], self.inputs_length, self.targets_length, self.truncate
        )


def _rows(
    documents: Iterator[np.ndarray], lengths: _Lengths, key: Sequence[int]
) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Rows (lists of corrupted examples) from a stream of tokenized documents.

    Example i of the stream draws its noise from a Generator keyed on (*key, i).
    """
    counter = itertools.count()
    raw = lengths.raw_length
    if not lengths.pack:
        # T5: concatenate documents, split into raw-length chunks, one per row.
        buffer, size = [], 0
        for tokens in documents:
            buffer.append(tokens)
            size += tokens.size
            if size >= raw:
                flat = np.concatenate(buffer)
                full = flat.size // raw * raw
                for start in range(0, full, raw):
                    yield [lengths.corrupt(flat[start : start + raw], (*key, next(counter)))]
                buffer, size = [flat[full:]], flat.size - full
        if size:
            yield [lengths.corrupt(np.concatenate(buffer), (*key, next(counter)))]
        return
    # Packing: each document split on its own; examples packed in order into rows.
    row, used_inputs, used_targets = [], 0, 0
    for tokens in documents:
        for start in range(0, tokens.size, raw):
            example = lengths.corrupt(tokens[start : start + raw], (*key, next(counter)))
            if not span_corruption.example_fits(
                used_inputs, used_targets, example, lengths.inputs_length, lengths.targets_length
            ):
                yield row
                row, used_inputs, used_targets = [], 0, 0
            row.append(example)
            used_inputs += example[0].size
            used_targets += example[1].size
    if row:
        yield row


class _DocumentReader:
    """Tokenized documents of one split by index; small splits are tokenized once."""

    def __init__(self, dataset_dir: str, name: str, split: str, tokenizer: tokenizer_lib.SentencePieceTokenizer):
        builder = tfds.builder_from_directory(dataset_dir)
        self.num_documents = sources.split_size(builder, name, split)
        if TEXT_FEATURE not in builder.info.features:
            raise ValueError(
                f"dataset {name!r} has no {TEXT_FEATURE!r} feature; it has {sorted(builder.info.features)}"
            )
        self._source = builder.as_data_source(split=split)
        self._tokenizer = tokenizer
        self._all = None
        if self.num_documents <= CACHE_MAX_DOCUMENTS:
            self._all = _tokenize_split(dataset_dir, split, tokenizer.path, self)

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        if self._all is not None:
            return [self._all[i] for i in indices]
        return self.tokenize(indices)

    def tokenize(self, indices: Sequence[int]) -> list[np.ndarray]:
        examples = self._source.__getitems__([int(i) for i in indices])
        texts = [_as_str(ex[TEXT_FEATURE]) for ex in examples]
        return self._tokenizer.encode_batch(texts)


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tokenize_split(dataset_dir, split, spm_path, reader: _DocumentReader) -> list[np.ndarray]:
    """All documents of a split, tokenized once per (dataset, split, vocabulary) per process."""
    key = (dataset_dir, split, spm_path)
    if key not in _TOKENIZED:
        _remember(
            _TOKENIZED,
            key,
            [
                t
                for start in range(0, reader.num_documents, 1024)
                for t in reader.tokenize(range(start, min(start + 1024, reader.num_documents)))
            ],
            max_entries=4,
        )
    return _TOKENIZED[key]


def _remember(cache: dict, key, value, max_entries: int) -> None:
    """Stores `value`, dropping the oldest entries beyond `max_entries`."""
    cache[key] = value
    while len(cache) > max_entries:
        cache.pop(next(iter(cache)))


_TOKENIZED: dict[tuple[str, str, str], list[np.ndarray]] = {}


def _documents_at(positions: np.ndarray, num_documents: int, shuffle_seed: int, seed: int) -> np.ndarray:
    """Document index at each training stream position (per-epoch permutations)."""
    if num_documents <= _LARGE_SPLIT:
        return stream.example_indices(positions, num_documents, shuffle_seed, seed)
    from grain.experimental import index_shuffle  # pylint: disable=g-import-not-at-top

    epochs, offsets = np.divmod(positions, num_documents)
    return np.asarray(
        [
            index_shuffle(
                int(o),
                max_index=num_documents - 1,
                seed=int(np.random.default_rng([shuffle_seed, seed, int(e)]).integers(2**31)),
                rounds=8,
            )
            for e, o in zip(epochs, offsets)
        ],
        np.int64,
    )


def _documents_per_row(reader: _DocumentReader, lengths: _Lengths) -> float:
    """Documents one row takes on average: the pipeline run on a fixed, evenly spaced sample."""
    sample = np.unique(np.linspace(0, reader.num_documents - 1, SAMPLE_DOCUMENTS).astype(np.int64))
    documents = reader.read(sample)
    num_rows = sum(1 for _ in _rows(iter(documents), lengths, (_TRAIN_NOISE_TAG,)))
    return len(documents) / max(1, num_rows)


class _TrainWindows:
    """Window w -> its WINDOW_ROWS rows, a pure function of (shuffle_seed, seed, w)."""

    def __init__(self, reader: _DocumentReader, lengths: _Lengths, shuffle_seed: int, seed: int):
        self._reader = reader
        self._lengths = lengths
        self._shuffle_seed, self._seed = shuffle_seed, seed
        # Documents per window so that, on average, the window just fills its rows.
        self.documents_per_window = max(1, round(WINDOW_ROWS * _documents_per_row(reader, lengths)))
        self._cache: collections.OrderedDict[int, list] = collections.OrderedDict()

    def _documents(self, start: int) -> Iterator[np.ndarray]:
        """Tokenized documents from stream position `start` on, fetched in blocks."""
        block = self.documents_per_window
        for block_start in itertools.count(start, block):
            positions = np.arange(block_start, block_start + block, dtype=np.int64)
            indices = _documents_at(positions, self._reader.num_documents, self._shuffle_seed, self._seed)
            yield from self._reader.read(indices)

    def rows(self, window: int) -> list:
        if window not in self._cache:
            documents = self._documents(window * self.documents_per_window)
            key = (_TRAIN_NOISE_TAG, self._shuffle_seed, self._seed, window)
            self._cache[window] = list(itertools.islice(_rows(documents, self._lengths, key), WINDOW_ROWS))
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return self._cache[window]

    def batch(self, global_rows: np.ndarray) -> dict[str, np.ndarray]:
        rows = [self.rows(int(g) // WINDOW_ROWS)[int(g) % WINDOW_ROWS] for g in global_rows]
        return self._lengths.to_batch(rows)


def _pipeline(config_data, split: str) -> tuple[_DocumentReader, _Lengths]:
    dataset_dir = _prepared_dataset_dir(config_data)
    tokenizer = load_tokenizer(config_data)
    reader = _DocumentReader(dataset_dir, _dataset_name(config_data), split, tokenizer)
    lengths = _Lengths(config_data, tokenizer.vocab_size, tokenizer.extra_ids)
    return reader, lengths


def _check_process(process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count}).")


def text_train_batches(
    config_data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    start_step: int,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Host-local span-corruption batches for steps start_step, start_step + 1, ...

    Yields int32 [b, inputs_length] 'encoder_input_tokens', [b, targets_length]
    'decoder_input_tokens' / 'decoder_target_tokens', float32 'decoder_loss_weights',
    and with pack=True also 'encoder_segment_ids', 'encoder_positions',
    'decoder_segment_ids', 'decoder_positions'; b = global_batch_size // process_count.
    """
    b = stream.local_batch_size(global_batch_size, process_count)
    _check_process(process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    reader, lengths = _pipeline(config_data, config_data.train_split)
    windows = _TrainWindows(reader, lengths, int(config_data.shuffle_seed), int(seed))

    def batches():
        for step in itertools.count(start_step):
            first = step * global_batch_size + process_index * b
            yield windows.batch(np.arange(first, first + b))

    return batches()


def text_eval_batches(
    config_data: ml_collections.ConfigDict, *, global_batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Host-local batches over the whole eval split once, documents in file order.

    Global batch k holds rows [k*B, (k+1)*B) of the split's rows; the last one is
    padded with all-zero rows. Process p gets block p of each global batch, so all
    processes yield the same number of batches. Adds 'mask' float32 [b]: 1 for real rows.
    """
    b = stream.local_batch_size(global_batch_size, process_count)
    _check_process(process_index, process_count)
    rows, lengths = _eval_rows(config_data)
    num_batches = -(-len(rows) // global_batch_size)

    def batches():
        for k in range(num_batches):
            first = k * global_batch_size + process_index * b
            local = rows[first : first + b]
            mask = np.zeros(b, np.float32)
            mask[: len(local)] = 1.0
            batch = lengths.to_batch(
                local + [[]] * (b - len(local)) if lengths.pack else local + [[_EMPTY]] * (b - len(local))
            )
            batch["mask"] = mask
            yield batch

    return batches()


_EMPTY = (np.zeros(0, np.int32), np.zeros(0, np.int32))


def _eval_rows(config_data) -> tuple[list, _Lengths]:
    """The eval split's corrupted rows; the same at every eval, so made once per process for
    splits of up to CACHE_MAX_DOCUMENTS documents (larger ones are tokenized again each eval)."""
    key = (
        _prepared_dataset_dir(config_data),
        config_data.eval_split,
        load_tokenizer(config_data).path,
        *(config_data[k] for k in _ROW_GEOMETRY_KEYS),
    )
    if key in _EVAL_ROWS:
        return _EVAL_ROWS[key]
    reader, lengths = _pipeline(config_data, config_data.eval_split)

    def documents():
        for start in range(0, reader.num_documents, 1024):
            yield from reader.read(range(start, min(start + 1024, reader.num_documents)))

    made = list(_rows(documents(), lengths, (EVAL_NOISE_SEED,))), lengths
    if reader.num_documents <= CACHE_MAX_DOCUMENTS:
        _remember(_EVAL_ROWS, key, made, max_entries=2)
    return made


_ROW_GEOMETRY_KEYS = ("inputs_length", "targets_length", "noise_density", "mean_noise_span_length", "pack", "truncate")
_EVAL_ROWS: dict[tuple, tuple[list, _Lengths]] = {}


def text_dataset_spec(config_data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Vocabulary and lengths (prepares pydocs if needed; reads no documents).

    Returns:
      dict(vocab_size (pieces + extra ids), padded_vocab_size (multiple of 128),
      inputs_length, targets_length, raw_length (raw tokens per chunk),
      num_train_documents, num_eval_documents).
    """
    dataset_dir = _prepared_dataset_dir(config_data)
    tokenizer = load_tokenizer(config_data)
    lengths = _Lengths(config_data, tokenizer.vocab_size, tokenizer.extra_ids)
    builder = tfds.builder_from_directory(dataset_dir)
    name = _dataset_name(config_data)
    return dict(
        vocab_size=tokenizer.vocab_size,
        padded_vocab_size=tokenizer_lib.padded_vocab_size(tokenizer.vocab_size),
        inputs_length=lengths.inputs_length,
        targets_length=lengths.targets_length,
        raw_length=lengths.raw_length,
        num_train_documents=sources.split_size(builder, name, config_data.train_split),
        num_eval_documents=sources.split_size(builder, name, config_data.eval_split),
    )


def corpus_word_count(config_data: ml_collections.ConfigDict, split: str) -> int:
    """Whitespace-separated words of a split (for reports and tests)."""
    builder = tfds.builder_from_directory(_prepared_dataset_dir(config_data))
    source = builder.as_data_source(split=split)
    return sum(len(_as_str(source[i][TEXT_FEATURE]).split()) for i in range(len(source)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the offline pydocs text dataset and its SentencePiece model.")
    parser.add_argument("--prepare", action="store_true", required=True)
    parser.add_argument(
        "--data_dir", default=None, help="tfds data dir (default $TFDS_DATA_DIR, else ~/tensorflow_datasets)"
    )
    parser.add_argument(
        "--add_bible_kjv", action="store_true", help="also add Debian's bible-kjv text (dataset 'pydocs_kjv')"
    )
    args = parser.parse_args(argv)
    data_dir = sources.resolve_data_dir(args.data_dir)
    name = "pydocs_kjv" if args.add_bible_kjv else "pydocs"
    start = time.perf_counter()
    built = prepare_pydocs(data_dir, add_bible_kjv=args.add_bible_kjv)
    print(
        f"{name!r} {'prepared' if built else 'already prepared'} in "
        f"{_version_dir(name, data_dir)} ({time.perf_counter() - start:.1f} s)."
    )


if __name__ == "__main__":
    main()
