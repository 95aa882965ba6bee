"""T5's span-corruption objective as pure functions of (tokens, rng).

A window of L raw tokens is cut into 2K alternating spans, non-noise first and noise last:

    raw      a b c d e f g h i j        K = 2 noise spans: "c d" and "h i j"
    encoder  a b <extra_id_0> e f g <extra_id_1> EOS
    target   <extra_id_0> c d <extra_id_1> h i j EOS

The counts depend on L alone (so every window of one dataset has the same encoder and target
lengths); only where the spans fall is random:
    noise tokens  N = round(L * masked_lm_prob), at least 1 and at most L - 1
    noise spans   K = round(N / mean_ngram_size), at least 1 and at most L - N (every span,
                  noise or not, holds at least one token)
    encoder       (L - N) + K + 1 tokens: the kept tokens, one sentinel per span, EOS
    target        N + K + 1 tokens: a sentinel before each span's tokens, EOS
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_RAW_LENGTH = 2  # one non-noise span and one noise span of a token each


def check_span_corruption_settings(masked_lm_prob: float, mean_ngram_size: float) -> None:
    if not 0 < masked_lm_prob < 1:
        raise ValueError(
            f"data.masked_lm_prob must be in (0, 1), got {masked_lm_prob}: it is the fraction "
            "of tokens masked"
        )
    if not mean_ngram_size >= 1:
        raise ValueError(
            f"data.mean_ngram_size must be >= 1, got {mean_ngram_size}: it is the mean length "
            "of a masked span, in tokens"
        )


def noise_span_counts(
    raw_length: int, masked_lm_prob: float, mean_ngram_size: float
) -> tuple[int, int]:
    """(noise tokens N, noise spans K) of a window of `raw_length` tokens."""
    check_span_corruption_settings(masked_lm_prob, mean_ngram_size)
    if raw_length < MIN_RAW_LENGTH:
        raise ValueError(
            f"span corruption needs at least {MIN_RAW_LENGTH} tokens, got {raw_length}"
        )
    num_noise = min(max(round(raw_length * masked_lm_prob), 1), raw_length - 1)
    num_spans = min(max(round(num_noise / mean_ngram_size), 1), raw_length - num_noise)
    return num_noise, num_spans


def corrupted_lengths(
    raw_length: int, masked_lm_prob: float, mean_ngram_size: float
) -> tuple[int, int]:
    """(encoder length, target length) of a corrupted window, both counting their EOS."""
    num_noise, num_spans = noise_span_counts(raw_length, masked_lm_prob, mean_ngram_size)
    return raw_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def raw_length_for_encoder(
    encoder_length: int, masked_lm_prob: float, mean_ngram_size: float
) -> int:
    """The longest raw window whose encoder input fits `encoder_length` tokens.

    The encoder length grows with the raw length by 0, 1 or 2 tokens a step (a kept token and a
    new sentinel can arrive together), so it hits `encoder_length` exactly or stops one short.
    """
    if corrupted_lengths(MIN_RAW_LENGTH, masked_lm_prob, mean_ngram_size)[0] > encoder_length:
        raise ValueError(
            f"model.seq_length={encoder_length} is too short for span corruption: the encoder "
            "input needs at least 3 tokens (a kept token, a sentinel, EOS)"
        )

    def fits(raw_length: int) -> bool:
        return corrupted_lengths(raw_length, masked_lm_prob, mean_ngram_size)[0] <= encoder_length

    # The encoder length never decreases with the raw length: bracket the answer, then bisect.
    low, high = MIN_RAW_LENGTH, 2 * encoder_length  # fits(low); find a high that does not fit
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive lengths summing to `total`, every such composition equally likely."""
    # Choosing parts - 1 distinct cut points among the total - 1 gaps between items.
    cuts = np.sort(rng.choice(total - 1, size=parts - 1, replace=False) + 1)
    return np.diff(np.concatenate([[0], cuts, [total]]))  # (parts,)


def noise_mask(
    raw_length: int, rng: np.random.Generator, masked_lm_prob: float, mean_ngram_size: float
) -> np.ndarray:
    """bool [raw_length]: True on the noise tokens, laid out as alternating random spans."""
    num_noise, num_spans = noise_span_counts(raw_length, masked_lm_prob, mean_ngram_size)
    noise_lengths = _random_composition(num_noise, num_spans, rng)  # (K,)
    kept_lengths = _random_composition(raw_length - num_noise, num_spans, rng)  # (K,)
    span_lengths = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # (2K,) kept first
    return np.repeat(np.tile([False, True], num_spans), span_lengths)  # (L,)


