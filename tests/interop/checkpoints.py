"""Checkpoints of ours written directly from a model, as training would write them (the keys
read_checkpoint, load_model and the exporter read), for the interop tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from megatron_lite.config import TokenizerConfig, config_to_dict
from megatron_lite.training.checkpointing import MODEL_PREFIX
from megatron_lite.training.families import family_of_model
from megatron_lite.training.module import CONFIG_KEY, FAMILY_KEY, VOCAB_KEY
from megatron_lite.training.weight_layout import GROUPED, LAYOUT_KEY


def save_checkpoint(path: Path, model: nn.Module, tokenizer: TokenizerConfig | None = None) -> Path:
    family = family_of_model(model)
    data = dataclasses.replace(model.cfg.data, data_prefix="unused")
    updates = {"data": data} if tokenizer is None else {"data": data, "tokenizer": tokenizer}
    cfg = family.config_type(model=dataclasses.replace(model.cfg, **updates))
    torch.save({
        CONFIG_KEY: config_to_dict(cfg),
        FAMILY_KEY: family.name,
        VOCAB_KEY: model.vocab_size,
        "state_dict": {MODEL_PREFIX + key: value for key, value in model.state_dict().items()},
        "global_step": 0,
        LAYOUT_KEY: GROUPED,
    }, path)
    return path
