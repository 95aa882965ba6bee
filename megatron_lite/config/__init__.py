"""Typed config schema (dataclasses) of the YAML files in conf/, registered in Hydra's ConfigStore.

A family's YAML names its schema first in its defaults list (`SCHEMAS`), so Hydra merges the file
and every command-line override into these dataclasses: a misspelled key or a wrong type fails
while composing, naming the key. A NeMo YAML names no schema; `run_config` merges whatever was
composed into the family's schema, with the same checks, and builds the dataclasses, whose
`__post_init__` runs the value and cross-field checks. Every key of NeMo 1.23's GPT and T5 YAML
files is in the schema (config/nemo.py holds those without a feature of their own). Everything
below scripts/ receives these objects, never a DictConfig.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from megatron_lite.config.compose import run_config, schema_of
from megatron_lite.config.data import DataConfig, GPTDataConfig, T5DataConfig, TokenizerConfig
from megatron_lite.config.exp_manager import CheckpointCallbackParams, ExpManagerConfig
from megatron_lite.config.finetuning import GPTSFTConfig, GPTSFTModelConfig, T5SFTConfig, T5SFTModelConfig
from megatron_lite.config.gpt import GPTConfig
from megatron_lite.config.model import GPTModelConfig, ModelCommonConfig
from megatron_lite.config.optim import OptimConfig, SchedConfig
from megatron_lite.config.peft import LoraTuningConfig, PeftConfig
from megatron_lite.config.resolvers import register_nemo_resolvers
from megatron_lite.config.run import InferenceConfig, RunConfig
from megatron_lite.config.sft import GPTSFTDataConfig, SFTDatasetConfig, T5SFTDataConfig, T5SFTDatasetConfig
from megatron_lite.config.t5 import T5Config, T5ModelConfig, T5StackConfig
from megatron_lite.config.trainer import TrainerConfig
from megatron_lite.config.transformer import TransformerConfig

# Root schemas, by the name a YAML's defaults list gives them.
SCHEMAS: dict[str, type[RunConfig]] = {
    "megatron_gpt_schema": GPTConfig,
    "megatron_t5_schema": T5Config,
    "megatron_gpt_sft_schema": GPTSFTConfig,
    "megatron_t5_sft_schema": T5SFTConfig,
}
# megatron_model_base_config.yaml (one T5 stack) names this one, so that it is typed on its own too.
STACK_SCHEMA_NAME = "megatron_model_base_schema"


def register_configs() -> None:
    """Make the schemas available to the defaults lists of Hydra YAML files, and NeMo's
    resolvers to their interpolations."""
    register_nemo_resolvers()
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)
    store.store(name=STACK_SCHEMA_NAME, node=T5StackConfig)


def reject_unknown_keys(cfg: Any, prefix: str = "") -> None:
    """Fail on keys the schema does not have.

    Hydra refuses an unknown key in a YAML file or in `key=value`, but `+key=value` (NeMo users
    write it for keys missing from NeMo's YAML) adds it anyway, and `OmegaConf.to_object` of the
    composed config then sets it as a plain attribute of the dataclass: it would be silently
    ignored. (`run_config` merges into a fresh schema instead, which refuses it; this is for code
    that builds the dataclasses from Hydra's config directly.)
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


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain containers (str, int, float, bool, None, list, dict): safe in a weights_only checkpoint."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(values: dict[str, Any], schema: type[RunConfig] = GPTConfig) -> RunConfig:
    """The inverse of `config_to_dict` for a config of `schema` (a root type of `SCHEMAS`),
    validated like a YAML file."""
    return run_config(values, schema)


def config_to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


__all__ = [
    "SCHEMAS",
    "STACK_SCHEMA_NAME",
    "CheckpointCallbackParams",
    "DataConfig",
    "ExpManagerConfig",
    "GPTConfig",
    "GPTDataConfig",
    "GPTModelConfig",
    "GPTSFTConfig",
    "GPTSFTDataConfig",
    "GPTSFTModelConfig",
    "InferenceConfig",
    "LoraTuningConfig",
    "ModelCommonConfig",
    "OptimConfig",
    "PeftConfig",
    "RunConfig",
    "SFTDatasetConfig",
    "SchedConfig",
    "T5Config",
    "T5DataConfig",
    "T5ModelConfig",
    "T5SFTConfig",
    "T5SFTDataConfig",
    "T5SFTDatasetConfig",
    "T5SFTModelConfig",
    "T5StackConfig",
    "TokenizerConfig",
    "TrainerConfig",
    "TransformerConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "register_configs",
    "register_nemo_resolvers",
    "reject_unknown_keys",
    "run_config",
    "schema_of",
]
