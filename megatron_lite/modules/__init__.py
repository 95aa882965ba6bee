"""Transformer building blocks; each takes the one config of its stack."""

from megatron_lite.modules.attention import CrossAttention, SelfAttention, dot_product_attention
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.norms import build_norm
from megatron_lite.modules.positions import RelativePositionBias, alibi_slopes, t5_relative_buckets
from megatron_lite.modules.rotary import RotaryEmbedding, apply_rotary
from megatron_lite.modules.transformer import TransformerBlock, TransformerLayer, init_weights

__all__ = [
    "MLP",
    "CrossAttention",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SelfAttention",
    "TransformerBlock",
    "TransformerLayer",
    "alibi_slopes",
    "apply_rotary",
    "build_norm",
    "dot_product_attention",
    "init_weights",
    "t5_relative_buckets",
]
