"""The interface every tokenizer implements, and the T5 sentinel tokens shared by all of them.

Sentinels `<extra_id_0..N-1>` sit above the base vocabulary and count down from its top
(`<extra_id_n>` has id vocab_size - 1 - n), as in Hugging Face's T5 tokenizers, so a checkpoint's
embedding rows line up with HF's whatever the base tokenizer is.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence


def sentinel_token(n: int) -> str:
    return f"<extra_id_{n}>"


class Tokenizer(abc.ABC):
    """Text <-> token ids. Subclasses set eod_id, bos_id, pad_id and implement the base methods."""

    eod_id: int
    bos_id: int | None
    pad_id: int | None

    def __init__(self, base_vocab_size: int, num_sentinel_tokens: int) -> None:
        if num_sentinel_tokens < 0:
            raise ValueError(
                f"tokenizer.num_sentinel_tokens must be >= 0, got {num_sentinel_tokens}"
            )
        self.base_vocab_size = base_vocab_size
        self.num_sentinel_tokens = num_sentinel_tokens

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + self.num_sentinel_tokens

    def sentinel_id(self, n: int) -> int:
        """Id of `<extra_id_n>`."""
        if not 0 <= n < self.num_sentinel_tokens:
            raise ValueError(
                f"sentinel {n} does not exist: the tokenizer has {self.num_sentinel_tokens} "
                "(tokenizer.num_sentinel_tokens)"
            )
        return self.vocab_size - 1 - n

    @property
    def sentinel_ids(self) -> list[int]:
        """Ids of `<extra_id_0>`, `<extra_id_1>`, ... (descending)."""
        return [self.sentinel_id(n) for n in range(self.num_sentinel_tokens)]

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos or eod (callers add those where their format needs)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`: control tokens (eod, bos, pad) decode to nothing, sentinels to names."""
        self._check_ids(ids)
        pieces: list[str] = []
        run: list[int] = []  # consecutive base-vocabulary ids, decoded together so bytes re-join
        for token_id in ids:
            if token_id < self.base_vocab_size:
                run.append(int(token_id))
                continue
            if run:
                pieces.append(self._decode_base(run))
                run = []
            pieces.append(sentinel_token(self.vocab_size - 1 - int(token_id)))
        if run:
            pieces.append(self._decode_base(run))
        return "".join(pieces)

    def ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        self._check_ids(ids)
        return [
            self._base_token(int(i))
            if i < self.base_vocab_size
            else sentinel_token(self.vocab_size - 1 - int(i))
            for i in ids
        ]

    def _check_ids(self, ids: Sequence[int]) -> None:
        for token_id in ids:
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})"
                )

    @abc.abstractmethod
    def _decode_base(self, ids: list[int]) -> str: ...

    @abc.abstractmethod
    def _base_token(self, token_id: int) -> str: ...
