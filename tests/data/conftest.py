"""Tokenizers shared by the data tests, trained once per session."""

from __future__ import annotations

import pytest
from data_helpers import make_documents, write_jsonl

from megatron_lite.data import train_sentencepiece
from megatron_lite.tokenizers import build_tokenizer


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory) -> str:
    """A small BPE model with byte fallback, trained on the kind of text the tests feed it."""
    directory = tmp_path_factory.mktemp("tokenizer")
    corpus = directory / "corpus.jsonl"
    write_jsonl(corpus, make_documents(200, seed=0))
    return train_sentencepiece([str(corpus)], str(directory / "bpe"), 400)


@pytest.fixture(scope="session")
def sentencepiece_tokenizer(sentencepiece_model):
    return build_tokenizer("sentencepiece", sentencepiece_model)
