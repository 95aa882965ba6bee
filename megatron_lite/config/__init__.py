"""Typed config schema (dataclasses) of the YAML files in conf/, registered in Hydra's ConfigStore.

The YAML's defaults list names `SCHEMA_NAME`, so Hydra merges the file and every command-line
override into these dataclasses: a misspelled key or a wrong type fails while composing, naming
the key. `OmegaConf.to_object` then builds the dataclasses, whose `__post_init__` runs the value
and cross-field checks. Everything below scripts/ receives these objects, never a DictConfig.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from megatron_lite.config.data import DataConfig, TokenizerConfig
from megatron_lite.config.exp_manager import CheckpointCallbackParams, ExpManagerConfig
from megatron_lite.config.gpt import GPTConfig, InferenceConfig
from megatron_lite.config.model import GPTModelConfig
from megatron_lite.config.optim import OptimConfig, SchedConfig
from megatron_lite.config.trainer import TrainerConfig

SCHEMA_NAME = "megatron_gpt_schema"


def register_configs() -> None:
    """Make `SCHEMA_NAME` available to the defaults lists of Hydra YAML files."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=GPTConfig)


def reject_unknown_keys(cfg: Any, prefix: str = "") -> None:
    """Fail on keys the schema does not have.

    Hydra refuses an unknown key in a YAML file or in `key=value`, but `+key=value` (NeMo users
    write it for keys missing from NeMo's YAML) adds it anyway, and `OmegaConf.to_object` then
    sets it as a plain attribute of the dataclass: it would be silently ignored.
    """
    names = {field.name for field in dataclasses.fields(cfg)}
    for name, value in vars(cfg).items():
        if name not in names:
            raise ValueError(
                f"{prefix}{name} is not a key of megatron_lite's config: a misspelling, or a NeMo "
                "key that megatron_lite does not implement"
            )
        if dataclasses.is_dataclass(value):
            reject_unknown_keys(value, f"{prefix}{name}.")


def config_to_dict(cfg: GPTConfig) -> dict[str, Any]:
    """Plain containers (str, int, float, bool, None, list, dict): safe in a weights_only checkpoint."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(values: dict[str, Any]) -> GPTConfig:
    """The inverse of `config_to_dict`, validated like a YAML file."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GPTConfig), values))
    reject_unknown_keys(cfg)
    return cfg


def config_to_yaml(cfg: GPTConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


__all__ = [
    "SCHEMA_NAME",
    "CheckpointCallbackParams",
    "DataConfig",
    "ExpManagerConfig",
    "GPTConfig",
    "GPTModelConfig",
    "InferenceConfig",
    "OptimConfig",
    "SchedConfig",
    "TokenizerConfig",
    "TrainerConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "register_configs",
    "reject_unknown_keys",
]
