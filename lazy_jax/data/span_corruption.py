"""T5 span corruption on the host, in numpy.

A faithful port of `t5.data.preprocessors.span_corruption`: `random_spans_helper`
(raw chunk length for a wanted encoder length), `random_spans_noise_mask` (with
T5's `_random_segmentation`), `noise_span_to_unique_sentinel` /
`nonnoise_span_to_unique_sentinel`, EOS appended to inputs and targets. Sentinels
count down from the top of the vocabulary: the first noise span of an example
becomes `vocab_size - 1` (T5's <extra_id_0>), the next `vocab_size - 2`, ...

Then examples become fixed-size rows with the t5x feature names, either one
example per row padded with 0 (`pad_rows`) or several examples per row with
segment ids and positions (`pack_rows`), as seqio's EncDecFeatureConverter does.

Randomness comes only from the `np.random.Generator` handed in, so a caller that
keys one Generator per example on (seed, example index) gets a result that is a
pure function of those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lazy_jax.errors import InputError

PAD_ID = 0
EOS_ID = 1


def random_spans_helper(
    inputs_length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """Raw tokens length and targets length that give `inputs_length` inputs.

    As T5's `random_spans_helper`: the longest raw chunk whose corrupted inputs
    (non-noise tokens + one sentinel per span + EOS) still fit in `inputs_length`.
    For 512 / 0.15 / 3.0 this is (568, 114).
    """
    if inputs_length < 2:
        raise InputError(f"inputs_length must be >= 2, got {inputs_length}")
    if not 0.0 < noise_density < 1.0:
        raise InputError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length <= 0:
        raise InputError(f"mean_noise_span_length must be > 0, got {mean_noise_span_length}")

    def lengths_for(tokens_length):
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        # Inputs: all non-noise tokens, a sentinel per span, EOS. Targets: all
        # noise tokens, a sentinel per span, EOS.
        return (
            num_nonnoise_tokens + num_noise_spans * extra_tokens_per_span_inputs + 1,
            num_noise_tokens + num_noise_spans * extra_tokens_per_span_targets + 1,
        )

    tokens_length = inputs_length - 1
    while lengths_for(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths_for(tokens_length)
    # T5's hack so that targets equal inputs (a round number) at density 0.5.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) exactly as T5 computes them (float32, round half even)."""
    num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length)))
    return num_noise, max(num_spans, 1)


def num_noise_spans(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> int:
    """Number of noise spans (= sentinels used) for a raw chunk of `length` tokens."""
    return _noise_counts(max(length, 2), noise_density, mean_noise_span_length)[1]


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Random partition of `num_items` into `num_segments` non-empty segments (lengths)."""
    first_in_segment = np.arange(num_items - 1) < num_segments - 1
    first_in_segment = np.concatenate([[False], rng.permutation(first_in_segment)])
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean [length] noise mask: spans of noise interleaved with non-noise, non-noise first."""
    orig_length = length
    length = max(length, 2)  # As T5: avoid degeneracy for one-token chunks.
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_span_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_span_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1).reshape(-1)
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.zeros(length, np.int32)
    span_start_indicator[span_starts] = 1
    is_noise = np.cumsum(span_start_indicator) % 2 == 1
    return is_noise[:orig_length]


def noise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Replaces each noise span by one sentinel: vocab_size-1, vocab_size-2, ..."""
    prev_is_noise = np.concatenate([[False], noise_mask[:-1]])
    first_noise = noise_mask & ~prev_is_noise
    subsequent_noise = noise_mask & prev_is_noise
    sentinel = vocab_size - np.cumsum(first_noise)
    return np.where(first_noise, sentinel, tokens)[~subsequent_noise].astype(np.int32)


def span_corrupt(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    num_sentinels: int = 100,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One raw chunk -> (inputs, targets), both int32 and ending with EOS.

    `num_sentinels` is how many ids at the top of the vocabulary are sentinels
    (T5's 100 extra ids); an example needing more spans than that would turn real
    tokens into sentinels, so it is an error.
    """
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(f"span_corrupt needs a non-empty 1-D token array, got shape {tokens.shape}")
    spans = num_noise_spans(tokens.size, noise_density, mean_noise_span_length)
    if spans > num_sentinels:
        raise InputError(
            f"a chunk of {tokens.size} tokens needs {spans} sentinels but the vocabulary "
            f"(size {vocab_size}) has only {num_sentinels}; use shorter chunks or more extra ids"
        )
    mask = random_spans_noise_mask(tokens.size, noise_density, mean_noise_span_length, rng)
    inputs = noise_span_to_unique_sentinel(tokens, mask, vocab_size)
    targets = noise_span_to_unique_sentinel(tokens, ~mask, vocab_size)
    eos = np.array([EOS_ID], np.int32)
    return np.concatenate([inputs, eos]), np.concatenate([targets, eos])


