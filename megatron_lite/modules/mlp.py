"""The feed-forward block: plain (gelu, relu, squared-relu) or gated (geglu, reglu, swiglu);
GELU exact (erf) or, with openai_gelu, its tanh approximation."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config import TransformerConfig
from megatron_lite.modules.fused_layout import gated_fc1_layout


def _squared_relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# The gated variants apply the same nonlinearity to their gate half.
_ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "squared-relu": _squared_relu,
    "geglu": F.gelu,
    "reglu": F.relu,
    "swiglu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.gated = cfg.gated_mlp
        # Gated: one fused projection whose output rows interleave gate and up, [gate_i | up_i]
        # for each of the F features (modules/fused_layout.py), so that a contiguous row shard
        # (tensor parallel) holds the gate and up rows of the same features.
        fc1_width = cfg.ffn_hidden_size * (2 if self.gated else 1)
        self.linear_fc1 = nn.Linear(cfg.hidden_size, fc1_width, bias=cfg.bias)
        self.linear_fc2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=cfg.bias)
        self.fused_rows = {"linear_fc1": gated_fc1_layout(cfg.ffn_hidden_size)} if self.gated else {}
        self.activation = (functools.partial(F.gelu, approximate="tanh") if cfg.openai_gelu
                           else _ACTIVATIONS[cfg.activation])
        self.dropout = nn.Dropout(cfg.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_fc1(x)  # (B, S, F) or (B, S, 2F)
        if self.gated:
            gate, up = h.unflatten(-1, (-1, 2)).unbind(-1)  # (B, S, F) each, strided views
            h = self.activation(gate) * up
        else:
            h = self.activation(h)
        return self.linear_fc2(self.dropout(h))  # (B, S, C)
