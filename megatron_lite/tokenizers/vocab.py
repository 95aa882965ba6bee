"""Embedding-table size versus the tokenizer's vocabulary."""

from __future__ import annotations

from megatron_lite.tokenizers.base import Tokenizer


def pad_vocab_size(
    vocab_size: int, make_vocab_size_divisible_by: int = 128, tensor_parallel_size: int = 1
) -> int:
    """The vocabulary rounded up so every tensor-parallel shard of the embedding has the same,
    GPU-friendly number of rows (Megatron's padded_vocab_size)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if make_vocab_size_divisible_by < 1:
        raise ValueError(
            "model.make_vocab_size_divisible_by must be positive, "
            f"got {make_vocab_size_divisible_by}"
        )
    if tensor_parallel_size < 1:
        raise ValueError(
            f"model.tensor_model_parallel_size must be positive, got {tensor_parallel_size}"
        )
    multiple = make_vocab_size_divisible_by * tensor_parallel_size
    return -(-vocab_size // multiple) * multiple


def check_vocab_covers_tokenizer(padded_vocab_size: int, tokenizer: Tokenizer) -> None:
    """Fail at start-up, not with an out-of-range embedding lookup (a device assert on CUDA)."""
    if padded_vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model.padded_vocab_size={padded_vocab_size} is smaller than the tokenizer's "
            f"vocabulary of {tokenizer.vocab_size} tokens (sentinels included); token ids would "
            "index past the embedding table"
        )
