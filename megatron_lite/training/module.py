"""The LightningModule of every family: the family's model and loss, AdamW and NeMo's schedules,
and what a checkpoint carries."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from megatron_lite.config import RunConfig, config_to_dict
from megatron_lite.training.families import family_of
from megatron_lite.training.optim import build_optimizer, build_scheduler

# Keys this module adds to Lightning's checkpoint dict.
CONFIG_KEY = "megatron_lite_config"
FAMILY_KEY = "model_family"
VOCAB_KEY = "padded_vocab_size"
CONSUMED_KEY = "consumed_samples"


class MegatronLightningModule(pl.LightningModule):
    def __init__(self, cfg: RunConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.family = family_of(cfg)
        self.model = self.family.model_type(cfg.model, vocab_size)
        # Data position at the start of this run (Megatron's consumed samples), from a checkpoint.
        self.init_consumed_samples = 0
        self.init_global_step = 0
        self._micro_losses: list[torch.Tensor] = []

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
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        train_loss = torch.stack(self._micro_losses).mean()
        self._micro_losses.clear()
        self.log("train_loss", train_loss, prog_bar=True, sync_dist=True)
        self.log("grad_norm", grad_norm)
        self.log("lr", optimizer.param_groups[0]["lr"], prog_bar=True)
        # The samples consumed once this step is done (used in checkpoint file names).
        consumed = self.consumed_samples + self.cfg.model.global_batch_size
        self.log("consumed_samples", float(consumed))

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Lightning refuses to clip for an optimizer that unscales internally (fused AdamW) even
        # under bf16, which has no loss scaler. build_optimizer never fuses under fp16's scaler,
        # so the gradients here are always unscaled and can be clipped directly.
        if gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), gradient_clip_val)

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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_consumed_samples = checkpoint[CONSUMED_KEY]
        self.init_global_step = checkpoint["global_step"]
