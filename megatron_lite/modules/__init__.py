"""Transformer building blocks; each takes the one model config."""

from megatron_lite.modules.attention import SelfAttention, dot_product_attention
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.norms import build_norm
from megatron_lite.modules.rotary import RotaryEmbedding, apply_rotary
from megatron_lite.modules.transformer import TransformerBlock, TransformerLayer

__all__ = [
    "MLP",
    "RotaryEmbedding",
    "SelfAttention",
    "TransformerBlock",
    "TransformerLayer",
    "apply_rotary",
    "build_norm",
    "dot_product_attention",
]
