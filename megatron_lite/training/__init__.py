"""Training: the LightningModule, optimizer and schedules, data loading, checkpoints, the run."""

from megatron_lite.training.checkpointing import load_model, restore_weights
from megatron_lite.training.data import GPTDataModule, MegatronPretrainingSampler
from megatron_lite.training.module import GPTLightningModule, masked_lm_loss
from megatron_lite.training.optim import build_optimizer, build_scheduler, lr_at_step
from megatron_lite.training.run import build_tokenizer_from_config, padded_vocab_size, train

__all__ = [
    "GPTDataModule",
    "GPTLightningModule",
    "MegatronPretrainingSampler",
    "build_optimizer",
    "build_scheduler",
    "build_tokenizer_from_config",
    "load_model",
    "lr_at_step",
    "masked_lm_loss",
    "padded_vocab_size",
    "restore_weights",
    "train",
]
