"""The normalization layer named by `model.normalization`."""

from __future__ import annotations

from torch import nn

from megatron_lite.config import TransformerConfig


def build_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.normalization == "rmsnorm":
        return nn.RMSNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
