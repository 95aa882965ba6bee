"""Rotary position embedding (RoPE) in the rotate-half layout of GPT-NeoX, Megatron and HF Llama,
and xPos (Sun et al., 2023): RoPE with a per-channel decay of q . k with distance.

The first `rotary_dim` channels of each head are rotated in pairs (i, i + rotary_dim / 2); the
rest pass through (`rotary_percentage` < 1). Positions come from `position_ids`, so they restart
at document boundaries when `data.reset_position_ids` is set.

xPos scales q at position m by zeta^((m - c) / scale_base) and k at position n by
zeta^(-(n - c) / scale_base), per channel pair i with zeta_i = (2i / D + 0.4) / 1.4, so q . k
decays as zeta^((m - n) / scale_base): a function of the distance only, whatever the centre c.
c is half the training length (model.encoder_seq_length), fixed so that keys cached during
generation keep their scale, and near the middle of the positions so that both factors stay
near 1 (at 4x the training length and scale_base 512 they span zeta^(+-15 L / 1024)). The paper rotates interleaved pairs; with the rotate-half layout the pairs are
(i, i + D / 2), the same embedding up to a fixed permutation of the channels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from megatron_lite.config import GPTModelConfig

XPOS_GAMMA = 0.4  # the paper's zeta offset: zeta_i = (2i / D + gamma) / (1 + gamma)


class RotaryTables(NamedTuple):
    """cos and sin [B, S, 1, rotary_dim] float32 for each position; xPos also the decay scale
    of q ([B, S, 1, rotary_dim]; k takes its inverse), None for plain rope."""
    cos: torch.Tensor
    sin: torch.Tensor
    scale: torch.Tensor | None = None


class RotaryEmbedding(nn.Module):
    """The tables of `rope`, or of `xpos` when the config says so."""

    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        dim = cfg.rotary_dim
        inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        # Not persistent: it is a function of the config, so rotary_base may change on fine-tuning.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interpolation_factor = cfg.seq_len_interpolation_factor
        self.xpos_scale_base = cfg.xpos_scale_base if cfg.position_embedding_type == "xpos" else None
        self.xpos_center = cfg.encoder_seq_length // 2
        zeta = (torch.arange(0, dim, 2, dtype=torch.float32) / dim + XPOS_GAMMA) / (1 + XPOS_GAMMA)
        self.register_buffer("log_zeta", torch.cat((zeta, zeta)).log(), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> RotaryTables:
        """The tables for position_ids [B, S]."""
        positions = position_ids.to(torch.float32)
        if self.interpolation_factor is not None:
            # Linear position interpolation: a longer context squeezed into the trained range.
            positions = positions / self.interpolation_factor
        # Computed in fp32 even under autocast: positions times frequencies lose digits in bf16.
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            freqs = positions[..., None] * self.inv_freq  # (B, S, rotary_dim / 2)
            angles = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]  # (B, S, 1, rotary_dim)
            scale = None
            if self.xpos_scale_base is not None:
                centred = positions - self.xpos_center  # (B, S)
                exponent = centred[..., None, None] / self.xpos_scale_base  # (B, S, 1, 1)
                scale = torch.exp(exponent * self.log_zeta)  # (B, S, 1, rotary_dim)
            return RotaryTables(angles.cos(), angles.sin(), scale)


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


def rotate_queries_and_keys(q: torch.Tensor, k: torch.Tensor,
                            tables: RotaryTables) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, S, Hq, D] and k [B, S, Hkv, D] rotated (and, for xPos, scaled)."""
    q, k = apply_rotary(q, tables.cos, tables.sin), apply_rotary(k, tables.cos, tables.sin)
    if tables.scale is not None:  # xPos rotates every channel (rotary_percentage 1)
        q = q * tables.scale.to(q.dtype)
        k = k * tables.scale.reciprocal().to(k.dtype)
    return q, k
