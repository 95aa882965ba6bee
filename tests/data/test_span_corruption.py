from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_lite.data import (
    corrupt_spans,
    corrupted_lengths,
    noise_span_counts,
    raw_length_for_encoder,
    reconstruct_text_tokens,
)
from megatron_lite.data.span_corruption import noise_mask

EOD, PAD = 7, 8  # inside the range of the raw tokens: packed windows do contain EOD
SENTINELS = list(range(1099, 999, -1))  # <extra_id_n> = 1099 - n, above every raw token


def _split_at_sentinels(sequence: np.ndarray) -> list[np.ndarray]:
    """The pieces between sentinels (the first piece is before the first sentinel)."""
    positions = np.flatnonzero(np.isin(sequence, SENTINELS))
    return np.split(sequence, positions)


def _reference_corruption(tokens: np.ndarray, is_noise: np.ndarray) -> tuple[list, list]:
    """Span corruption written as the plain loop over tokens that the definition describes."""
    encoder, target, span = [], [], -1
    for position, (token, noise) in enumerate(zip(tokens.tolist(), is_noise, strict=True)):
        starts_span = noise and (position == 0 or not is_noise[position - 1])
        if starts_span:
            span += 1
            encoder.append(SENTINELS[span])
            target.append(SENTINELS[span])
        if noise:
            target.append(token)
        else:
            encoder.append(token)
    return encoder + [EOD], target + [EOD]


def _noise_span_lengths(is_noise: np.ndarray) -> np.ndarray:
    edges = np.flatnonzero(np.diff(is_noise.astype(np.int8), prepend=0, append=0))  # start, end..
    return edges[1::2] - edges[::2]


@pytest.mark.parametrize(
    ("raw_length", "expected"),
    [
        (568, (512, 114)),  # T5's pretraining lengths: 568 raw tokens -> 512 inputs, 114 targets
        (10, (10, 4)),  # 2 noise tokens (round(1.5) is 2), 1 span: 8 kept + 1 + EOS; 2 + 1 + EOS
        (2, (3, 3)),  # the least: one kept token, one noise token
        (141, (128, 29)),  # 21 noise tokens in 7 spans
    ],
)
def test_lengths_of_a_window(raw_length, expected):
    assert corrupted_lengths(raw_length, 0.15, 3) == expected


def test_counts_respect_their_bounds():
    assert noise_span_counts(3, 0.01, 3) == (1, 1)  # at least one noise token and one span
    assert noise_span_counts(10, 0.99, 1) == (9, 1)  # at least one kept token, so one span
    assert noise_span_counts(10, 0.5, 1) == (5, 5)  # spans limited by the kept tokens too
    assert noise_span_counts(1000, 0.15, 2.5) == (150, 60)


@pytest.mark.parametrize(("density", "mean"), [(0.15, 3), (0.5, 1), (0.3, 7.5), (0.9, 2)])
def test_raw_length_for_encoder_inverts_the_encoder_length(density, mean):
    for encoder_length in range(3, 700):
        raw_length = raw_length_for_encoder(encoder_length, density, mean)
        fitted = corrupted_lengths(raw_length, density, mean)[0]
        # The longest window that fits, and it fills the encoder or leaves one slot.
        assert encoder_length - 1 <= fitted <= encoder_length
        assert corrupted_lengths(raw_length + 1, density, mean)[0] > encoder_length
    assert raw_length_for_encoder(512, 0.15, 3) == 568


def test_a_corruption_matches_the_plain_loop_definition():
    tokens = np.arange(100, 160)
    for seed in range(20):
        is_noise = noise_mask(tokens.size, np.random.default_rng(seed), 0.15, 3)
        encoder, target = corrupt_spans(
            tokens, np.random.default_rng(seed), sentinel_ids=SENTINELS, eod_id=EOD
        )
        expected_encoder, expected_target = _reference_corruption(tokens, is_noise)
        assert encoder.tolist() == expected_encoder and target.tolist() == expected_target
        assert encoder.dtype == np.int64 and target.dtype == np.int64


def test_noise_positions_and_span_lengths_over_many_windows():
    raw_length, windows = 141, 3000  # 21 noise tokens in 7 spans per window
    masks = np.stack(
        [noise_mask(raw_length, np.random.default_rng(seed), 0.15, 3) for seed in range(windows)]
    )  # (W, L)
    assert (masks.sum(axis=1) == 21).all()
    # Non-noise first, noise last (T5's layout). Away from the ends every position is equally
    # likely to be noise, a little under 15%: the last span always sits at the end.
    assert not masks[:, 0].any() and masks[:, -1].all()
    middle = masks[:, 20:-20].mean(axis=0)  # (L - 40,)
    assert 0.12 < middle.mean() < 0.15 and np.abs(middle - middle.mean()).max() < 0.025
    per_window = [_noise_span_lengths(row) for row in masks]
    assert all(lengths.size == 7 for lengths in per_window)
    span_lengths = np.concatenate(per_window)
    assert span_lengths.mean() == pytest.approx(3.0) and span_lengths.min() == 1
    # Span lengths are a uniformly random composition of 21 into 7 parts, where a part is 1 with
    # probability (7 - 1) / (21 - 1) = 0.3 and more than 9 with probability C(11, 6) / C(20, 6).
    assert abs((span_lengths == 1).mean() - 0.3) < 0.02
    assert abs((span_lengths > 9).mean() - math.comb(11, 6) / math.comb(20, 6)) < 0.005


