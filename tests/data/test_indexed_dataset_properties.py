"""Truncated or corrupted .bin / .idx files, at random: opening and reading them either fails with
a ValueError naming the damaged file, or reads tokens the index promises, all inside the
vocabulary. Never an IndexError, struct.error or garbage read from past a file's end."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megatron_lite.data import GPTDataset, IndexedDataset, IndexedDatasetWriter

VOCAB = 300  # the documents' tokens are below it
EOD = 299
SEQ_LENGTH = 8


def write_documents(prefix: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with IndexedDatasetWriter(prefix, np.dtype(np.uint16)) as writer:
        for _ in range(int(rng.integers(3, 12))):
            writer.add_document([*rng.integers(0, EOD, size=int(rng.integers(1, 30))), EOD])


damage = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from([".bin", ".idx"]), st.floats(0.0, 1.0)),
    st.tuples(st.just("overwrite"), st.sampled_from([".bin", ".idx"]), st.floats(0.0, 1.0),
              st.binary(min_size=1, max_size=8)),
)


def apply(prefix: str, action: tuple) -> None:
    """Damage one of the files."""
    kind, suffix, where, *data = action
    path = prefix + suffix
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        if kind == "truncate":
            file.truncate(int(where * size))
        else:
            file.seek(min(int(where * size), max(size - 1, 0)))
            file.write(data[0])


def read_everything(prefix: str, cache_dir: str) -> None:
    dataset = IndexedDataset(prefix)
    for index in range(len(dataset)):
        assert dataset[index].size == dataset.sequence_lengths[index]
    samples = GPTDataset(dataset, None, SEQ_LENGTH, 20, 1, eod_id=EOD, reset_position_ids=True,
                         reset_attention_mask=True, eod_mask_loss=True, vocab_size=VOCAB, cache_dir=cache_dir)
    for index in range(len(samples)):
        tokens = samples[index]["tokens"]
        assert tokens.min() >= 0 and tokens.max() < VOCAB


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), actions=st.lists(damage, min_size=1, max_size=3))
def test_damaged_files_fail_naming_the_file_or_read_correctly(seed, actions):
    with tempfile.TemporaryDirectory() as directory:
        prefix = os.path.join(directory, "corpus_text_document")
        write_documents(prefix, seed)
        for action in actions:
            apply(prefix, action)
        try:
            read_everything(prefix, directory)
        except ValueError as error:
            # The file at fault, or its partner that disagrees with it, is named.
            assert any(os.path.basename(path) in str(error) for path in (prefix + ".bin", prefix + ".idx")), error


def test_an_undamaged_file_reads_back_exactly(tmp_path):
    prefix = str(tmp_path / "corpus_text_document")
    write_documents(prefix, 7)
    read_everything(prefix, str(tmp_path))
