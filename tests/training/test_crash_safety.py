"""A run killed with SIGKILL again and again, at random moments and in the middle of checkpoint
writes, and started again each time with exp_manager.resume_if_exists, ends exactly as a run
that was never interrupted: the logged curves and the final weights, bit for bit. After every
kill each checkpoint file is whole, and the newest one never goes back (no step is lost beyond
those since the last checkpoint)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from megatron_lite.training import train
from megatron_lite.training.checkpointing import complete_checkpoints, newest_checkpoint, read_checkpoint
from tests.gpt_testing import compose_gpt, tiny_overrides
from tests.training.test_resume_after_kill import logged

KILLS = 12
MAX_STEPS = 40  # more than the 12 kills can use: each takes at most 3 steps
SEED = 20260101  # the kill moments are drawn from it: the test is the same every time
# A checkpoint at every step (after a one-batch validation), of a model big enough (3 M
# parameters: about 35 MB with AdamW's moments) that writing one takes a good part of a step.
EXTRA = {
    "trainer.max_steps": MAX_STEPS, "trainer.val_check_interval": 1, "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0, "model.hidden_size": 256, "model.ffn_hidden_size": 1024,
    "model.num_attention_heads": 4, "model.hidden_dropout": 0.1, "model.attention_dropout": 0.1,
    "exp_manager.resume_if_exists": True, "exp_manager.resume_ignore_no_checkpoint": True,
    "exp_manager.checkpoint_callback_params.save_top_k": 2,
}


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    """Processes forked from a server that has imported the library once: a restart costs a
    fork, not a Python start-up. One thread each, so that every run reduces in the same order."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the server, started with the first process, inherits it
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["megatron_lite.training", "tests.gpt_testing"])
    yield context
    if previous is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = previous


def checkpoint_steps(checkpoint_dir: Path) -> dict[str, int]:
    """{file name: global step} of every checkpoint; reading one that is not whole fails."""
    return {path.name: int(read_checkpoint(path, mmap=True)["global_step"])
            for path in complete_checkpoints(checkpoint_dir)}


def last_checkpoint_id(checkpoint_dir: Path) -> int | None:
    """last.ckpt's inode: every write replaces the file, so it changes when a new one lands."""
    try:
        return (checkpoint_dir / "last.ckpt").stat().st_ino
    except FileNotFoundError:
        return None


def writing_a_checkpoint(checkpoint_dir: Path) -> bool:
    return any(name.endswith(".ckpt.tmp") for name in os.listdir(checkpoint_dir))


def kill(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.join()


def wait_for_a_new_checkpoint(process, checkpoint_dir: Path) -> bool:
    """Wait until the process writes last.ckpt anew; False if it ends first."""
    start_id = last_checkpoint_id(checkpoint_dir)
    deadline = time.monotonic() + 120
    while last_checkpoint_id(checkpoint_dir) in (start_id, None):
        if not process.is_alive():
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    return True


def kill_once(process, checkpoint_dir: Path, rng: random.Random, mid_write: bool) -> bool | None:
    """Once this attempt has written a checkpoint of its own (so every attempt moves on), kill
    it: in the middle of a checkpoint write, or at a random point of the step after the next
    (timed by this attempt's own pace, so the run lasts as many kills on any machine). Returns
    whether a write was cut short, or None if the run finished first."""
    if not wait_for_a_new_checkpoint(process, checkpoint_dir):
        return None
    if not mid_write:
        start = time.monotonic()
        if not wait_for_a_new_checkpoint(process, checkpoint_dir):
            return None
        time.sleep(rng.uniform(0.0, time.monotonic() - start))
    while process.is_alive():
        if not mid_write or writing_a_checkpoint(checkpoint_dir):
            os.kill(process.pid, signal.SIGSTOP)  # frozen: what we see is what it was doing
            cut_short = writing_a_checkpoint(checkpoint_dir)
            if cut_short or not mid_write:
                kill(process)
                return cut_short
            os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.001)
    return None


def test_a_run_killed_many_times_ends_as_an_uninterrupted_one(fork_server, tiny_corpus, tmp_path):
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    checkpoint_dir = killed_dir / "checkpoints"
    whole_cfg = compose_gpt(tiny_overrides(tiny_corpus, whole_dir, EXTRA))
    killed_cfg = compose_gpt(tiny_overrides(tiny_corpus, killed_dir, EXTRA))
    whole = fork_server.Process(target=train, args=(whole_cfg,))
    whole.start()
    checkpoint_dir.mkdir(parents=True)
    rng = random.Random(SEED)
    kills, cut_writes, newest_step = 0, 0, 0
    while True:
        attempt = fork_server.Process(target=train, args=(killed_cfg,))
        attempt.start()
        cut_short = kill_once(attempt, checkpoint_dir, rng, mid_write=kills % 2 == 0) if kills < KILLS else None
        if cut_short is None:  # not killed: it ran to the end
            attempt.join()
            assert attempt.exitcode == 0
            break
        kills += 1
        cut_writes += cut_short
        steps = checkpoint_steps(checkpoint_dir)  # every file whole
        newest = newest_checkpoint(checkpoint_dir)
        assert newest is not None and steps[newest.name] >= newest_step  # nothing saved was lost
        newest_step = steps[newest.name]
    whole.join()
    assert whole.exitcode == 0
    assert kills == KILLS and cut_writes >= KILLS // 2 - 1, (kills, cut_writes)

    for metric in ("train_loss", "lr", "grad_norm", "consumed_samples", "val_loss", "skipped_steps"):
        assert logged(killed_dir, metric) == logged(whole_dir, metric), metric
    assert len(logged(whole_dir, "train_loss")) == MAX_STEPS
    # Every checkpoint of the uninterrupted run is there, equal; none is left half-written.
    whole_steps, killed_steps = checkpoint_steps(whole_dir / "checkpoints"), checkpoint_steps(checkpoint_dir)
    assert whole_steps.items() <= killed_steps.items()
    assert not any(name.endswith(".tmp") for name in os.listdir(checkpoint_dir))
    for name in whole_steps:
        expected = read_checkpoint(whole_dir / "checkpoints" / name)["state_dict"]
        actual = read_checkpoint(checkpoint_dir / name)["state_dict"]
        assert expected.keys() == actual.keys()
        for key, value in expected.items():
            assert torch.equal(actual[key], value), (name, key)
