"""The run folder (NeMo's exp_manager): where a run writes, and which checkpoint it resumes.

One run, one folder: checkpoints/, config.yaml (the resolved config), metrics.csv and the
TensorBoard event files. A new run never writes into a folder that holds checkpoints; only a
resume (exp_manager.resume_if_exists or resume_from_checkpoint inside that folder) continues one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from megatron_lite.config import RunConfig, config_to_yaml
from megatron_lite.training.checkpointing import complete_checkpoints, last_checkpoint, read_checkpoint
from megatron_lite.training.loggers import CSVMetricsLogger

DEFAULT_EXP_DIR = "nemo_experiments"
# Set by rank 0 so that processes launched after it (DDP) agree on the time-stamped folder.
VERSION_ENV = "MEGATRON_LITE_RUN_VERSION"


@dataclass
class RunPaths:
    log_dir: Path
    checkpoint_dir: Path
    resume_from: Path | None  # the checkpoint to resume training from, if any
    resume_step: int | None  # its global step


def run_log_dir(cfg: RunConfig) -> Path:
    exp = cfg.exp_manager
    if exp.explicit_log_dir is not None:
        return Path(exp.explicit_log_dir)
    log_dir = Path(exp.exp_dir or DEFAULT_EXP_DIR) / exp.name
    version = exp.version
    if version is None and exp.use_datetime_version and not exp.resume_if_exists:
        version = os.environ.setdefault(VERSION_ENV, time.strftime("%Y-%m-%d_%H-%M-%S"))
    return log_dir / version if version else log_dir


def prepare_run(cfg: RunConfig) -> RunPaths:
    """Resolve the run folder and the checkpoint to resume from; refuse to clobber a run."""
    exp = cfg.exp_manager
    log_dir = run_log_dir(cfg)
    checkpoint_dir = log_dir / "checkpoints"
    existing = complete_checkpoints(checkpoint_dir)
    resume_from = None
    if exp.resume_if_exists:
        resume_from = last_checkpoint(checkpoint_dir)
        if resume_from is None and not exp.resume_ignore_no_checkpoint:
            raise ValueError(
                f"exp_manager.resume_if_exists=True, but {checkpoint_dir} holds no checkpoint; set "
                "exp_manager.resume_ignore_no_checkpoint=True to start a new run there"
            )
    elif exp.resume_from_checkpoint is not None:
        resume_from = Path(exp.resume_from_checkpoint)
        if existing and resume_from.resolve().parent != checkpoint_dir.resolve():
            raise ValueError(
                f"{checkpoint_dir} holds checkpoints of another run; resuming "
                f"{resume_from} there would overwrite them. Choose a new "
                "exp_manager.explicit_log_dir"
            )
    elif existing:
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints of an earlier run ({existing[0].name}, ...); "
            "set exp_manager.resume_if_exists=True to continue it, or choose another "
            "exp_manager.explicit_log_dir (or exp_manager.name)"
        )
    resume_step = None
    if resume_from is not None:
        resume_step = int(read_checkpoint(resume_from, mmap=True)["global_step"])
    return RunPaths(log_dir, checkpoint_dir, resume_from, resume_step)


def save_config(cfg: RunConfig, run: RunPaths) -> Path:
    run.log_dir.mkdir(parents=True, exist_ok=True)
    path = run.log_dir / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    return path


def build_loggers(cfg: RunConfig, run: RunPaths) -> list[Logger]:
    exp = cfg.exp_manager
    loggers: list[Logger] = []
    if exp.create_tensorboard_logger:
        # purge_step hides the events the interrupted run wrote after its last checkpoint
        # (steps >= resume_step; see CSVMetricsLogger for the step numbering).
        loggers.append(TensorBoardLogger(
            save_dir=str(run.log_dir), name="", version="", default_hp_metric=False,
            purge_step=run.resume_step,
        ))
    if exp.create_csv_logger:
        loggers.append(CSVMetricsLogger(run.log_dir / "metrics.csv", run.resume_step))
    return loggers


class SaveLastOnTrainEnd(pl.Callback):
    """Writes last.ckpt when training ends after steps no validation checkpointed (max_steps not
    a multiple of val_check_interval), as Megatron saves at the end of every run."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.path = checkpoint_dir / "last.ckpt"
        self._saved_step = -1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            trainer.save_checkpoint(str(self.path))


def build_checkpoint_callbacks(cfg: RunConfig, run: RunPaths) -> list[pl.Callback]:
    params = cfg.exp_manager.checkpoint_callback_params
    callbacks: list[pl.Callback] = [ModelCheckpoint(
        dirpath=str(run.checkpoint_dir),
        filename=params.filename,
        monitor=params.monitor,
        mode=params.mode,
        save_top_k=params.save_top_k,
        save_last=params.save_last,
    )]
    if params.save_last:
        callbacks.append(SaveLastOnTrainEnd(run.checkpoint_dir))
    return callbacks
