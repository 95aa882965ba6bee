"""Tiny corpora for the data tests (conftest.py holds the fixtures built from them)."""

from __future__ import annotations

import json
import random

import numpy as np

from megatron_lite.data import IndexedDatasetWriter

_WORDS = (
    "the of model token data attention layer train ε café 日本語 naïve x2 42 () {} := ->".split()
)
_SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "    ", ", ", ". "]


def make_documents(count: int, seed: int) -> list[str]:
    """Text with what breaks naive tokenizers: runs of spaces, tabs, newlines, non-ASCII, edges."""
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(1, 60))
        text = "".join(word + rng.choice(_SEPARATORS) for word in words)
        documents.append(rng.choice(["", " ", "\n"]) + text)
    return documents


def write_jsonl(path, documents: list[str], key: str = "text") -> None:
    with open(path, "w", encoding="utf-8") as file:
        for document in documents:
            file.write(json.dumps({key: document}) + "\n")


def write_numbered_dataset(
    prefix: str, lengths: list[int], first_number: int = 0, dtype=np.int32
) -> list[np.ndarray]:
    """Documents whose tokens say where they come from: token = 1000 * number + position, the
    documents numbered from `first_number`."""
    documents = [
        1000 * (first_number + number) + np.arange(length) for number, length in enumerate(lengths)
    ]
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for document in documents:
            writer.add_document(document)
    return documents
