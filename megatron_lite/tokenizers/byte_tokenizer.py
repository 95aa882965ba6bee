"""A deterministic byte-level tokenizer: ids 0..255 are the UTF-8 bytes, then three specials.

It needs no model file, so tests and smoke runs can tokenize any text without training anything.
"""

from __future__ import annotations

from megatron_lite.tokenizers.base import Tokenizer

_NUM_BYTES = 256
_SPECIAL_TOKENS = ("<eod>", "<bos>", "<pad>")  # ids 256, 257, 258


class ByteTokenizer(Tokenizer):
    def __init__(self, num_sentinel_tokens: int = 0) -> None:
        super().__init__(_NUM_BYTES + len(_SPECIAL_TOKENS), num_sentinel_tokens)
        self.eod_id = _NUM_BYTES
        self.bos_id = _NUM_BYTES + 1
        self.pad_id = _NUM_BYTES + 2

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def _decode_base(self, ids: list[int]) -> str:
        # Arbitrary ids can cut a multi-byte character: show U+FFFD, as sentencepiece does.
        return bytes(i for i in ids if i < _NUM_BYTES).decode("utf-8", errors="replace")

    def _base_token(self, token_id: int) -> str:
        if token_id < _NUM_BYTES:
            return f"<0x{token_id:02X}>"  # sentencepiece's spelling of byte pieces
        return _SPECIAL_TOKENS[token_id - _NUM_BYTES]
