"""The kernels as torch custom ops (torch.compile traces through them: fake implementations
and an autograd formula) and as a plain autograd Function for eager mode."""

from __future__ import annotations

from typing import Optional

import torch

from . import launch


@torch.library.custom_op("megatron_lite::flash_attn_forward", mutates_args=())
def flash_attn_forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    alibi_slopes: Optional[torch.Tensor], relative_bias: Optional[torch.Tensor],
    bias_params: Optional[torch.Tensor], bias_jacobian: Optional[torch.Tensor],
    key_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
    causal: bool, softmax_scale: float, dropout_p: float, dropout_seed: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, Sq, Hq, D] and lse float32 [B, Hq, Sq] of checked, normalised inputs.
    bias_params and bias_jacobian (a ParametricBias's, with relative_bias its values) only
    serve the backward."""
    return launch.forward(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                          softmax_scale, dropout_p, dropout_seed)


@flash_attn_forward_op.register_fake
def _(q, k, v, alibi_slopes, relative_bias, bias_params, bias_jacobian, key_mask, segment_ids,
      causal, softmax_scale, dropout_p, dropout_seed):
    batch, seqlen_q, num_heads, _ = q.shape
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            q.new_empty((batch, num_heads, seqlen_q), dtype=torch.float32))


@torch.library.custom_op("megatron_lite::flash_attn_backward", mutates_args=())
def flash_attn_backward_op(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, dlse: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor], relative_bias: Optional[torch.Tensor],
    bias_jacobian: Optional[torch.Tensor],
    key_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
    causal: bool, softmax_scale: float, dropout_p: float, dropout_seed: Optional[torch.Tensor],
    relative_bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (dk and dv summed over each GQA group), d relative_bias (empty if none;
    not computed, zeros, unless relative_bias_grad) and d bias_params (float32 [K, Hq], the
    jacobian contracted with the scores' gradient; empty without a jacobian)."""
    return launch.backward(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias,
                           bias_jacobian, key_mask, segment_ids, causal, softmax_scale,
                           dropout_p, dropout_seed, relative_bias_grad)


@flash_attn_backward_op.register_fake
def _(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias, bias_jacobian, key_mask,
      segment_ids, causal, softmax_scale, dropout_p, dropout_seed, relative_bias_grad):
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            torch.empty(k.shape, dtype=k.dtype, device=k.device),
            torch.empty(v.shape, dtype=v.dtype, device=v.device),
            q.new_empty(relative_bias.shape if relative_bias is not None else (0,),
                        dtype=torch.float32),
            q.new_empty(bias_jacobian.shape[:2] if bias_jacobian is not None else (0,),
                        dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    (q, k, v, alibi_slopes, relative_bias, bias_params, bias_jacobian, key_mask, segment_ids,
     causal, softmax_scale, dropout_p, seed) = inputs
    out, lse = output
    # An unused output's gradient arrives as None, not a tensor of zeros: most callers never
    # use lse, and its gradient would cost a fill, a read in delta and a bias-gradient term.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(q, k, v, out, lse, alibi_slopes, relative_bias, bias_jacobian,
                          key_mask, segment_ids, seed)
    ctx.options = (causal, softmax_scale, dropout_p)
    ctx.bias_params_dtype = None if bias_params is None else bias_params.dtype


def _backward_with(backward):
    """An autograd backward for the 13 forward inputs that runs `backward` (the custom op, or
    the plain launcher) on the saved tensors."""
    def run(ctx, dout, dlse):
        (q, k, v, out, lse, alibi_slopes, relative_bias, bias_jacobian, key_mask, segment_ids,
         seed) = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        # A bias that is a function of constants (Sandwich) needs no gradient kernel.
        relative_bias_grad = relative_bias is not None and ctx.needs_input_grad[4]
        if not ctx.needs_input_grad[5]:
            bias_jacobian = None
        dq, dk, dv, drel, dparams = backward(dout, q, k, v, out, lse, dlse, alibi_slopes,
                                             relative_bias, bias_jacobian, key_mask,
                                             segment_ids, *ctx.options, seed, relative_bias_grad)
        drel = drel.to(relative_bias.dtype) if relative_bias_grad else None
        dparams = dparams.to(ctx.bias_params_dtype) if bias_jacobian is not None else None
        return dq, dk, dv, None, drel, dparams, None, None, None, None, None, None, None
    return run


flash_attn_forward_op.register_autograd(_backward_with(flash_attn_backward_op),
                                         setup_context=_setup_context)


class EagerFlashAttention(torch.autograd.Function):
    """The same forward and backward without the custom-op dispatcher, whose Python overhead
    (tens of microseconds a call) shows at short sequences; torch.compile uses the custom op."""

    @staticmethod
    def forward(ctx, q, k, v, alibi_slopes, relative_bias, bias_params, bias_jacobian, key_mask,
                segment_ids, causal, softmax_scale, dropout_p, dropout_seed):
        inputs = (q, k, v, alibi_slopes, relative_bias, bias_params, bias_jacobian, key_mask,
                  segment_ids, causal, softmax_scale, dropout_p, dropout_seed)
        output = launch.forward(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids,
                                causal, softmax_scale, dropout_p, dropout_seed)
        _setup_context(ctx, inputs, output)
        return output

    backward = staticmethod(_backward_with(launch.backward))
