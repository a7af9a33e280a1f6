"""Picks the data module for the config's task: images for classification, text for seq2seq.

Each returns host-local numpy batches; `sharding.global_batch` makes them global arrays.
"""

from __future__ import annotations

import numpy as np

from lazy_jax.config_checks import check_num_classes


def _module(config):
    if config.task == "classification":
        from lazy_jax.data import vision

        return vision.train_batches, vision.eval_batches
    if config.task == "seq2seq":
        from lazy_jax.data import text

        return text.text_train_batches, text.text_eval_batches
    raise ValueError(f"task={config.task!r} is unknown; allowed: ['classification', 'seq2seq']")


def train_batches(config, start_step: int, process_index: int, process_count: int):
    fn = _module(config)[0]
    return fn(
        config.data,
        global_batch_size=config.batch_size,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
        seed=config.seed,
    )


def eval_batches(config, process_index: int, process_count: int):
    fn = _module(config)[1]
    return fn(
        config.data, global_batch_size=config.eval_batch_size, process_index=process_index, process_count=process_count
    )


def complete_model_config(config) -> dict[str, np.ndarray]:
    """Fills dataset-dependent model fields (classes, vocabulary) and returns a 1-row example batch."""
    if config.task == "classification":
        from lazy_jax.data import vision

        spec = vision.dataset_spec(config.data)
        if config.model.num_classes == -1:
            config.model.num_classes = spec["num_classes"]
        check_num_classes(config.model, spec["num_classes"], config.data.name)
        return {"image": np.zeros((1, *spec["image_shape"]), np.float32), "label": np.zeros((1,), np.int32)}
    return _complete_text_model_config(config)


def _complete_text_model_config(config) -> dict[str, np.ndarray]:
    """model.vocab_size -1 = the tokenizer's ids padded to a multiple of 128 (T5: 32100 -> 32128).

    The example row has exactly the keys the text loader's train batches have (with pack=True
    also the segment ids and positions), built by the same row functions, so the model is
    initialised on the batch structure it will be trained on.
    """
    from lazy_jax.data import span_corruption, text

    spec = text.text_dataset_spec(config.data)
    vocab = config.model.vocab_size
    if vocab == -1:
        config.model.vocab_size = spec["padded_vocab_size"]
    elif not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < spec["vocab_size"]:
        raise ValueError(
            f"model.vocab_size={vocab!r} is not allowed: the tokenizer has {spec['vocab_size']} ids "
            f"(sentinels included); use an integer >= {spec['vocab_size']}, or -1 for the tokenizer's "
            f"size padded to a multiple of 128 ({spec['padded_vocab_size']})"
        )
    inputs_length, targets_length = spec["inputs_length"], spec["targets_length"]
    if config.data.pack:
        return span_corruption.pack_rows([[]], inputs_length, targets_length)
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32))
    return span_corruption.pad_rows([empty], inputs_length, targets_length)
