"""GPT pretraining samples: documents packed back to back into windows of seq_length + 1 tokens.

Three index arrays, as in Megatron-LM, built once per parameter set and cached on disk:
    doc_idx     [E * D]        the documents in reading order: every epoch a new permutation
    sample_idx  [N + 1, 2]     (position in doc_idx, token offset) where sample i starts; sample i
                               runs to sample_idx[i + 1] inclusive, so consecutive windows share a
                               token: the last label of one is the first input of the next
    shuffle_idx [N]            the order in which samples are served
E epochs are as many as N samples need. Item i is a pure function of i (no state, no RNG at
read time), so a sampler that counts consumed samples resumes exactly.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from megatron_lite.data.index_cache import cache_paths, load_cached, load_or_build, parameter_hash
from megatron_lite.data.indexed_dataset import IndexedDataset

_INDEX_KEYS = ("doc_idx", "sample_idx", "shuffle_idx")
_INDEX_FORMAT = "gpt-index-v1"  # bump when the arrays' construction changes


def build_sample_index(
    document_lengths: np.ndarray,
    documents: np.ndarray,
    seq_length: int,
    num_samples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """doc_idx, sample_idx and shuffle_idx for `num_samples` windows over `documents`.

    `document_lengths[d]` is the token count of document d (indexed by the values in
    `documents`). Shuffles use numpy's legacy RandomState, whose stream is frozen across numpy
    versions, so a seed gives the same samples on every machine.
    """
    tokens_per_epoch = int(document_lengths[documents].sum(dtype=np.int64))
    if tokens_per_epoch == 0:
        raise ValueError("the documents of this split hold no tokens")
    # Sample i needs tokens [i * S, i * S + S]; the last sample ends at token N * S.
    num_epochs = math.ceil((num_samples * seq_length + 1) / tokens_per_epoch)
    rng = np.random.RandomState(seed)
    doc_idx = np.concatenate([rng.permutation(documents) for _ in range(num_epochs)])
    lengths = document_lengths[doc_idx].astype(np.int64)  # (E * D,)
    doc_ends = np.cumsum(lengths)  # (E * D,) exclusive end of each document in the token stream
    sample_starts = np.arange(num_samples + 1, dtype=np.int64) * seq_length  # (N + 1,)
    # The document holding token p is the first one ending after p (empty documents never are).
    positions = np.searchsorted(doc_ends, sample_starts, side="right")  # (N + 1,)
    offsets = sample_starts - (doc_ends[positions] - lengths[positions])  # (N + 1,)
    sample_idx = np.stack([positions, offsets], axis=1)  # (N + 1, 2)
    shuffle_idx = rng.permutation(num_samples)  # (N,)
    return {
        "doc_idx": doc_idx.astype(_index_dtype(int(documents.max()))),
        "sample_idx": sample_idx.astype(_index_dtype(int(sample_idx.max()))),
        "shuffle_idx": shuffle_idx.astype(_index_dtype(num_samples)),
    }


def _index_dtype(max_value: int) -> np.dtype:
    """int32 halves the cache and its page-ins whenever the values fit."""
    return np.dtype(np.int32) if max_value < 2**31 else np.dtype(np.int64)


def sample_fields(
    window: np.ndarray,
    *,
    eod_id: int,
    reset_position_ids: bool,
    reset_attention_mask: bool,
    eod_mask_loss: bool,
) -> dict[str, torch.Tensor]:
    """The model inputs of one window of S + 1 tokens, with Megatron's document flags.

    reset_position_ids: positions restart at 0 after every eod token.
    reset_attention_mask: segment_ids number the documents within the window (an eod belongs to
        the document it ends), so attention can stay inside a document; otherwise all zero.
    eod_mask_loss: no loss where the input token is eod (predicting across a document boundary).
    """
    window = window.astype(np.int64)
    tokens, labels = window[:-1], window[1:]  # (S,), (S,)
    seq_length = tokens.size
    is_eod = tokens == eod_id  # (S,)
    # Document number of each position: eods strictly before it.
    document_of = np.concatenate([[0], np.cumsum(is_eod[:-1])])  # (S,)
    if reset_position_ids:
        document_starts = np.concatenate([[0], np.flatnonzero(is_eod[:-1]) + 1])
        position_ids = np.arange(seq_length) - document_starts[document_of]  # (S,)
    else:
        position_ids = np.arange(seq_length)
    segment_ids = document_of if reset_attention_mask else np.zeros(seq_length, dtype=np.int64)
    loss_mask = np.ones(seq_length, dtype=np.float32)
    if eod_mask_loss:
        loss_mask[is_eod] = 0.0
    return {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(loss_mask),
        "position_ids": torch.from_numpy(position_ids.astype(np.int64)),
        "segment_ids": torch.from_numpy(segment_ids.astype(np.int32)),
    }


class GPTDataset(torch.utils.data.Dataset):
    """`num_samples` windows of seq_length + 1 tokens over `documents` of an indexed dataset.

    documents: the sequence numbers this dataset may read (a split), all of them if None.
    vocab_size: if given, a window holding a token id outside [0, vocab_size) is a ValueError
        naming the file (the data was tokenized with another tokenizer), never a silent lookup.
    cache_dir: where the index arrays are cached; next to the data files if None.
    Items are dicts: tokens int64 [S], labels int64 [S], loss_mask float32 [S],
    position_ids int64 [S], segment_ids int32 [S].
    """

    def __init__(
        self,
        indexed_dataset: IndexedDataset,
        documents: np.ndarray | None,
        seq_length: int,
        num_samples: int,
        seed: int,
        *,
        eod_id: int,
        reset_position_ids: bool,
        reset_attention_mask: bool,
        eod_mask_loss: bool,
        vocab_size: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if seq_length < 1:
            raise ValueError(f"data.seq_length must be >= 1, got {seq_length}")
        if num_samples < 1:
            raise ValueError(
                f"a GPT dataset needs at least one sample, got num_samples={num_samples}"
            )
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        if documents is None:
            documents = np.arange(len(indexed_dataset))
        documents = np.asarray(documents, dtype=np.int64)
        if documents.size == 0:
            raise ValueError(f"no documents to sample from in {indexed_dataset.path_prefix}")
        if documents.min() < 0 or documents.max() >= len(indexed_dataset):
            raise ValueError(
                f"document numbers must be in [0, {len(indexed_dataset)}) for "
                f"{indexed_dataset.path_prefix}"
            )
        self.indexed_dataset = indexed_dataset
        self.seq_length = seq_length
        self.num_samples = num_samples
        self.vocab_size = vocab_size
        self.sample_options = {
            "eod_id": eod_id,
            "reset_position_ids": reset_position_ids,
            "reset_attention_mask": reset_attention_mask,
            "eod_mask_loss": eod_mask_loss,
        }
        lengths = indexed_dataset.sequence_lengths
        digest = parameter_hash(
            {
                "format": _INDEX_FORMAT,
                "seq_length": seq_length,
                "num_samples": num_samples,
                "seed": seed,
            },
            [documents, lengths[documents]],
        )
        prefix = indexed_dataset.path_prefix
        name = f"{os.path.basename(prefix)}_gpt_{digest}"
        self.index_paths = cache_paths(
            cache_dir or os.path.dirname(os.path.abspath(prefix)), name, _INDEX_KEYS
        )
        self._index = load_or_build(
            self.index_paths,
            lambda: build_sample_index(lengths, documents, seq_length, num_samples, seed),
        )

    def __getstate__(self) -> dict:
        # Pickle paths, not mapped arrays (a DataLoader worker under spawn re-maps the files).
        return {key: value for key, value in self.__dict__.items() if key != "_index"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index = load_cached(self.index_paths)

    def __len__(self) -> int:
        return self.num_samples

    def window(self, index: int) -> np.ndarray:
        """The seq_length + 1 tokens of item `index`, in their on-disk dtype."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is out of range for {self.num_samples} samples")
        doc_idx, sample_idx = self._index["doc_idx"], self._index["sample_idx"]
        sample = int(self._index["shuffle_idx"][index])
        first, first_offset = (int(v) for v in sample_idx[sample])
        last, last_offset = (int(v) for v in sample_idx[sample + 1])
        read = self.indexed_dataset.get
        if first == last:
            window = read(int(doc_idx[first]), first_offset, last_offset - first_offset + 1)
        else:
            pieces = [read(int(doc_idx[first]), first_offset)]
            pieces += [read(int(doc_idx[position])) for position in range(first + 1, last)]
            pieces.append(read(int(doc_idx[last]), 0, last_offset + 1))
            window = np.concatenate(pieces)
        self._check_token_ids(window, index)
        return window

    def _check_token_ids(self, window: np.ndarray, index: int) -> None:
        if self.vocab_size is None:
            return
        low, high = int(window.min()), int(window.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(
                f"{self.indexed_dataset.bin_path}: sample {index} holds the token id "
                f"{high if high >= self.vocab_size else low}, outside the tokenizer's vocabulary "
                f"[0, {self.vocab_size}); the data was tokenized with another tokenizer than "
                "model.tokenizer.*"
            )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return sample_fields(self.window(index), **self.sample_options)
