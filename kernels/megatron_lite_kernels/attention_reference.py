"""Plain PyTorch attention with exactly the semantics of the Triton FlashAttention kernel.

It materialises the [B, H, Sq, Sk] score matrix, so it is the reference in tests (run it on
float64 inputs for a high-precision answer, or in the inputs' own low precision to measure what
ordinary PyTorch attention gets wrong) and the non-flash path of the models.

Semantics shared with `megatron_lite_kernels.flash_attention.flash_attn_func`:
- q: [B, Sq, Hq, D], k and v: [B, Sk, Hkv, D], Hq a multiple of Hkv (query head h reads key/value
  head h // (Hq // Hkv)); the output has q's shape and dtype.
- causal: query i sees key j iff j <= i + Sk - Sq (aligned bottom-right, as FlashAttention >= 2.1).
- key_padding_mask: bool [B, Sk] (True = a real token) or integer key lengths [B].
- segment_ids: int [B, S] (self-attention, Sq == Sk), or a pair (query ids [B, Sq], key ids
  [B, Sk]): a query sees only keys of its own segment, the document masking of packed samples
  (the pair: one part of a sequence attending to another, as context parallelism's steps do).
- alibi_slopes: [Hq] or [B, Hq]; adds -slope * |i + Sk - Sq - j| to the scaled scores.
- relative_bias: [Hq, 2W + 1]; adds relative_bias[h, clamp(j - (i + Sk - Sq), -W, W) + W] (T5's
  bucketed bias, looked up per distance; gradients flow to it). Or a ParametricBias (values,
  params, jacobian): adds its values, and its params get sum over the scores of
  d loss / d score * jacobian.
- dropout: the keep-mask [B, Hq, Sq, Sk] is applied to the softmax probabilities, kept ones are
  scaled by 1 / (1 - dropout_p); the log-sum-exp does not see dropout.
- A query row that sees no key gets a zero output, a log-sum-exp of -inf and zero gradients.
"""

from __future__ import annotations

import math

import torch

from .flash_attention.interface import ParametricBias


def key_padding_to_bool(key_padding_mask: torch.Tensor, seqlen_k: int) -> torch.Tensor:
    """bool [B, Sk] (True = real key) from either accepted form of key_padding_mask."""
    if key_padding_mask.dtype == torch.bool:
        return key_padding_mask
    positions = torch.arange(seqlen_k, device=key_padding_mask.device)
    return positions[None, :] < key_padding_mask[:, None]  # (B, Sk)


