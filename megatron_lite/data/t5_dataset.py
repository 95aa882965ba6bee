"""T5 pretraining samples: GPT-style packed windows of raw tokens, span-corrupted per sample.

The windows come from `GPTDataset` (documents shuffled and packed back to back, cached index
arrays, splits and blending all as for GPT), sized so that the encoder input fills
model.seq_length; `span_corruption` turns each into an (encoder input, target) pair with an
rng seeded from (seed, item index), so item i is a pure function of i, as GPT's are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from megatron_lite.data.blended_dataset import BlendedDataset
from megatron_lite.data.gpt_dataset import GPTDataset
from megatron_lite.data.gpt_datasets import build_gpt_datasets
from megatron_lite.data.span_corruption import (
    corrupt_spans,
    corrupted_lengths,
    noise_span_counts,
    raw_length_for_encoder,
)
from megatron_lite.tokenizers import Tokenizer


@dataclass(frozen=True)
class T5SampleLengths:
    """How long every sample of a T5 dataset is; the same for all, since the counts of noise
    tokens and spans depend on the raw window length alone."""

    raw_length: int  # raw tokens read per sample
    encoder_length: int  # real encoder tokens (EOS included): model.seq_length or one less
    target_length: int  # real target tokens (EOS included): <= data.seq_length_dec
    num_noise_spans: int  # sentinels used per sample: <extra_id_0 .. K-1>


def t5_sample_lengths(
    seq_length: int,
    seq_length_dec: int,
    masked_lm_prob: float,
    mean_ngram_size: float,
    num_sentinel_tokens: int,
) -> T5SampleLengths:
    """The sample lengths for these settings; ValueError naming the key when they cannot work."""
    raw_length = raw_length_for_encoder(seq_length, masked_lm_prob, mean_ngram_size)
    encoder_length, target_length = corrupted_lengths(raw_length, masked_lm_prob, mean_ngram_size)
    _, num_spans = noise_span_counts(raw_length, masked_lm_prob, mean_ngram_size)
    # The decoder reads the start token then the target without its EOS: target_length tokens.
    if target_length > seq_length_dec:
        raise ValueError(
            f"data.seq_length_dec={seq_length_dec} is too short: model.seq_length={seq_length} "
            f"with data.masked_lm_prob={masked_lm_prob} and data.mean_ngram_size="
            f"{mean_ngram_size} makes targets of {target_length} tokens (sentinels and EOS "
            f"included; the decoder reads the start token and all but the EOS); set "
            f"data.seq_length_dec >= {target_length}"
        )
    if num_sentinel_tokens < num_spans:
        raise ValueError(
            f"tokenizer.num_sentinel_tokens={num_sentinel_tokens} is too few: every sample of "
            f"model.seq_length={seq_length} has {num_spans} masked spans, each needing its own "
            f"sentinel; set tokenizer.num_sentinel_tokens >= {num_spans}"
        )
    return T5SampleLengths(raw_length, encoder_length, target_length, num_spans)


def t5_sample_fields(
    encoder_input: np.ndarray,
    target: np.ndarray,
    *,
    seq_length: int,
    seq_length_dec: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """The model inputs of one (encoder input, target) pair, padded with pad_id; pad_id is also
    the decoder's start token, as in T5."""
    # Internal invariant: T5Dataset sized the windows so that both fit.
    assert encoder_input.size <= seq_length and target.size <= seq_length_dec
    text_enc = np.full(seq_length, pad_id, dtype=np.int64)
    text_enc[: encoder_input.size] = encoder_input
    labels = np.full(seq_length_dec, pad_id, dtype=np.int64)
    labels[: target.size] = target
    # Teacher forcing: the decoder sees the start token, then the target up to (not incl.) EOS.
    text_dec = np.full(seq_length_dec, pad_id, dtype=np.int64)
    text_dec[1 : target.size] = target[:-1]
    enc_mask = np.arange(seq_length) < encoder_input.size  # (S,) True on real tokens
    dec_mask = np.arange(seq_length_dec) < target.size  # (S_dec,)
    return {
        "text_enc": torch.from_numpy(text_enc),
        "text_dec": torch.from_numpy(text_dec),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(dec_mask.astype(np.float32)),
        "enc_mask": torch.from_numpy(enc_mask),
        "dec_mask": torch.from_numpy(dec_mask),
    }


