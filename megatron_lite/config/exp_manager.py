"""`exp_manager.*`: where a run writes, what it checkpoints, and whether it resumes (NeMo's keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


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
    explicit_log_dir: Optional[str] = None
    exp_dir: Optional[str] = None
    name: str = "megatron_gpt"
    version: Optional[str] = None
    use_datetime_version: bool = True
    create_tensorboard_logger: bool = True
    create_csv_logger: bool = True
    create_wandb_logger: bool = False
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
        if self.resume_if_exists and self.resume_from_checkpoint is not None:
            raise ValueError(
                "exp_manager.resume_if_exists=True and exp_manager.resume_from_checkpoint are "
                "exclusive: pick the last checkpoint of the run folder, or the one named"
            )
        if self.resume_ignore_no_checkpoint and not self.resume_if_exists:
            raise ValueError(
                "exp_manager.resume_ignore_no_checkpoint=True needs exp_manager.resume_if_exists=True"
            )
        if not self.name:
            raise ValueError("exp_manager.name must not be empty")