def attention_mask(
    batch: int,
    seqlen_q: int,
    seqlen_k: int,
    *,
    device: torch.device,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """bool [B, 1, Sq, Sk], True where a query may attend to a key; None when all may."""
    visible = None
    if causal:
        rows = torch.arange(seqlen_q, device=device)[:, None] + (seqlen_k - seqlen_q)
        cols = torch.arange(seqlen_k, device=device)[None, :]
        visible = (cols <= rows)[None, None]  # (1, 1, Sq, Sk)
    if key_padding_mask is not None:
        keys = key_padding_to_bool(key_padding_mask, seqlen_k)[:, None, None, :]  # (B, 1, 1, Sk)
        visible = keys if visible is None else visible & keys
    if segment_ids is not None:
        query_ids, key_ids = segment_ids if isinstance(segment_ids, tuple) else (segment_ids, segment_ids)
        same = query_ids[:, None, :, None] == key_ids[:, None, None, :]  # (B, 1, Sq, Sk)
        visible = same if visible is None else visible & same
    if visible is None:
        return None
    return visible.expand(batch, 1, seqlen_q, seqlen_k)


def alibi_bias(alibi_slopes: torch.Tensor, batch: int, seqlen_q: int, seqlen_k: int) -> torch.Tensor:
    """float32 [B or 1, Hq, Sq, Sk]: -slope * |i + Sk - Sq - j|."""
    device = alibi_slopes.device
    rows = torch.arange(seqlen_q, device=device)[:, None] + (seqlen_k - seqlen_q)
    cols = torch.arange(seqlen_k, device=device)[None, :]
    distance = (rows - cols).abs().to(torch.float32)  # (Sq, Sk)
    slopes = alibi_slopes.to(torch.float32)
    slopes = slopes[None] if slopes.dim() == 1 else slopes  # (B or 1, Hq)
    return -slopes[:, :, None, None] * distance


def relative_bias_matrix(relative_bias: torch.Tensor, seqlen_q: int, seqlen_k: int) -> torch.Tensor:
    """[Hq, Sq, Sk]: relative_bias[h, clamp(j - i', -W, W) + W], i' = i + Sk - Sq."""
    window = (relative_bias.shape[1] - 1) // 2
    # Every distance the matrix holds, smallest first: j - i' for (i, j) = (Sq - 1, 0) .. (0, Sk - 1).
    distance = torch.arange(seqlen_q + seqlen_k - 1, device=relative_bias.device) - (seqlen_k - 1)
    by_distance = relative_bias[:, distance.clamp(-window, window) + window]  # (Hq, Sq + Sk - 1)
    # Row i is the window starting at Sq - 1 - i (a Toeplitz matrix). Gathering the [Sq, Sk]
    # matrix directly would make its gradient a scatter-add of Sq * Sk terms into 2W + 1
    # entries, seconds per step at T5's lengths on a GPU; the window's gradient is a fast sum.
    return by_distance.unfold(1, seqlen_k, 1).flip(1)  # (Hq, Sq, Sk)


def linearised(bias: ParametricBias) -> torch.Tensor:
    """A ParametricBias as one differentiable [Hq, 2W + 1] tensor: its values, plus the
    jacobian times (params - params), zero, whose gradient with respect to params is the
    jacobian contracted with the tensor's gradient, as the kernel computes it."""
    values, params, jacobian = bias
    change = params - params.detach()  # (K, Hq): zeros that carry params' gradient
    return values + (change[:, :, None] * jacobian).sum(dim=0)  # (Hq, 2W + 1)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    dropout_p: float = 0.0,
    dropout_mask: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    relative_bias: torch.Tensor | ParametricBias | None = None,
    return_lse: bool = False,
):
    """Attention by the book. Matmuls run in the inputs' dtype, the softmax in float32 (float64
    for float64 inputs). Without an explicit `dropout_mask`, dropout draws from torch's RNG.

    Returns out [B, Sq, Hq, D], and with return_lse also lse [B, Hq, Sq] (float32; float64 for
    float64 inputs).
    """
    batch, seqlen_q, heads_q, head_dim = q.shape
    seqlen_k, heads_kv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    group = heads_q // heads_kv
    softmax_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32

    qh = q.transpose(1, 2)  # (B, Hq, Sq, D)
    kh = k.transpose(1, 2).repeat_interleave(group, dim=1)  # (B, Hq, Sk, D)
    vh = v.transpose(1, 2).repeat_interleave(group, dim=1)  # (B, Hq, Sk, D)

    scores = torch.matmul(qh, kh.transpose(-1, -2)).to(softmax_dtype) * scale  # (B, Hq, Sq, Sk)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes, batch, seqlen_q, seqlen_k).to(softmax_dtype)
    if isinstance(relative_bias, ParametricBias):
        relative_bias = linearised(relative_bias)
    if relative_bias is not None:
        scores = scores + relative_bias_matrix(relative_bias, seqlen_q, seqlen_k).to(softmax_dtype)
    visible = attention_mask(
        batch, seqlen_q, seqlen_k, device=q.device, causal=causal,
        key_padding_mask=key_padding_mask, segment_ids=segment_ids,
    )
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
        # A softmax over a row of -inf is NaN: rows without a visible key get zero probabilities.
        blind = ~visible.any(dim=-1, keepdim=True)  # (B, 1, Sq, 1)
        safe_scores = scores.masked_fill(blind, 0.0)
        probs = torch.softmax(safe_scores, dim=-1).masked_fill(blind, 0.0)
        lse = torch.logsumexp(safe_scores, dim=-1).masked_fill(blind[..., 0], float("-inf"))
    else:
        probs = torch.softmax(scores, dim=-1)
        lse = torch.logsumexp(scores, dim=-1)  # (B, Hq, Sq); -inf on rows that see no key
    if dropout_p > 0.0:
        if dropout_mask is None:
            dropout_mask = torch.rand_like(probs) >= dropout_p
        probs = probs * dropout_mask / (1.0 - dropout_p)

    out = torch.matmul(probs.to(v.dtype), vh).transpose(1, 2)  # (B, Sq, Hq, D)
    if return_lse:
        return out, lse
    return out
