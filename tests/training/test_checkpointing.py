"""Checkpoint files are complete or absent, resume picks the newest complete one, and a resume
from a checkpoint written at a training step's end continues exactly."""

from __future__ import annotations

import os

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from megatron_lite.training import train
from megatron_lite.training.checkpointing import AtomicCheckpointIO, newest_checkpoint, read_checkpoint
from megatron_lite.training.module import CONFIG_KEY
from tests.gpt_testing import compose_gpt, metric_by_step, tiny_overrides


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


def fake_checkpoint(path, step: int) -> None:
    AtomicCheckpointIO().save_checkpoint({"global_step": step, CONFIG_KEY: {}}, path)


def test_resume_picks_the_most_steps_and_ignores_interrupted_or_unreadable_files(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    assert newest_checkpoint(directory) is None
    (directory / "last.ckpt.tmp").write_bytes(b"half")  # a writer killed mid-way
    assert newest_checkpoint(directory) is None
    fake_checkpoint(directory / "a-step=10.ckpt", 10)
    fake_checkpoint(directory / "last.ckpt", 10)
    assert newest_checkpoint(directory) == directory / "last.ckpt"  # a tie: last.ckpt
    # Killed after a validation's top-k file, before last.ckpt: the top-k file is newer.
    fake_checkpoint(directory / "b-step=20.ckpt", 20)
    os.utime(directory / "b-step=20.ckpt", (0, 0))  # steps count, not file times
    assert newest_checkpoint(directory) == directory / "b-step=20.ckpt"
    (directory / "c-step=30.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    assert newest_checkpoint(directory) == directory / "b-step=20.ckpt"


def test_resume_from_a_checkpoint_written_at_the_end_of_a_training_step(tiny_corpus, tmp_path):
    # Lightning saves its loop state differently there than at a validation; dropout and two
    # micro-batches a step make the RNG state and the data position matter.
    extra = {"trainer.max_steps": 8, "trainer.val_check_interval": 4,
             "model.hidden_dropout": 0.1, "model.attention_dropout": 0.1}

    def every_3_steps(directory):
        return ModelCheckpoint(dirpath=directory, filename="{step}", every_n_train_steps=3,
                               save_top_k=-1, monitor=None)

    train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "whole", extra)),
          callbacks=[every_3_steps(tmp_path / "whole_steps")])
    checkpoint = tmp_path / "whole_steps" / "step=3.ckpt"
    train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "resumed", {
        **extra, "exp_manager.resume_from_checkpoint": f"'{checkpoint}'"})),
        callbacks=[every_3_steps(tmp_path / "resumed_steps")])

    for metric in ("train_loss", "lr", "val_loss"):
        whole = metric_by_step(tmp_path / "whole", metric)
        assert metric_by_step(tmp_path / "resumed", metric) == {
            step: value for step, value in whole.items() if step >= 3}, metric
    final = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")
             for run in ("whole", "resumed")]
    assert final[0]["global_step"] == final[1]["global_step"] == 8
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(final[1]["state_dict"][key], value), key
