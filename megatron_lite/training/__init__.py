"""Training: the LightningModule, optimizer and schedules, data loading, checkpoints, the run,
and the model families (GPT, T5) that plug into them."""

from megatron_lite.training.checkpointing import load_model, restore_weights
from megatron_lite.training.data import MegatronDataModule, MegatronPretrainingSampler
from megatron_lite.training.families import FAMILIES, family_named, family_of, family_of_model
from megatron_lite.training.family import ModelFamily, masked_lm_loss
from megatron_lite.training.module import MegatronLightningModule
from megatron_lite.training.optim import build_optimizer, build_scheduler, lr_at_step
from megatron_lite.training.run import build_tokenizer_from_config, padded_vocab_size, train

__all__ = [
    "FAMILIES",
    "MegatronDataModule",
    "MegatronLightningModule",
    "MegatronPretrainingSampler",
    "ModelFamily",
    "build_optimizer",
    "build_scheduler",
    "build_tokenizer_from_config",
    "family_named",
    "family_of",
    "family_of_model",
    "load_model",
    "lr_at_step",
    "masked_lm_loss",
    "padded_vocab_size",
    "restore_weights",
    "train",
]
