"""A sentencepiece model (.model file) behind the `Tokenizer` interface."""

from __future__ import annotations

import os

import sentencepiece

from megatron_lite.tokenizers.base import Tokenizer


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, model_path: str, num_sentinel_tokens: int = 0) -> None:
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model.tokenizer.model: sentencepiece model not found: {model_path}")
        self.model_path = model_path
        self._processor = sentencepiece.SentencePieceProcessor()
        try:
            self._processor.Load(model_path)
        except (OSError, RuntimeError) as error:
            raise ValueError(
                f"model.tokenizer.model: {model_path} is not a valid sentencepiece model ({error})"
            ) from error
        super().__init__(self._processor.get_piece_size(), num_sentinel_tokens)
        if self._processor.eos_id() < 0:
            raise ValueError(
                f"model.tokenizer.model: {model_path} has no end-of-sentence piece; documents need one "
                "as their end-of-document token (train it with eos_id >= 0)"
            )
        self.eod_id = self._processor.eos_id()
        # sentencepiece reports a disabled special as -1.
        self.bos_id = self._processor.bos_id() if self._processor.bos_id() >= 0 else None
        self.pad_id = self._processor.pad_id() if self._processor.pad_id() >= 0 else None

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def _decode_base(self, ids: list[int]) -> str:
        return self._processor.decode(ids)

    def _base_token(self, token_id: int) -> str:
        return self._processor.id_to_piece(token_id)
