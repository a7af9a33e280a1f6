"""Picks the data module for the config's task: images for classification, text for seq2seq.

Each returns host-local numpy batches; `sharding.global_batch` makes them global arrays.
"""
from __future__ import annotations

import numpy as np


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
    return fn(config.data, global_batch_size=config.batch_size, start_step=start_step,
              process_index=process_index, process_count=process_count, seed=config.seed)


def eval_batches(config, process_index: int, process_count: int):
    fn = _module(config)[1]
    return fn(config.data, global_batch_size=config.eval_batch_size,
              process_index=process_index, process_count=process_count)


def complete_model_config(config) -> dict[str, np.ndarray]:
    """Fills dataset-dependent model fields (classes, vocabulary) and returns a 1-row example batch."""
    if config.task == "classification":
        from lazy_jax.data import vision
        spec = vision.dataset_spec(config.data)
        if config.model.num_classes == -1:
            config.model.num_classes = spec["num_classes"]
        return {"image": np.zeros((1, *spec["image_shape"]), np.float32), "label": np.zeros((1,), np.int32)}
    from lazy_jax.data import text
    spec = text.text_dataset_spec(config.data)
    if spec["vocab_size"] > config.model.vocab_size:
        raise ValueError(f"the tokenizer has {spec['vocab_size']} ids (sentinels included) but "
                         f"model.vocab_size={config.model.vocab_size}; set --config.model.vocab_size>={spec['vocab_size']}")
    zeros = lambda n: np.zeros((1, n), np.int32)
    return {"encoder_input_tokens": zeros(spec["inputs_length"]), "decoder_input_tokens": zeros(spec["targets_length"]),
            "decoder_target_tokens": zeros(spec["targets_length"])}
