from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from megatron_lite.data import IndexedDataset, IndexedDatasetWriter, token_dtype_for_vocab


@pytest.fixture()
def documents():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 65000, size=length) for length in [5, 0, 1, 300, 17]]


@pytest.fixture()
def prefix(tmp_path, documents) -> str:
    prefix = str(tmp_path / "corpus")
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        for document in documents:
            writer.add_document(document)
    return prefix


def test_round_trip(prefix, documents):
    dataset = IndexedDataset(prefix)
    assert len(dataset) == dataset.num_documents == len(documents)
    assert dataset.dtype == np.uint16
    assert dataset.num_tokens == sum(len(d) for d in documents)
    np.testing.assert_array_equal(dataset.sequence_lengths, [len(d) for d in documents])
    np.testing.assert_array_equal(dataset.document_indices, np.arange(len(documents) + 1))
    for number, document in enumerate(documents):
        np.testing.assert_array_equal(dataset[number], document)
    np.testing.assert_array_equal(dataset.get(3, offset=10, length=5), documents[3][10:15])
    np.testing.assert_array_equal(dataset.get(3, offset=290), documents[3][290:])


def test_file_layout_is_megatrons(prefix, documents):
    """The bytes Megatron-LM's MMapIndexedDataset expects: header, lengths, pointers, doc index."""
    raw = Path(f"{prefix}.idx").read_bytes()
    magic, version, dtype_code, sequences, doc_entries = struct.unpack("<9sQBQQ", raw[:34])
    assert (magic, version, dtype_code, sequences, doc_entries) == (b"MMIDIDX\x00\x00", 1, 8, 5, 6)
    lengths = np.frombuffer(raw, np.int32, 5, 34)
    pointers = np.frombuffer(raw, np.int64, 5, 34 + 20)
    np.testing.assert_array_equal(lengths, [5, 0, 1, 300, 17])
    np.testing.assert_array_equal(pointers, [0, 10, 10, 12, 612])  # bytes, 2 per uint16 token
    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)
    np.testing.assert_array_equal(tokens, np.concatenate(documents))


def test_reads_documents_of_several_sequences(tmp_path):
    """Megatron's sentence-split data has several sequences per document."""
    prefix = str(tmp_path / "sentences")
    with IndexedDatasetWriter(prefix, np.int32) as writer:
        for sentence in ([1, 2], [3], [4, 5, 6]):
            writer.add_document(sentence)
    raw = Path(f"{prefix}.idx").read_bytes()
    # Rewrite the document index: 2 documents, sequences [0, 2) and [2, 3).
    raw = raw[:26] + struct.pack("<Q", 3) + raw[34:-32] + np.array([0, 2, 3], np.int64).tobytes()
    Path(f"{prefix}.idx").write_bytes(raw)
    dataset = IndexedDataset(prefix)
    assert (len(dataset), dataset.num_documents) == (3, 2)
    np.testing.assert_array_equal(dataset[2], [4, 5, 6])


def test_dtype_choice():
    assert token_dtype_for_vocab(50000) == np.uint16
    assert token_dtype_for_vocab(65500) == np.int32
    assert token_dtype_for_vocab(256000) == np.int32


def test_out_of_range_token_is_rejected(tmp_path):
    prefix = str(tmp_path / "too_big")
    with (
        pytest.raises(ValueError, match=r"document 1 has token ids outside the range \[0, 65535\]"),
        IndexedDatasetWriter(prefix, np.uint16) as writer,
    ):
        writer.add_document([1, 2])
        writer.add_document([70000])
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_interrupted_write_leaves_no_files(tmp_path):
    prefix = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt), IndexedDatasetWriter(prefix, np.int32) as writer:
        writer.add_document([1, 2, 3])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_pickles_by_path(prefix, documents):
    copy = pickle.loads(pickle.dumps(IndexedDataset(prefix)))
    np.testing.assert_array_equal(copy[3], documents[3])
    assert len(pickle.dumps(IndexedDataset(prefix))) < 200  # the path, not the mapped tokens


def test_index_errors(prefix):
    dataset = IndexedDataset(prefix)
    with pytest.raises(IndexError, match="sequence 5 is out of range"):
        dataset.get(5)
    with pytest.raises(IndexError, match=r"tokens \[3, 7\) are outside sequence 0 of 5 tokens"):
        dataset.get(0, offset=3, length=4)


def test_missing_bin(prefix):
    os.remove(f"{prefix}.bin")
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*corpus\.bin"):
        IndexedDataset(prefix)


def test_missing_idx(prefix):
    os.remove(f"{prefix}.idx")
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*corpus\.idx"):
        IndexedDataset(prefix)


def test_truncated_bin(prefix):
    with open(f"{prefix}.bin", "r+b") as file:
        file.truncate(100)
    with pytest.raises(
        ValueError, match=r"corpus\.bin: holds 100 bytes but .*corpus\.idx describes 646"
    ):
        IndexedDataset(prefix)


def _corrupt_idx(prefix: str, offset: int, data: bytes) -> None:
    with open(f"{prefix}.idx", "r+b") as file:
        file.seek(offset)
        file.write(data)


def test_corrupt_magic(prefix):
    _corrupt_idx(prefix, 0, b"GARBAGE!!")
    with pytest.raises(ValueError, match=r"corpus\.idx: not a Megatron indexed-dataset index"):
        IndexedDataset(prefix)


def test_unsupported_version(prefix):
    _corrupt_idx(prefix, 9, struct.pack("<Q", 2))
    with pytest.raises(ValueError, match=r"corpus\.idx: index version 2 is not supported"):
        IndexedDataset(prefix)


def test_float_dtype_code(prefix):
    _corrupt_idx(prefix, 17, struct.pack("<B", 6))
    with pytest.raises(ValueError, match=r"corpus\.idx: dtype code 6 is not an integer token type"):
        IndexedDataset(prefix)


def test_truncated_idx(prefix):
    with open(f"{prefix}.idx", "r+b") as file:
        file.truncate(60)
    with pytest.raises(
        ValueError, match=r"corpus\.idx: the header announces 5 sequences .* has 60 bytes"
    ):
        IndexedDataset(prefix)
    with open(f"{prefix}.idx", "r+b") as file:
        file.truncate(20)
    with pytest.raises(
        ValueError, match=r"corpus\.idx: 20 bytes is shorter than the 34-byte header"
    ):
        IndexedDataset(prefix)


def test_corrupt_lengths(prefix):
    _corrupt_idx(prefix, 34, struct.pack("<i", 6))  # first length 5 -> 6: pointers disagree
    with pytest.raises(ValueError, match=r"corpus\.idx: sequence pointers disagree"):
        IndexedDataset(prefix)
