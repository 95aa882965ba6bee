"""Text generation with trained models: GPT continues a prompt, T5 maps an input to an output."""

from megatron_lite.generation.sampling import (
    generate_batch,
    generate_ids,
    generate_text,
    generate_texts,
    sample_next_token,
)
from megatron_lite.generation.seq2seq import (
    encode_with_sentinels,
    fill_in_spans,
    generate_seq2seq_ids,
    generate_seq2seq_text,
    generate_seq2seq_texts,
)

__all__ = [
    "encode_with_sentinels",
    "fill_in_spans",
    "generate_batch",
    "generate_ids",
    "generate_seq2seq_ids",
    "generate_seq2seq_text",
    "generate_seq2seq_texts",
    "generate_text",
    "generate_texts",
    "sample_next_token",
]
