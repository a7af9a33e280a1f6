"""T5 span corruption: lengths, noise statistics, sentinels, reconstruction, rows."""

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from lazy_jax.data import span_corruption as sc

VOCAB = 32100
NUM_SENTINELS = 100


def _tokens(length, seed=0):
    # Real token ids: above pad/eos/unk, below the sentinels.
    return np.random.default_rng([seed, 99]).integers(3, VOCAB - NUM_SENTINELS, length).astype(np.int32)


def _corrupt(tokens, seed):
    return sc.span_corrupt(tokens, np.random.default_rng([seed]), vocab_size=VOCAB, num_sentinels=NUM_SENTINELS)


def _runs(mask):
    """Lengths of the runs of True in a boolean vector."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def _reconstruct(inputs, targets):
    """Original tokens from inputs (sentinel = hole) and targets (sentinel + span)."""
    assert inputs[-1] == sc.EOS_ID and targets[-1] == sc.EOS_ID
    spans, current = {}, None
    for t in targets[:-1]:
        if t >= VOCAB - NUM_SENTINELS:
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    out = []
    for t in inputs[:-1]:
        out.extend(spans[int(t)] if t >= VOCAB - NUM_SENTINELS else [int(t)])
    return np.asarray(out, np.int32)


def test_random_spans_helper_matches_t5():
    assert sc.random_spans_helper(512, 0.15, 3.0) == (568, 114)
    # The inputs of a full raw chunk fill the inputs length exactly.
    inputs, targets = _corrupt(_tokens(568), seed=1)
    assert (inputs.size, targets.size) == (512, 114)
    # T5's density-0.5 case: targets brought down to the inputs length.
    tokens_length, targets_length = sc.random_spans_helper(128, 0.5, 3.0)
    assert targets_length <= 128 and tokens_length > 128


@pytest.mark.parametrize("length", [2, 3, 10, 57, 100, 311, 568, 1000])
def test_noise_count_span_count_and_layout(length):
    expected_noise = min(max(int(np.round(np.float32(length) * np.float32(0.15))), 1), length - 1)
    expected_spans = max(1, int(np.round(expected_noise / 3.0)))
    for seed in range(20):
        mask = sc.random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(seed))
        assert mask.shape == (length,) and mask.dtype == bool
        assert mask.sum() == expected_noise
        assert len(_runs(mask)) == expected_spans
        assert not mask[0], "spans start with non-noise"
        assert mask[-1], "the last span is noise"


def test_exact_noise_share_at_568():
    mask = sc.random_spans_noise_mask(568, 0.15, 3.0, np.random.default_rng(0))
    assert mask.sum() == round(568 * 0.15) == 85
    assert len(_runs(mask)) == 28


def test_span_lengths_average_three_and_vary():
    lengths = np.concatenate(
        [_runs(sc.random_spans_noise_mask(568, 0.15, 3.0, np.random.default_rng(s))) for s in range(300)]
    )
    assert abs(lengths.mean() - 85 / 28) < 1e-9  # Exact: 85 noise tokens in 28 spans.
    assert lengths.min() >= 1 and lengths.std() > 1.0, "a random segmentation, not fixed spans"
    # Non-noise spans: 483 tokens in 28 spans, also randomly cut.
    nonnoise = np.concatenate(
        [_runs(~sc.random_spans_noise_mask(568, 0.15, 3.0, np.random.default_rng(s))) for s in range(50)]
    )
    assert nonnoise.min() >= 1 and nonnoise.std() > 5.0


def test_sentinels_descend_from_top_of_vocabulary():
    inputs, targets = _corrupt(_tokens(568), seed=3)
    sentinel_in = inputs[inputs >= VOCAB - NUM_SENTINELS]
    sentinel_out = targets[targets >= VOCAB - NUM_SENTINELS]
    np.testing.assert_array_equal(sentinel_in, VOCAB - 1 - np.arange(28))
    np.testing.assert_array_equal(sentinel_out, VOCAB - 1 - np.arange(28))
    assert targets[0] == VOCAB - 1, "targets start with <extra_id_0>"
    assert inputs[0] < VOCAB - NUM_SENTINELS, "inputs start with non-noise"


def test_reconstruction_and_eos_placement():
    tokens = _tokens(568, seed=5)
    inputs, targets = _corrupt(tokens, seed=5)
    np.testing.assert_array_equal(_reconstruct(inputs, targets), tokens)
    assert np.sum(inputs == sc.EOS_ID) == 1 and np.sum(targets == sc.EOS_ID) == 1
    assert inputs.dtype == targets.dtype == np.int32


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(length=st.integers(1, 700), seed=st.integers(0, 2**31))
def test_reconstruction_any_length(length, seed):
    tokens = _tokens(length, seed)
    inputs, targets = _corrupt(tokens, seed)
    np.testing.assert_array_equal(_reconstruct(inputs, targets), tokens)
    assert inputs.size + targets.size == length + 2 * sc.num_noise_spans(length) + 2 or length == 1


def test_deterministic_by_seed():
    tokens = _tokens(568)
    a = _corrupt(tokens, seed=7)
    b = _corrupt(tokens, seed=7)
    c = _corrupt(tokens, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_too_few_sentinels_is_an_error():
    with pytest.raises(ValueError, match=r"needs 28 sentinels .* only 10"):
        sc.span_corrupt(_tokens(568), np.random.default_rng(0), vocab_size=VOCAB, num_sentinels=10)


def test_pad_rows_layout_and_length_errors():
    examples = [_corrupt(_tokens(568, s), s) for s in range(2)] + [_corrupt(_tokens(20), 2)]
    batch = sc.pad_rows(examples, 512, 114)
    assert batch["encoder_input_tokens"].shape == (3, 512)
    np.testing.assert_array_equal(batch["decoder_target_tokens"][2, : examples[2][1].size], examples[2][1])
    assert (batch["decoder_target_tokens"][2, examples[2][1].size :] == 0).all()
    assert (batch["decoder_input_tokens"][:, 0] == 0).all()
    np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], batch["decoder_target_tokens"][:, :-1])
    np.testing.assert_array_equal(batch["decoder_loss_weights"], batch["decoder_target_tokens"] != 0)
    with pytest.raises(ValueError, match=r"inputs of length 512 exceed the configured length 500"):
        sc.pad_rows(examples, 500, 114)
    with pytest.raises(ValueError, match=r"targets of length 114 exceed the configured length 100"):
        sc.pad_rows(examples, 512, 100)
    cut = sc.pad_rows(examples, 500, 100, truncate=True)
    np.testing.assert_array_equal(cut["encoder_input_tokens"][0], examples[0][0][:500])


def test_pack_rows_segments_positions_and_shift():
    a, b = _corrupt(_tokens(100, 1), 1), _corrupt(_tokens(60, 2), 2)
    batch = sc.pack_rows([[a, b], [b]], 512, 114)
    ia, ib = a[0].size, b[0].size
    np.testing.assert_array_equal(batch["encoder_input_tokens"][0, : ia + ib], np.concatenate([a[0], b[0]]))
    np.testing.assert_array_equal(batch["encoder_segment_ids"][0, : ia + ib], [1] * ia + [2] * ib)
    assert (batch["encoder_segment_ids"][0, ia + ib :] == 0).all()
    np.testing.assert_array_equal(
        batch["encoder_positions"][0, : ia + ib], np.concatenate([np.arange(ia), np.arange(ib)])
    )
    ta = a[1].size
    dec_in = batch["decoder_input_tokens"][0]
    assert dec_in[0] == 0 and dec_in[ta] == 0, "BOS at the start of each packed segment"
    np.testing.assert_array_equal(dec_in[1:ta], a[1][:-1])
    np.testing.assert_array_equal(dec_in[ta + 1 : ta + b[1].size], b[1][:-1])
    with pytest.raises(ValueError, match="does not fit"):
        sc.pack_rows([[a, a, a, a, a, a]], 512, 114)
