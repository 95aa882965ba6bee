"""Training throughput and peak memory of a model, one config at a time: how the flash
switches change a real training step.

A step here is what the Trainer runs: the family's loss on global_batch_size / micro_batch_size
micro-batches under the precision's autocast, backward, gradient clipping, AdamW (fused on
CUDA). The micro-batches are real samples of the config's data (span-corrupted pairs for T5),
collated once before timing so that data loading is not measured. Throughput counts every
position fed through the model, padding included (T5: encoder and decoder positions); peak
memory is torch's allocator high-water mark over the timed steps (weights, gradients, optimizer
state and activations), on CUDA only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader

from megatron_lite.config import RunConfig
from megatron_lite.training import build_optimizer, build_tokenizer_from_config, family_of, padded_vocab_size
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
    """Route every model's flash attention through `flash_attn_func` of an edited copy of
    kernels/flash_attention.py at `path` (scripts/bench_train.py --kernel-file: a kernel change
    timed in whole training steps). Returns the loaded module."""
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


def _micro_batches(cfg: RunConfig, dataset, count: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    loader = DataLoader(dataset, batch_size=cfg.model.micro_batch_size, drop_last=True)
    batches = list(itertools.islice(loader, count))
    if not batches:
        raise ValueError(
            f"the training data holds fewer than model.micro_batch_size={cfg.model.micro_batch_size} samples"
        )
    return [{key: value.to(device) for key, value in batch.items()} for batch in batches]


def measure_training(cfg: RunConfig, *, steps: int, warmup: int, device: torch.device) -> TrainingMeasurement:
    """Time `steps` optimizer steps after `warmup` untimed ones (compilation, autotuning)."""
    if cfg.trainer.world_size != 1:
        raise ValueError("the training benchmark runs one device: set trainer.devices=1 and trainer.num_nodes=1")
    precision = cfg.trainer.lightning_precision
    if precision not in (*AUTOCAST, "32-true"):
        raise ValueError(f"trainer.precision={cfg.trainer.precision!r}: the benchmark runs bf16-mixed, 16-mixed or 32")
    family = family_of(cfg)
    torch.manual_seed(cfg.model.seed)
    tokenizer = build_tokenizer_from_config(cfg)
    train_set, _ = family.build_datasets(cfg, tokenizer)
    model = family.model_type(cfg.model, padded_vocab_size(cfg, tokenizer)).to(device).train()
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    accumulate = cfg.accumulate_grad_batches
    batches = itertools.cycle(_micro_batches(cfg, train_set, min(8, (steps + warmup) * accumulate), device))
    clip = cfg.trainer.gradient_clip_val

    def step() -> torch.Tensor:
        total = 0.0
        for _ in range(accumulate):
            with torch.autocast(device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST):
                loss = family.loss(model, next(batches), cfg) / accumulate
            scaler.scale(loss).backward()
            total += loss.detach()
        scaler.unscale_(optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return total

    return time_training_steps(
        step, steps=steps, warmup=warmup, device=device,
        tokens_per_step=cfg.model.global_batch_size * family.tokens_per_sample(cfg),
        flops_per_step=cfg.model.global_batch_size * family.flops_per_sample(model, cfg),
        peak=peak_flops(device, precision),
    )


def time_training_steps(step: Callable[[], torch.Tensor], *, steps: int, warmup: int, device: torch.device,
                        tokens_per_step: int, flops_per_step: float | None = None,
                        peak: float | None = None) -> TrainingMeasurement:
    """Run `warmup` untimed steps, then time `steps` steps of `step` (which returns the loss).
    MFU needs both the step's FLOPs and the device's peak; peak memory is measured on CUDA only."""
    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    losses = [step() for _ in range(steps)]
    synchronize()
    elapsed = time.perf_counter() - started
    return TrainingMeasurement(
        tokens_per_step=tokens_per_step,
        step_ms=1e3 * elapsed / steps,
        tokens_per_sec=tokens_per_step * steps / elapsed,
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        mfu=None if peak is None or flops_per_step is None else flops_per_step * steps / elapsed / peak,
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
