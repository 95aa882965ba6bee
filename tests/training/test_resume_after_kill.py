"""A run killed with SIGKILL between validations, then started again with the same command
(exp_manager.resume_if_exists), ends exactly as a run that was never interrupted: every logged
loss and learning rate, and the final weights, bit for bit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from megatron_lite.training.checkpointing import read_checkpoint
from tests.gpt_testing import REPO, read_metrics, tiny_overrides

MAX_STEPS = 20
VAL_CHECK_INTERVAL = 8  # validations, hence checkpoints, after steps 8 and 16
STEPS_AFTER_CHECKPOINT = 2  # steps the killed run has logged after its checkpoint, then lost
# One thread per run: the two runs share the CPU, and every run reduces in the same order.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def train_command(data_prefix: str, log_dir: Path) -> list[str]:
    # Dropout draws random numbers and two micro-batches make a step; sanity validation as in
    # the CPU preset. The same command starts the run and resumes it.
    extra = {
        "trainer.max_steps": MAX_STEPS, "trainer.val_check_interval": VAL_CHECK_INTERVAL,
        "trainer.num_sanity_val_steps": 2,
        "model.hidden_dropout": 0.1, "model.attention_dropout": 0.1,
        "exp_manager.resume_if_exists": True, "exp_manager.resume_ignore_no_checkpoint": True,
    }
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--config-name=megatron_gpt_config",
            *tiny_overrides(data_prefix, log_dir, extra)]


def start(command: list[str], output: Path) -> subprocess.Popen:
    with open(output, "w") as file:  # a file, not a pipe that could fill up and block the run
        return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=file, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, output: Path) -> None:
    assert process.wait() == 0, output.read_text()[-3000:]


def steps_logged(log_dir: Path) -> int:
    """How many optimizer steps the run has logged (metrics.csv row k is logged at step k)."""
    path = log_dir / "metrics.csv"
    if not path.is_file():
        return 0
    rows = path.read_text().split("\n")[1:-1]  # no header, no row still being written
    return max((int(row.split(",")[0]) + 1 for row in rows if row), default=0)


def newest_checkpoint_step(log_dir: Path) -> int | None:
    """The step of the newest validation checkpoint (the file names hold step=N)."""
    names = (path.name for path in (log_dir / "checkpoints").glob("*.ckpt"))
    return max((int(match[1]) for name in names if (match := re.search(r"-step=(\d+)-", name))),
               default=None)


def kill_after_a_checkpoint(process: subprocess.Popen, log_dir: Path, output: Path) -> None:
    """SIGKILL the run once it has logged STEPS_AFTER_CHECKPOINT steps after a checkpoint.

    The run is stopped (SIGSTOP) while the condition is checked again, so it cannot reach the
    next validation between the check and the kill.
    """
    def due() -> bool:
        saved = newest_checkpoint_step(log_dir)
        return saved is not None and steps_logged(log_dir) >= saved + STEPS_AFTER_CHECKPOINT

    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if due():
            process.send_signal(signal.SIGSTOP)
            if due():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            process.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"the run was not killed after a checkpoint (exit status {process.wait()}):\n"
                f"{output.read_text()[-3000:]}")


def logged(log_dir: Path, metric: str) -> list[tuple[str, str]]:
    """(step, value) of every metrics.csv row holding `metric`, in file order (duplicates kept)."""
    return [(row["step"], row[metric]) for row in read_metrics(log_dir) if row.get(metric)]


def test_a_run_killed_between_validations_resumes_exactly(tiny_corpus, tmp_path):
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    output = {name: tmp_path / f"{name}.out" for name in ("whole", "killed", "resumed")}
    # The uninterrupted run goes on beside the killed one and its resumption.
    whole = start(train_command(tiny_corpus, whole_dir), output["whole"])
    killed = start(train_command(tiny_corpus, killed_dir), output["killed"])
    kill_after_a_checkpoint(killed, killed_dir, output["killed"])
    assert killed.returncode == -signal.SIGKILL
    resume_step = read_checkpoint(killed_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert resume_step % VAL_CHECK_INTERVAL == 0 and 0 < resume_step < MAX_STEPS
    # Killed between validations: steps after the checkpoint are lost and must be redone.
    assert steps_logged(killed_dir) >= resume_step + STEPS_AFTER_CHECKPOINT

    finish(start(train_command(tiny_corpus, killed_dir), output["resumed"]), output["resumed"])
    finish(whole, output["whole"])

    for metric in ("train_loss", "lr", "grad_norm", "consumed_samples", "val_loss"):
        assert logged(killed_dir, metric) == logged(whole_dir, metric), metric
    assert len(logged(whole_dir, "train_loss")) == MAX_STEPS
    final = [read_checkpoint(run / "checkpoints" / "last.ckpt") for run in (whole_dir, killed_dir)]
    assert final[0]["global_step"] == final[1]["global_step"] == MAX_STEPS
    assert final[0]["state_dict"].keys() == final[1]["state_dict"].keys()
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(final[1]["state_dict"][key], value), key
