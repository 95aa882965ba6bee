"""Self- and cross-attention, and the one place that picks the attention implementation.

`dot_product_attention` is the seam of DESIGN.md: q, k, v come in as [B, S, H, D] and go either
to our Triton FlashAttention kernel (`use_flash_attention=True`) or to the PyTorch reference,
with the same masks (causal, key padding, packed-document segment ids), the same positional
biases (ALiBi slopes, a learned relative bias by distance) and the same dropout semantics.
Nothing else in the model knows which one runs.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import ProcessGroup

from megatron_lite_kernels.attention_reference import attention_reference
from megatron_lite_kernels.flash_attention import flash_attention_supported, flash_attn_func
from megatron_lite.config import TransformerConfig
from megatron_lite.modules.fused_layout import kv_layout, qkv_layout
from megatron_lite.modules.kv_cache import CrossAttentionCache, SelfAttentionCache
from megatron_lite.modules.rotary import RotaryTables, rotate_queries_and_keys
from megatron_lite.parallel.context_parallel import ring_attention
from megatron_lite.parallel.random import rank_seeded


@functools.cache
def _warn_flash_unavailable(device_type: str) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    warnings.warn(
        f"use_flash_attention=True (model.*, or model.encoder / model.decoder for T5), but the "
        f"Triton kernel cannot run on '{device_type}' "
        "(it needs a CUDA GPU, or TRITON_INTERPRET=1 set before start-up to run it slowly on "
        "the CPU): using the PyTorch attention path instead",
        stacklevel=3,
    )


def dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    use_flash: bool,
    causal: bool,
    softmax_scale: float | None = None,
    dropout_p: float = 0.0,
    segment_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    relative_bias: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias, masked) v: q [B, Sq, Hq, D], k, v [B, Sk, Hkv, D] -> [B, Sq, Hq, D].

    scale defaults to 1 / sqrt(D). key_padding_mask: bool [B, Sk], True on real keys.
    relative_bias: [Hq, 2W + 1], added by clamped distance j - i' (differentiable: T5's buckets,
    KERPLE, Sandwich). alibi_slopes: [Hq], adds -slope * |j - i'| (constant).
    """
    options = dict(
        causal=causal, softmax_scale=softmax_scale, dropout_p=dropout_p, segment_ids=segment_ids,
        key_padding_mask=key_padding_mask, relative_bias=relative_bias, alibi_slopes=alibi_slopes,
    )
    if use_flash:
        if flash_attention_supported(q.device):
            return flash_attn_func(q, k, v, **options)
        _warn_flash_unavailable(q.device.type)
    return attention_reference(q, k, v, **options)


