"""From a composed YAML to the typed config: `run_config(values)`.

scripts/train.py (and the tests) hand over what Hydra composed, as plain containers with the
interpolations unresolved. Our YAML files name their schema in their defaults list, so Hydra
has already checked names and types while composing; a NeMo YAML names none. Either way the
values are merged into the family's schema here, which checks every key and type (with errors
naming the key), resolves the interpolations (NeMo's resolvers included) and builds the
dataclasses, whose __post_init__ checks values and combinations.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)

from megatron_lite.config.finetuning import GPTSFTConfig, T5SFTConfig
from megatron_lite.config.gpt import GPTConfig
from megatron_lite.config.resolvers import register_nemo_resolvers
from megatron_lite.config.run import RunConfig
from megatron_lite.config.t5 import T5Config


def schema_of(values: dict[str, Any]) -> type[RunConfig]:
    """T5 when the model section has the encoder / decoder stacks, else GPT; their fine-tuning
    schemas when the data section has NeMo's SFT splits (train_ds)."""
    model = values.get("model")
    if not isinstance(model, dict):
        return GPTConfig
    t5 = "encoder" in model or "decoder" in model
    data = model.get("data")
    if isinstance(data, dict) and "train_ds" in data:
        return T5SFTConfig if t5 else GPTSFTConfig
    return T5Config if t5 else GPTConfig


def run_config(values: dict[str, Any], schema: type[RunConfig] | None = None) -> RunConfig:
    """The config of `values` (a composed YAML), in `schema` or the one its keys point to.

    A misspelled or unknown key, a wrong type or an interpolation that cannot be resolved is a
    ValueError naming the key; a missing mandatory value ('???') stays MissingMandatoryValue.
    """
    register_nemo_resolvers()
    schema = schema or schema_of(values)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except MissingMandatoryValue:
        raise
    except ConfigKeyError as error:
        raise ValueError(
            f"{error.full_key} is not a key of megatron_lite's config: a misspelling, or a NeMo "
            "key that megatron_lite does not implement"
        ) from None
    except (ValidationError, InterpolationResolutionError) as error:
        raise ValueError(f"{error.full_key}: {error.msg}") from None
