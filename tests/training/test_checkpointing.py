"""Checkpoint files are complete or absent, and resume picks the last complete one."""

from __future__ import annotations

import os

import pytest
import torch

from megatron_lite.training.checkpointing import AtomicCheckpointIO, last_checkpoint


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("the disk filled up")


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.arange(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk filled up"):
        io.save_checkpoint({"step": 2, "weights": torch.arange(1000), "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["step"] == 1


def test_resume_ignores_interrupted_writes_and_prefers_last(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    assert last_checkpoint(directory) is None
    (directory / "last.ckpt.tmp").write_bytes(b"half")  # a writer killed mid-way
    assert last_checkpoint(directory) is None
    older, newer = directory / "a-step=10.ckpt", directory / "b-step=20.ckpt"
    older.write_bytes(b"x")
    newer.write_bytes(b"x")
    os.utime(older, (1, 1))
    assert last_checkpoint(directory) == newer
    (directory / "last.ckpt").write_bytes(b"x")
    os.utime(directory / "last.ckpt", (0, 0))
    assert last_checkpoint(directory) == directory / "last.ckpt"