def test_the_rng_decides_where_the_spans_fall():
    tokens = np.arange(100, 300)
    first = corrupt_spans(tokens, np.random.default_rng(1), sentinel_ids=SENTINELS, eod_id=EOD)
    again = corrupt_spans(tokens, np.random.default_rng(1), sentinel_ids=SENTINELS, eod_id=EOD)
    other = corrupt_spans(tokens, np.random.default_rng(2), sentinel_ids=SENTINELS, eod_id=EOD)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


@settings(max_examples=150, deadline=None)
@given(
    raw=st.lists(st.integers(0, 40), min_size=2, max_size=700),
    masked_lm_prob=st.floats(0.01, 0.99),
    mean_ngram_size=st.floats(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_corruption_properties(raw, masked_lm_prob, mean_ngram_size, seed):
    tokens = np.array(raw)
    options = {"masked_lm_prob": masked_lm_prob, "mean_ngram_size": mean_ngram_size}
    num_noise, num_spans = noise_span_counts(tokens.size, **options)
    encoder, target = corrupt_spans(
        tokens, np.random.default_rng(seed), sentinel_ids=SENTINELS, eod_id=EOD, **options
    )
    assert (encoder.size, target.size) == corrupted_lengths(tokens.size, **options)
    assert encoder[-1] == EOD and target[-1] == EOD
    expected_sentinels = SENTINELS[:num_spans]
    assert encoder[np.isin(encoder, SENTINELS)].tolist() == expected_sentinels
    assert target[np.isin(target, SENTINELS)].tolist() == expected_sentinels
    # The encoder starts with a kept token and ends with the last span's sentinel; every span,
    # kept or noise, holds at least one token.
    assert encoder[0] == tokens[0] and encoder[-2] == expected_sentinels[-1]
    encoder_pieces = _split_at_sentinels(encoder[:-1])
    assert all(piece.size >= 2 for piece in encoder_pieces[1:-1]) and encoder_pieces[0].size
    target_pieces = _split_at_sentinels(target[:-1])
    assert target_pieces[0].size == 0 and all(piece.size >= 2 for piece in target_pieces[1:])
    assert sum(piece.size - 1 for piece in target_pieces[1:]) == num_noise
    restored = reconstruct_text_tokens(encoder, target, SENTINELS, eod_id=EOD, pad_id=PAD)
    np.testing.assert_array_equal(restored, tokens)
    # Trailing padding, as in dataset items, changes nothing.
    padded = [np.pad(part, (0, 5), constant_values=PAD) for part in (encoder, target)]
    restored = reconstruct_text_tokens(*padded, SENTINELS, eod_id=EOD, pad_id=PAD)
    np.testing.assert_array_equal(restored, tokens)


@pytest.mark.parametrize("masked_lm_prob", [0, 1, -0.1, 1.5, float("nan")])
def test_masked_lm_prob_outside_zero_one_is_refused(masked_lm_prob):
    with pytest.raises(ValueError, match=r"data\.masked_lm_prob must be in \(0, 1\)"):
        corrupted_lengths(100, masked_lm_prob, 3)
    with pytest.raises(ValueError, match=r"data\.masked_lm_prob"):
        raw_length_for_encoder(128, masked_lm_prob, 3)


@pytest.mark.parametrize("mean_ngram_size", [0, 0.5, -3, float("nan")])
def test_mean_ngram_size_below_one_is_refused(mean_ngram_size):
    with pytest.raises(ValueError, match=r"data\.mean_ngram_size must be >= 1"):
        corrupt_spans(
            np.arange(50),
            np.random.default_rng(0),
            sentinel_ids=SENTINELS,
            eod_id=EOD,
            mean_ngram_size=mean_ngram_size,
        )


def test_bad_lengths_and_too_few_sentinels_are_refused():
    with pytest.raises(ValueError, match="needs at least 2 tokens, got 1"):
        corrupt_spans(np.arange(1), np.random.default_rng(0), sentinel_ids=SENTINELS, eod_id=EOD)
    with pytest.raises(ValueError, match=r"model\.seq_length=2 is too short"):
        raw_length_for_encoder(2, 0.15, 3)
    # 300 tokens: 45 noise tokens in 15 spans.
    with pytest.raises(ValueError, match=r"tokenizer\.num_sentinel_tokens to at least 15"):
        corrupt_spans(
            np.arange(300), np.random.default_rng(0), sentinel_ids=SENTINELS[:14], eod_id=EOD
        )


@pytest.mark.parametrize(
    ("text_enc", "labels", "message"),
    [
        ([5, 1099, 9], [1099, 6, EOD], "expected an EOS"),
        ([5, 1099, EOD], [1099, 6], "expected an EOS"),
        ([PAD, PAD], [1099, 6, EOD], "expected an EOS"),
        ([5, 1098, EOD], [1098, 6, EOD], "in order"),
        ([5, 1099, 6, 1098, EOD], [1099, 6, EOD], "in order"),
        ([5, 6, EOD], [6, EOD], "must start with <extra_id_0>"),
    ],
)
def test_reconstruct_refuses_a_malformed_pair(text_enc, labels, message):
    with pytest.raises(ValueError, match=message):
        reconstruct_text_tokens(text_enc, labels, SENTINELS, eod_id=EOD, pad_id=PAD)
