"""The run folder (NeMo's exp_manager): where a run writes, and which checkpoint it resumes.

One run, one folder: checkpoints/, config.yaml (the resolved config), metrics.csv and the
TensorBoard event files. A new run never writes into a folder that holds checkpoints; only a
resume (exp_manager.resume_if_exists or resume_from_checkpoint inside that folder) continues one.
A run may be killed at any moment: it resumes from the newest complete checkpoint, and the
files it rewrites (config.yaml, metrics.csv) are replaced whole, never left half-written.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from megatron_lite.config import RunConfig, config_to_yaml
from megatron_lite.training.checkpointing import checkpoint_metadata, complete_checkpoints, newest_checkpoint
from megatron_lite.training.distributed_checkpoint import remove_path
from megatron_lite.training.files import TEMP_SUFFIX, write_atomically
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


def resume_from_checkpoint(cfg: RunConfig) -> Path | None:
    """exp_manager.resume_from_checkpoint, else model.resume_from_checkpoint (NeMo's GPT YAML
    makes the first an interpolation of the second)."""
    exp_value, model_value = cfg.exp_manager.resume_from_checkpoint, cfg.model.resume_from_checkpoint
    if exp_value is not None and model_value is not None and exp_value != model_value:
        raise ValueError(
            f"exp_manager.resume_from_checkpoint={exp_value} and model.resume_from_checkpoint="
            f"{model_value} name different checkpoints; set one of them"
        )
    value = exp_value or model_value
    return None if value is None else Path(value)


def prepare_run(cfg: RunConfig) -> RunPaths:
    """Resolve the run folder and the checkpoint to resume from; refuse to clobber a run.

    NeMo's rules: with resume_if_exists, the newest complete checkpoint of the run folder; when
    there is none (or without resume_if_exists), resume_from_checkpoint if set; else a new run,
    which resume_if_exists allows only with resume_ignore_no_checkpoint.
    """
    exp = cfg.exp_manager
    log_dir = run_log_dir(cfg)
    checkpoint_dir = log_dir / "checkpoints"
    # What a kill in the middle of a checkpoint write left behind (a file, or a sharded
    # checkpoint's folder); never a checkpoint.
    for temporary in checkpoint_dir.glob(f"*{TEMP_SUFFIX}") if checkpoint_dir.is_dir() else ():
        remove_path(temporary)
    existing = complete_checkpoints(checkpoint_dir)
    resume_from = newest_checkpoint(checkpoint_dir) if exp.resume_if_exists else None
    if resume_from is None:
        resume_from = resume_from_checkpoint(cfg)
        if resume_from is not None and existing and resume_from.resolve().parent != checkpoint_dir.resolve():
            raise ValueError(
                f"{checkpoint_dir} holds checkpoints of another run; resuming "
                f"{resume_from} there would overwrite them. Choose a new "
                "exp_manager.explicit_log_dir"
            )
    if resume_from is None and exp.resume_if_exists and not exp.resume_ignore_no_checkpoint:
        raise ValueError(
            f"exp_manager.resume_if_exists=True, but {checkpoint_dir} holds no checkpoint; set "
            "exp_manager.resume_ignore_no_checkpoint=True to start a new run there"
        )
    if resume_from is None and existing:
        raise ValueError(
            f"{checkpoint_dir} already holds checkpoints of an earlier run ({existing[0].name}, ...); "
            "set exp_manager.resume_if_exists=True to continue it, or choose another "
            "exp_manager.explicit_log_dir (or exp_manager.name)"
        )
    resume_step = None
    if resume_from is not None:
        resume_step = int(checkpoint_metadata(resume_from)["global_step"])
    elif exp.resume_if_exists:
        resume_step = 0  # a new run in this folder: logs of an attempt killed before its first checkpoint go
    return RunPaths(log_dir, checkpoint_dir, resume_from, resume_step)


def check_run_folder(run: RunPaths, checkpoint_bytes: int | None) -> None:
    """Before training: the run folder can be written, and its disk has room for a checkpoint of
    `checkpoint_bytes` (None: no checkpoints are written). ValueError naming the folder."""
    folder = run.log_dir
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise ValueError(f"{folder}: cannot be the run folder, {existing} is not a directory")
    free = shutil.disk_usage(existing).free
    if checkpoint_bytes is not None and free < checkpoint_bytes:
        raise ValueError(
            f"{folder}: {_size(free)} free on its disk, but one checkpoint of this model needs "
            f"about {_size(checkpoint_bytes)} (weights and optimizer state)"
        )
    probe = folder / f".write_probe{TEMP_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{folder}: the run folder cannot be written ({error.strerror})") from None


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes / 2**10:.1f} KiB"


def save_config(cfg: RunConfig, run: RunPaths) -> Path:
    run.log_dir.mkdir(parents=True, exist_ok=True)
    path = run.log_dir / "config.yaml"
    write_atomically(path, config_to_yaml(cfg).encode())
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
