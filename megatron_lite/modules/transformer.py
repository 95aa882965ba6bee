"""Transformer layers (pre-LN or post-LN) and the stack, with Megatron's activation checkpointing.

One layer serves every family: GPT's (causal self-attention, MLP), T5's encoder (bidirectional
self-attention with key padding, MLP) and T5's decoder (causal self-attention, cross-attention to
the encoder's output, MLP).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from megatron_lite.config import TransformerConfig
from megatron_lite.modules.attention import CrossAttention, SelfAttention
from megatron_lite.modules.fused_layout import group_rows
from megatron_lite.modules.kv_cache import CrossAttentionCache, KVCache, SelfAttentionCache
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.norms import build_norm
from megatron_lite.modules.rotary import RotaryTables

Rotary = RotaryTables | None


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, *, causal: bool = True, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre_ln = cfg.transformer_block_type == "pre_ln"
        self.attention_norm = build_norm(cfg)
        self.attention = SelfAttention(cfg, causal=causal)
        self.cross_attention_norm = build_norm(cfg) if cross_attention else None
        self.cross_attention = CrossAttention(cfg) if cross_attention else None
        self.mlp_norm = build_norm(cfg)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.selective_checkpoint = cfg.activations_checkpoint_granularity == "selective"

    def _residual(self, x: torch.Tensor, norm: nn.Module, branch) -> torch.Tensor:
        """x + branch(x), with the norm before the branch (pre-LN) or after the sum (post-LN)."""
        if self.pre_ln:
            return x + self.dropout(branch(norm(x)))
        return norm(x + self.dropout(branch(x)))

    def forward(
        self,
        x: torch.Tensor,
        rotary: Rotary = None,
        segment_ids: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        relative_bias: torch.Tensor | None = None,
        alibi_slopes: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_padding_mask: torch.Tensor | None = None,
        cache: tuple[SelfAttentionCache, CrossAttentionCache | None] | None = None,
    ) -> torch.Tensor:
        """x [B, S, C] -> [B, S, C]. context [B, Sk, C]: the encoder's output (decoder layers).
        cache: this layer's (self-attention, cross-attention) caches when generating."""
        if self.selective_checkpoint and self.training and torch.is_grad_enabled():
            return self._forward_selective(
                x, rotary, context, context_padding_mask, segment_ids=segment_ids,
                key_padding_mask=key_padding_mask, relative_bias=relative_bias,
                alibi_slopes=alibi_slopes)
        self_cache, cross_cache = (None, None) if cache is None else cache
        x = self._residual(x, self.attention_norm, lambda h: self.attention(
            h, rotary, segment_ids, key_padding_mask=key_padding_mask,
            relative_bias=relative_bias, alibi_slopes=alibi_slopes, cache=self_cache,
        ))
        if self.cross_attention is not None:
            x = self._residual(x, self.cross_attention_norm, lambda h: self.cross_attention(
                h, context, context_padding_mask, cross_cache))
        return self._residual(x, self.mlp_norm, self.mlp)

    def _forward_selective(self, x: torch.Tensor, rotary: Rotary, context, context_padding_mask,
                           **attention_options) -> torch.Tensor:
        """forward with selective activation checkpointing: the self-attention's q, k, v, output
        and lse are kept (its kernel is not run again), everything else (norms, projections,
        residuals, cross-attention, MLP) is recomputed in the backward from the layer's input."""
        def project(x):
            return self.attention.project(self.attention_norm(x) if self.pre_ln else x, rotary)

        def after_attention(x, attended):
            branch = self.dropout(self.attention.linear_proj(attended))
            x = x + branch if self.pre_ln else self.attention_norm(x + branch)
            if self.cross_attention is not None:
                x = self._residual(x, self.cross_attention_norm, lambda h: self.cross_attention(
                    h, context, context_padding_mask))
            return self._residual(x, self.mlp_norm, self.mlp)

        q, k, v = checkpoint(project, x, use_reentrant=False)  # (B, S, H, D) each
        attended = self.attention.attend(q, k, v, causal=self.attention.causal,
                                         **attention_options)  # (B, S, Hq * D)
        return checkpoint(after_attention, x, attended, use_reentrant=False)  # (B, S, C)


