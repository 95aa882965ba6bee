"""flash_attn_func, the one entry point: argument checks, normalisation (masks to their
kernel forms, biases to fp32), then the custom op (under torch.compile) or the eager autograd
Function."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .checks import check_inputs
from .dropout import seed_tensor
from .op import EagerFlashAttention, flash_attn_forward_op


class ParametricBias(NamedTuple):
    """A bias by distance that is a function of a few learned parameters per head (KERPLE), as
    `relative_bias` takes it: its values, the parameters, and the values' derivatives with
    respect to them, by distance. The kernel adds `values` as it adds any relative bias and
    gives `params` their gradient, sum over the scores of d loss / d score * jacobian, reduced
    per head in the dq kernel: no gradient by distance, and so no walk over the tiles a second
    time (which a bias learned per distance, T5's, needs).

    values [Hq, 2W + 1] (constant: not requiring grad), params [K, Hq] (K <= 4), jacobian
    [K, Hq, 2W + 1] = d values[h, d] / d params[k, h]. The window must hold every distance of
    the call: W >= max(Sq, Sk) - 1.
    """

    values: torch.Tensor
    params: torch.Tensor
    jacobian: torch.Tensor


def kernel_masks(key_padding_mask: torch.Tensor | None,
                 segment_ids: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None,
                 seqlen_k: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The masks as the kernel ops take them: the key mask uint8 [B, Sk] (from either accepted
    form of key_padding_mask), the segment ids int32 [B, S], or [B, Sq + Sk] for a (query ids,
    key ids) pair (the kernel reads the queries' ids, then the keys')."""
    key_mask = None
    if key_padding_mask is not None:
        # Not attention_reference.key_padding_to_bool: this package stays loadable on its own
        # (load_kernel_copy, scripts/kernel_report.py --kernel-copy).
        if key_padding_mask.dtype != torch.bool:
            positions = torch.arange(seqlen_k, device=key_padding_mask.device)
            key_padding_mask = positions[None, :] < key_padding_mask[:, None]  # (B, Sk)
        key_mask = key_padding_mask.contiguous().view(torch.uint8)  # (B, Sk)
    if isinstance(segment_ids, tuple):
        segment_ids = torch.cat(segment_ids, dim=1)  # (B, Sq + Sk)
    if segment_ids is not None:
        segment_ids = segment_ids.to(torch.int32).contiguous()
    return key_mask, segment_ids


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x itself where the kernels can read it in place (last stride 1), else a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    dropout_p: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    relative_bias: torch.Tensor | ParametricBias | None = None,
    return_lse: bool = False,
    dropout_seed: int | torch.Tensor | None = None,
):
    """Softmax(q k^T * scale + bias, masked) v, computed by the Triton kernels.

    q [B, Sq, Hq, D]; k, v [B, Sk, Hkv, D]. Returns out [B, Sq, Hq, D] (q's dtype), and with
    return_lse also the log-sum-exp float32 [B, Hq, Sq] (differentiable). See the package doc
    and `megatron_lite_kernels.attention_reference` for the exact semantics. Without
    `dropout_seed` (an int, or an integer tensor of one element), a seed is drawn on the
    device from torch's generator, so `torch.manual_seed` makes dropout reproducible (and
    neither needs a host round trip nor breaks a torch.compile graph).
    `relative_bias` [Hq, 2W + 1] (differentiable) adds relative_bias[h, clamp(j - i', -W, W) + W]:
    T5's bucketed bias, or any bias of the distance that is constant beyond W; a
    ParametricBias adds its values and gives its parameters their gradient.
    """
    check_inputs(q, k, v, alibi_slopes, relative_bias, key_padding_mask, segment_ids, dropout_p)
    batch, seqlen_q, _, head_dim = q.shape
    seqlen_k = k.shape[1]
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    seed = None  # (1,) int64 on the device
    if dropout_p > 0.0:
        seed = (torch.randint(0, 2**62, (1,), dtype=torch.int64, device=q.device)
                if dropout_seed is None else seed_tensor(dropout_seed, q.device))

    key_mask, segment_ids = kernel_masks(key_padding_mask, segment_ids, seqlen_k)
    if alibi_slopes is not None:
        alibi_slopes = alibi_slopes.to(torch.float32).contiguous()
    bias_params = bias_jacobian = None
    if isinstance(relative_bias, ParametricBias):
        relative_bias, bias_params, bias_jacobian = relative_bias
        bias_jacobian = bias_jacobian.to(torch.float32).contiguous()  # (K, Hq, 2W + 1)
    if relative_bias is not None:
        relative_bias = relative_bias.to(torch.float32).contiguous()  # (Hq, 2W + 1)

    attention = (flash_attn_forward_op if torch.compiler.is_compiling()
                 else EagerFlashAttention.apply)
    out, lse = attention(
        last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v),
        alibi_slopes, relative_bias, bias_params, bias_jacobian, key_mask, segment_ids,
        bool(causal), float(softmax_scale), float(dropout_p), seed,
    )
    return (out, lse) if return_lse else out
