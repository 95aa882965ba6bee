"""The root of `conf/megatron_gpt_config.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_lite.config.model import GPTModelConfig
from megatron_lite.config.run import RunConfig


@dataclass
class GPTConfig(RunConfig):
    name: str = "megatron_gpt"
    model: GPTModelConfig = field(default_factory=GPTModelConfig)
