from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest

from megatron_lite.data import IndexedDataset, default_cache_dir, prepare_default_corpus
from megatron_lite.tokenizers import build_tokenizer

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def built_corpus(tmp_path_factory) -> Path:
    cache_dir = tmp_path_factory.mktemp("pydoc")
    prepare_default_corpus(str(cache_dir))
    return cache_dir


def _mtimes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}


def test_corpus_is_pydoc_topics_tokenized_with_eod(built_corpus):
    from pydoc_data.topics import topics

    data_prefix, model = prepare_default_corpus(str(built_corpus))
    assert (data_prefix, model) == (
        str(built_corpus / "pydoc_text_document"),
        str(built_corpus / "tokenizer.model"),
    )
    tokenizer = build_tokenizer("sentencepiece", model)
    assert tokenizer.vocab_size == 4096
    dataset = IndexedDataset(data_prefix)
    lines = (built_corpus / "pydoc_topics.jsonl").read_text(encoding="utf-8").splitlines()
    titles = [json.loads(line)["title"] for line in lines]
    assert titles == sorted(topics) and len(dataset) == len(topics)
    for number, title in enumerate(titles):
        ids = dataset[number].tolist()
        assert ids[-1] == tokenizer.eod_id
        assert tokenizer.decode(ids[:-1]) == topics[title]


def test_second_call_reuses_every_file(built_corpus, capsys):
    before = _mtimes(built_corpus)
    prepare_default_corpus(str(built_corpus))
    assert _mtimes(built_corpus) == before
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "re-using cached files" in message


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_incomplete_data_is_rebuilt_with_the_same_tokenizer(built_corpus, tmp_path, capsys, damage):
    cache_dir = tmp_path / "copy"
    shutil.copytree(built_corpus, cache_dir)
    expected = (cache_dir / "pydoc_text_document.bin").read_bytes()
    tokenizer_mtime = (cache_dir / "tokenizer.model").stat().st_mtime_ns
    if damage == "delete":
        (cache_dir / "pydoc_text_document.bin").unlink()
    else:
        os.truncate(cache_dir / "pydoc_text_document.bin", 1000)
    prepare_default_corpus(str(cache_dir))
    assert "built data in" in capsys.readouterr().err
    assert (cache_dir / "pydoc_text_document.bin").read_bytes() == expected
    assert (cache_dir / "tokenizer.model").stat().st_mtime_ns == tokenizer_mtime


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("MEGATRON_LITE_CACHE", raising=False)
    assert default_cache_dir() == os.path.join(".cache", "megatron_lite", "pydoc")
    monkeypatch.setenv("MEGATRON_LITE_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == str(tmp_path / "elsewhere" / "pydoc")


def test_script_prints_the_two_paths(built_corpus, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["prepare_default_corpus.py", "--cache-dir", str(built_corpus)]
    )
    runpy.run_path(str(SCRIPTS / "prepare_default_corpus.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        str(built_corpus / "pydoc_text_document"),
        str(built_corpus / "tokenizer.model"),
    ]
