from __future__ import annotations

import pytest
from data_helpers import make_documents
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_lite.tokenizers import (
    ByteTokenizer,
    build_tokenizer,
    check_vocab_covers_tokenizer,
    pad_vocab_size,
)

# U+2581 is sentencepiece's own space symbol: a literal one in the text decodes as a space.
# Lone surrogates (Cs) are not text a UTF-8 file can hold.
round_trip_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\u2581"), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(text=round_trip_text)
def test_sentencepiece_round_trips_any_text(sentencepiece_tokenizer, text):
    assert sentencepiece_tokenizer.decode(sentencepiece_tokenizer.encode(text)) == text


@given(text=st.text(max_size=200))
def test_byte_tokenizer_round_trips_any_text(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


def test_sentencepiece_keeps_whitespace_runs(sentencepiece_tokenizer):
    for document in make_documents(50, seed=1):
        assert sentencepiece_tokenizer.decode(sentencepiece_tokenizer.encode(document)) == document


def test_sentencepiece_special_ids(sentencepiece_tokenizer):
    tokenizer = sentencepiece_tokenizer
    assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eod_id, tokenizer.pad_id) == (
        400,
        1,
        2,
        3,
    )
    assert tokenizer.ids_to_tokens([tokenizer.eod_id]) == ["</s>"]
    assert tokenizer.decode([tokenizer.bos_id, *tokenizer.encode("x y"), tokenizer.eod_id]) == "x y"


@pytest.mark.parametrize("library", ["byte", "sentencepiece"])
def test_sentinels_count_down_from_the_top_of_the_vocabulary(library, sentencepiece_model):
    model = sentencepiece_model if library == "sentencepiece" else None
    base = build_tokenizer(library, model)
    tokenizer = build_tokenizer(library, model, num_sentinel_tokens=3)
    assert tokenizer.vocab_size == base.vocab_size + 3
    assert tokenizer.sentinel_ids == [
        tokenizer.vocab_size - 1,
        tokenizer.vocab_size - 2,
        tokenizer.vocab_size - 3,
    ]
    assert tokenizer.ids_to_tokens(tokenizer.sentinel_ids) == [
        "<extra_id_0>",
        "<extra_id_1>",
        "<extra_id_2>",
    ]
    ids = [*tokenizer.encode("ab"), tokenizer.sentinel_id(1), *tokenizer.encode(" c")]
    assert tokenizer.decode(ids) == "ab<extra_id_1> c"
    with pytest.raises(ValueError, match="sentinel 3 does not exist"):
        tokenizer.sentinel_id(3)


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="token id 259 is outside the vocabulary"):
        ByteTokenizer().decode([65, 259])


def test_byte_tokenizer_tokens():
    tokenizer = ByteTokenizer()
    assert tokenizer.vocab_size == 259
    assert tokenizer.ids_to_tokens([65, tokenizer.eod_id, tokenizer.pad_id]) == [
        "<0x41>",
        "<eod>",
        "<pad>",
    ]
    # Half of a two-byte character decodes to U+FFFD rather than failing.
    assert tokenizer.decode(tokenizer.encode("é")[:1]) == "\ufffd"


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.model: .*nope\.model"):
        build_tokenizer("sentencepiece", str(missing))


def test_corrupt_model_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"corrupt\.model is not a valid sentencepiece model"):
        build_tokenizer("sentencepiece", str(corrupt))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"library": "tabular"}, "tokenizer.library='tabular' is not supported"),
        ({"library": "sentencepiece"}, "tokenizer.model must name a .model file"),
        ({"library": "byte", "model": "x.model"}, "tokenizer.model='x.model' is not used"),
        ({"library": "byte", "vocab_file": "v.json"}, "tokenizer.vocab_file='v.json' is not used"),
        (
            {"library": "byte", "num_sentinel_tokens": -1},
            "tokenizer.num_sentinel_tokens must be >= 0",
        ),
    ],
)
def test_bad_tokenizer_settings_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_tokenizer(**arguments)


@pytest.mark.parametrize(
    ("vocab_size", "divisible_by", "tensor_parallel", "expected"),
    [
        (400, 128, 1, 512),
        (512, 128, 1, 512),
        (50257, 128, 1, 50304),
        (50257, 128, 4, 50688),
        (259, 1, 1, 259),
    ],
)
def test_pad_vocab_size(vocab_size, divisible_by, tensor_parallel, expected):
    assert pad_vocab_size(vocab_size, divisible_by, tensor_parallel) == expected


def test_vocab_smaller_than_the_tokenizer_is_rejected():
    tokenizer = ByteTokenizer(num_sentinel_tokens=2)  # 261 ids
    check_vocab_covers_tokenizer(261, tokenizer)
    with pytest.raises(
        ValueError,
        match=r"model.padded_vocab_size=260 is smaller than the tokenizer's vocabulary of 261",
    ):
        check_vocab_covers_tokenizer(260, tokenizer)
