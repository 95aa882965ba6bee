"""What differs between model families in training, as one record per family.

The training loop, checkpoints, logging and the run itself are shared; a family contributes its
config schema, its model class and the handful of functions below. No class hierarchy: GPT and
T5 pretraining are two `ModelFamily` values (training/gpt.py, training/t5.py), their fine-tuning
two more (training/sft.py: the same models and losses, SFT datasets), looked up in
training/families.py by the type of the config or of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from megatron_lite.config import InferenceConfig, RunConfig, TransformerConfig
from megatron_lite.data import split_token_counts
from megatron_lite.tokenizers import Tokenizer


@dataclass(frozen=True)
class ModelFamily:
    name: str  # stored in checkpoints: it picks the schema their config is read with
    # What the weights are: pretraining and fine-tuning families of one model share it.
    model_name: str
    config_type: type[RunConfig]
    model_type: type[nn.Module]  # built as model_type(cfg.model, padded_vocab_size)
    # (train, valid) datasets for the whole run.
    build_datasets: Callable[[Any, Tokenizer], tuple[Dataset, Dataset]]
    # The loss of one micro-batch: (model, batch, cfg) -> scalar.
    loss: Callable[[nn.Module, dict[str, torch.Tensor], Any], torch.Tensor]
    # Positions a sample feeds through the model (encoder and decoder ones for T5).
    tokens_per_sample: Callable[[Any], int]
    # Model FLOPs of a training step's forward and backward per sample: (model, cfg) -> FLOPs.
    flops_per_sample: Callable[[nn.Module, Any], float]
    # What fixes the parameters and their meaning: (cfg.model, padded vocab size) -> {key: value}.
    architecture: Callable[[Any, int], dict[str, Any]]
    # The sample printed after training and by scripts/generate.py: (model, tokenizer, options,
    # seed) -> text.
    generate: Callable[[nn.Module, Tokenizer, InferenceConfig, int], str]


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions where loss_mask is 1 (float32 whatever the logits)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")  # (B*S,)
    mask = loss_mask.flatten().float()
    # A micro-batch with every position masked contributes 0, not NaN.
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def linear_weights(module: nn.Module) -> int:
    """Weights of the nn.Linear layers in module: each is one matmul per token."""
    return sum(child.weight.numel() for child in module.modules() if isinstance(child, nn.Linear))


def validation_samples(cfg: RunConfig, window_step: int) -> int:
    """Samples every validation reads: trainer.limit_val_batches global batches, or (a float)
    that fraction of one pass over the validation split, in whole global batches.
    `window_step` is the tokens between the starts of consecutive samples."""
    limit, batch = cfg.trainer.limit_val_batches, cfg.model.global_batch_size
    if isinstance(limit, int):
        return limit * batch
    data = cfg.model.data
    one_pass = max(split_token_counts(data.data_prefix, data.splits_string)[1] - 1, 0) // window_step
    batches = int(limit * one_pass) // batch
    if batches < 1:
        raise ValueError(
            f"trainer.limit_val_batches={limit} of the {one_pass} validation samples is less than "
            f"one global batch (model.global_batch_size={batch}); validate on more data"
        )
    return batches * batch


def require_splits(train: Dataset | None, valid: Dataset | None, splits_string: str) -> tuple[Dataset, Dataset]:
    for name, dataset in (("train", train), ("validation", valid)):
        if dataset is None:
            raise ValueError(f"model.data.splits_string={splits_string!r} leaves no {name} split")
    return train, valid


def stack_architecture(cfg: TransformerConfig) -> dict[str, Any]:
    """The keys of one transformer stack that fix its parameters and their meaning."""
    return {
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_query_groups": cfg.query_groups,
        "kv_channels": cfg.head_dim,
        "normalization": cfg.normalization,
        "activation": cfg.activation,
        "openai_gelu": cfg.openai_gelu,
        "bias": cfg.bias,
        "transformer_block_type": cfg.transformer_block_type,
        "position_embedding_type": cfg.position_embedding_type,
        "normalize_attention_scores": cfg.normalize_attention_scores,
    }
