"""`trainer.*`: what the Lightning Trainer is built from (NeMo's key names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.nemo import NO_TEST_STAGE, ignored
# NeMo's and Lightning's spellings of a precision -> Lightning's canonical one.
PRECISIONS = {
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "32": "32-true",
    "32-true": "32-true",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
}

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_spawn")


@dataclass
class TrainerConfig:
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "bf16-mixed"
    # Training length is counted in optimizer steps; an epoch is a whole run (Megatron's sampler).
    max_steps: int = 100_000
    max_epochs: int = -1
    # An int counts optimizer steps, like max_steps (NeMo's meaning), whatever the gradient
    # accumulation; a float in (0, 1] is a fraction of the run (an epoch is the whole run).
    val_check_interval: Union[int, float] = 100
    # An int counts global batches; a float in (0, 1] is a fraction of one pass over the
    # validation data.
    limit_val_batches: Union[int, float] = 50
    limit_test_batches: Optional[Union[int, float]] = ignored(NO_TEST_STAGE)
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 10
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    benchmark: bool = False
    deterministic: bool = False
    # NeMo's exp_manager, not the Trainer, creates loggers, checkpointing and the sampler.
    logger: bool = False
    enable_checkpointing: bool = False
    use_distributed_sampler: bool = False

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"trainer.precision={self.precision!r} is not supported; choose one of "
                f"{sorted(PRECISIONS)}"
            )
        if self.accelerator not in ACCELERATORS:
            raise ValueError(
                f"trainer.accelerator={self.accelerator!r} is not supported; choose one of {ACCELERATORS}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"trainer.strategy={self.strategy!r} is not implemented; choose one of {STRATEGIES}"
            )
        require_at_least(self, "trainer.", 1, "devices", "num_nodes", "max_steps", "log_every_n_steps")
        for key in ("val_check_interval", "limit_val_batches"):
            value = getattr(self, key)
            if isinstance(value, float) and not 0.0 < value <= 1.0:
                raise ValueError(
                    f"trainer.{key}={value} must be a fraction in (0, 1] or a whole number >= 1"
                )
            if isinstance(value, int) and value < 1:
                raise ValueError(f"trainer.{key} must be >= 1 (or a fraction in (0, 1]), got {value}")
        require_at_least(self, "trainer.", 0, "num_sanity_val_steps", "gradient_clip_val")
        if self.max_epochs != -1:
            raise ValueError(
                f"trainer.max_epochs={self.max_epochs} is not implemented: training length is "
                "trainer.max_steps; leave max_epochs at -1"
            )
        if self.accumulate_grad_batches != 1:
            raise ValueError(
                "trainer.accumulate_grad_batches is derived from model.global_batch_size / "
                "(model.micro_batch_size x data-parallel size); leave it at 1"
            )
        if self.logger:
            raise ValueError(
                "trainer.logger=True is not supported: exp_manager creates the loggers "
                "(exp_manager.create_tensorboard_logger, exp_manager.create_csv_logger)"
            )
        if self.enable_checkpointing:
            raise ValueError(
                "trainer.enable_checkpointing=True is not supported: exp_manager creates the "
                "checkpoint callback (exp_manager.create_checkpoint_callback)"
            )
        if self.use_distributed_sampler:
            raise ValueError(
                "trainer.use_distributed_sampler=True is not supported: the Megatron sampler "
                "already splits every global batch over the data-parallel ranks"
            )

    @property
    def lightning_precision(self) -> str:
        return PRECISIONS[self.precision]

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def val_check_steps(self) -> int:
        """Optimizer steps between validations (Lightning rounds a fraction down, to >= 1)."""
        if isinstance(self.val_check_interval, float):
            return max(1, int(self.val_check_interval * self.max_steps))
        return self.val_check_interval
