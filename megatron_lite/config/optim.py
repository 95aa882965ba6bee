"""`model.optim.*`: AdamW and NeMo's learning-rate schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

# NeMo's fused_adam is Apex's FusedAdam in AdamW mode: both names give torch's AdamW here.
OPTIMIZERS = ("fused_adam", "adamw")
SCHEDULERS = ("CosineAnnealing", "WarmupAnnealing")


@dataclass
class SchedConfig:
    name: str = "CosineAnnealing"
    warmup_steps: Optional[int] = None
    warmup_ratio: Optional[float] = None
    # Steps held at min_lr at the end of the schedule (NeMo's WarmupAnnealHoldPolicy).
    constant_steps: int = 0
    min_lr: float = 0.0
    # The schedule's length; trainer.max_steps when null.
    max_steps: Optional[int] = None

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(
                f"model.optim.sched.name={self.name!r} is not implemented; choose one of "
                f"{SCHEDULERS}, or set model.optim.sched=null for a constant learning rate"
            )
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError(
                "model.optim.sched.warmup_steps and model.optim.sched.warmup_ratio are exclusive"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"model.optim.sched.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"model.optim.sched.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.constant_steps < 0:
            raise ValueError(f"model.optim.sched.constant_steps must be >= 0, got {self.constant_steps}")
        if self.min_lr < 0:
            raise ValueError(f"model.optim.sched.min_lr must be >= 0, got {self.min_lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"model.optim.sched.max_steps must be >= 1, got {self.max_steps}")


@dataclass
class OptimConfig:
    name: str = "fused_adam"
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    sched: Optional[SchedConfig] = field(default_factory=SchedConfig)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"model.optim.name={self.name!r} is not implemented; choose one of {OPTIMIZERS} "
                "(both are AdamW, fused on CUDA)"
            )
        if self.lr <= 0:
            raise ValueError(f"model.optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"model.optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"model.optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.sched is not None and self.sched.min_lr > self.lr:
            raise ValueError(
                f"model.optim.sched.min_lr={self.sched.min_lr} is larger than model.optim.lr={self.lr}"
            )
