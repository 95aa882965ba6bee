"""Tokenizers: sentencepiece models and a byte-level tokenizer behind one interface."""

from megatron_lite.tokenizers.base import Tokenizer, sentinel_token
from megatron_lite.tokenizers.build import LIBRARIES, build_tokenizer
from megatron_lite.tokenizers.byte_tokenizer import ByteTokenizer
from megatron_lite.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_lite.tokenizers.vocab import check_vocab_covers_tokenizer, pad_vocab_size

__all__ = [
    "LIBRARIES",
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "check_vocab_covers_tokenizer",
    "pad_vocab_size",
    "sentinel_token",
]
