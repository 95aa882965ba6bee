"""Every check of flash_attn_func's arguments, before anything reaches a kernel: a ValueError
that names the argument and the shapes, never an error from inside Triton."""

from __future__ import annotations

import torch

from .constants import MAX_HEAD_DIM
from .support import FlashAttentionUnavailable, flash_attention_supported


def check_inputs(q, k, v, alibi_slopes, relative_bias, key_padding_mask, segment_ids, dropout_p):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"flash_attn_func: {name} must be a 4-D tensor [B, S, H, D], got {shape}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash_attn_func: q, k, v must be on one device, got {q.device}, "
                         f"{k.device}, {v.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attn_func: q, k, v must share one dtype, got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"flash_attn_func: dtype {q.dtype} is not supported "
                         "(float16, bfloat16 or float32)")
    batch, seqlen_q, heads_q, head_dim = q.shape
    _, seqlen_k, heads_kv, _ = k.shape
    if k.shape != v.shape:
        raise ValueError(f"flash_attn_func: k {tuple(k.shape)} and v {tuple(v.shape)} must have "
                         "the same shape")
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"flash_attn_func: q {tuple(q.shape)} and k {tuple(k.shape)} disagree in "
                         "batch size or head dim")
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(f"flash_attn_func: the query heads ({heads_q}) must be a multiple of the "
                         f"key/value heads ({heads_kv})")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"flash_attn_func: head dim {head_dim} is out of range "
                         f"(1 to {MAX_HEAD_DIM})")
    if seqlen_q == 0 or seqlen_k == 0:
        raise ValueError(f"flash_attn_func: empty sequence (Sq={seqlen_q}, Sk={seqlen_k})")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"flash_attn_func: dropout_p must be in [0, 1), got {dropout_p}")
    if alibi_slopes is not None:
        if alibi_slopes.shape not in ((heads_q,), (batch, heads_q)):
            raise ValueError(f"flash_attn_func: alibi_slopes must have shape [{heads_q}] or "
                             f"[{batch}, {heads_q}], got {tuple(alibi_slopes.shape)}")
        if alibi_slopes.device != q.device:
            raise ValueError(f"flash_attn_func: alibi_slopes is on {alibi_slopes.device}, q on {q.device}")
        if alibi_slopes.requires_grad:
            raise ValueError("flash_attn_func: alibi_slopes requires grad, but the kernel gives "
                             "ALiBi slopes no gradient; pass fixed slopes (detach them)")
    if isinstance(relative_bias, tuple):  # a ParametricBias
        relative_bias = _check_parametric_bias(*relative_bias, heads_q, seqlen_q, seqlen_k)
    if relative_bias is not None:
        if (relative_bias.dim() != 2 or relative_bias.shape[0] != heads_q
                or relative_bias.shape[1] % 2 != 1 or not relative_bias.is_floating_point()):
            raise ValueError(
                f"flash_attn_func: relative_bias must be a float [Hq, 2W + 1] = [{heads_q}, odd] "
                f"tensor (bias of distances -W..W), got {relative_bias.dtype} "
                f"{tuple(relative_bias.shape)}")
        if relative_bias.device != q.device:
            raise ValueError(f"flash_attn_func: relative_bias is on {relative_bias.device}, q on {q.device}")
    if key_padding_mask is not None:
        lengths = key_padding_mask.dtype != torch.bool
        expected = (batch,) if lengths else (batch, seqlen_k)
        if tuple(key_padding_mask.shape) != expected or (lengths and key_padding_mask.is_floating_point()):
            raise ValueError(
                "flash_attn_func: key_padding_mask must be bool [B, Sk] = "
                f"[{batch}, {seqlen_k}] (True = real key) or integer key lengths [{batch}], got "
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"flash_attn_func: key_padding_mask is on {key_padding_mask.device}, "
                             f"q on {q.device}")
    if isinstance(segment_ids, tuple):
        query_ids, key_ids = segment_ids
        if tuple(query_ids.shape) != (batch, seqlen_q) or tuple(key_ids.shape) != (batch, seqlen_k):
            raise ValueError(
                "flash_attn_func: segment_ids as (query ids, key ids) must have shapes [B, Sq] = "
                f"[{batch}, {seqlen_q}] and [B, Sk] = [{batch}, {seqlen_k}], got "
                f"{tuple(query_ids.shape)} and {tuple(key_ids.shape)}")
        if query_ids.dtype != key_ids.dtype or query_ids.device != key_ids.device:
            raise ValueError(f"flash_attn_func: query and key segment ids must share one dtype and "
                             f"device, got {query_ids.dtype} on {query_ids.device} and "
                             f"{key_ids.dtype} on {key_ids.device}")
        segment_ids = query_ids
    elif segment_ids is not None and (seqlen_q != seqlen_k or tuple(segment_ids.shape) != (batch, seqlen_q)):
        raise ValueError(
            "flash_attn_func: one segment_ids tensor is for self-attention and must have shape "
            f"[B, S] = [{batch}, {seqlen_q}] with Sq == Sk, got {tuple(segment_ids.shape)} "
            f"for Sq={seqlen_q}, Sk={seqlen_k}; pass (query ids, key ids) otherwise")
    if segment_ids is not None:
        if segment_ids.is_floating_point() or segment_ids.dtype == torch.bool:
            raise ValueError(f"flash_attn_func: segment_ids must be integers, got {segment_ids.dtype}")
        if segment_ids.device != q.device:
            raise ValueError(f"flash_attn_func: segment_ids is on {segment_ids.device}, q on {q.device}")
    if not flash_attention_supported(q.device):
        raise FlashAttentionUnavailable(
            f"flash_attn_func: the Triton kernel needs a CUDA device, got tensors on {q.device} "
            "(set TRITON_INTERPRET=1 before importing megatron_lite_kernels to run it on the "
            "CPU, slowly)")


def _check_parametric_bias(values, params, jacobian, heads_q, seqlen_q, seqlen_k):
    """A ParametricBias's parts against each other and the call; returns its values, which
    are then checked as any relative bias."""
    if values.requires_grad:
        raise ValueError("flash_attn_func: a ParametricBias's values require grad, but its "
                         "gradient reaches only its params (through the jacobian); pass the "
                         "values detached")
    count = params.shape[0] if params.dim() == 2 else 0
    if params.dim() != 2 or params.shape[1] != heads_q or not 1 <= count <= 4:
        raise ValueError(f"flash_attn_func: a ParametricBias's params must be [K, Hq] = "
                         f"[1..4, {heads_q}], got {tuple(params.shape)}")
    if tuple(jacobian.shape) != (count, *values.shape):
        raise ValueError(f"flash_attn_func: a ParametricBias's jacobian must be [K, Hq, 2W + 1] = "
                         f"[{count}, {', '.join(map(str, values.shape))}] (params [K, Hq], values "
                         f"[Hq, 2W + 1]), got {tuple(jacobian.shape)}")
    if params.device != values.device or jacobian.device != values.device:
        raise ValueError(f"flash_attn_func: a ParametricBias's parts are on {values.device}, "
                         f"{params.device} and {jacobian.device}; they must share one device")
    window = (values.shape[-1] - 1) // 2
    if window < max(seqlen_q, seqlen_k) - 1:
        raise ValueError(f"flash_attn_func: a ParametricBias must hold every distance of the "
                         f"call, W >= max(Sq, Sk) - 1 = {max(seqlen_q, seqlen_k) - 1}, got "
                         f"W = {window} (values {tuple(values.shape)})")
    return values
