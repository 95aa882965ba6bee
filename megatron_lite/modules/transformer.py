"""Transformer layers (pre-LN or post-LN) and the stack, with Megatron's activation checkpointing."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from megatron_lite.config import GPTModelConfig
from megatron_lite.modules.attention import SelfAttention
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.norms import build_norm

Rotary = tuple[torch.Tensor, torch.Tensor] | None


class TransformerLayer(nn.Module):
    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.transformer_block_type == "pre_ln"
        self.attention_norm = build_norm(cfg)
        self.attention = SelfAttention(cfg)
        self.mlp_norm = build_norm(cfg)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, rotary: Rotary, segment_ids: torch.Tensor | None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.attention_norm(x), rotary, segment_ids))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, rotary, segment_ids)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


class TransformerBlock(nn.Module):
    """num_layers layers, then the final norm (pre-LN only: post-LN layers end normalized).

    Activation checkpointing (granularity 'full') keeps only the inputs of checkpointed spans and
    recomputes the rest in the backward: 'uniform' checkpoints every span of
    activations_checkpoint_num_layers layers, 'block' the first that many layers one by one.
    The recomputation replays the same dropout masks (torch saves and restores the RNG state).
    """

    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = build_norm(cfg) if cfg.transformer_block_type == "pre_ln" else None
        self.checkpoint_method = (
            cfg.activations_checkpoint_method if cfg.activations_checkpoint_granularity else None
        )
        self.checkpoint_layers = cfg.activations_checkpoint_num_layers

    def _run_layers(self, start: int, end: int, x: torch.Tensor, rotary: Rotary,
                    segment_ids: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers[start:end]:
            x = layer(x, rotary, segment_ids)
        return x

    def _spans(self) -> list[tuple[int, int, bool]]:
        """(start, end, checkpointed) covering all layers in order."""
        num_layers = len(self.layers)
        if self.checkpoint_method is None or not (self.training and torch.is_grad_enabled()):
            return [(0, num_layers, False)]
        span = self.checkpoint_layers
        if self.checkpoint_method == "uniform":
            return [(start, min(start + span, num_layers), True) for start in range(0, num_layers, span)]
        rest = [(span, num_layers, False)] if span < num_layers else []
        return [(i, i + 1, True) for i in range(span)] + rest

    def forward(self, x: torch.Tensor, rotary: Rotary, segment_ids: torch.Tensor | None) -> torch.Tensor:
        for start, end, checkpointed in self._spans():
            if checkpointed:
                x = checkpoint(self._run_layers, start, end, x, rotary, segment_ids, use_reentrant=False)
            else:
                x = self._run_layers(start, end, x, rotary, segment_ids)
        return x if self.final_norm is None else self.final_norm(x)
