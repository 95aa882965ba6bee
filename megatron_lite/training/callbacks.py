"""Callbacks: RNG state in checkpoints (Lightning saves none), and throughput / MFU logging."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in types a weights_only checkpoint loads (no numpy arrays)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds RNG states of {len(state['cuda'])} CUDA devices, this "
                f"machine has {torch.cuda.device_count()}"
            )
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(pl.Callback):
    """Saves the RNG states with each checkpoint and restores them when training resumes.

    A checkpoint is written between optimizer steps (at a validation, or at the end of a training
    step), and nothing between it and the next training step draws random numbers (loaders have
    their own generator, validation has no dropout), so the saved state is exactly the one the
    next step starts from. It is restored in on_train_start, after Lightning's set-up and sanity
    check, right before the first resumed step.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None


# Dense 16-bit tensor-core peaks. Lightning's table lists H200's sparse figure, so ours wins.
_PEAK_16BIT = {"h100": 989e12, "h200": 989e12}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's peak FLOP/s at this precision, or None (CPUs have no meaningful figure)."""
    if device.type != "cuda":
        return None
    half = precision.startswith(("bf16", "16"))
    name = torch.cuda.get_device_name(device).lower()
    for chip, flops in _PEAK_16BIT.items():
        if chip in name and half:
            return flops
    from lightning_fabric.utilities.throughput import get_available_flops  # noqa: PLC0415

    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16 if half else torch.float32
    return get_available_flops(device, dtype)


class ThroughputMonitor(pl.Callback):
    """Logs tokens/s (all ranks together) per optimizer step, and MFU where a GPU peak is known.

    tokens_per_step counts every position fed through the model, padding included (for T5 the
    encoder's and the decoder's); flops_per_step is the family's model FLOPs of one step.

    A step's time runs from the previous optimizer step to this one, less any validation and
    checkpointing in between.
    """

    def __init__(self, tokens_per_step: int, flops_per_step: float, precision: str) -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.precision = precision
        self._peak: float | None = None
        self._last: float | None = None
        self._paused = 0.0
        self._pause_start: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        peak = peak_flops(pl_module.device, self.precision)
        self._peak = None if peak is None else peak * trainer.world_size

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause_start = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pause_start is not None:
            self._paused += time.perf_counter() - self._pause_start
            self._pause_start = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        now = time.perf_counter()
        if self._last is not None:
            step_time = now - self._last - self._paused
            pl_module.log("tokens_per_sec", self.tokens_per_step / step_time)
            if self._peak is not None:
                pl_module.log("mfu", self.flops_per_step / step_time / self._peak)
        self._last = now
        self._paused = 0.0
