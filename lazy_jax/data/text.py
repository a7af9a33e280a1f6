"""T5 span-corruption batches from tfds text datasets, with exact resume.

Path of a batch: tfds array_record source (lazy_jax.data.text_corpus; field 'text')
-> SentencePiece ids (lazy_jax.data.tokenizer) -> raw chunks of the length
`random_spans_helper` gives (568 tokens for 512 inputs) -> span corruption
(lazy_jax.data.text_rows, lazy_jax.data.span_corruption) -> rows with the t5x feature names.
Training rows come in windows, a pure function of (shuffle_seed, seed, window), so any step's
batch can be made on its own (exact resume; see lazy_jax.data.text_rows).

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

Eval: the eval split once in file order, through the same pipeline with a fixed
noise seed; the last global batch is padded with all-zero rows and 'mask' 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from lazy_jax.data import cache, sources, span_corruption, stream, text_corpus, text_rows
from lazy_jax.data import tokenizer as tokenizer_lib

# Re-exported: tests/test_t5_train.py prepares the corpus through this module.
from lazy_jax.data.text_corpus import prepare_pydocs as prepare_pydocs

EVAL_NOISE_SEED = 0xE7A1
# The eval split's rows are the same at every eval, so they are made once per process and
# geometry (for splits of up to text_rows.CACHE_MAX_DOCUMENTS documents; larger ones are made again).
_EVAL_ROWS = cache.BoundedCache("text.eval_rows", max_entries=2)
_EMPTY = (np.zeros(0, np.int32), np.zeros(0, np.int32))


def default_config(
    name: str = "pydocs", inputs_length: int = 512, targets_length: int | None = None, **overrides
) -> ml_collections.ConfigDict:
    """The `config.data` fields of a text task (documented above); `overrides` sets any of them.

    targets_length None = what T5's random_spans_helper gives for `inputs_length` and the noise
    settings (512 -> 114 at noise density 0.15, mean span 3).
    """
    c = ml_collections.ConfigDict(
        dict(
            name=name,
            train_split="train",
            eval_split="validation",
            data_dir=ml_collections.config_dict.placeholder(str),
            spm_path=ml_collections.config_dict.placeholder(str),
            inputs_length=inputs_length,
            targets_length=0,  # Set below: given, or from inputs_length and the noise settings.
            noise_density=0.15,
            mean_noise_span_length=3.0,
            pack=False,
            truncate=False,
            shuffle_seed=0,
            add_bible_kjv=False,
        )
    )
    c.update(overrides)
    if targets_length is None:
        _, targets_length = span_corruption.random_spans_helper(
            inputs_length, c.noise_density, c.mean_noise_span_length
        )
    c.targets_length = targets_length
    return c


def _pipeline(config_data, split: str) -> tuple[text_rows.DocumentReader, text_rows.RowGeometry]:
    dataset_dir = text_corpus.prepared_dataset_dir(config_data)
    tokenizer = text_corpus.load_tokenizer(config_data)
    reader = text_rows.DocumentReader(dataset_dir, text_corpus.dataset_name(config_data), split, tokenizer)
    return reader, text_rows.RowGeometry(config_data, tokenizer.vocab_size, tokenizer.extra_ids)


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
    b = stream.local_batch_size(global_batch_size, process_count, process_index)
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    reader, geometry = _pipeline(config_data, config_data.train_split)
    windows = text_rows.TrainWindows(reader, geometry, int(config_data.shuffle_seed), int(seed))

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
    b = stream.local_batch_size(global_batch_size, process_count, process_index)
    reader, geometry = _pipeline(config_data, config_data.eval_split)
    rows = _eval_rows(reader, geometry)
    num_batches = -(-len(rows) // global_batch_size)

    def batches():
        for k in range(num_batches):
            first = k * global_batch_size + process_index * b
            local = rows[first : first + b]
            mask = np.zeros(b, np.float32)
            mask[: len(local)] = 1.0
            padding = [[]] if geometry.pack else [[_EMPTY]]
            batch = geometry.to_batch(local + padding * (b - len(local)))
            batch["mask"] = mask
            yield batch

    return batches()


def _eval_rows(reader: text_rows.DocumentReader, geometry: text_rows.RowGeometry) -> list[text_rows.Row]:
    def make():
        return list(text_rows.corrupted_rows(reader.in_file_order(), geometry, (EVAL_NOISE_SEED,)))

    if reader.num_documents > text_rows.CACHE_MAX_DOCUMENTS:
        return make()
    return _EVAL_ROWS.get((reader.key, geometry.key), make)


def text_dataset_spec(config_data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Vocabulary and lengths (prepares pydocs if needed; reads no documents).

    Returns:
      dict(vocab_size (pieces + extra ids), padded_vocab_size (multiple of 128),
      inputs_length, targets_length, raw_length (raw tokens per chunk),
      num_train_documents, num_eval_documents).
    """
    dataset_dir = text_corpus.prepared_dataset_dir(config_data)
    tokenizer = text_corpus.load_tokenizer(config_data)
    geometry = text_rows.RowGeometry(config_data, tokenizer.vocab_size, tokenizer.extra_ids)
    builder = tfds.builder_from_directory(dataset_dir)
    name = text_corpus.dataset_name(config_data)
    return dict(
        vocab_size=tokenizer.vocab_size,
        padded_vocab_size=tokenizer_lib.padded_vocab_size(tokenizer.vocab_size),
        inputs_length=geometry.inputs_length,
        targets_length=geometry.targets_length,
        raw_length=geometry.raw_length,
        num_train_documents=sources.split_size(builder, name, config_data.train_split),
        num_eval_documents=sources.split_size(builder, name, config_data.eval_split),
    )
