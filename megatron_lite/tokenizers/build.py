"""`build_tokenizer`: the tokenizer named by NeMo's `tokenizer.*` keys."""

from __future__ import annotations

from megatron_lite.tokenizers.base import Tokenizer
from megatron_lite.tokenizers.byte_tokenizer import ByteTokenizer
from megatron_lite.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

LIBRARIES = ("sentencepiece", "byte")


def build_tokenizer(
    library: str,
    model: str | None = None,
    *,
    type: str | None = None,  # noqa: A002 - NeMo's key name, so a tokenizer config can be splatted
    vocab_file: str | None = None,
    merge_file: str | None = None,
    num_sentinel_tokens: int = 0,
) -> Tokenizer:
    """The tokenizer of `library` ("sentencepiece": `model` is the .model file; "byte": no file).

    `type`, `vocab_file` and `merge_file` belong to NeMo's GPT-2 BPE / Hugging Face libraries,
    which we do not implement; they are accepted only as None so that a set one is reported
    instead of silently ignored.
    """
    if library not in LIBRARIES:
        raise ValueError(
            f"tokenizer.library={library!r} is not supported; choose one of {list(LIBRARIES)}"
        )
    for key, value in (("type", type), ("vocab_file", vocab_file), ("merge_file", merge_file)):
        if value is not None:
            raise ValueError(
                f"tokenizer.{key}={value!r} is not used by tokenizer.library={library!r}; "
                "leave it null"
            )
    if library == "byte":
        if model is not None:
            raise ValueError(
                f"tokenizer.model={model!r} is not used by tokenizer.library='byte'; leave it null"
            )
        return ByteTokenizer(num_sentinel_tokens)
    if model is None:
        raise ValueError(
            "tokenizer.model must name a .model file for tokenizer.library='sentencepiece'"
        )
    return SentencePieceTokenizer(model, num_sentinel_tokens)
