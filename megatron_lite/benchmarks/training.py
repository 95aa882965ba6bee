"""Training throughput and peak memory of a config: the step `scripts/train.py` runs, timed.

`measure_training` calls `megatron_lite.training.train`, so the tokenizer, datasets,
LightningModule (the family's loss, AdamW fused on CUDA, the schedule, clipping), data module,
precision and Trainer are the ones a user's run builds. Only what writes files or interrupts the
steps is switched off: checkpoints, the TensorBoard and CSV logs, the progress bar, the sample
printed at the end, and validation (one pass of one batch after the last step, outside the
clock: the config cannot have none). `trainer.max_steps` becomes warmup + steps.

A callback times the steps after warm-up (compilation, autotuning) from the end of one optimizer
step to the end of another, with CUDA synchronized at both ends, so a timed step holds all a
step costs in a user's run: loading its micro-batches (model.data.num_workers applies), copying
them to the device, forward, backward, clipping, the optimizer, Lightning's own work.

Throughput counts every position fed through the model, padding included (T5: encoder and
decoder positions); peak memory is torch's allocator high-water mark over the timed steps
(weights, gradients, optimizer state and activations), on CUDA only.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
import tempfile
import time
from typing import Callable

import pytorch_lightning as pl
import torch
import triton

from megatron_lite.config import RunConfig
from megatron_lite.training import family_of, train
from megatron_lite.training.callbacks import peak_flops

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# The switches each family has, and how a variant sets them (Hydra overrides).
SWITCHES = {
    "gpt": {"off": ["model.use_flash_attention=false"], "on": ["model.use_flash_attention=true"]},
    "t5": {
        "off": ["model.encoder.use_flash_attention=false", "model.decoder.use_flash_attention=false"],
        "encoder": ["model.encoder.use_flash_attention=true", "model.decoder.use_flash_attention=false"],
        "decoder": ["model.encoder.use_flash_attention=false", "model.decoder.use_flash_attention=true"],
        "on": ["model.encoder.use_flash_attention=true", "model.decoder.use_flash_attention=true"],
    },
}


def use_kernel_copy(path: str):
    """Route every model's flash attention through `flash_attn_func` of an edited copy of the
    kernel (kernels/megatron_lite_kernels/flash_attention/) at `path`, loaded by
    `load_kernel_copy` (scripts/bench_train.py --kernel-file: a kernel change timed in whole
    training steps). Returns the loaded module."""
    from megatron_lite_kernels.module_copy import load_kernel_copy
    from megatron_lite.modules import attention

    module = load_kernel_copy(path, "megatron_lite_training_candidate")
    attention.flash_attn_func = module.flash_attn_func
    return module


def length_overrides(family: str, lengths: str) -> list[str]:
    """Hydra overrides for "S" (GPT) or "S:S_dec" (T5, encoder:decoder)."""
    if family == "t5":
        encoder, decoder = (int(n) for n in lengths.split(":"))
        return [f"model.seq_length={encoder}", f"model.data.seq_length_dec={decoder}"]
    return [f"model.encoder_seq_length={int(lengths)}"]


@dataclasses.dataclass
class TrainingMeasurement:
    tokens_per_step: int
    step_ms: float
    tokens_per_sec: float
    peak_memory_gib: float | None  # None off CUDA
    mfu: float | None  # None where the device has no known peak
    losses: list[float]  # of the timed steps, to see that training runs sanely


def _measurement(elapsed: float, steps: int, *, tokens_per_step: int, flops_per_step: float | None,
                 peak: float | None, peak_memory_gib: float | None, losses: list[float]) -> TrainingMeasurement:
    """MFU needs both the step's FLOPs and the device's peak."""
    return TrainingMeasurement(
        tokens_per_step=tokens_per_step,
        step_ms=1e3 * elapsed / steps,
        tokens_per_sec=tokens_per_step * steps / elapsed,
        peak_memory_gib=peak_memory_gib,
        mfu=None if peak is None or flops_per_step is None else flops_per_step * steps / elapsed / peak,
        losses=losses,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Times optimizer steps warmup + 1 .. warmup + steps of a run and keeps their losses.

    The clock starts when `warmup` steps are done (at the start of training if none) and stops
    at the end of step warmup + steps; peak memory is reset at the start. A step's loss is the
    mean of its micro-batches' losses, as the module logs it: Lightning hands each micro-batch's
    loss to on_train_batch_end already divided by the accumulation count, so they are summed.
    """

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.device: torch.device | None = None
        self.elapsed: float | None = None
        self.peak_memory_gib: float | None = None
        self._started: float | None = None
        self._step_seen = 0
        self._step_loss: torch.Tensor | float = 0.0
        # Tensors until the end: reading a loss every step would synchronize the device.
        self._losses: list[torch.Tensor] = []

    @property
    def losses(self) -> list[float]:
        return [float(loss) for loss in self._losses]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device = pl_module.device
        self._start_if_due(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step_ended = trainer.global_step != self._step_seen
        self._step_seen = trainer.global_step
        if self._started is not None and self.elapsed is None:
            self._step_loss = self._step_loss + outputs["loss"]
            if step_ended:
                self._losses.append(self._step_loss)
                self._step_loss = 0.0
            if trainer.global_step == self.warmup + self.steps:
                self._stop()
        self._start_if_due(trainer)

    def _start_if_due(self, trainer: pl.Trainer) -> None:
        if self._started is None and trainer.global_step == self.warmup:
            _synchronize(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self._started = time.perf_counter()

    def _stop(self) -> None:
        _synchronize(self.device)
        self.elapsed = time.perf_counter() - self._started
        if self.device.type == "cuda":
            self.peak_memory_gib = torch.cuda.max_memory_allocated(self.device) / 2**30


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def json_record(rows: list[dict], device: torch.device) -> dict:
    """The rows with where, when and how they were measured, as docs/benchmarks/ keeps them."""
    return {
        "source": f"python {shlex.join(sys.argv)} ({time.strftime('%Y-%m-%d')})",
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "lightning": pl.__version__,
        "rows": rows,
    }


def measurement_config(cfg: RunConfig, *, steps: int, warmup: int, log_dir: str) -> RunConfig:
    """cfg with max_steps = warmup + steps and nothing that writes files or pauses the steps
    (the run folder `log_dir` gets only config.yaml). The learning-rate schedule keeps the
    length it has in cfg's run, so the timed steps are that run's first steps, and a warm-up
    longer than the benchmark is no error."""
    total = warmup + steps
    trainer = dataclasses.replace(
        cfg.trainer, max_steps=total, val_check_interval=total, limit_val_batches=1,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False)
    exp_manager = dataclasses.replace(
        cfg.exp_manager, explicit_log_dir=log_dir, create_tensorboard_logger=False, create_csv_logger=False,
        create_checkpoint_callback=False, resume_if_exists=False, resume_ignore_no_checkpoint=False,
        resume_from_checkpoint=None)
    inference = dataclasses.replace(cfg.inference, tokens_to_generate=0)
    model = cfg.model
    if model.optim.sched is not None:
        sched = dataclasses.replace(model.optim.sched, max_steps=max(cfg.schedule_steps, total))
        model = dataclasses.replace(model, optim=dataclasses.replace(model.optim, sched=sched))
    return dataclasses.replace(cfg, trainer=trainer, exp_manager=exp_manager, inference=inference, model=model)


def run_timed(cfg: RunConfig, timer: StepTimer) -> pl.LightningModule:
    """`train(cfg)` on one device, shortened to the timer's warmup + steps (measurement_config),
    with the timer (a StepTimer or a subclass) as a callback; the trained module."""
    if cfg.trainer.world_size != 1:
        raise ValueError("the training benchmark runs one device: set trainer.devices=1 and trainer.num_nodes=1")
    if timer.steps < 1 or timer.warmup < 0:
        raise ValueError(f"the benchmark needs steps >= 1 and warmup >= 0, got steps={timer.steps}, "
                         f"warmup={timer.warmup}")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as log_dir:
        module = train(measurement_config(cfg, steps=timer.steps, warmup=timer.warmup, log_dir=log_dir),
                       callbacks=[timer])
    if timer.elapsed is None:
        raise RuntimeError(f"training stopped before step {timer.warmup + timer.steps}; nothing was timed")
    return module


def measure_training(cfg: RunConfig, *, steps: int, warmup: int) -> TrainingMeasurement:
    """Time `steps` optimizer steps of `train(cfg)` after `warmup` untimed ones, on the device
    the config's trainer.accelerator picks."""
    timer = StepTimer(warmup, steps)
    module = run_timed(cfg, timer)
    family, batch = family_of(cfg), cfg.model.global_batch_size
    return _measurement(
        timer.elapsed, steps,
        tokens_per_step=batch * family.tokens_per_sample(cfg),
        flops_per_step=batch * family.flops_per_sample(module.model, cfg),
        peak=peak_flops(timer.device, cfg.trainer.lightning_precision),
        peak_memory_gib=timer.peak_memory_gib,
        losses=timer.losses,
    )


def time_training_steps(step: Callable[[], torch.Tensor], *, steps: int, warmup: int, device: torch.device,
                        tokens_per_step: int, flops_per_step: float | None = None,
                        peak: float | None = None) -> TrainingMeasurement:
    """Run `warmup` untimed calls of `step` (which returns the loss), then time `steps` calls:
    for a loop of its own, as the Hugging Face peer has (megatron_lite.benchmarks.hf_peers)."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _synchronize(device)
    elapsed = time.perf_counter() - started
    return _measurement(
        elapsed, steps, tokens_per_step=tokens_per_step, flops_per_step=flops_per_step, peak=peak,
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        losses=[float(loss) for loss in losses],
    )


def format_row(lengths: str, variant: str, cfg: RunConfig, result: TrainingMeasurement | None,
               error: str = "", batch: int | None = None) -> str:
    """One markdown table row: lengths | variant | batch | tokens/s | ms/step | peak GiB | MFU | loss.
    batch: samples per step, model.global_batch_size unless given."""
    batch = cfg.model.global_batch_size if batch is None else batch
    if result is None:
        return f"| {lengths} | {variant} | {batch} | {error} | | | | |"
    memory = "n/a" if result.peak_memory_gib is None else f"{result.peak_memory_gib:.1f}"
    mfu = "n/a" if result.mfu is None else f"{100 * result.mfu:.1f}%"
    loss = result.losses[-1]
    return (f"| {lengths} | {variant} | {batch} | {result.tokens_per_sec:,.0f} | "
            f"{result.step_ms:.1f} | {memory} | {mfu} | {loss:.3f}{'' if math.isfinite(loss) else ' (!)'} |")


TABLE_HEADER = [
    "| lengths | flash | batch | tokens/s | ms/step | peak GiB | MFU | last loss |",
    "|---|---|---|---|---|---|---|---|",
]
