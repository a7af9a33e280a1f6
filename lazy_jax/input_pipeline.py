"""The data side of a run, picked by the config's task: images for classification, text for seq2seq.

`data_spec(config)` reads what the model needs to know about the data (classes, vocabulary, the
structure of a batch) from dataset metadata, without reading examples; the model is built from
it (`DataSpec.model_sizes` -> `models.get_model`), so nothing is written back into the config.
`train_batches` / `eval_batches` yield host-local numpy batches; `sharding.global_batch` makes
them global arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lazy_jax.errors import InputError
from lazy_jax.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the model and the trainer need to know about a task's data.

    example_batch: one row with exactly the keys, dtypes and trailing shapes of a train batch.
    num_classes:   classes of the labels (classification).
    vocab_size:    token ids of the tokenizer, sentinels included (seq2seq).
    padded_vocab_size: the model's vocabulary when config.model.vocab_size is -1 (vocab_size
                   padded to a multiple of 128, as T5's 32100 -> 32128).
    """

    example_batch: dict[str, np.ndarray]
    num_classes: int | None = None
    vocab_size: int | None = None
    padded_vocab_size: int | None = None

    def model_sizes(self, config_model) -> dict[str, int]:
        """The data's sizes as keyword arguments of `models.get_model`.

        Classes: the dataset's; the model registry checks an explicit config value against it.
        Images: image_shape (H, W, C) of example_batch['image'], against which the patch models
        check their patch. Vocabulary: -1 in the config = the tokenizer's ids padded to a
        multiple of 128; an explicit value must hold every id of the tokenizer.
        """
        if self.num_classes is not None:
            sizes = {"num_classes": self.num_classes}
            if "image" in self.example_batch:
                sizes["image_shape"] = tuple(int(d) for d in np.shape(self.example_batch["image"])[1:])
            return sizes
        if self.vocab_size is None:
            return {}
        vocab = config_model.get("vocab_size", -1)
        if vocab == -1:
            return {"vocab_size": self.padded_vocab_size or self.vocab_size}
        if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < self.vocab_size:
            raise InputError(
                f"model.vocab_size={vocab!r} is not allowed: the tokenizer has {self.vocab_size} ids (sentinels "
                f"included); use an integer >= {self.vocab_size}, or -1 for the tokenizer's size padded to a "
                f"multiple of 128 ({self.padded_vocab_size})"
            )
        return {"vocab_size": vocab}


def _check_task(config) -> None:
    if config.task not in TASKS:
        raise InputError(f"task={config.task!r} is unknown; allowed: {list(TASKS)}")


def data_spec(config) -> DataSpec:
    """Reads the data's sizes from metadata (prepares an offline dataset on first use)."""
    _check_task(config)
    if config.task == "classification":
        from lazy_jax.data import vision

        spec = vision.dataset_spec(config.data)
        example = {"image": np.zeros((1, *spec["image_shape"]), np.float32), "label": np.zeros((1,), np.int32)}
        return DataSpec(example_batch=example, num_classes=spec["num_classes"])
    from lazy_jax.data import span_corruption, text

    spec = text.text_dataset_spec(config.data)
    # Exactly the keys of the text loader's train batches (with pack=True also segment ids and
    # positions), built by the same row functions, so the model is initialised on that structure.
    inputs_length, targets_length = spec["inputs_length"], spec["targets_length"]
    if config.data.pack:
        example = span_corruption.pack_rows([[]], inputs_length, targets_length)
    else:
        empty = (np.zeros(0, np.int32), np.zeros(0, np.int32))
        example = span_corruption.pad_rows([empty], inputs_length, targets_length)
    return DataSpec(
        example_batch=example,
        vocab_size=spec["vocab_size"],
        padded_vocab_size=spec["padded_vocab_size"],
    )


def check_run_length(config) -> None:
    """Infinite data (no example seen twice) must not run out before total_steps (images only)."""
    if config.task == "classification" and config.data.get("infinite", False):
        from lazy_jax.data import vision

        vision.check_infinite_data(config.data, config.total_steps, config.batch_size)


def _loaders(config):
    """(train_batches, eval_batches) of the task's data module."""
    _check_task(config)
    if config.task == "classification":
        from lazy_jax.data import vision

        return vision.train_batches, vision.eval_batches
    from lazy_jax.data import text

    return text.text_train_batches, text.text_eval_batches


def train_batches(config, start_step: int, process_index: int, process_count: int):
    """This process's train batches from batch `start_step` on (a pure function of seed and step)."""
    shard = dict(process_index=process_index, process_count=process_count)
    train, _ = _loaders(config)
    return train(config.data, global_batch_size=config.batch_size, start_step=start_step, seed=config.seed, **shard)


def eval_batches(config, process_index: int, process_count: int, corruption: tuple[str, int] | None = None):
    """This process's batches over the eval split once, the last one padded (mask 0).

    corruption: (name, severity) of `lazy_jax.data.corruptions`, applied to the uint8 images
    before normalisation, per example from a fixed seed (images only).
    """
    if corruption is not None:
        return _corrupted_image_batches(config, process_index, process_count, *corruption)
    _, evaluate = _loaders(config)
    return evaluate(
        config.data, global_batch_size=config.eval_batch_size, process_index=process_index, process_count=process_count
    )


def _corrupted_image_batches(config, process_index: int, process_count: int, name: str, severity: int):
    """`vision.eval_batches` (the same examples, padding and process blocks), each image
    corrupted by `corruptions.corrupt` between decoding and `vision.normalize`."""
    from lazy_jax.data import corruptions, vision

    corruptions.check(name, severity)
    if config.task != "classification":
        raise InputError(f"input corruptions are for images; task={config.task!r} has none")
    return vision.eval_batches(
        config.data,
        global_batch_size=config.eval_batch_size,
        process_index=process_index,
        process_count=process_count,
        transform_u8=lambda images_u8, indices: corruptions.corrupt(images_u8, name, severity, indices),
    )
