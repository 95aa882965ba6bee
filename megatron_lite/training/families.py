"""The model families training knows, looked up by config, model or checkpoint name."""

from __future__ import annotations

from torch import nn

from megatron_lite.config import RunConfig
from megatron_lite.training.family import ModelFamily
from megatron_lite.training.gpt import GPT
from megatron_lite.training.sft import GPT_SFT, T5_SFT
from megatron_lite.training.t5 import T5

# Pretraining first: family_of_model names a model by its pretraining family.
FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (GPT, T5, GPT_SFT, T5_SFT)}


def family_of(cfg: RunConfig) -> ModelFamily:
    # The exact type: a fine-tuning config is also its pretraining family's config.
    for family in FAMILIES.values():
        if type(cfg) is family.config_type:
            return family
    raise ValueError(f"no model family has the config type {type(cfg).__name__}")


def family_of_model(model: nn.Module) -> ModelFamily:
    """The pretraining family of a model (its architecture and model_name)."""
    for family in FAMILIES.values():
        if isinstance(model, family.model_type):
            return family
    raise ValueError(f"no model family has the model type {type(model).__name__}")


def family_named(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
