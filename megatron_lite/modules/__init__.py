"""Transformer building blocks; each takes the one config of its stack."""

from megatron_lite.modules.attention import CrossAttention, SelfAttention, dot_product_attention
from megatron_lite.modules.kv_cache import KVCache
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.norms import build_norm
from megatron_lite.modules.positions import (
    AlibiBias,
    KerpleBias,
    RelativePositionBias,
    SandwichBias,
    alibi_slopes,
    bias_inputs,
    build_position_bias,
    t5_relative_buckets,
)
from megatron_lite.modules.rotary import RotaryEmbedding, RotaryTables, apply_rotary, rotate_queries_and_keys
from megatron_lite.modules.transformer import TransformerBlock, TransformerLayer, init_weights

__all__ = [
    "MLP",
    "AlibiBias",
    "CrossAttention",
    "KVCache",
    "KerpleBias",
    "RelativePositionBias",
    "RotaryEmbedding",
    "RotaryTables",
    "SandwichBias",
    "SelfAttention",
    "TransformerBlock",
    "TransformerLayer",
    "alibi_slopes",
    "apply_rotary",
    "bias_inputs",
    "build_norm",
    "build_position_bias",
    "dot_product_attention",
    "init_weights",
    "rotate_queries_and_keys",
    "t5_relative_buckets",
]
