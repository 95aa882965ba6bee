"""Sharded checkpoints (torch.distributed.checkpoint folders) are complete or invisible: written
under `<name>.tmp/`, their marker (meta.pt) last, renamed when complete. A write killed at any
point leaves no checkpoint a run would resume from, the previous one intact, and a resumed run
deletes what it left. One process, no process group (DCP writes as a world of one).
Also: the optimizer state's two keyings (by name, by index) convert into each other."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from megatron_lite.config import config_to_dict
from megatron_lite.parallel.strategy import MegatronStrategy
from megatron_lite.training.checkpointing import (
    checkpoint_metadata,
    complete_checkpoints,
    newest_checkpoint,
    read_checkpoint,
)
from megatron_lite.training.distributed_checkpoint import (
    is_distributed_checkpoint,
    optimizer_state_by_index,
    optimizer_state_by_name,
)
from megatron_lite.training.exp_manager import prepare_run
from megatron_lite.training.module import CONFIG_KEY, VOCAB_KEY
from megatron_lite.training.weight_layout import GROUPED, LAYOUT_KEY
from tests.gpt_testing import compose_gpt, tiny_overrides


class Killed(BaseException):
    """What a SIGKILL would do to the write: nothing after it runs."""


def config(log_dir: Path):
    return compose_gpt(tiny_overrides("/data/a_text_document", log_dir, {
        "exp_manager.resume_if_exists": True, "exp_manager.resume_ignore_no_checkpoint": True}))


def checkpoint(cfg, step: int) -> dict:
    weight = torch.full((4, 3), float(step))
    return {
        "state_dict": {"model.weight": weight},
        "optimizer_states": [{"state": {"model.weight": {"exp_avg": weight * 2, "step": torch.tensor(1.0)}},
                              "param_groups": [{"lr": 0.1, "params": ["model.weight"]}]}],
        "global_step": step,
        CONFIG_KEY: config_to_dict(cfg),
        VOCAB_KEY: 272,
        LAYOUT_KEY: GROUPED,
    }


def save(path: Path, content: dict) -> None:
    strategy = MegatronStrategy(tensor_parallel_size=1, context_parallel_size=1, sharded_checkpoint=True,
                                block_gradient_sync=False)
    strategy.save_checkpoint(content, path)


def test_a_sharded_checkpoint_reads_back_whole(tmp_path):
    cfg = config(tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    save(path, checkpoint(cfg, 3))
    save(path, checkpoint(cfg, 5))  # replaces the folder
    assert is_distributed_checkpoint(path) and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert checkpoint_metadata(path)["global_step"] == 5 and "state_dict" not in checkpoint_metadata(path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["model.weight"], torch.full((4, 3), 5.0))
    assert newest_checkpoint(path.parent) == path


@pytest.mark.parametrize("killed_in", ["the marker", "the rename"])
def test_a_killed_sharded_write_leaves_no_visible_checkpoint(tmp_path, monkeypatch, killed_in):
    cfg = config(tmp_path / "run")
    directory = tmp_path / "run" / "checkpoints"
    earlier, last = directory / "step=3.ckpt", directory / "last.ckpt"
    save(earlier, checkpoint(cfg, 3))
    save(last, checkpoint(cfg, 3))
    if killed_in == "the marker":
        def write_marker(folder, metadata):
            (folder / "meta.pt").write_bytes(b"half a pickle")  # the atomic write's .tmp, really
            raise Killed
        monkeypatch.setattr("megatron_lite.parallel.strategy.write_marker", write_marker)
    else:  # between moving the old last.ckpt aside and renaming the new one into place
        replace = os.replace

        def killed_on_second_rename(source, target):
            if str(source).endswith("last.ckpt.tmp"):
                raise Killed
            replace(source, target)
        monkeypatch.setattr("megatron_lite.training.distributed_checkpoint.os.replace", killed_on_second_rename)
    with pytest.raises(Killed):
        save(last, checkpoint(cfg, 6))
    monkeypatch.undo()
    leftovers = sorted(path.name for path in directory.iterdir())
    visible = complete_checkpoints(directory)
    assert all(checkpoint_metadata(path)["global_step"] == 3 for path in visible), leftovers
    assert earlier in visible and newest_checkpoint(directory) in visible
    assert "last.ckpt.tmp" in leftovers
    run = prepare_run(cfg)  # a resumed run: the interrupted write's folders are gone
    assert run.resume_step == 3
    assert not any(path.name.endswith(".tmp") for path in directory.iterdir())


def test_optimizer_states_convert_between_names_and_indices():
    by_name = {"state": {"b": {"exp_avg": torch.ones(2)}, "c": {"exp_avg": torch.zeros(1)}},
               "param_groups": [{"lr": 1.0, "params": ["b", "a"]}, {"lr": 2.0, "params": ["c"]}]}
    by_index = optimizer_state_by_index(by_name)
    assert by_index["param_groups"] == [{"lr": 1.0, "params": [0, 1]}, {"lr": 2.0, "params": [2]}]
    assert sorted(by_index["state"]) == [0, 2]
    assert optimizer_state_by_name(by_index, [["b", "a"], ["c"]]) == by_name
    with pytest.raises(ValueError, match="has 2 parameter groups, this run's 1"):
        optimizer_state_by_name(by_index, [["b", "a", "c"]])


def test_a_checkpoint_padded_for_another_tensor_parallel_size_keeps_its_vocabulary(tmp_path):
    """Megatron pads the vocabulary to make_vocab_size_divisible_by x tensor-parallel size: a
    checkpoint of TP=2 (259 byte tokens -> 288 rows at 16 x 2) resumed with TP=1 keeps its 288
    rows rather than 272, so the layout alone does not change the model; another
    make_vocab_size_divisible_by still does (and check_structure refuses it)."""
    from megatron_lite.tokenizers import ByteTokenizer  # noqa: PLC0415
    from megatron_lite.training import padded_vocab_size  # noqa: PLC0415
    tensor_parallel = compose_gpt(tiny_overrides("/data/a_text_document", tmp_path / "tp", {
        "trainer.devices": 2, "model.tensor_model_parallel_size": 2}))
    tokenizer = ByteTokenizer()
    assert padded_vocab_size(tensor_parallel, tokenizer) == 288
    path = tmp_path / "tp.ckpt"
    torch.save({**checkpoint(tensor_parallel, 3), VOCAB_KEY: 288}, path)
    one = config(tmp_path / "one")
    assert padded_vocab_size(one, tokenizer) == 272
    assert padded_vocab_size(one, tokenizer, path) == 288
    other = compose_gpt(tiny_overrides("/data/a_text_document", tmp_path / "other", {
        "model.make_vocab_size_divisible_by": 8}))
    assert padded_vocab_size(other, tokenizer, path) == 264


def test_a_layout_change_replaces_a_checkpoint_of_the_other_kind(tmp_path):
    """A run resumed under another layout rewrites last.ckpt in its own kind: a file where a
    folder was, a folder where a file was."""
    from megatron_lite.training.checkpointing import AtomicCheckpointIO  # noqa: PLC0415

    cfg = config(tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    save(path, checkpoint(cfg, 3))
    AtomicCheckpointIO().save_checkpoint(checkpoint(cfg, 4), path)
    assert path.is_file() and checkpoint_metadata(path)["global_step"] == 4
    save(path, checkpoint(cfg, 5))
    assert is_distributed_checkpoint(path) and checkpoint_metadata(path)["global_step"] == 5
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
