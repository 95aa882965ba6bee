"""Rotary position embedding (RoPE) in the rotate-half layout of GPT-NeoX, Megatron and HF Llama.

The first `rotary_dim` channels of each head are rotated in pairs (i, i + rotary_dim / 2); the
rest pass through (`rotary_percentage` < 1). Positions come from `position_ids`, so they restart
at document boundaries when `data.reset_position_ids` is set.
"""

from __future__ import annotations

import torch
from torch import nn

from megatron_lite.config import GPTModelConfig


class RotaryEmbedding(nn.Module):
    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        dim = cfg.rotary_dim
        inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        # Not persistent: it is a function of the config, so rotary_base may change on fine-tuning.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interpolation_factor = cfg.seq_len_interpolation_factor

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin float32 [B, S, 1, rotary_dim] for position_ids [B, S]."""
        positions = position_ids.to(torch.float32)
        if self.interpolation_factor is not None:
            # Linear position interpolation: a longer context squeezed into the trained range.
            positions = positions / self.interpolation_factor
        # Computed in fp32 even under autocast: positions times frequencies lose digits in bf16.
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            freqs = positions[..., None] * self.inv_freq  # (B, S, rotary_dim / 2)
            angles = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]  # (B, S, 1, rotary_dim)
            return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, D] rotated on its first cos.shape[-1] channels; same dtype as x."""
    rotary_dim = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin
    if x_pass.shape[-1] == 0:
        return rotated
    return torch.cat((rotated, x_pass), dim=-1)
