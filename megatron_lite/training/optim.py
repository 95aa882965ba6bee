"""AdamW with Megatron's weight-decay groups, and NeMo's learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from megatron_lite.config import RunConfig


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Weight decay on matrices only: biases and norm gains (all 1-D) are left undecayed, unless
    `decay_all` (NeMo's model.do_layer_norm_weight_decay)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if decay_all or param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    optim = cfg.model.optim
    # Fused: one kernel per step on CUDA. Not under fp16's loss scaler: a fused AdamW unscales
    # inside its step, after gradient clipping and the logged gradient norm would have seen
    # scaled gradients.
    fused = device.type == "cuda" and cfg.trainer.lightning_precision != "16-mixed"
    return torch.optim.AdamW(
        param_groups(model, optim.weight_decay, cfg.model.do_layer_norm_weight_decay),
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        fused=fused,
    )


def lr_at_step(step: int, cfg: RunConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) under NeMo's schedule semantics.

    Linear warm-up to optim.lr over the warm-up steps, then a cosine (CosineAnnealing) or linear
    (WarmupAnnealing) decay to sched.min_lr that ends constant_steps before the schedule's end,
    then min_lr: the constant steps are a hold at the bottom, as in NeMo's WarmupAnnealHoldPolicy.
    """
    max_lr, sched = cfg.model.optim.lr, cfg.model.optim.sched
    if sched is None:
        return max_lr
    warmup = cfg.warmup_steps
    if step < warmup:
        return max_lr * (step + 1) / warmup
    decay_steps = cfg.schedule_steps - warmup - sched.constant_steps
    if decay_steps <= 0 or step >= warmup + decay_steps:
        return sched.min_lr
    progress = (step - warmup) / decay_steps  # in [0, 1)
    if sched.name == "CosineAnnealing":
        fraction = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        fraction = 1.0 - progress
    return sched.min_lr + (max_lr - sched.min_lr) * fraction


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    max_lr = cfg.model.optim.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at_step(step, cfg) / max_lr)
