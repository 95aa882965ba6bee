from __future__ import annotations

import itertools
import os
import pickle

import numpy as np
import pytest
import torch
from data_helpers import write_numbered_dataset

from megatron_lite.data import GPTDataset, IndexedDataset, sample_fields
from megatron_lite.data import gpt_dataset as gpt_dataset_module

NO_FLAGS = {"reset_position_ids": False, "reset_attention_mask": False, "eod_mask_loss": False}
EOD = 999_999  # never a numbered token


def _dataset(prefix, seq_length, num_samples, seed=1, documents=None, **options) -> GPTDataset:
    options = {**NO_FLAGS, "eod_id": EOD, **options}
    return GPTDataset(IndexedDataset(prefix), documents, seq_length, num_samples, seed, **options)


def _windows_in_reading_order(dataset: GPTDataset) -> list[np.ndarray]:
    """Windows ordered as packed (undoing the sample shuffle)."""
    shuffle_idx = np.load(dataset.index_paths["shuffle_idx"])
    item_of_sample = np.argsort(shuffle_idx)
    return [dataset.window(int(item)) for item in item_of_sample]


@pytest.fixture()
def numbered(tmp_path):
    # 9 documents with an empty one; 2 + ... = 101 tokens, so 10 windows of 10 (+1) use them all.
    lengths = [7, 23, 0, 1, 15, 30, 9, 4, 12]
    assert sum(lengths) == 101
    prefix = str(tmp_path / "numbered")
    return prefix, write_numbered_dataset(prefix, lengths)


def test_one_epoch_covers_every_token_once_in_shuffled_document_order(numbered):
    prefix, documents = numbered
    dataset = _dataset(prefix, seq_length=10, num_samples=10)
    doc_idx = np.load(dataset.index_paths["doc_idx"])
    assert sorted(doc_idx.tolist()) == list(range(9))
    assert doc_idx.tolist() != list(range(9))  # actually shuffled
    windows = _windows_in_reading_order(dataset)
    assert all(window.size == 11 for window in windows)
    for previous, window in itertools.pairwise(windows):
        assert window[0] == previous[-1]  # consecutive windows share one token
    stream = np.concatenate([windows[0]] + [window[1:] for window in windows[1:]])
    np.testing.assert_array_equal(stream, np.concatenate([documents[d] for d in doc_idx]))


def test_later_epochs_reshuffle_the_documents(numbered):
    prefix, documents = numbered
    dataset = _dataset(prefix, seq_length=10, num_samples=35)  # 351 tokens: 4 epochs
    doc_idx = np.load(dataset.index_paths["doc_idx"]).reshape(4, 9)
    for epoch in doc_idx:
        assert sorted(epoch.tolist()) == list(range(9))
    assert len({tuple(epoch) for epoch in doc_idx}) > 1
    windows = _windows_in_reading_order(dataset)
    stream = np.concatenate([windows[0]] + [window[1:] for window in windows[1:]])
    expected = np.concatenate([documents[d] for d in doc_idx.reshape(-1)])
    np.testing.assert_array_equal(stream, expected[: stream.size])


def test_items_are_shifted_tokens_of_the_right_types(numbered):
    prefix, _ = numbered
    dataset = _dataset(prefix, seq_length=10, num_samples=10)
    for index in range(len(dataset)):
        item, window = dataset[index], dataset.window(index)
        assert item["tokens"].dtype == torch.int64 and item["labels"].dtype == torch.int64
        assert item["loss_mask"].dtype == torch.float32
        assert (
            item["position_ids"].dtype == torch.int64 and item["segment_ids"].dtype == torch.int32
        )
        np.testing.assert_array_equal(item["tokens"].numpy(), window[:-1])
        np.testing.assert_array_equal(item["labels"].numpy(), window[1:])
        assert torch.equal(item["position_ids"], torch.arange(10))
        assert not item["segment_ids"].any() and bool(item["loss_mask"].all())
    with pytest.raises(IndexError, match="sample 10 is out of range"):
        dataset[10]


def test_document_flags_on_a_hand_made_window():
    eod = 0
    window = np.array([5, 6, eod, 7, eod, eod, 8, 9], dtype=np.uint16)
    fields = sample_fields(
        window, eod_id=eod, reset_position_ids=True, reset_attention_mask=True, eod_mask_loss=True
    )
    assert fields["tokens"].tolist() == [5, 6, 0, 7, 0, 0, 8]
    assert fields["labels"].tolist() == [6, 0, 7, 0, 0, 8, 9]
    assert fields["position_ids"].tolist() == [0, 1, 2, 0, 1, 0, 0]
    assert fields["segment_ids"].tolist() == [0, 0, 0, 1, 1, 2, 3]
    assert fields["loss_mask"].tolist() == [1, 1, 0, 1, 0, 0, 1]

    plain = sample_fields(window, eod_id=eod, **NO_FLAGS)
    assert plain["position_ids"].tolist() == list(range(7))
    assert plain["segment_ids"].tolist() == [0] * 7
    assert plain["loss_mask"].tolist() == [1] * 7
    # Each flag acts alone.
    only_positions = sample_fields(window, eod_id=eod, **{**NO_FLAGS, "reset_position_ids": True})
    assert only_positions["position_ids"].tolist() == [0, 1, 2, 0, 1, 0, 0]
    assert only_positions["segment_ids"].tolist() == [0] * 7


