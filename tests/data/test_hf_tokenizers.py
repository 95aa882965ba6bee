"""The tokenizers NeMo users bring, read from local files with Hugging Face's `tokenizers`: GPT-2
BPE (vocab.json + merges.txt, library megatron or huggingface), BERT WordPiece (vocab.txt), a
Hugging Face tokenizer folder; and what each refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_lite.tokenizers import HFTokenizer, build_tokenizer
from tests.gpt_testing import (
    tiny_documents,
    write_gpt2_bpe_files,
    write_tokenizer_folder,
    write_wordpiece_vocab,
)


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> tuple[str, str]:
    return write_gpt2_bpe_files(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def gpt2(gpt2_files) -> HFTokenizer:
    vocab_file, merge_file = gpt2_files
    return build_tokenizer("megatron", type="GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=100))
def test_gpt2_bpe_round_trips_any_text(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_bpe_ids_and_specials(gpt2, gpt2_files):
    vocab = json.loads(open(gpt2_files[0]).read())
    assert gpt2.vocab_size == len(vocab) == 300
    assert gpt2.eod_id == gpt2.bos_id == vocab["<|endoftext|>"] and gpt2.pad_id is None
    ids = gpt2.encode(tiny_documents(1)[0])
    assert len(ids) < len(tiny_documents(1)[0]) / 2  # merges were learned and are applied
    assert gpt2.decode([*ids, gpt2.eod_id]) == tiny_documents(1)[0]  # eod decodes to nothing
    assert gpt2.ids_to_tokens([gpt2.eod_id]) == ["<|endoftext|>"]


def test_library_huggingface_reads_the_same_files(gpt2, gpt2_files):
    vocab_file, merge_file = gpt2_files
    same = build_tokenizer("huggingface", type="gpt2", vocab_file=vocab_file, merge_file=merge_file)
    text = "the cat sees the ball. Ünïcode and\ttabs"
    assert same.encode(text) == gpt2.encode(text) and same.eod_id == gpt2.eod_id


def test_bert_wordpiece_cased_and_lower_cased(tmp_path):
    vocab_file = write_wordpiece_vocab(tmp_path)
    cased = build_tokenizer("megatron", type="BertWordPieceCase", vocab_file=vocab_file,
                            num_sentinel_tokens=4)
    assert (cased.eod_id, cased.bos_id, cased.pad_id) == (3, 2, 0)  # [SEP], [CLS], [PAD]
    assert cased.decode(cased.encode("the cat sees the ball.")) == "the cat sees the ball."
    assert cased.ids_to_tokens(cased.encode("The")) == ["[UNK]"]  # cased: no "The" here
    lower = build_tokenizer("megatron", type="BertWordPieceLowerCase", vocab_file=vocab_file)
    assert lower.ids_to_tokens(lower.encode("The")) == ["the"]
    # T5's sentinels go above the vocabulary, counting down from its top.
    assert cased.sentinel_id(0) == cased.vocab_size - 1 == cased.base_vocab_size + 3


def test_a_hugging_face_tokenizer_folder(tmp_path, gpt2):
    folder = write_tokenizer_folder(tmp_path / "hf")
    tokenizer = build_tokenizer("huggingface", type=folder)
    assert tokenizer.eod_id == tokenizer.bos_id == gpt2.eod_id
    assert tokenizer.encode("a dog helps my friend.") == gpt2.encode("a dog helps my friend.")


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"library": "megatron", "type": "GPT2BPETokenizer"}, ValueError,
         "model.tokenizer.vocab_file is not set: it must name the local GPT-2 vocab.json"),
        ({"library": "megatron", "type": "GPT2BPETokenizer", "vocab_file": "VOCAB", "merge_file": "/nope/merges.txt"},
         FileNotFoundError, "model.tokenizer.merge_file: GPT-2 merges.txt not found: /nope/merges.txt"),
        ({"library": "megatron", "type": "GPT2BPETokenizer", "vocab_file": "MERGES", "merge_file": "MERGES"},
         ValueError, "are not a GPT-2 BPE vocab.json and merges.txt"),
        ({"library": "megatron", "type": "BertWordPieceCase", "vocab_file": "VOCAB", "merge_file": "MERGES"},
         ValueError, "model.tokenizer.merge_file=.* is not used by model.tokenizer.library='megatron' with type"),
        ({"library": "megatron", "type": "megatron-gpt-345m"}, ValueError,
         "model.tokenizer.type='megatron-gpt-345m' is not a tokenizer of library 'megatron' here"),
        ({"library": "huggingface", "type": "gpt2"}, ValueError,
         "model.tokenizer.type='gpt2' is not a local folder"),
        ({"library": "huggingface", "type": "EMPTY_FOLDER"}, FileNotFoundError, "no tokenizer.json in that folder"),
        ({"library": "megatron", "type": "GPT2BPETokenizer", "model": "x.model"}, ValueError,
         "model.tokenizer.model='x.model' is not used by model.tokenizer.library='megatron'"),
    ],
)
def test_bad_tokenizer_files_and_keys_are_named(gpt2_files, tmp_path, arguments, error, message):
    files = {"VOCAB": gpt2_files[0], "MERGES": gpt2_files[1], "EMPTY_FOLDER": str(tmp_path)}
    arguments = {key: files.get(value, value) for key, value in arguments.items()}
    with pytest.raises(error, match=message):
        build_tokenizer(**arguments)


def test_a_folder_without_an_end_of_document_token(tmp_path):
    folder = write_tokenizer_folder(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError, match="names no eos_token"):
        build_tokenizer("huggingface", type=folder)