# ---------------------------------------------------------------------------
# Rows with the t5x feature names.


def _check_fits(array: np.ndarray, length: int, what: str, truncate: bool) -> np.ndarray:
    if array.size > length:
        if not truncate:
            raise InputError(
                f"{what} of length {array.size} exceed the configured length {length}; "
                "raise the length or turn truncation on"
            )
        array = array[:length]
    return array


def _shift_right(targets_BT: np.ndarray, segment_ids_BT: np.ndarray | None) -> np.ndarray:
    """Decoder inputs: targets shifted right with 0 as BOS, restarted at each segment."""
    shifted = np.zeros_like(targets_BT)
    shifted[:, 1:] = targets_BT[:, :-1]
    if segment_ids_BT is not None:
        starts = np.zeros_like(segment_ids_BT, dtype=bool)
        starts[:, 1:] = segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]
        shifted[starts] = 0
    return shifted


def pad_rows(
    examples: Sequence[tuple[np.ndarray, np.ndarray]], inputs_length: int, targets_length: int, truncate: bool = False
) -> dict[str, np.ndarray]:
    """One (inputs, targets) example per row, padded with 0."""
    num_rows = len(examples)
    enc_BT = np.zeros((num_rows, inputs_length), np.int32)
    dec_BT = np.zeros((num_rows, targets_length), np.int32)
    for row, (inputs, targets) in enumerate(examples):
        inputs = _check_fits(inputs, inputs_length, "inputs", truncate)
        targets = _check_fits(targets, targets_length, "targets", truncate)
        enc_BT[row, : inputs.size] = inputs
        dec_BT[row, : targets.size] = targets
    return {
        "encoder_input_tokens": enc_BT,
        "decoder_input_tokens": _shift_right(dec_BT, None),
        "decoder_target_tokens": dec_BT,
        "decoder_loss_weights": (dec_BT != PAD_ID).astype(np.float32),
    }


def example_fits(
    used_inputs: int, used_targets: int, example: tuple[np.ndarray, np.ndarray], inputs_length: int, targets_length: int
) -> bool:
    """Whether `example` still fits in a packed row holding the given token counts."""
    return used_inputs + example[0].size <= inputs_length and used_targets + example[1].size <= targets_length


def pack_rows(
    rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], inputs_length: int, targets_length: int
) -> dict[str, np.ndarray]:
    """Several examples per row: tokens concatenated, segment ids from 1, positions from 0.

    `rows[r]` lists the examples of row r; the caller decides which go together
    (`example_fits`). Padding has segment id 0.
    """
    num_rows = len(rows)
    out = {
        name: np.zeros((num_rows, length), np.int32)
        for name, length in [
            ("encoder_input_tokens", inputs_length),
            ("encoder_segment_ids", inputs_length),
            ("encoder_positions", inputs_length),
            ("decoder_target_tokens", targets_length),
            ("decoder_segment_ids", targets_length),
            ("decoder_positions", targets_length),
        ]
    }
    for r, examples in enumerate(rows):
        used_inputs = used_targets = 0
        for segment, example in enumerate(examples, start=1):
            if not example_fits(used_inputs, used_targets, example, inputs_length, targets_length):
                raise InputError(
                    f"row {r}: example {segment} (inputs {example[0].size}, targets "
                    f"{example[1].size}) does not fit in the remaining "
                    f"{inputs_length - used_inputs} / {targets_length - used_targets} tokens"
                )
            for prefix, tokens, used in (("encoder", example[0], used_inputs), ("decoder", example[1], used_targets)):
                span = slice(used, used + tokens.size)
                key = "encoder_input_tokens" if prefix == "encoder" else "decoder_target_tokens"
                out[key][r, span] = tokens
                out[f"{prefix}_segment_ids"][r, span] = segment
                out[f"{prefix}_positions"][r, span] = np.arange(tokens.size)
            used_inputs += example[0].size
            used_targets += example[1].size
    out["decoder_input_tokens"] = _shift_right(out["decoder_target_tokens"], out["decoder_segment_ids"])
    out["decoder_loss_weights"] = (out["decoder_target_tokens"] != PAD_ID).astype(np.float32)
    return out