class T5Dataset(Dataset):
    """Span-corrupted samples over the raw windows of `windows`, whose windows must hold
    `t5_sample_lengths(...).raw_length` tokens (build_t5_datasets builds it so).

    Items are dicts: text_enc int64 [S], text_dec int64 [S_dec], labels int64 [S_dec],
    loss_mask float32 [S_dec], enc_mask bool [S], dec_mask bool [S_dec]
    (S = model.seq_length, S_dec = data.seq_length_dec; masks are True / 1 on real tokens).
    """

    def __init__(
        self,
        windows: GPTDataset,
        *,
        seq_length: int,
        seq_length_dec: int,
        seed: int,
        eod_id: int,
        pad_id: int,
        sentinel_ids: Sequence[int],
        masked_lm_prob: float = 0.15,
        mean_ngram_size: float = 3,
    ) -> None:
        self.lengths = t5_sample_lengths(
            seq_length, seq_length_dec, masked_lm_prob, mean_ngram_size, len(sentinel_ids)
        )
        if windows.seq_length + 1 != self.lengths.raw_length:
            raise ValueError(
                f"the windows hold {windows.seq_length + 1} tokens but span corruption into "
                f"model.seq_length={seq_length} needs {self.lengths.raw_length}"
            )
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.windows = windows
        self.seq_length = seq_length
        self.seq_length_dec = seq_length_dec
        self.seed = seed
        self.pad_id = pad_id
        self.corruption_options = {
            "sentinel_ids": [int(sentinel) for sentinel in sentinel_ids],
            "eod_id": eod_id,
            "masked_lm_prob": masked_lm_prob,
            "mean_ngram_size": mean_ngram_size,
        }

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, index: int) -> np.ndarray:
        """The raw tokens item `index` is made from."""
        return self.windows.window(index)

    def corrupted(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(encoder input, target) of item `index`, unpadded."""
        rng = np.random.default_rng([self.seed, index])  # this item's own stream
        return corrupt_spans(self.window(index), rng, **self.corruption_options)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        encoder_input, target = self.corrupted(index)
        return t5_sample_fields(
            encoder_input,
            target,
            seq_length=self.seq_length,
            seq_length_dec=self.seq_length_dec,
            pad_id=self.pad_id,
        )


def build_t5_datasets(
    data_prefix: str | Sequence[object] | Mapping[str, object],
    splits_string: str,
    seq_length: int,
    seq_length_dec: int,
    seed: int,
    num_samples: Sequence[int],
    *,
    tokenizer: Tokenizer,
    masked_lm_prob: float = 0.15,
    mean_ngram_size: float = 3,
    cache_dir: str | None = None,
) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
    """(train, valid, test) T5 datasets of `num_samples` = (train, valid, test) samples each.

    Splits, blending, caching and None for an empty split are those of `build_gpt_datasets`;
    every settings error is raised here, before any file is read.
    """
    if tokenizer.pad_id is None:
        raise ValueError(
            "the tokenizer has no pad token, which T5 needs for padding and as the decoder's "
            "start token; use one with a pad token (scripts/train_tokenizer.py trains sentencepiece "
            "models with one; BERT WordPiece has [PAD])"
        )
    lengths = t5_sample_lengths(
        seq_length, seq_length_dec, masked_lm_prob, mean_ngram_size, tokenizer.num_sentinel_tokens
    )
    window_datasets = build_gpt_datasets(
        data_prefix,
        splits_string,
        lengths.raw_length - 1,  # a GPT window holds seq_length + 1 tokens
        seed,
        num_samples,
        reset_position_ids=False,  # these three shape GPT items only; T5 reads raw windows
        reset_attention_mask=False,
        eod_mask_loss=False,
        eod_id=tokenizer.eod_id,
        # Sentinels sit above the base vocabulary: a data token there would pass for one.
        vocab_size=tokenizer.base_vocab_size,
        cache_dir=cache_dir,
    )
    t5_options = {
        "seq_length": seq_length,
        "seq_length_dec": seq_length_dec,
        "seed": seed,
        "eod_id": tokenizer.eod_id,
        "pad_id": tokenizer.pad_id,
        "sentinel_ids": tokenizer.sentinel_ids,
        "masked_lm_prob": masked_lm_prob,
        "mean_ngram_size": mean_ngram_size,
    }

    def corrupted(windows: Dataset | None) -> Dataset | None:
        if isinstance(windows, BlendedDataset):
            parts = [corrupted(part) for part in windows.datasets]
            return BlendedDataset(parts, windows.dataset_index, windows.dataset_sample_index)
        return None if windows is None else T5Dataset(windows, **t5_options)

    return tuple(corrupted(windows) for windows in window_datasets)
