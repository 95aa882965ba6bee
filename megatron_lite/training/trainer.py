"""The Lightning Trainer of `trainer.*` and `exp_manager.*`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.strategies import DDPStrategy, Strategy

from megatron_lite.config import RunConfig
from megatron_lite.training.callbacks import RNGStateCallback, ThroughputMonitor
from megatron_lite.training.checkpointing import AtomicCheckpointIO
from megatron_lite.training.exp_manager import RunPaths, build_checkpoint_callbacks, build_loggers
from megatron_lite.training.precision import fp16_plugin

# Lightning warns on every mid-epoch resume that a loader without state_dict() cannot resume.
# Ours can: MegatronDataModule builds it at the checkpoint's consumed_samples, which Lightning
# does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")


def build_strategy(cfg: RunConfig) -> Strategy | str:
    """Data parallel over several processes is DDP (Lightning's choice for "auto" too), with
    model.gradient_as_bucket_view; one process keeps Lightning's own. FSDP2, tensor and context
    parallel run under megatron_lite's ModelParallelStrategy (parallel/strategy.py)."""
    model = cfg.model
    if model.uses_dtensor:
        from megatron_lite.parallel.strategy import MegatronStrategy  # noqa: PLC0415

        return MegatronStrategy(
            tensor_parallel_size=model.tensor_model_parallel_size,
            context_parallel_size=model.context_parallel_size,
            sharded_checkpoint=model.fsdp_sharded_checkpoint,
            block_gradient_sync=not model.fsdp,
        )
    strategy = cfg.trainer.strategy
    if cfg.trainer.world_size == 1 and strategy == "auto":
        return strategy
    return DDPStrategy(
        start_method="spawn" if strategy == "ddp_spawn" else "popen",
        gradient_as_bucket_view=cfg.model.gradient_as_bucket_view,
    )


def build_trainer(
    cfg: RunConfig,
    run: RunPaths,
    *,
    tokens_per_step: int,
    flops_per_step: float,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    trainer_cfg = cfg.trainer
    accumulate = cfg.accumulate_grad_batches
    all_callbacks: list[pl.Callback] = [
        RNGStateCallback(),
        ThroughputMonitor(
            tokens_per_step=tokens_per_step,
            flops_per_step=flops_per_step,
            precision=trainer_cfg.lightning_precision,
        ),
        *callbacks,
    ]
    if trainer_cfg.enable_progress_bar:
        all_callbacks.append(TQDMProgressBar())
    if cfg.exp_manager.create_checkpoint_callback:
        all_callbacks.extend(build_checkpoint_callbacks(cfg, run))
    loggers = build_loggers(cfg, run)
    # fp16 gets our loss scaler (NeMo's keys); every other precision Lightning's plugin.
    fp16 = trainer_cfg.lightning_precision == "16-mixed"
    return pl.Trainer(
        accelerator="gpu" if trainer_cfg.accelerator == "cuda" else trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        num_nodes=trainer_cfg.num_nodes,
        strategy=build_strategy(cfg),
        precision=None if fp16 else trainer_cfg.lightning_precision,
        max_steps=trainer_cfg.max_steps,
        max_epochs=-1,
        # Lightning counts micro-batches here; our keys count optimizer steps, as NeMo's do.
        val_check_interval=trainer_cfg.val_check_steps * accumulate,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=trainer_cfg.num_sanity_val_steps,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        gradient_clip_val=trainer_cfg.gradient_clip_val or None,
        accumulate_grad_batches=accumulate,
        enable_progress_bar=trainer_cfg.enable_progress_bar,
        enable_model_summary=trainer_cfg.enable_model_summary,
        enable_checkpointing=cfg.exp_manager.create_checkpoint_callback,
        benchmark=trainer_cfg.benchmark,
        deterministic=trainer_cfg.deterministic,
        logger=loggers or False,
        callbacks=all_callbacks,
        plugins=[AtomicCheckpointIO(), *([fp16_plugin(cfg)] if fp16 else [])],
        use_distributed_sampler=False,
        default_root_dir=str(run.log_dir),
    )
