"""The LightningModule of every family: the family's model and loss, AdamW and NeMo's schedules,
and what a checkpoint carries."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.utilities import rank_zero_warn

from megatron_lite.config import RunConfig, config_from_dict, config_to_dict
from megatron_lite.training.adapters import drop_frozen_weights, restore_frozen_weights
from megatron_lite.training.distributed_checkpoint import rescale_micro_batch_progress
from megatron_lite.training.errors import NonFiniteError
from megatron_lite.training.families import family_of
from megatron_lite.training.grad_norm import clip_gradients, gradient_norm
from megatron_lite.training.non_finite import agreed_non_finite, describe, drop_gradients
from megatron_lite.training.optim import build_optimizer, build_scheduler
from megatron_lite.training.weight_layout import GROUPED, LAYOUT_KEY, upgrade_layout

# Keys this module adds to Lightning's checkpoint dict.
CONFIG_KEY = "megatron_lite_config"
FAMILY_KEY = "model_family"
VOCAB_KEY = "padded_vocab_size"
CONSUMED_KEY = "consumed_samples"
SKIPPED_KEY = "skipped_steps"


class MegatronLightningModule(pl.LightningModule):
    def __init__(self, cfg: RunConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.family = family_of(cfg)
        self.model = self.family.model_type(cfg.model, vocab_size)
        # Data position at the start of this run (Megatron's consumed samples), from a checkpoint.
        self.init_consumed_samples = 0
        self.init_global_step = 0
        # Optimizer steps not applied: non-finite under non_finite_action=skip, or fp16 overflow.
        self.skipped_steps = 0
        self._micro_losses: list[torch.Tensor] = []
        self._grad_norm: torch.Tensor | None = None  # this step's, for clipping
        self.parallelized = False  # configure_model applied a layout (parallel/parallelize.py)

    def configure_model(self) -> None:
        """Under megatron_lite's strategy (FSDP2, tensor or context parallel), apply the layout
        to the model built in __init__ (Lightning calls this once the processes and the device
        mesh exist, before the optimizers and any checkpoint are loaded). Plain DDP and one
        process leave the model as it is."""
        if self._device_mesh is None or self.parallelized:
            return
        from megatron_lite.parallel.parallelize import parallelize  # noqa: PLC0415

        parallelize(self.model, self._device_mesh, self.cfg)
        self.parallelized = True

    @property
    def consumed_samples(self) -> int:
        steps = self.trainer.global_step - self.init_global_step
        return self.init_consumed_samples + steps * self.cfg.model.global_batch_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one micro-batch."""
        return self.family.loss(self.model, batch, self.cfg)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self._micro_losses.append(loss.detach())
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Once per optimizer step, after all micro-batches (and AMP unscaling), before clipping.
        self._grad_norm = grad_norm = gradient_norm(self.model.parameters())
        train_loss = torch.stack(self._micro_losses).mean()
        self._micro_losses.clear()
        self._handle_non_finite(train_loss, grad_norm)
        self.log("train_loss", train_loss, prog_bar=True, sync_dist=True)
        self.log("grad_norm", grad_norm)
        self.log("lr", optimizer.param_groups[0]["lr"], prog_bar=True)
        self.log(SKIPPED_KEY, float(self.skipped_steps))
        scaler = self._loss_scaler()
        if scaler is not None:
            self.log("loss_scale", scaler.get_scale())
        # The samples consumed once this step is done (used in checkpoint file names).
        consumed = self.consumed_samples + self.cfg.model.global_batch_size
        self.log("consumed_samples", float(consumed))

    def _loss_scaler(self) -> torch.amp.GradScaler | None:
        plugin = self.trainer.precision_plugin
        return plugin.scaler if isinstance(plugin, MixedPrecision) else None  # fp16 only

    def _handle_non_finite(self, train_loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """model.non_finite_action for a step whose loss or gradient norm is not finite on any
        rank. Under fp16 overflowing gradients are expected: the loss scaler skips the step and
        lowers its scale, and the action is only for a non-finite loss."""
        loss_bad, grads_bad = agreed_non_finite(train_loss, grad_norm, self.trainer.strategy)
        if not (loss_bad or grads_bad):
            return
        fp16_overflow = grads_bad and not loss_bad and self._loss_scaler() is not None
        message = describe(self.trainer.global_step, train_loss, grad_norm, self.model, loss_bad, grads_bad)
        if not fp16_overflow and self.cfg.model.non_finite_action == "stop":
            raise NonFiniteError(f"{message} (model.non_finite_action=stop; =skip skips such steps)")
        # Skipped on every rank alike, whatever each rank's own scaler saw.
        drop_gradients(self.model)
        self.skipped_steps += 1
        if not fp16_overflow:
            rank_zero_warn(f"{message}; the optimizer step is skipped ({self.skipped_steps} skipped so far)")

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Lightning refuses to clip for an optimizer that unscales internally (fused AdamW) even
        # under bf16, which has no loss scaler. build_optimizer never fuses under fp16's scaler,
        # so the gradients here are always unscaled and can be clipped directly, by the norm
        # on_before_optimizer_step has just computed (and logged).
        if gradient_clip_val and self._grad_norm is not None:
            clip_gradients(self.model.parameters(), gradient_clip_val, self._grad_norm)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self(batch)
        # The sampler yields whole micro-batches only.
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=self.cfg.model.micro_batch_size)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.cfg, self.device)
        scheduler = build_scheduler(optimizer, self.cfg)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = config_to_dict(self.cfg)
        checkpoint[FAMILY_KEY] = self.family.name
        checkpoint[VOCAB_KEY] = self.model.vocab_size
        checkpoint[CONSUMED_KEY] = self.consumed_samples
        checkpoint[SKIPPED_KEY] = self.skipped_steps
        drop_frozen_weights(self, checkpoint)  # a LoRA run saves its adapters only
        checkpoint[LAYOUT_KEY] = GROUPED

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Written under another layout: Lightning's loops count micro-batches per rank.
        saved_cfg = config_from_dict(checkpoint[CONFIG_KEY], type(self.cfg))
        rescale_micro_batch_progress(checkpoint, saved_cfg.accumulate_grad_batches,
                                     self.cfg.accumulate_grad_batches)
        self.init_consumed_samples = checkpoint[CONSUMED_KEY]
        self.init_global_step = checkpoint["global_step"]
        # Checkpoints written before skipped steps were counted have none.
        self.skipped_steps = checkpoint.get(SKIPPED_KEY, 0)
        upgrade_layout(checkpoint, self.model, self.cfg)  # weights and moments of older checkpoints
        restore_frozen_weights(self, checkpoint)
