from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import make_documents, write_jsonl

from megatron_lite.data import IndexedDataset, preprocess_data
from megatron_lite.tokenizers import build_tokenizer

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _decoded_documents(prefix: str, tokenizer, append_eod: bool) -> list[str]:
    dataset = IndexedDataset(prefix)
    texts = []
    for number in range(len(dataset)):
        ids = dataset[number].tolist()
        if append_eod:
            assert ids[-1] == tokenizer.eod_id
            ids = ids[:-1]
        assert tokenizer.eod_id not in ids
        texts.append(tokenizer.decode(ids))
    return texts


@pytest.mark.parametrize("workers", [1, 2])
def test_jsonl_round_trip(tmp_path, sentencepiece_model, sentencepiece_tokenizer, workers):
    documents = make_documents(40, seed=3)
    write_jsonl(tmp_path / "part1.jsonl", documents[:25])
    write_jsonl(tmp_path / "part2.jsonl", documents[25:])
    prefixes = preprocess_data(
        [str(tmp_path / "part*.jsonl")],
        str(tmp_path / "out"),
        tokenizer_library="sentencepiece",
        tokenizer_model=sentencepiece_model,
        append_eod=True,
        workers=workers,
        show_progress=False,
    )
    assert prefixes == {"text": str(tmp_path / "out_text_document")}
    assert IndexedDataset(prefixes["text"]).dtype == np.uint16
    assert (
        _decoded_documents(prefixes["text"], sentencepiece_tokenizer, append_eod=True) == documents
    )


def test_txt_round_trip_one_document_per_file(
    tmp_path, sentencepiece_model, sentencepiece_tokenizer
):
    documents = [text for text in make_documents(6, seed=4) if text]
    for number, text in enumerate(documents):
        (tmp_path / f"doc{number}.txt").write_text(text, encoding="utf-8")
    prefixes = preprocess_data(
        [str(tmp_path / "doc*.txt")],
        str(tmp_path / "out"),
        tokenizer_library="sentencepiece",
        tokenizer_model=sentencepiece_model,
        show_progress=False,
    )
    assert (
        _decoded_documents(prefixes["text"], sentencepiece_tokenizer, append_eod=False) == documents
    )


def test_txt_one_document_per_line(tmp_path):
    (tmp_path / "lines.txt").write_text("first line\nsecond  line\n\nfourth\n", encoding="utf-8")
    prefixes = preprocess_data(
        [str(tmp_path / "lines.txt")],
        str(tmp_path / "out"),
        tokenizer_library="byte",
        text_sample_by="line",
        show_progress=False,
    )
    assert _decoded_documents(prefixes["text"], build_tokenizer("byte"), False) == [
        "first line",
        "second  line",
        "",
        "fourth",
    ]


def test_parquet_round_trip(tmp_path, sentencepiece_model, sentencepiece_tokenizer):
    documents = make_documents(30, seed=5)
    pq.write_table(pa.table({"text": documents, "id": list(range(30))}), tmp_path / "data.parquet")
    prefixes = preprocess_data(
        [str(tmp_path / "data.parquet")],
        str(tmp_path / "out"),
        tokenizer_library="sentencepiece",
        tokenizer_model=sentencepiece_model,
        append_eod=True,
        show_progress=False,
    )
    assert (
        _decoded_documents(prefixes["text"], sentencepiece_tokenizer, append_eod=True) == documents
    )


def test_several_json_keys_give_one_dataset_each(tmp_path):
    records = [{"title": f"title {n}", "body": "body " * n} for n in range(5)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    prefixes = preprocess_data(
        [str(tmp_path / "records.jsonl")],
        str(tmp_path / "out"),
        tokenizer_library="byte",
        json_keys=["title", "body"],
        show_progress=False,
    )
    tokenizer = build_tokenizer("byte")
    assert _decoded_documents(prefixes["title"], tokenizer, False) == [r["title"] for r in records]
    assert _decoded_documents(prefixes["body"], tokenizer, False) == [r["body"] for r in records]


def test_missing_input_is_named(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"--input: no input file matches .*absent\*\.jsonl"
    ):
        preprocess_data(
            [str(tmp_path / "absent*.jsonl")], str(tmp_path / "out"), tokenizer_library="byte"
        )


def test_mixed_formats_are_rejected(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ["x"])
    (tmp_path / "b.txt").write_text("y")
    with pytest.raises(ValueError, match="--input mixes formats"):
        preprocess_data(
            [str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt")],
            str(tmp_path / "out"),
            tokenizer_library="byte",
        )


def test_missing_json_key_is_named(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ["x"], key="content")
    with pytest.raises(
        ValueError, match=r"--json-keys \['text'\] not found .* fields are \['content'\]"
    ):
        preprocess_data(
            [str(tmp_path / "a.jsonl")],
            str(tmp_path / "out"),
            tokenizer_library="byte",
            show_progress=False,
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.jsonl"]  # no half output


def test_record_without_text_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n{"text": null}\n')
    with pytest.raises(ValueError, match=r"record 1 of .* has no text in field 'text'"):
        preprocess_data(
            [str(tmp_path / "a.jsonl")],
            str(tmp_path / "out"),
            tokenizer_library="byte",
            show_progress=False,
        )


def test_scripts_train_a_tokenizer_and_preprocess(tmp_path, monkeypatch, capsys):
    documents = make_documents(100, seed=6)
    write_jsonl(tmp_path / "corpus.jsonl", documents, key="content")
    monkeypatch.setattr(sys, "argv", [
        "train_tokenizer.py", "--input", str(tmp_path / "corpus.jsonl"), "--json-key", "content",
        "--vocab-size", "350", "--model-type", "unigram", "--output-prefix", str(tmp_path / "tok"),
    ])  # fmt: skip
    runpy.run_path(str(SCRIPTS / "train_tokenizer.py"), run_name="__main__")
    model = capsys.readouterr().out.strip()
    assert model == str(tmp_path / "tok.model")
    monkeypatch.setattr(sys, "argv", [
        "preprocess_data.py", "--input", str(tmp_path / "corpus.jsonl"), "--json-keys", "content",
        "--tokenizer-library", "sentencepiece", "--tokenizer-model", model,
        "--output-prefix", str(tmp_path / "corpus"), "--append-eod", "--workers", "2",
    ])  # fmt: skip
    runpy.run_path(str(SCRIPTS / "preprocess_data.py"), run_name="__main__")
    prefix = capsys.readouterr().out.strip()
    assert prefix == str(tmp_path / "corpus_content_document")
    tokenizer = build_tokenizer("sentencepiece", model)
    assert tokenizer.vocab_size == 350
    assert _decoded_documents(prefix, tokenizer, append_eod=True) == documents
