"""`build_tokenizer`: the tokenizer named by NeMo's `tokenizer.*` keys.

| library | keys | tokenizer |
|---|---|---|
| sentencepiece | model: the .model file | sentencepiece |
| megatron | type: GPT2BPETokenizer, vocab_file, merge_file | GPT-2 byte-level BPE |
| megatron | type: BertWordPieceCase / BertWordPieceLowerCase, vocab_file | BERT WordPiece |
| huggingface | type: a local tokenizer folder | its tokenizer.json |
| huggingface | vocab_file, merge_file (type names the model they belong to) | GPT-2 byte-level BPE |
| byte | none | UTF-8 bytes (tests, smoke runs) |

Files are always local: where NeMo would download a tokenizer by name, this says which key
must name a file. A key the library does not read must be left null.
"""

from __future__ import annotations

import os

from megatron_lite.tokenizers.base import Tokenizer
from megatron_lite.tokenizers.byte_tokenizer import ByteTokenizer
from megatron_lite.tokenizers.huggingface import (
    bert_wordpiece_tokenizer,
    gpt2_bpe_tokenizer,
    tokenizer_folder,
)
from megatron_lite.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

LIBRARIES = ("sentencepiece", "megatron", "huggingface", "byte")
MEGATRON_TYPES = ("GPT2BPETokenizer", "BertWordPieceCase", "BertWordPieceLowerCase")


def _refuse_set(reader: str, **values: str | None) -> None:
    """ValueError for a key set that `reader` (the tokenizer chosen) does not read."""
    for key, value in values.items():
        if value is not None:
            raise ValueError(f"model.tokenizer.{key}={value!r} is not used by {reader}; leave it null")


def build_tokenizer(
    library: str,
    model: str | None = None,
    *,
    type: str | None = None,  # noqa: A002 - NeMo's key name, so a tokenizer config can be splatted
    vocab_file: str | None = None,
    merge_file: str | None = None,
    num_sentinel_tokens: int = 0,
) -> Tokenizer:
    """The tokenizer of `library` and its keys (the table above)."""
    if library not in LIBRARIES:
        raise ValueError(
            f"model.tokenizer.library={library!r} is not supported; choose one of {list(LIBRARIES)}"
        )
    reader = f"model.tokenizer.library={library!r}"
    if library == "megatron":
        _refuse_set(reader, model=model)
        if type not in MEGATRON_TYPES:
            raise ValueError(
                f"model.tokenizer.type={type!r} is not a tokenizer of library 'megatron' here; "
                f"choose one of {list(MEGATRON_TYPES)}"
            )
        if type == "GPT2BPETokenizer":
            return gpt2_bpe_tokenizer(vocab_file, merge_file, num_sentinel_tokens)
        _refuse_set(f"{reader} with type {type!r}", merge_file=merge_file)
        return bert_wordpiece_tokenizer(vocab_file, lowercase=type == "BertWordPieceLowerCase",
                                        num_sentinel_tokens=num_sentinel_tokens)
    if library == "huggingface":
        _refuse_set(reader, model=model)
        if vocab_file is not None or merge_file is not None:
            return gpt2_bpe_tokenizer(vocab_file, merge_file, num_sentinel_tokens)
        if type is None or not os.path.isdir(type):
            raise ValueError(
                f"model.tokenizer.type={type!r} is not a local folder: with library "
                "'huggingface', type names a tokenizer folder (tokenizer.json; no downloads), or "
                "vocab_file and merge_file name a GPT-2 BPE's files"
            )
        return tokenizer_folder(type, num_sentinel_tokens)
    _refuse_set(reader, type=type, vocab_file=vocab_file, merge_file=merge_file)
    if library == "byte":
        _refuse_set(reader, model=model)
        return ByteTokenizer(num_sentinel_tokens)
    if model is None:
        raise ValueError(
            "model.tokenizer.model must name a .model file for model.tokenizer.library='sentencepiece'"
        )
    return SentencePieceTokenizer(model, num_sentinel_tokens)