def corrupt_spans(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    sentinel_ids: Sequence[int],
    eod_id: int,
    masked_lm_prob: float = 0.15,
    mean_ngram_size: float = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """(encoder input, target), int64, of the raw window `tokens`; `sentinel_ids[k]` is
    `<extra_id_k>` and marks the k-th noise span in both."""
    tokens = np.asarray(tokens, dtype=np.int64)  # (L,)
    is_noise = noise_mask(tokens.size, rng, masked_lm_prob, mean_ngram_size)  # (L,)
    span_starts = np.flatnonzero(is_noise & ~np.concatenate([[False], is_noise[:-1]]))  # (K,)
    num_spans = span_starts.size
    if len(sentinel_ids) < num_spans:
        raise ValueError(
            f"a window of {tokens.size} tokens has {num_spans} noise spans but the tokenizer has "
            f"only {len(sentinel_ids)} sentinel tokens; raise tokenizer.num_sentinel_tokens to "
            f"at least {num_spans}"
        )
    sentinels = np.asarray(sentinel_ids[:num_spans], dtype=np.int64)  # (K,)
    eod = np.array([eod_id], dtype=np.int64)

    # Encoder: each noise span collapses onto its first position, which now holds its sentinel.
    with_sentinels = tokens.copy()
    with_sentinels[span_starts] = sentinels
    keep = ~is_noise
    keep[span_starts] = True
    encoder_input = np.concatenate([with_sentinels[keep], eod])  # (L - N + K + 1,)

    # Target: the noise tokens, each span preceded by its sentinel.
    noise_tokens = tokens[is_noise]  # (N,)
    starts_among_noise = np.cumsum(is_noise)[span_starts] - 1  # (K,) where each span begins
    target = np.concatenate([np.insert(noise_tokens, starts_among_noise, sentinels), eod])
    return encoder_input, target  # target: (N + K + 1,)


def reconstruct_text_tokens(
    text_enc: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    sentinel_ids: Sequence[int],
    *,
    eod_id: int,
    pad_id: int,
) -> np.ndarray:
    """The raw window that `text_enc` and `labels` were made from: every sentinel of the encoder
    input replaced by its span from the target. Either may carry trailing padding.

    For tests and debugging; raises ValueError if the pair is not a well-formed corruption (a
    missing EOS, sentinels out of order or not matching between the two). Unambiguous as long as
    no raw token is a sentinel and pad_id != eod_id, both true of every tokenizer here.
    """
    encoder_input = _strip_padding_and_eod(np.asarray(text_enc, dtype=np.int64), eod_id, pad_id)
    target = _strip_padding_and_eod(np.asarray(labels, dtype=np.int64), eod_id, pad_id)
    number_of = {int(sentinel): n for n, sentinel in enumerate(sentinel_ids)}

    def sentinels_in(sequence: np.ndarray) -> tuple[list[int], list[int]]:
        positions = [i for i, token in enumerate(sequence.tolist()) if token in number_of]
        return positions, [number_of[int(sequence[i])] for i in positions]

    encoder_positions, encoder_numbers = sentinels_in(encoder_input)
    target_positions, target_numbers = sentinels_in(target)
    if encoder_numbers != list(range(len(encoder_numbers))) or target_numbers != encoder_numbers:
        raise ValueError(
            "the sentinels of the encoder input and of the target must both be <extra_id_0>, "
            f"<extra_id_1>, ... in order; got numbers {encoder_numbers} and {target_numbers}"
        )
    if target.size and target_positions[:1] != [0]:
        raise ValueError("the target must start with <extra_id_0>")
    spans = np.split(target, target_positions[1:]) if target.size else []  # each: sentinel, tokens
    pieces, previous = [], 0
    for position, span in zip(encoder_positions, spans, strict=True):
        pieces += [encoder_input[previous:position], span[1:]]
        previous = position + 1
    pieces.append(encoder_input[previous:])
    return np.concatenate(pieces)


def _strip_padding_and_eod(sequence: np.ndarray, eod_id: int, pad_id: int) -> np.ndarray:
    real = np.flatnonzero(sequence != pad_id)
    end = real[-1] + 1 if real.size else 0
    if end == 0 or sequence[end - 1] != eod_id:
        raise ValueError(f"expected an EOS (id {eod_id}) before the padding (id {pad_id})")
    return sequence[: end - 1]
