"""Helpers of the multi-process tests: test bodies run in spawned processes joined by one gloo
group; runs of scripts/train.py on several CPU processes (Lightning's launcher starts the other
ranks from the script, gloo between them); and the comparisons of their logged metrics and
weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron_lite.training.checkpointing import model_state_dict, read_checkpoint
from tests.gpt_testing import REPO, metric_by_step

# One thread per process: the ranks share the CPU cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
METRICS = ("train_loss", "val_loss", "grad_norm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_ranks(body: Callable[..., None], world: int, *args: Any) -> None:
    """Runs body(rank, world, *args) in `world` spawned processes joined by a gloo group. A
    failing rank's error is raised here, and the other ranks are stopped."""
    mp.spawn(_run_rank, args=(body, world, free_port(), args), nprocs=world)


def _run_rank(rank: int, body: Callable[..., None], world: int, port: int, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        body(rank, world, *args)
    finally:
        dist.destroy_process_group()
    # Leave without finalizing Python. DTensor's sharding cache keeps the mesh, and through it
    # the gloo group and its worker threads, alive past destroy_process_group. Such a thread
    # frees the last collective's tensors just after the collective returns; when that happens
    # while Python finalizes, taking the GIL ends the thread inside a noexcept destructor and the
    # rank dies with SIGABRT ("terminate called without an active exception": 1 run in 7 of a
    # test that ended on an all_gather, 0 in 100 this way). A failing body never gets here, and
    # there is no barrier before leaving: the ranks waiting in it for a failed one would fail
    # too, and spawn could report their error instead of its.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_script(overrides: Sequence[str], config_name: str = "megatron_gpt_config", timeout: int = 300) -> None:
    """scripts/train.py with these overrides, in a subprocess (its ranks are its children)."""
    result = subprocess.run(
        [sys.executable, "scripts/train.py", f"--config-name={config_name}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ENV,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def assert_same_metrics(expected: Path, got: Path, steps: set[int] | None = None, rel: float = 1e-5) -> None:
    """The runs' logged losses and gradient norms agree at every step `got` logged (`steps`:
    these must be among them), up to the order of floating-point reductions."""
    for metric in METRICS:
        want, have = metric_by_step(expected, metric), metric_by_step(got, metric)
        assert have, (metric, got)
        if steps is not None:
            assert steps & have.keys() == steps & want.keys() and steps & have.keys(), (metric, have.keys())
        for step, value in have.items():
            assert value == pytest.approx(want[step], rel=rel), (metric, step, value, want[step])


def assert_same_weights(expected: Path, got: Path, atol: float = 1e-5) -> None:
    """Two checkpoints (files or sharded folders) hold the same weights. (The key projection's
    bias has a zero gradient up to rounding, which AdamW turns into updates of ~1e-6 that
    differ with the reduction order: hence atol.)"""
    want, have = (model_state_dict(read_checkpoint(path)) for path in (expected, got))
    assert want.keys() == have.keys()
    for name, tensor in want.items():
        torch.testing.assert_close(have[name], tensor, rtol=1e-5, atol=atol,
                                   msg=lambda message, name=name: f"{name}: {message}")


def checkpoint_at(log_dir: Path, step: int) -> Path:
    """The validation checkpoint of a run at this step (file or folder)."""
    (path,) = (log_dir / "checkpoints").glob(f"*-step={step}-*.ckpt")
    return path
