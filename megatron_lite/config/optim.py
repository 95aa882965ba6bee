"""`model.optim.*`: AdamW and NeMo's learning-rate schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.nemo import fixed
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
    last_epoch: int = fixed(-1, "a schedule starts at step 0; a resumed run restores its position")

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
        require_at_least(self, "model.optim.sched.", 0, "warmup_steps", "constant_steps", "min_lr")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"model.optim.sched.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        require_at_least(self, "model.optim.sched.", 1, "max_steps")


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
        require_at_least(self, "model.optim.", 0, "weight_decay")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"model.optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.sched is not None and self.sched.min_lr > self.lr:
            raise ValueError(
                f"model.optim.sched.min_lr={self.sched.min_lr} is larger than model.optim.lr={self.lr}"
            )
