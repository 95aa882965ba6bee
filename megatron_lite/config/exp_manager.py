"""`exp_manager.*`: where a run writes, what it checkpoints, and whether it resumes (NeMo's keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from megatron_lite.config.nemo import INERT, fixed, ignored


@dataclass
class CheckpointCallbackParams:
    monitor: str = "val_loss"
    save_top_k: int = 3
    mode: str = "min"
    save_last: bool = True
    filename: str = "megatron_gpt--{val_loss:.2f}-{step}-{consumed_samples}"
    # A .nemo archive is NeMo's packaging; our checkpoints carry their config instead.
    always_save_nemo: bool = False
    save_nemo_on_train_end: bool = False
    # tensor x pipeline parallel size, for NeMo's per-rank checkpoint names (both are 1 here).
    model_parallel_size: Optional[int] = ignored(INERT)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(
                f"exp_manager.checkpoint_callback_params.mode={self.mode!r} must be 'min' or 'max'"
            )
        if self.save_top_k < -1:
            raise ValueError(
                "exp_manager.checkpoint_callback_params.save_top_k must be >= -1 (-1 keeps all), "
                f"got {self.save_top_k}"
            )
        for key in ("always_save_nemo", "save_nemo_on_train_end"):
            if getattr(self, key):
                raise ValueError(
                    f"exp_manager.checkpoint_callback_params.{key}=True is not implemented: "
                    ".nemo archives are not written; checkpoints hold their config"
                )


@dataclass
class ExpManagerConfig:
    # explicit_log_dir wins; otherwise exp_dir/name[/version].
    # Resuming (NeMo's rules): with resume_if_exists, the newest checkpoint of the run folder;
    # if it holds none, resume_from_checkpoint when set, else a new run when
    # resume_ignore_no_checkpoint (an error otherwise).
    explicit_log_dir: Optional[str] = None
    exp_dir: Optional[str] = None
    name: str = "megatron_gpt"
    version: Optional[str] = None
    use_datetime_version: bool = True
    create_tensorboard_logger: bool = True
    create_csv_logger: bool = True
    create_wandb_logger: bool = False
    wandb_logger_kwargs: Optional[Dict[str, Any]] = ignored(INERT)
    create_neptune_logger: bool = fixed(
        False, "TensorBoard and CSV logs are written to the run folder")
    neptune_logger_kwargs: Optional[Dict[str, Any]] = ignored(INERT)
    create_checkpoint_callback: bool = True
    resume_if_exists: bool = False
    resume_ignore_no_checkpoint: bool = False
    resume_from_checkpoint: Optional[str] = None
    checkpoint_callback_params: CheckpointCallbackParams = field(
        default_factory=CheckpointCallbackParams
    )

    def __post_init__(self) -> None:
        if self.create_wandb_logger:
            raise ValueError(
                "exp_manager.create_wandb_logger=True is not implemented; TensorBoard and CSV "
                "logs are written to the run folder"
            )
        if not self.name:
            raise ValueError("exp_manager.name must not be empty")
