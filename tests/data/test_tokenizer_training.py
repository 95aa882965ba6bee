from __future__ import annotations

import pytest
from data_helpers import make_documents, write_jsonl

from megatron_lite.data import train_sentencepiece
from megatron_lite.tokenizers import build_tokenizer


def test_txt_input_and_unigram(tmp_path):
    lines = [text.replace("\n", " ") for text in make_documents(100, seed=7)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    model = train_sentencepiece(
        [str(tmp_path / "corpus.txt")], str(tmp_path / "uni"), 320, model_type="unigram"
    )
    tokenizer = build_tokenizer("sentencepiece", model)
    assert tokenizer.vocab_size == 320
    # Byte fallback: characters never seen in training still round-trip.
    for text in ["Ωmega ∑ 🙂\n\ttab", "  spaced   out  "]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "corpus.txt",
        "uni.model",
        "uni.vocab",
    ]


def test_record_without_the_field_is_named(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", ["some text"] * 10, key="body")
    with pytest.raises(ValueError, match=r"corpus.jsonl:1: the record has no text field 'text'"):
        train_sentencepiece([str(tmp_path / "corpus.jsonl")], str(tmp_path / "tok"), 300)
    assert not (tmp_path / "tok.model").exists()


def test_vocab_too_large_for_the_corpus(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", ["tiny corpus"] * 3)
    with pytest.raises(ValueError, match=r"vocab_size=5000.*Vocabulary size too high"):
        train_sentencepiece([str(tmp_path / "corpus.jsonl")], str(tmp_path / "tok"), 5000)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_unknown_model_type(tmp_path):
    with pytest.raises(ValueError, match="model_type='word' is not one of"):
        train_sentencepiece(["x.txt"], str(tmp_path / "tok"), 300, model_type="word")