class _Attention(nn.Module):
    """What self- and cross-attention share: the head layout from the config, the attention
    call (flash or PyTorch path, dropout only in training) and the output projection, which a
    subclass creates as `linear_proj` after its input projections."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_groups = cfg.query_groups
        self.head_dim = cfg.head_dim
        self.use_flash = cfg.use_flash_attention
        self.softmax_scale = cfg.softmax_scale
        self.dropout_p = cfg.attention_dropout
        # Set by megatron_lite.parallel.apply_context_parallel: this rank then holds a share of
        # every sequence, and attention runs as ring attention over the group.
        self.context_parallel_group: ProcessGroup | None = None
        # Set by megatron_lite.parallel.apply_tensor_parallel: this rank holds its own heads,
        # whose dropout draws from a stream of their own (megatron_lite.parallel.random).
        self.dropout_rank: int | None = None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, whole_sequence: bool = False,
               **options) -> torch.Tensor:
        """The attention alone, before the output projection: q (B, Sq, Hq, D), k and v
        (B, Sk, Hkv, D) -> (B, Sq, Hq * D); options: causal, masks and biases. whole_sequence:
        q, k, v hold all of the sequence even under context parallelism (decoding with a cache)."""
        if self.dropout_rank is not None and self.training and self.dropout_p > 0.0:
            with rank_seeded(self.dropout_rank, q.device):
                return self._attend(q, k, v, whole_sequence, options)
        return self._attend(q, k, v, whole_sequence, options)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, whole_sequence: bool,
                options: dict) -> torch.Tensor:
        if self.context_parallel_group is not None and not whole_sequence:
            return self._ring_attend(q, k, v, **options)
        out = dot_product_attention(
            q, k, v,
            use_flash=self.use_flash,
            softmax_scale=self.softmax_scale,
            dropout_p=self.dropout_p if self.training else 0.0,
            **options,
        )  # (B, Sq, Hq, D)
        return out.reshape(*q.shape[:2], -1)

    def _ring_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     segment_ids: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                     relative_bias: torch.Tensor | None = None, alibi_slopes: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """attend's context-parallel path: this rank's share of q, k, v (and of the masks)."""
        if relative_bias is not None or alibi_slopes is not None:
            raise ValueError("context parallelism does not support positional biases computed in the "
                             "attention kernel (alibi, kerple, sandwich, relative)")
        out = ring_attention(q, k, v, causal=causal, group=self.context_parallel_group,
                             softmax_scale=self.softmax_scale, use_flash=self.use_flash,
                             dropout_p=self.dropout_p if self.training else 0.0,
                             segment_ids=segment_ids, key_padding_mask=key_padding_mask)  # (B, S, Hq, D)
        return out.reshape(*q.shape[:2], -1)

    def _attend_and_project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            **options) -> torch.Tensor:
        """q (B, Sq, Hq, D), k and v (B, Sk, Hkv, D) -> (B, Sq, C); options: causal and masks."""
        return self.linear_proj(self.attend(q, k, v, **options))


class SelfAttention(_Attention):
    """Multi-head / grouped-query self-attention with a fused qkv projection; causal or not.

    The projection's output features are grouped by query group, as Megatron lays them out
    (modules/fused_layout.py): for each of the num_query_groups groups, the group's
    num_heads / num_query_groups q heads, then its k head, then its v head, head_dim rows each.
    A contiguous row shard (tensor parallel) then holds whole groups. k and v are views of the
    matmul output, and so is q with one head per group (multi-head attention); with GQA q's
    heads are gathered into one (B, S, Hq, D) tensor, a copy. k and v keep num_query_groups
    heads, which both attention paths broadcast over the query heads themselves (query head h
    reads group h // (Hq / Hkv): the heads of group g are g's q heads here).
    """

    def __init__(self, cfg: TransformerConfig, *, causal: bool = True) -> None:
        super().__init__(cfg)
        q_width = self.num_heads * self.head_dim
        kv_width = self.num_groups * self.head_dim
        self.linear_qkv = nn.Linear(cfg.hidden_size, q_width + 2 * kv_width, bias=cfg.bias)
        self.linear_proj = nn.Linear(q_width, cfg.hidden_size, bias=cfg.bias)
        self.causal = causal
        # The whole projection's row layout (checkpoints and conversions read it).
        self.fused_rows = {"linear_qkv": qkv_layout(self.num_heads, self.num_groups, self.head_dim)}

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryTables | None = None,
        segment_ids: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        relative_bias: torch.Tensor | None = None,
        alibi_slopes: torch.Tensor | None = None,
        cache: SelfAttentionCache | None = None,
    ) -> torch.Tensor:
        """x [B, S, C] -> [B, S, C]. With a cache, x holds the new tokens only: their keys and
        values join the cache, and their queries attend to every key in it (the last S of
        key_padding_mask's positions are theirs)."""
        q, k, v = self.project(x, rotary)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Sk, Hkv, D): every token so far
        return self._attend_and_project(
            q, k, v, causal=self.causal, segment_ids=segment_ids, key_padding_mask=key_padding_mask,
            relative_bias=relative_bias, alibi_slopes=alibi_slopes, whole_sequence=cache is not None,
        )  # (B, S, C)

    def project(self, x: torch.Tensor, rotary: RotaryTables | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, S, Hq, D), k and v (B, S, Hkv, D) of x (B, S, C), rotated where positions
        rotate."""
        qkv = self.linear_qkv(x)  # (B, S, G * (r + 2) * D), r = Hq / G query heads per group
        # The shapes are the projection's: under sequence parallelism x holds a sequence shard.
        batch, seqlen = qkv.shape[:2]
        # Heads held here: all of them, or this rank's under tensor parallelism.
        per_group = self.num_heads // self.num_groups
        qkv = qkv.view(batch, seqlen, self.num_groups, per_group + 2, self.head_dim)  # (B, S, G, r + 2, D)
        # A view for r = 1; for r > 1 the (G, r) dims do not merge in memory: a copy.
        q = qkv[:, :, :, :per_group].reshape(batch, seqlen, self.num_heads, self.head_dim)  # (B, S, Hq, D)
        k, v = qkv[:, :, :, per_group], qkv[:, :, :, per_group + 1]  # (B, S, Hkv, D) each, views
        if rotary is not None:
            q, k = rotate_queries_and_keys(q, k, rotary)
        return q, k, v


class CrossAttention(_Attention):
    """Decoder queries attend to the encoder's output (the context), masked by its padding.

    The context's keys and values come from one fused projection grouped by query group,
    [k_g | v_g] for each group g (modules/fused_layout.py): views, no copies. No causal mask
    and no positional bias: every query sees every real context token.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg)
        q_width = self.num_heads * self.head_dim
        kv_width = self.num_groups * self.head_dim
        self.linear_q = nn.Linear(cfg.hidden_size, q_width, bias=cfg.bias)
        self.linear_kv = nn.Linear(cfg.hidden_size, 2 * kv_width, bias=cfg.bias)
        self.linear_proj = nn.Linear(q_width, cfg.hidden_size, bias=cfg.bias)
        self.fused_rows = {"linear_kv": kv_layout(self.num_groups, self.head_dim)}

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_padding_mask: torch.Tensor | None,
                cache: CrossAttentionCache | None = None) -> torch.Tensor:
        """x [B, Sq, C] -> [B, Sq, C]. With a cache, the context's keys and values are computed
        once and kept there."""
        q = self.linear_q(x)  # (B, Sq, Hq * D)
        # The shapes are the projections': under sequence parallelism x holds a sequence shard.
        q = q.view(*q.shape[:2], self.num_heads, self.head_dim)  # (B, Sq, Hq, D)
        if cache is not None and cache.keys is not None:
            k, v = cache.keys, cache.values
        else:
            kv = self.linear_kv(context)  # (B, Sk, G * 2 * D)
            kv = kv.view(*kv.shape[:2], self.num_groups, 2, self.head_dim)  # (B, Sk, G, 2, D)
            k, v = kv.unbind(3)  # (B, Sk, Hkv, D) each, views
            if cache is not None:
                cache.keys, cache.values = k, v
        return self._attend_and_project(q, k, v, causal=False,
                                        key_padding_mask=context_padding_mask)  # (B, Sq, C)
