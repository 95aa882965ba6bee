"""A sentencepiece model shared by the interop tests, trained once per session."""

from __future__ import annotations

import json

import pytest

from megatron_lite.data import train_sentencepiece

WORDS = "the cat dog sees a ball tree house moon book water bird friend teacher child likes".split()


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory) -> str:
    """A 300-piece BPE model with byte fallback (scripts/train_tokenizer.py's settings)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as file:
        for i in range(200):
            words = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(30))
            file.write(json.dumps({"text": f"{words}.\n    indented  line {i}"}) + "\n")
    return train_sentencepiece([str(folder / "corpus.jsonl")], str(folder / "bpe"), 300)
