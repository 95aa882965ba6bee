from __future__ import annotations

import itertools

import numpy as np
import pytest
from data_helpers import write_numbered_dataset
from hypothesis import given
from hypothesis import strategies as st

from megatron_lite.data import (
    BlendedDataset,
    GPTDataset,
    build_blending_indices,
    build_gpt_datasets,
    parse_data_prefix,
    parse_splits_string,
    split_boundaries,
)

FLAGS = {
    "reset_position_ids": False,
    "reset_attention_mask": False,
    "eod_mask_loss": False,
    "eod_id": 999_999,
}


def _documents_read(dataset) -> set[int]:
    return {
        int(token) // 1000 for index in range(len(dataset)) for token in dataset[index]["tokens"]
    }


@pytest.fixture()
def corpus(tmp_path) -> str:
    prefix = str(tmp_path / "corpus")
    write_numbered_dataset(prefix, [20 + (7 * n) % 13 for n in range(100)])
    return prefix


def test_splits_are_disjoint_contiguous_and_cover_the_documents(corpus):
    train, valid, test = build_gpt_datasets(corpus, "80,15,5", 16, 1234, (200, 100, 50), **FLAGS)
    assert (len(train), len(valid), len(test)) == (200, 100, 50)
    assert _documents_read(train) == set(range(0, 80))
    assert _documents_read(valid) == set(range(80, 95))
    assert _documents_read(test) == set(range(95, 100))


@pytest.mark.parametrize(
    ("splits_string", "num_documents", "expected"),
    [
        ("969,30,1", 1000, [0, 969, 999, 1000]),
        ("969,30,1", 79, [0, 77, 79, 79]),
        ("8,1,1", 10, [0, 8, 9, 10]),
        ("1,1,1", 10, [0, 4, 7, 10]),  # 3 + 3 + 3 rounds to 9: train takes the 10th
        ("2,1", 4, [0, 3, 4, 4]),  # a missing part is 0; round(2.67) + round(1.33) = 4
        ("98/2/0", 50, [0, 49, 50, 50]),
    ],
)
def test_split_boundaries_match_megatron(splits_string, num_documents, expected):
    assert split_boundaries(parse_splits_string(splits_string), num_documents) == expected


@given(
    shares=st.lists(st.integers(0, 1000), min_size=1, max_size=3).filter(
        lambda shares: sum(shares) > 0
    ),
    num_documents=st.integers(0, 5000),
)
def test_split_boundaries_always_partition(shares, num_documents):
    bounds = split_boundaries(parse_splits_string(",".join(map(str, shares))), num_documents)
    assert bounds[0] == 0 and bounds[-1] == num_documents
    assert all(a <= b for a, b in itertools.pairwise(bounds))


def test_zero_share_or_zero_samples_gives_none(corpus):
    train, valid, test = build_gpt_datasets(corpus, "90,10,0", 16, 1, (10, 0, 5), **FLAGS)
    assert isinstance(train, GPTDataset) and valid is None and test is None


def test_empty_split_with_samples_requested_is_named(corpus):
    with pytest.raises(
        ValueError,
        match=r"data.splits_string='999,1,0' leaves the valid split of .*corpus without documents",
    ):
        build_gpt_datasets(corpus, "999,1,0", 16, 1, (10, 5, 0), **FLAGS)


@pytest.mark.parametrize(
    "weights", [[0.5, 0.3, 0.2], [0.9, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.01, 0.99]]
)
def test_blending_tracks_the_weights_at_every_length(weights):
    dataset_index, dataset_sample_index = build_blending_indices(weights, 20_000)
    for length in [1, 10, 100, 1000, 20_000]:
        counts = np.bincount(dataset_index[:length], minlength=len(weights))
        assert np.all(np.abs(counts - np.array(weights) * length) < 0.01 * length + 1), (
            length,
            counts,
        )
    for source in range(len(weights)):  # each source's samples are taken in order, none twice
        taken = dataset_sample_index[dataset_index == source]
        np.testing.assert_array_equal(taken, np.arange(taken.size))


def test_blended_datasets_draw_in_proportion(tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    write_numbered_dataset(first, [30] * 20)  # documents 0..19
    write_numbered_dataset(second, [30] * 60, first_number=100)  # documents 100..159
    train, valid, test = build_gpt_datasets(
        [0.25, first, "0.75", second],
        "90,10,0",
        8,
        3,
        (1000, 40, 0),
        cache_dir=str(tmp_path / "cache"),
        **FLAGS,
    )
    assert isinstance(train, BlendedDataset) and (len(train), len(valid), test) == (1000, 40, None)
    sources = [
        {int(token) // 1000 for token in train[index]["tokens"]} for index in range(len(train))
    ]
    from_first = [documents for documents in sources if max(documents) < 100]
    from_second = [documents for documents in sources if min(documents) >= 100]
    assert len(from_first) + len(from_second) == 1000  # no window mixes the sources
    assert abs(len(from_first) - 250) < 0.01 * 1000 + 1
    assert set().union(*from_first) <= set(range(18)) and set().union(*from_second) <= set(
        range(100, 154)
    )
    assert _documents_read(valid) <= {18, 19} | set(range(154, 160))


@pytest.mark.parametrize(
    ("data_prefix", "message"),
    [
        ([], r"data.data_prefix=\[\] has 0 entries"),
        (["a", "b"], r"data.data_prefix\[0\]='a' is not a weight"),
        ([0.5], r"data.data_prefix=\[0.5\]: expected \[prefix\]"),
        ([0.5, "a", 0.5], "has 3 entries"),
        ([0.5, "a", -1, "b"], r"data.data_prefix\[2\]=-1: weights must be positive"),
        ([0, "a", 1, "b"], r"data.data_prefix\[0\]=0: weights must be positive"),
        ([0.5, "a", 0.5, 7], r"data.data_prefix\[3\]=7 is not a path prefix"),
    ],
)
def test_malformed_data_prefix_is_named(data_prefix, message):
    with pytest.raises(ValueError, match=message):
        parse_data_prefix(data_prefix)


def test_data_prefix_forms():
    assert parse_data_prefix("only") == (["only"], [1.0])
    assert parse_data_prefix(["only"]) == (["only"], [1.0])
    assert parse_data_prefix([3, "a", "1", "b"]) == (["a", "b"], [0.75, 0.25])


@pytest.mark.parametrize(
    ("splits_string", "message"),
    [
        ("a,b,c", "not a list of numbers"),
        ("1,1,1,1", "more than 3 parts"),
        ("0,0,0", "positive sum"),
        ("1,-1,0", "non-negative"),
    ],
)
def test_malformed_splits_string_is_named(splits_string, message):
    with pytest.raises(ValueError, match=f"data.splits_string='{splits_string}'.*{message}"):
        parse_splits_string(splits_string)


def test_missing_data_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*nothing_here\.idx"):
        build_gpt_datasets([str(tmp_path / "nothing_here")], "1", 8, 1, (1, 0, 0), **FLAGS)
