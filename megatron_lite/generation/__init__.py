"""Text generation with trained models: GPT continues a prompt, T5 maps an input to an output."""

from megatron_lite.generation.sampling import generate_ids, generate_text, sample_next_token
from megatron_lite.generation.seq2seq import (
    encode_with_sentinels,
    fill_in_spans,
    generate_seq2seq_ids,
    generate_seq2seq_text,
)

__all__ = [
    "encode_with_sentinels",
    "fill_in_spans",
    "generate_ids",
    "generate_seq2seq_ids",
    "generate_seq2seq_text",
    "generate_text",
    "sample_next_token",
]