def test_shuffle_is_deterministic_per_seed(numbered, tmp_path):
    prefix, _ = numbered
    first = _dataset(prefix, 10, 30, seed=7, cache_dir=str(tmp_path / "a"))
    again = _dataset(prefix, 10, 30, seed=7, cache_dir=str(tmp_path / "b"))
    other = _dataset(prefix, 10, 30, seed=8, cache_dir=str(tmp_path / "c"))
    assert [first.window(i).tolist() for i in range(30)] == [
        again.window(i).tolist() for i in range(30)
    ]
    assert [first.window(i).tolist() for i in range(30)] != [
        other.window(i).tolist() for i in range(30)
    ]
    assert not np.array_equal(
        np.load(first.index_paths["doc_idx"]), np.load(other.index_paths["doc_idx"])
    )


def test_index_cache_is_reused_and_keyed_by_every_parameter(numbered, tmp_path, monkeypatch):
    prefix, _ = numbered
    cache = str(tmp_path / "cache")
    first = _dataset(prefix, 10, 20, cache_dir=cache)
    mtimes = {key: os.stat(path).st_mtime_ns for key, path in first.index_paths.items()}
    windows = [first.window(i).tolist() for i in range(20)]

    def fail(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of read from the cache")

    monkeypatch.setattr(gpt_dataset_module, "build_sample_index", fail)
    second = _dataset(prefix, 10, 20, cache_dir=cache)
    assert second.index_paths == first.index_paths
    assert {key: os.stat(path).st_mtime_ns for key, path in second.index_paths.items()} == mtimes
    assert [second.window(i).tolist() for i in range(20)] == windows
    monkeypatch.undo()

    changes = [
        {"seq_length": 11}, {"num_samples": 21}, {"seed": 2}, {"documents": np.arange(8)},
    ]  # fmt: skip
    seen = {first.index_paths["doc_idx"]}
    for change in changes:
        arguments = {"seq_length": 10, "num_samples": 20, "seed": 1, **change}
        dataset = _dataset(prefix, cache_dir=cache, **arguments)
        assert dataset.index_paths["doc_idx"] not in seen
        seen.add(dataset.index_paths["doc_idx"])
    assert len(os.listdir(cache)) == 3 * (1 + len(changes))


def test_missing_cache_file_is_rebuilt(numbered, tmp_path):
    prefix, _ = numbered
    first = _dataset(prefix, 10, 20, cache_dir=str(tmp_path))
    windows = [first.window(i).tolist() for i in range(20)]
    os.remove(first.index_paths["sample_idx"])
    second = _dataset(prefix, 10, 20, cache_dir=str(tmp_path))
    assert [second.window(i).tolist() for i in range(20)] == windows


def test_cache_defaults_to_the_data_directory(numbered):
    prefix, _ = numbered
    dataset = _dataset(prefix, 10, 5)
    assert os.path.dirname(dataset.index_paths["doc_idx"]) == os.path.dirname(prefix)
    assert os.path.basename(dataset.index_paths["doc_idx"]).startswith("numbered_gpt_")


def test_pickled_dataset_gives_the_same_items(numbered):
    prefix, _ = numbered
    dataset = _dataset(prefix, 10, 20, reset_position_ids=True)
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000  # paths, not arrays
    for index in range(20):
        for key, value in dataset[index].items():
            assert torch.equal(copy[index][key], value)


def test_documents_restrict_what_is_read(numbered):
    prefix, _ = numbered
    dataset = _dataset(prefix, 4, 40, documents=np.array([1, 5]))
    tokens = np.concatenate([dataset.window(i) for i in range(40)])
    assert set((tokens // 1000).tolist()) == {1, 5}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seq_length": 0}, "data.seq_length must be >= 1"),
        ({"num_samples": 0}, "at least one sample"),
        ({"documents": np.array([], dtype=np.int64)}, "no documents to sample from"),
        ({"documents": np.array([2])}, "hold no tokens"),  # the empty document
        ({"documents": np.array([9])}, r"document numbers must be in \[0, 9\)"),
    ],
)
def test_bad_arguments(numbered, arguments, message):
    prefix, _ = numbered
    with pytest.raises(ValueError, match=message):
        _dataset(prefix, **{"seq_length": 4, "num_samples": 3, **arguments})


def test_items_depend_only_on_the_index_and_collate(numbered):
    """What a resumable sampler relies on: item i is the same whatever was read before."""
    prefix, _ = numbered
    dataset = _dataset(prefix, 10, 20, reset_attention_mask=True)
    forward = [dataset[index] for index in range(20)]
    backward = [dataset[index] for index in reversed(range(20))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert {key: (value.shape, value.dtype) for key, value in batch.items()} == {
        "tokens": ((4, 10), torch.int64),
        "labels": ((4, 10), torch.int64),
        "loss_mask": ((4, 10), torch.float32),
        "position_ids": ((4, 10), torch.int64),
        "segment_ids": ((4, 10), torch.int32),
    }
