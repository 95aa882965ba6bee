"""Megatron's memory-mapped indexed dataset: token ids in a .bin file, their layout in a .idx file.

.idx, little-endian, no padding (what Megatron-LM's MMapIndexedDataset reads and writes):
    9 bytes   magic b"MMIDIDX\\x00\\x00"
    uint64    version, 1
    uint8     dtype code of the tokens in .bin (see _DTYPE_BY_CODE)
    uint64    N, the number of sequences
    uint64    D, the number of document-index entries (documents + 1)
    int32[N]  sequence lengths, in tokens
    int64[N]  sequence pointers: byte offset of each sequence in .bin
    int64[D]  document index: the first sequence of each document, then N
.bin: the tokens of all sequences back to back, no header.

We write one sequence per document; the reader accepts any document index, as Megatron's does.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Sequence

import numpy as np

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D
# Megatron's codes; 6 and 7 (float64, float32) exist there too but cannot hold token ids.
_DTYPE_BY_CODE = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    8: np.dtype(np.uint16),
}
_CODE_BY_DTYPE = {dtype: code for code, dtype in _DTYPE_BY_CODE.items()}


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 halves the files when every id fits (Megatron's threshold), int32 otherwise."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def data_file_paths(path_prefix: str) -> tuple[str, str]:
    """The (.bin, .idx) paths of a dataset prefix."""
    return f"{path_prefix}.bin", f"{path_prefix}.idx"


class IndexedDatasetWriter:
    """Writes `<path_prefix>.bin/.idx`, one sequence per document:

        with IndexedDatasetWriter(prefix, dtype) as writer:
            writer.add_document(token_ids)

    Both files are written under temporary names and renamed when the block exits normally, the
    .idx last; if it raises, both are deleted. An interrupted run never leaves a file that looks
    complete.
    """

    def __init__(self, path_prefix: str, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_BY_DTYPE:
            raise ValueError(f"token dtype {self.dtype} is not an integer type of the .bin format")
        self.bin_path, self.idx_path = data_file_paths(path_prefix)
        self._bin_temporary = f"{self.bin_path}.tmp-{os.getpid()}"
        self._idx_temporary = f"{self.idx_path}.tmp-{os.getpid()}"
        self._lengths = array("q")

    def __enter__(self) -> IndexedDatasetWriter:
        self._bin_file = open(self._bin_temporary, "wb")
        return self

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        tokens = np.asarray(tokens)
        limits = np.iinfo(self.dtype)
        if tokens.size and (tokens.min() < limits.min or tokens.max() > limits.max):
            raise ValueError(
                f"document {len(self._lengths)} has token ids outside the range "
                f"[{limits.min}, {limits.max}] of {self.dtype}, the token type of {self.bin_path}"
            )
        self._bin_file.write(tokens.astype(self.dtype, copy=False).tobytes())
        self._lengths.append(tokens.size)

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._bin_file.close()
        try:
            if exc_type is None:
                _write_index(
                    self._idx_temporary, np.frombuffer(self._lengths, np.int64), self.dtype
                )
                os.replace(self._bin_temporary, self.bin_path)
                os.replace(self._idx_temporary, self.idx_path)
        finally:
            for temporary in (self._bin_temporary, self._idx_temporary):
                if os.path.exists(temporary):
                    os.remove(temporary)


def _write_index(idx_path: str, lengths: np.ndarray, dtype: np.dtype) -> None:
    if lengths.size and lengths.max() > np.iinfo(np.int32).max:
        raise ValueError(f"a document of {lengths.max()} tokens does not fit the int32 lengths")
    pointers = np.zeros(lengths.size, dtype=np.int64)  # byte offsets of the sequences in .bin
    np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    document_index = np.arange(lengths.size + 1, dtype=np.int64)  # one sequence per document
    with open(idx_path, "wb") as idx_file:
        idx_file.write(
            _HEADER.pack(_MAGIC, _VERSION, _CODE_BY_DTYPE[dtype], lengths.size, document_index.size)
        )
        idx_file.write(lengths.astype("<i4").tobytes())
        idx_file.write(pointers.astype("<i8").tobytes())
        idx_file.write(document_index.astype("<i8").tobytes())


class IndexedDataset:
    """Read-only view of `<path_prefix>.bin/.idx`; everything is memory-mapped, nothing is loaded.

    Opening checks the files against each other, so a missing, truncated or corrupt file is a
    ValueError (FileNotFoundError when absent) naming the file, not garbage tokens later on.
    """

    def __init__(self, path_prefix: str) -> None:
        self.path_prefix = path_prefix
        self.bin_path, self.idx_path = data_file_paths(path_prefix)
        for path in (self.idx_path, self.bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"data file not found: {path} (dataset prefix {path_prefix!r}; preprocess the "
                    "data with scripts/preprocess_data.py first)"
                )
        self._read_index()
        self._open_tokens()

    def _read_index(self) -> None:
        idx_size = os.path.getsize(self.idx_path)
        if idx_size < _HEADER.size:
            raise ValueError(
                f"{self.idx_path}: {idx_size} bytes is shorter than the {_HEADER.size}-byte header "
                "of an indexed dataset (truncated file)"
            )
        buffer = np.memmap(self.idx_path, dtype=np.uint8, mode="r")
        magic, version, dtype_code, num_sequences, num_doc_entries = _HEADER.unpack(
            buffer[: _HEADER.size].tobytes()
        )
        if magic != _MAGIC:
            raise ValueError(
                f"{self.idx_path}: not a Megatron indexed-dataset index "
                f"(magic {magic!r}, expected {_MAGIC!r}); the file is corrupt or of another format"
            )
        if version != _VERSION:
            raise ValueError(f"{self.idx_path}: index version {version} is not supported (only 1)")
        if dtype_code not in _DTYPE_BY_CODE:
            raise ValueError(
                f"{self.idx_path}: dtype code {dtype_code} is not an integer token type "
                f"(known codes: {sorted(_DTYPE_BY_CODE)})"
            )
        expected_size = _HEADER.size + 12 * num_sequences + 8 * num_doc_entries
        if idx_size != expected_size:
            raise ValueError(
                f"{self.idx_path}: the header announces {num_sequences} sequences and "
                f"{num_doc_entries} document-index entries ({expected_size} bytes) but the file "
                f"has {idx_size} bytes; it is truncated or corrupt"
            )
        self.dtype = _DTYPE_BY_CODE[dtype_code]
        offset = _HEADER.size
        self.sequence_lengths = np.frombuffer(buffer, "<i4", num_sequences, offset)
        offset += 4 * num_sequences
        self.sequence_pointers = np.frombuffer(buffer, "<i8", num_sequences, offset)
        offset += 8 * num_sequences
        self.document_indices = np.frombuffer(buffer, "<i8", num_doc_entries, offset)
        self._check_index_arrays()

    def _check_index_arrays(self) -> None:
        lengths, doc_index = self.sequence_lengths, self.document_indices
        if lengths.size and lengths.min() < 0:
            raise ValueError(f"{self.idx_path}: negative sequence lengths (corrupt index)")
        expected_pointers = np.zeros(lengths.size, dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=expected_pointers[1:])
        if not np.array_equal(self.sequence_pointers, expected_pointers):
            raise ValueError(
                f"{self.idx_path}: sequence pointers disagree with the sequence lengths "
                "(corrupt index)"
            )
        if (
            doc_index.size == 0
            or doc_index[0] != 0
            or doc_index[-1] != lengths.size
            or np.any(np.diff(doc_index) < 0)
        ):
            raise ValueError(
                f"{self.idx_path}: the document index is not an increasing list from 0 to the "
                f"{lengths.size} sequences (corrupt index)"
            )

    def _open_tokens(self) -> None:
        self.num_tokens = int(self.sequence_lengths.sum(dtype=np.int64))
        expected_size = self.num_tokens * self.dtype.itemsize
        bin_size = os.path.getsize(self.bin_path)
        if bin_size != expected_size:
            raise ValueError(
                f"{self.bin_path}: holds {bin_size} bytes but {self.idx_path} describes "
                f"{expected_size} ({self.num_tokens} tokens of {self.dtype}); the .bin is "
                "truncated or belongs to another index"
            )
        # numpy cannot map an empty file; an empty dataset simply has no tokens.
        self._tokens = (
            np.memmap(self.bin_path, dtype=self.dtype, mode="r")
            if self.num_tokens
            else np.empty(0, dtype=self.dtype)
        )

    def __reduce__(self):
        # Re-open by path in another process (DataLoader workers under spawn/forkserver) instead of
        # pickling the mapped arrays, which would copy the whole dataset.
        return (IndexedDataset, (self.path_prefix,))

    @property
    def num_documents(self) -> int:
        return self.document_indices.size - 1

    def __len__(self) -> int:
        """Number of sequences (for our GPT data, one per document)."""
        return self.sequence_lengths.size

    def get(self, index: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens [offset, offset + length) of sequence `index`, as a read-only view of the file."""
        if not 0 <= index < len(self):
            raise IndexError(f"sequence {index} is out of range for {len(self)} sequences")
        size = int(self.sequence_lengths[index])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(
                f"tokens [{offset}, {offset + length}) are outside sequence {index} "
                f"of {size} tokens"
            )
        start = int(self.sequence_pointers[index]) // self.dtype.itemsize + offset
        return self._tokens[start : start + length]

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get(index)
