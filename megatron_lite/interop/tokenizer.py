"""Tokenizer files between Hugging Face model folders and our `model.tokenizer.*` keys.

Import: a folder's sentencepiece model (tokenizer.model / spiece.model) becomes
library=sentencepiece, with T5's <extra_id_n> sentinels as num_sentinel_tokens (both count down
from the top of the vocabulary); otherwise its tokenizer.json becomes library=huggingface with the
folder as type, or its vocab.json + merges.txt a GPT-2 BPE.

Export: the Hugging Face files a tokenizer came with are copied as they are; a sentencepiece
model of our own is written as tokenizer.model with a tokenizer_config.json naming
LlamaTokenizer (transformers reads a byte-fallback BPE model, as scripts/train_tokenizer.py
trains, into the same ids as sentencepiece), no bos / eos added (our data has none but the eod
ending each document), and the sentinels as added tokens at our ids; a GPT-2 BPE's
vocab.json + merges.txt as GPT2Tokenizer's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import sentencepiece

from megatron_lite.config import TokenizerConfig
from megatron_lite.interop.files import read_json, write_json
from megatron_lite.tokenizers import Tokenizer, sentinel_token

SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model")
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# Every file save_pretrained may write for a tokenizer.
HF_TOKENIZER_FILES = (*SENTENCEPIECE_FILES, "tokenizer.json", TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP,
                      "added_tokens.json", "vocab.json", "merges.txt")
# T5Tokenizer's sentinel count when a folder does not say.
T5_DEFAULT_EXTRA_IDS = 100
_SENTINEL = re.compile(r"<extra_id_(\d+)>")
GPT2_EOD = "<|endoftext|>"


def has_tokenizer(config: TokenizerConfig) -> bool:
    """False for the keys of a model converted without a tokenizer (the schema's defaults:
    library sentencepiece with no model file)."""
    return not (config.library == "sentencepiece" and config.model is None)


def copy_tokenizer_files(source: Path, destination: Path) -> None:
    for name in HF_TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, destination / name)


def _token_contents(value: Any) -> list[str]:
    """Token strings of a tokenizer_config.json value: a string, {"content": ...}, or lists and
    dicts of those."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "content" in value:
            return [value["content"]]
        return [token for item in value.values() for token in _token_contents(item)]
    if isinstance(value, list):
        return [token for item in value for token in _token_contents(item)]
    return []


def t5_sentinel_count(folder: Path) -> int:
    """How many <extra_id_n> a T5 folder's tokenizer appends: tokenizer_config.json's extra_ids,
    else the sentinels its special tokens name, else T5Tokenizer's default of 100."""
    found: set[str] = set()
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        if not (folder / name).is_file():
            continue
        config = read_json(folder / name)
        if name == TOKENIZER_CONFIG and isinstance(config.get("extra_ids"), int):
            return config["extra_ids"]
        for key in ("added_tokens_decoder", "additional_special_tokens", "extra_special_tokens"):
            found.update(token for token in _token_contents(config.get(key)) if _SENTINEL.fullmatch(token))
    return len(found) or T5_DEFAULT_EXTRA_IDS


def imported_tokenizer(folder: Path, *, family: str) -> tuple[TokenizerConfig | None, str | None]:
    """(our tokenizer keys for the folder's files, None) or (None, why there are none)."""
    for name in SENTENCEPIECE_FILES:
        if (folder / name).is_file():
            sentinels = t5_sentinel_count(folder) if family == "t5" else 0
            return TokenizerConfig(library="sentencepiece", model=str(folder / name),
                                   num_sentinel_tokens=sentinels), None
    if family == "t5":
        # Our T5 appends the sentinels above a base vocabulary; a tokenizer.json holds them inside.
        return None, (f"{folder} has no sentencepiece model ({' / '.join(SENTENCEPIECE_FILES)}), "
                      "from which our T5 reads its tokenizer")
    if (folder / "tokenizer.json").is_file():
        return TokenizerConfig(library="huggingface", type=str(folder)), None
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return TokenizerConfig(library="huggingface", vocab_file=str(folder / "vocab.json"),
                               merge_file=str(folder / "merges.txt")), None
    return None, f"{folder} holds no tokenizer files"


def _came_from_hf(tokenizer: TokenizerConfig) -> Path | None:
    """The Hugging Face folder a tokenizer's files were imported from, or None."""
    if tokenizer.library == "huggingface" and tokenizer.type is not None:
        return Path(tokenizer.type)
    if tokenizer.library == "sentencepiece" and tokenizer.model is not None:
        model = Path(tokenizer.model)
        if model.name in SENTENCEPIECE_FILES and (model.parent / TOKENIZER_CONFIG).is_file():
            return model.parent
    return None


def _sentencepiece_config(model: str, tokenizer: Tokenizer) -> dict[str, Any]:
    processor = sentencepiece.SentencePieceProcessor(model_file=model)
    config: dict[str, Any] = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False,
                              "add_eos_token": False}
    for name, token_id in (("unk", processor.unk_id()), ("bos", processor.bos_id()),
                           ("eos", processor.eos_id()), ("pad", processor.pad_id())):
        if token_id >= 0:  # sentencepiece's -1: no such piece
            config[f"{name}_token"] = processor.id_to_piece(token_id)
    if tokenizer.num_sentinel_tokens:
        # Added tokens keyed by id, so <extra_id_0> lands on the top id as in ours.
        config["added_tokens_decoder"] = {
            str(token_id): {"content": sentinel_token(n), "special": True, "normalized": False,
                            "lstrip": False, "rstrip": False, "single_word": False}
            for n, token_id in enumerate(tokenizer.sentinel_ids)
        }
        config["additional_special_tokens"] = [sentinel_token(n) for n in range(tokenizer.num_sentinel_tokens)]
    return config


def write_hf_tokenizer(config: TokenizerConfig, tokenizer: Tokenizer, folder: Path) -> list[str]:
    """The tokenizer's files in `folder`; returns notes on what could not be written."""
    source = _came_from_hf(config)
    if source is not None:
        copy_tokenizer_files(source, folder)
        return []
    if config.library == "sentencepiece":
        shutil.copy2(config.model, folder / "tokenizer.model")
        write_json(folder / TOKENIZER_CONFIG, _sentencepiece_config(config.model, tokenizer))
        return []
    if config.vocab_file is not None and config.merge_file is not None:  # GPT-2's byte-level BPE
        shutil.copy2(config.vocab_file, folder / "vocab.json")
        shutil.copy2(config.merge_file, folder / "merges.txt")
        write_json(folder / TOKENIZER_CONFIG, {
            "tokenizer_class": "GPT2Tokenizer", "add_bos_token": False,
            "bos_token": GPT2_EOD, "eos_token": GPT2_EOD, "unk_token": GPT2_EOD,
        })
        notes = []
        if tokenizer.num_sentinel_tokens:
            notes.append(f"the {tokenizer.num_sentinel_tokens} sentinel tokens are not written "
                         "into the GPT-2 tokenizer's files")
        return notes
    return [f"no Hugging Face tokenizer files exist for model.tokenizer.library={config.library!r}"
            + (f" type={config.type!r}" if config.type else "") + ": the folder holds the model only"]
