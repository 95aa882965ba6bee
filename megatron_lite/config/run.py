"""What a training run's root config holds whatever the family: trainer, exp_manager, the
sample printed at the end, and the checks that span these sections and `model.*`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_lite.config.exp_manager import ExpManagerConfig
from megatron_lite.config.model import ModelCommonConfig
from megatron_lite.config.nemo import check_fixed_keys, ignored_keys
from megatron_lite.config.parallel import check_layout
from megatron_lite.config.trainer import TrainerConfig


@dataclass
class InferenceConfig:
    """The sample printed at the end of training (NeMo's `inference.*` names)."""

    prompt: str = "The"
    tokens_to_generate: int = 48
    greedy: bool = False
    top_k: int = 40
    top_p: float = 0.0  # nucleus sampling; 0 (NeMo's "off") or 1 keep every token
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.tokens_to_generate < 0:
            raise ValueError(
                f"inference.tokens_to_generate must be >= 0, got {self.tokens_to_generate}"
            )
        if self.top_k < 0:
            raise ValueError(f"inference.top_k must be >= 0 (0: the whole vocabulary), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"inference.top_p must be in [0, 1] (0: off), got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"inference.temperature must be > 0, got {self.temperature}")


@dataclass
class RunConfig:
    """The root of a family's YAML; GPTConfig and T5Config narrow `model` to their section."""

    name: str = "megatron"
    # A checkpoint whose weights start this run (fine-tuning); everything else comes from here.
    restore_from_path: Optional[str] = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    exp_manager: ExpManagerConfig = field(default_factory=ExpManagerConfig)
    model: ModelCommonConfig = field(default_factory=ModelCommonConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        check_fixed_keys(self)
        model, trainer = self.model, self.trainer
        check_layout(model, trainer.devices, trainer.num_nodes, trainer.lightning_precision,
                     trainer.strategy)
        per_step = model.micro_batch_size * self.data_parallel_size
        if model.global_batch_size % per_step:
            raise ValueError(
                f"model.global_batch_size={model.global_batch_size} is not a multiple of "
                f"model.micro_batch_size={model.micro_batch_size} x data-parallel size "
                f"{self.data_parallel_size} (trainer.devices x trainer.num_nodes / "
                "(model.tensor_model_parallel_size x model.context_parallel_size))"
            )
        if isinstance(trainer.val_check_interval, int) and trainer.val_check_interval > trainer.max_steps:
            raise ValueError(
                f"trainer.val_check_interval={trainer.val_check_interval} exceeds "
                f"trainer.max_steps={trainer.max_steps}: the run would never validate nor "
                "write a checkpoint"
            )
        sched = model.optim.sched
        if sched is not None:
            if sched.max_steps is not None and sched.max_steps < trainer.max_steps:
                raise ValueError(
                    f"model.optim.sched.max_steps={sched.max_steps} is shorter than "
                    f"trainer.max_steps={trainer.max_steps}"
                )
            if self.warmup_steps + sched.constant_steps > self.schedule_steps:
                raise ValueError(
                    f"model.optim.sched warm-up ({self.warmup_steps} steps) plus constant_steps "
                    f"({sched.constant_steps}) exceed the schedule's {self.schedule_steps} steps "
                    "(model.optim.sched.max_steps, else trainer.max_steps)"
                )
        if model.megatron_amp_O2 and trainer.lightning_precision in ("16-true", "bf16-true"):
            raise ValueError(
                f"model.megatron_amp_O2=True with trainer.precision={trainer.precision}: O2 keeps "
                "fp32 master weights, which true half precision has not; use trainer.precision=bf16"
            )

    def ignored_keys(self) -> dict[str, list[str]]:
        """NeMo keys set in this config that nothing here reads, by reason (config/nemo.py)."""
        return ignored_keys(self)

    def startup_notes(self) -> list[str]:
        """Where a NeMo setting runs as its nearest equivalent here: one line each."""
        notes = []
        if self.model.megatron_amp_O2:
            if self.trainer.lightning_precision == "32-true":
                notes.append("model.megatron_amp_O2=True has no effect at trainer.precision=32 "
                             "(as in NeMo)")
            else:
                notes.append(
                    f"model.megatron_amp_O2=True runs as trainer.precision="
                    f"{self.trainer.lightning_precision}: fp32 weights and optimizer state under "
                    "autocast (NeMo's O2 keeps half-precision weights with fp32 master copies in "
                    "the optimizer: close numerics, less memory)"
                )
        return notes

    @property
    def data_parallel_size(self) -> int:
        """Ranks that read different samples: the world over tensor x context parallel."""
        return self.trainer.world_size // self.model.model_parallel_size

    @property
    def accumulate_grad_batches(self) -> int:
        return self.model.global_batch_size // (self.model.micro_batch_size * self.data_parallel_size)

    @property
    def schedule_steps(self) -> int:
        sched = self.model.optim.sched
        if sched is not None and sched.max_steps is not None:
            return sched.max_steps
        return self.trainer.max_steps

    @property
    def warmup_steps(self) -> int:
        sched = self.model.optim.sched
        if sched is None:
            return 0
        if sched.warmup_ratio is not None:
            return int(sched.warmup_ratio * self.schedule_steps)
        return sched.warmup_steps or 0