class TransformerBlock(nn.Module):
    """num_layers layers, then the final norm (pre-LN only: post-LN layers end normalized).

    Activation checkpointing (granularity 'full') keeps only the inputs of checkpointed spans and
    recomputes the rest in the backward: 'uniform' checkpoints every span of
    activations_checkpoint_num_layers layers, 'block' the first that many layers one by one;
    'selective' is each layer's own (TransformerLayer._forward_selective). The recomputation
    replays the same dropout masks (torch saves and restores the RNG state).

    torch_compile: the layers run under torch.compile in training and evaluation forwards
    (not when generating with a key/value cache, whose shapes change every step).
    """

    def __init__(self, cfg: TransformerConfig, *, causal: bool = True, cross_attention: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(cfg, causal=causal, cross_attention=cross_attention)
            for _ in range(cfg.num_layers)
        )
        self.final_norm = build_norm(cfg) if cfg.transformer_block_type == "pre_ln" else None
        self.checkpoint_method = (
            cfg.activations_checkpoint_method if cfg.activations_checkpoint_granularity == "full"
            else None
        )
        self.checkpoint_layers = cfg.activations_checkpoint_num_layers
        self.compiled_spans = torch.compile(self._run_spans) if cfg.torch_compile else None

    def _run_layers(self, start: int, end: int, x: torch.Tensor, *args,
                    kv_cache: KVCache | None = None, **kwargs) -> torch.Tensor:
        for index in range(start, end):
            cache = None if kv_cache is None else kv_cache.layer(index)
            x = self.layers[index](x, *args, cache=cache, **kwargs)
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

    def forward(self, x: torch.Tensor, rotary: Rotary = None, segment_ids: torch.Tensor | None = None,
                kv_cache: KVCache | None = None,
                **attention_inputs: torch.Tensor | None) -> torch.Tensor:
        """x [B, S, C] -> [B, S, C]; attention_inputs: TransformerLayer.forward's keywords;
        kv_cache: the stack's caches when generating (x then holds the new tokens only)."""
        if self.compiled_spans is not None and kv_cache is None:
            x = self.compiled_spans(x, rotary, segment_ids, None, attention_inputs)
        else:
            x = self._run_spans(x, rotary, segment_ids, kv_cache, attention_inputs)
        return x if self.final_norm is None else self.final_norm(x)

    def _run_spans(self, x, rotary, segment_ids, kv_cache, attention_inputs):
        for start, end, checkpointed in self._spans():
            if checkpointed:
                x = checkpoint(self._run_layers, start, end, x, rotary, segment_ids,
                               use_reentrant=False, **attention_inputs)
            else:
                x = self._run_layers(start, end, x, rotary, segment_ids, kv_cache=kv_cache,
                                     **attention_inputs)
        return x


def init_weights(module: nn.Module, cfg: TransformerConfig) -> None:
    """Megatron's init of `module` and everything in it: N(0, init_method_std) for weights
    (embedding tables included), zero biases, and std / sqrt(2 num_layers) for the projections
    that write into the residual stream, so its variance does not grow with depth."""
    std = cfg.init_method_std
    output_std = std / math.sqrt(2 * cfg.num_layers) if cfg.use_scaled_init_method else std
    for child in module.modules():
        if isinstance(child, (nn.Linear, nn.Embedding)):
            nn.init.normal_(child.weight, mean=0.0, std=std)
            if isinstance(child, nn.Linear) and child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, (nn.LayerNorm, nn.RMSNorm)):
            child.reset_parameters()
    for child in module.modules():
        if isinstance(child, (SelfAttention, CrossAttention)):
            nn.init.normal_(child.linear_proj.weight, mean=0.0, std=output_std)
        elif isinstance(child, MLP):
            nn.init.normal_(child.linear_fc2.weight, mean=0.0, std=output_std)
        if isinstance(child, (SelfAttention, CrossAttention, MLP)):
            # The fused projections' values were drawn in the ungrouped order ([q | k | v]):
            # grouped, a seed gives the model it gave before the grouped layout.
            with torch.no_grad():
                for name, layout in child.fused_rows.items():
                    weight = getattr(child, name).weight
                    weight.copy_(group_rows(weight, layout))
