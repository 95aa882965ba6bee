"""Tokenizers behind one interface: sentencepiece models, GPT-2 BPE / BERT WordPiece / Hugging
Face tokenizer folders (read with Hugging Face's `tokenizers`), and a byte-level tokenizer."""

from megatron_lite.tokenizers.base import Tokenizer, sentinel_token
from megatron_lite.tokenizers.build import LIBRARIES, MEGATRON_TYPES, build_tokenizer
from megatron_lite.tokenizers.byte_tokenizer import ByteTokenizer
from megatron_lite.tokenizers.huggingface import HFTokenizer
from megatron_lite.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_lite.tokenizers.vocab import check_vocab_covers_tokenizer, pad_vocab_size

__all__ = [
    "LIBRARIES",
    "MEGATRON_TYPES",
    "ByteTokenizer",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "check_vocab_covers_tokenizer",
    "pad_vocab_size",
    "sentinel_token",
]
