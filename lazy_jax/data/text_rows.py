"""Tokenized documents -> span-corrupted rows, and the training stream's windows of rows.

A row is a list of corrupted examples (inputs, targets): one with pack=False (T5's own
span_corruption: documents concatenated and cut into raw-length chunks), as many as fit with
pack=True (each document split on its own, examples packed in order; t5x packing).

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
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from lazy_jax.data import cache, sources, span_corruption, stream
from lazy_jax.data import tokenizer as tokenizer_lib
from lazy_jax.data.text_corpus import TEXT_FEATURE, as_str
from lazy_jax.errors import InputError

WINDOW_ROWS = 64
SAMPLE_DOCUMENTS = 256
# Splits up to this many documents are tokenized once and kept in memory.
CACHE_MAX_DOCUMENTS = 200_000
_READ_BLOCK = 1024  # Documents read and tokenized at a time.
_TRAIN_NOISE_TAG = 0x7A1
_LARGE_SPLIT = 2**25  # Above this, document order uses index_shuffle (no permutation array).

Example = tuple[np.ndarray, np.ndarray]  # (inputs, targets) of one corrupted chunk.
Row = list[Example]

_TOKENIZED_SPLITS = cache.BoundedCache("text.tokenized_splits", max_entries=4)
# A training batch touches one or two windows; a few more serve other iterators of the process.
_TRAIN_WINDOWS = cache.BoundedCache("text.train_windows", max_entries=8)


class RowGeometry:
    """Row lengths and noise settings from the config, checked once."""

    def __init__(self, config_data: ml_collections.ConfigDict, vocab_size: int, num_sentinels: int):
        self.inputs_length = int(config_data.inputs_length)
        self.targets_length = int(config_data.targets_length)
        self.density = float(config_data.noise_density)
        self.mean_span = float(config_data.mean_noise_span_length)
        self.raw_length, needed_targets = span_corruption.random_spans_helper(
            self.inputs_length, self.density, self.mean_span
        )
        if self.targets_length < needed_targets:
            raise InputError(
                f"targets_length={self.targets_length} is too short: inputs_length="
                f"{self.inputs_length} with noise_density={self.density} and "
                f"mean_noise_span_length={self.mean_span} gives targets of {needed_targets} tokens"
            )
        spans = span_corruption.num_noise_spans(self.raw_length, self.density, self.mean_span)
        if spans > num_sentinels:
            raise InputError(
                f"chunks of {self.raw_length} tokens need up to {spans} sentinels but the "
                f"vocabulary has {num_sentinels} extra ids"
            )
        self.vocab_size = vocab_size
        self.num_sentinels = num_sentinels
        self.pack = bool(config_data.pack)
        self.truncate = bool(config_data.truncate)
        # Everything rows depend on besides the documents and the noise key.
        self.key = (
            self.inputs_length,
            self.targets_length,
            self.density,
            self.mean_span,
            self.pack,
            self.truncate,
            vocab_size,
            num_sentinels,
        )

    def corrupt(self, chunk: np.ndarray, noise_key: Sequence[int]) -> Example:
        return span_corruption.span_corrupt(
            chunk,
            np.random.default_rng(list(noise_key)),
            vocab_size=self.vocab_size,
            num_sentinels=self.num_sentinels,
            noise_density=self.density,
            mean_noise_span_length=self.mean_span,
        )

    def to_batch(self, rows: list[Row]) -> dict[str, np.ndarray]:
        if self.pack:
            return span_corruption.pack_rows(rows, self.inputs_length, self.targets_length)
        return span_corruption.pad_rows(
            [row[0] for row in rows], self.inputs_length, self.targets_length, self.truncate
        )


def corrupted_rows(documents: Iterator[np.ndarray], geometry: RowGeometry, noise_key: Sequence[int]) -> Iterator[Row]:
    """Rows from a stream of tokenized documents.

    Example i of the stream draws its noise from a Generator keyed on (*noise_key, i).
    """
    counter = itertools.count()
    raw = geometry.raw_length
    if not geometry.pack:
        # T5: concatenate documents, split into raw-length chunks, one per row.
        buffer, size = [], 0
        for tokens in documents:
            buffer.append(tokens)
            size += tokens.size
            if size >= raw:
                flat = np.concatenate(buffer)
                full = flat.size // raw * raw
                for start in range(0, full, raw):
                    yield [geometry.corrupt(flat[start : start + raw], (*noise_key, next(counter)))]
                buffer, size = [flat[full:]], flat.size - full
        if size:
            yield [geometry.corrupt(np.concatenate(buffer), (*noise_key, next(counter)))]
        return
    # Packing: each document split on its own; examples packed in order into rows.
    row, used_inputs, used_targets = [], 0, 0
    for tokens in documents:
        for start in range(0, tokens.size, raw):
            example = geometry.corrupt(tokens[start : start + raw], (*noise_key, next(counter)))
            if not span_corruption.example_fits(
                used_inputs, used_targets, example, geometry.inputs_length, geometry.targets_length
            ):
                yield row
                row, used_inputs, used_targets = [], 0, 0
            row.append(example)
            used_inputs += example[0].size
            used_targets += example[1].size
    if row:
        yield row


class DocumentReader:
    """Tokenized documents of one split by index; splits of up to CACHE_MAX_DOCUMENTS are tokenized once."""

    def __init__(self, dataset_dir: str, name: str, split: str, tokenizer: tokenizer_lib.SentencePieceTokenizer):
        builder = tfds.builder_from_directory(dataset_dir)
        self.num_documents = sources.split_size(builder, name, split)
        if TEXT_FEATURE not in builder.info.features:
            raise InputError(
                f"dataset {name!r} has no {TEXT_FEATURE!r} feature; it has {sorted(builder.info.features)}"
            )
        self.key = (dataset_dir, split, tokenizer.path)  # What the tokens depend on.
        self._source = sources.open_split(builder, name, split)
        self._tokenizer = tokenizer
        self._all = None
        if self.num_documents <= CACHE_MAX_DOCUMENTS:
            self._all = _TOKENIZED_SPLITS.get(self.key, lambda: list(self.in_file_order()))

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        if self._all is not None:
            return [self._all[i] for i in indices]
        examples = self._source.__getitems__([int(i) for i in indices])
        return self._tokenizer.encode_batch([as_str(ex[TEXT_FEATURE]) for ex in examples])

    def in_file_order(self) -> Iterator[np.ndarray]:
        """Every document of the split, first to last."""
        for start in range(0, self.num_documents, _READ_BLOCK):
            yield from self.read(range(start, min(start + _READ_BLOCK, self.num_documents)))


def documents_at(positions: np.ndarray, num_documents: int, shuffle_seed: int, seed: int) -> np.ndarray:
    """Document index at each training stream position (per-epoch permutations)."""
    if num_documents <= _LARGE_SPLIT:
        return stream.example_indices(positions, num_documents, shuffle_seed, seed)
    return _index_shuffled(positions, num_documents, shuffle_seed, seed)


def _index_shuffled(positions: np.ndarray, num_documents: int, shuffle_seed: int, seed: int) -> np.ndarray:
    """documents_at for splits too large for a permutation array: grain's index_shuffle per position."""
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


