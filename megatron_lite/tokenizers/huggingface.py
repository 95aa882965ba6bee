"""Tokenizers NeMo users keep on disk, read with Hugging Face's `tokenizers` from local files only:
GPT-2's byte-level BPE (vocab.json + merges.txt), BERT's WordPiece (vocab.txt), and a Hugging
Face tokenizer folder (tokenizer.json, with its special tokens in tokenizer_config.json or
special_tokens_map.json).

End of document is what NeMo uses: GPT-2's <|endoftext|>, BERT's [SEP], a folder's eos token
(else its sep token).
"""

from __future__ import annotations

import json
import os
from typing import Any

from megatron_lite.extras import import_optional
from megatron_lite.tokenizers.base import Tokenizer

GPT2_EOD = "<|endoftext|>"
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[CLS]", "eod": "[SEP]", "mask": "[MASK]"}
# Where a tokenizer folder names its special tokens, in the order they are read.
_SPECIAL_TOKEN_FILES = ("special_tokens_map.json", "tokenizer_config.json")


def _tokenizers() -> Any:
    return import_optional("tokenizers", extra="hf", needed_for="a GPT-2 BPE, WordPiece or Hugging Face tokenizer")


def _require_file(path: str | None, key: str, what: str) -> str:
    if path is None:
        raise ValueError(
            f"model.tokenizer.{key} is not set: it must name the local {what} (megatron_lite reads "
            "tokenizers from files; NeMo would download them)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.tokenizer.{key}: {what} not found: {path}")
    return path


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` behind our interface; eod, bos and pad are named by their token."""

    def __init__(self, backend: Any, source: str, *, eod: str, bos: str | None, pad: str | None,
                 num_sentinel_tokens: int = 0) -> None:
        self._backend = backend
        self.source = source
        specials = [token for token in (eod, bos, pad) if token is not None]
        for token in specials:
            if backend.token_to_id(token) is None:
                raise ValueError(f"{source} has no {token!r} token in its vocabulary")
        # Special: decoded to nothing, never split by the pre-tokenizer (already in the vocabulary,
        # so no id is added).
        backend.add_special_tokens(specials)
        super().__init__(backend.get_vocab_size(with_added_tokens=True), num_sentinel_tokens)
        self.eod_id = backend.token_to_id(eod)
        self.bos_id = None if bos is None else backend.token_to_id(bos)
        self.pad_id = None if pad is None else backend.token_to_id(pad)

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def _decode_base(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=True)

    def _base_token(self, token_id: int) -> str:
        return self._backend.id_to_token(token_id)


def gpt2_bpe_tokenizer(vocab_file: str | None, merge_file: str | None,
                       num_sentinel_tokens: int = 0) -> HFTokenizer:
    """GPT-2's byte-level BPE from its vocab.json and merges.txt."""
    vocab_file = _require_file(vocab_file, "vocab_file", "GPT-2 vocab.json")
    merge_file = _require_file(merge_file, "merge_file", "GPT-2 merges.txt")
    hf = _tokenizers()
    try:
        model = hf.models.BPE.from_file(vocab_file, merge_file)
    except Exception as error:  # tokenizers raises a bare Exception for unreadable files
        raise ValueError(
            f"model.tokenizer.vocab_file={vocab_file} / merge_file={merge_file} are not a GPT-2 "
            f"BPE vocab.json and merges.txt ({error})"
        ) from None
    backend = hf.Tokenizer(model)
    backend.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = hf.decoders.ByteLevel()
    return HFTokenizer(backend, vocab_file, eod=GPT2_EOD, bos=GPT2_EOD, pad=None,
                       num_sentinel_tokens=num_sentinel_tokens)


def bert_wordpiece_tokenizer(vocab_file: str | None, *, lowercase: bool,
                             num_sentinel_tokens: int = 0) -> HFTokenizer:
    """BERT's WordPiece from its vocab.txt (cased or lower-cased, as NeMo's BertWordPiece*)."""
    vocab_file = _require_file(vocab_file, "vocab_file", "BERT vocab.txt")
    hf = _tokenizers()
    try:
        model = hf.models.WordPiece.from_file(vocab_file, unk_token=BERT_SPECIALS["unk"])
    except Exception as error:  # tokenizers raises a bare Exception for unreadable files
        raise ValueError(
            f"model.tokenizer.vocab_file={vocab_file} is not a WordPiece vocab.txt ({error})"
        ) from None
    backend = hf.Tokenizer(model)
    backend.normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    backend.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    backend.decoder = hf.decoders.WordPiece()
    return HFTokenizer(backend, vocab_file, eod=BERT_SPECIALS["eod"], bos=BERT_SPECIALS["bos"],
                       pad=BERT_SPECIALS["pad"], num_sentinel_tokens=num_sentinel_tokens)


def _special_token(folder: str, name: str) -> str | None:
    """The folder's `<name>_token` (e.g. eos_token), a string or {"content": ...}, or None."""
    for filename in _SPECIAL_TOKEN_FILES:
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                value = json.load(file).get(f"{name}_token")
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(f"{path} is not a JSON object ({error})") from None
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            return value
    return None


def tokenizer_folder(folder: str, num_sentinel_tokens: int = 0) -> HFTokenizer:
    """A Hugging Face tokenizer folder (what save_pretrained writes): tokenizer.json and the
    special tokens of its config files."""
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"model.tokenizer.type={folder}: no tokenizer.json in that folder (a Hugging Face "
            "tokenizer folder, as save_pretrained writes it)"
        )
    hf = _tokenizers()
    try:
        backend = hf.Tokenizer.from_file(path)
    except Exception as error:  # tokenizers raises a bare Exception for unreadable files
        raise ValueError(f"{path} is not a Hugging Face tokenizer ({error})") from None
    eod = _special_token(folder, "eos") or _special_token(folder, "sep")
    if eod is None:
        raise ValueError(
            f"model.tokenizer.type={folder}: the folder names no eos_token (nor sep_token) in "
            f"{' or '.join(_SPECIAL_TOKEN_FILES)}; documents need one as their end"
        )
    return HFTokenizer(backend, path, eod=eod, bos=_special_token(folder, "bos"),
                       pad=_special_token(folder, "pad"), num_sentinel_tokens=num_sentinel_tokens)