def _documents_per_row(reader: DocumentReader, geometry: RowGeometry) -> float:
    """Documents one row takes on average: the pipeline run on a fixed, evenly spaced sample."""
    sample = np.unique(np.linspace(0, reader.num_documents - 1, SAMPLE_DOCUMENTS).astype(np.int64))
    documents = reader.read(sample)
    num_rows = sum(1 for _ in corrupted_rows(iter(documents), geometry, (_TRAIN_NOISE_TAG,)))
    return len(documents) / max(1, num_rows)


class TrainWindows:
    """Window w -> its WINDOW_ROWS rows, a pure function of (documents, geometry, shuffle_seed, seed, w)."""

    def __init__(self, reader: DocumentReader, geometry: RowGeometry, shuffle_seed: int, seed: int):
        self._reader = reader
        self._geometry = geometry
        self._shuffle_seed, self._seed = shuffle_seed, seed
        # Documents per window so that, on average, the window just fills its rows.
        self.documents_per_window = max(1, round(WINDOW_ROWS * _documents_per_row(reader, geometry)))

    def _documents(self, start: int) -> Iterator[np.ndarray]:
        """Tokenized documents from stream position `start` on, fetched in blocks."""
        block = self.documents_per_window
        for block_start in itertools.count(start, block):
            positions = np.arange(block_start, block_start + block, dtype=np.int64)
            indices = documents_at(positions, self._reader.num_documents, self._shuffle_seed, self._seed)
            yield from self._reader.read(indices)

    def _make_rows(self, window: int) -> list[Row]:
        documents = self._documents(window * self.documents_per_window)
        noise_key = (_TRAIN_NOISE_TAG, self._shuffle_seed, self._seed, window)
        return list(itertools.islice(corrupted_rows(documents, self._geometry, noise_key), WINDOW_ROWS))

    def rows(self, window: int) -> list[Row]:
        key = (self._reader.key, self._geometry.key, self._shuffle_seed, self._seed, window)
        return _TRAIN_WINDOWS.get(key, lambda: self._make_rows(window))

    def batch(self, global_rows: np.ndarray) -> dict[str, np.ndarray]:
        rows = [self.rows(int(g) // WINDOW_ROWS)[int(g) % WINDOW_ROWS] for g in global_rows]
        return self._geometry.to_batch(rows)
