"""Launchers: the forward and the backward of checked, normalised inputs (see checks.py and
interface.py), as buffers, grids and kernel arguments."""

from __future__ import annotations

import torch
import triton

from . import buffers
from .backward import bwd_delta_kernel
from .constants import LOG2E
from .relative_bias import relative_bias_band
from .relative_bias_grad import walk_range
from .tuning import (
    BWD_KV_INTERPRETER_BLOCKS,
    INTERPRETER_BLOCKS,
    REL_GRAD_BLOCKS_PER_PROGRAM,
    bwd_kv_launch,
    bwd_q_launch,
    fwd_launch,
    head_block,
    rel_grad_launch,
    rel_grad_tile,
    seqlen_bucket,
)


def bsh_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """Batch, sequence and head strides of a [B, S, H, D] tensor whose last stride is 1."""
    return x.stride(0), x.stride(1), x.stride(2)


def _seed_pointer(seed: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """The dropout seed (int64 [1] on the device), or q, unread, without dropout."""
    return q if seed is None else seed


def _optional_args(q, k, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                   keys_major=False):
    """Pointers and strides of the optional inputs (an absent one points at q, unread; the
    relative bias as its band, with the causal mask if causal, keys_major for the dk/dv
    kernel), and the relative-bias scalars (W, band columns, band_start)."""
    slopes_stride = 0 if alibi_slopes is None or alibi_slopes.dim() == 1 else alibi_slopes.stride(0)
    band, rel_scalars = None, (0, 0, 0)
    if relative_bias is not None:
        band, band_start = relative_bias_band(relative_bias, q.shape[1], k.shape[1], q.dtype,
                                              keys_major=keys_major, causal=causal)
        rel_scalars = ((relative_bias.shape[1] - 1) // 2, band.shape[2], band_start)
    pointers = tuple(q if x is None else x for x in (alibi_slopes, band, key_mask, segment_ids))
    strides = (slopes_stride,
               0 if band is None else band.stride(0),
               0 if key_mask is None else key_mask.stride(0),
               0 if segment_ids is None else segment_ids.stride(0))
    return pointers, strides, rel_scalars


def segment_layout(segment_ids, q):
    """HAS_SEGMENTS: 0 without segment ids, 1 for one id per position of a self-attention
    ([B, S]), 2 for the queries' ids followed by the keys' ([B, Sq + Sk])."""
    if segment_ids is None:
        return 0
    return 1 if segment_ids.shape[1] == q.shape[1] else 2


def _common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p):
    """The constexpr arguments every attention kernel takes."""
    head_dim = q.shape[-1]
    return dict(
        CAUSAL=causal, HAS_ALIBI=alibi_slopes is not None, HAS_REL_BIAS=relative_bias is not None,
        HAS_KEY_MASK=key_mask is not None, HAS_SEGMENTS=segment_layout(segment_ids, q),
        HAS_DROPOUT=dropout_p > 0.0, HEAD_DIM=head_dim, BLOCK_D=head_block(head_dim),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )


def forward(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal, softmax_scale,
            dropout_p, seed):
    """out [B, Sq, Hq, D] and lse float32 [B, Hq, Sq]. seed: int64 [1] on the device, or None
    without dropout."""
    batch, seqlen_q, num_heads, _ = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    out = buffers.alloc(q.shape, q.dtype, q.device)
    lse = buffers.alloc((batch, num_heads, seqlen_q), torch.float32, q.device)
    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal)
    grid = lambda meta: (triton.cdiv(seqlen_q, meta["BLOCK_M"]), batch * num_heads)  # noqa: E731
    fwd_launch[grid](
        q, k, v, out, lse, *pointers,
        *bsh_strides(q), *bsh_strides(k), *bsh_strides(v), *bsh_strides(out), *strides,
        num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k, seqlen_bucket(seqlen_q, seqlen_k),
        *rel_scalars, softmax_scale * LOG2E.value, dropout_p, _seed_pointer(seed, q),
        **_common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p),
        **INTERPRETER_BLOCKS,
    )
    return out, lse


def backward(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias, bias_jacobian, key_mask,
             segment_ids, causal, softmax_scale, dropout_p, seed, relative_bias_grad=True):
    """dq, dk, dv, the relative bias gradient (fp32 [Hq, 2W + 1]; empty without a bias;
    relative_bias_grad=False: not computed, zeros) and the gradient of a ParametricBias's
    params (fp32 [K, Hq], from its jacobian [K, Hq, 2W + 1]; empty without one)."""
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    if dlse is not None:
        dlse = dlse.contiguous()  # read as a dense [B, H, Sq] buffer; autograd may hand an expand
    delta = buffers.alloc(lse.shape, torch.float32, lse.device)
    delta_rows = 64
    bwd_delta_kernel[(triton.cdiv(seqlen_q, delta_rows), batch * num_heads)](
        out, dout, lse if dlse is None else dlse, delta,
        *bsh_strides(out), *bsh_strides(dout), num_heads, seqlen_q,
        HAS_DLSE=dlse is not None, HEAD_DIM=head_dim, BLOCK_D=head_block(head_dim),
        BLOCK_M=delta_rows,
    )

    dq = buffers.alloc(q.shape, q.dtype, q.device)
    dk = buffers.alloc(k.shape, k.dtype, k.device)
    dv = buffers.alloc(v.shape, v.dtype, v.device)
    # Accumulated with atomics, so it starts at zero (and the autotuner re-zeroes it).
    drel = torch.zeros(relative_bias.shape if relative_bias is not None else (0,),
                       dtype=torch.float32, device=q.device)
    meta = _common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p)

    def scalars(rel_scalars):
        return (num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k,
                seqlen_bucket(seqlen_q, seqlen_k), *rel_scalars, softmax_scale * LOG2E.value,
                dropout_p, _seed_pointer(seed, q))

    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal, keys_major=True)
    kv_grid = lambda m: (triton.cdiv(seqlen_k, m["BLOCK_N"]), batch * num_kv_heads)  # noqa: E731
    bwd_kv_launch[kv_grid](
        q, k, v, dout, lse, delta, dk, dv, drel, *pointers,
        *bsh_strides(q), *bsh_strides(k), *bsh_strides(v), *bsh_strides(dout),
        *bsh_strides(dk), *bsh_strides(dv), *strides, *scalars(rel_scalars),
        **meta, **BWD_KV_INTERPRETER_BLOCKS,
    )
    if relative_bias is not None and relative_bias_grad:
        _launch_rel_bias_grad(q, k, v, dout, lse, delta, drel, pointers, strides, rel_scalars,
                              softmax_scale, dropout_p, seed, meta)
        if dlse is not None:
            # A row's ds sums to its lse gradient, not zero: drel[-W] takes the difference (it
            # is what the other entries leave, see flush_far_rel_bias_grad). Rows that see no
            # key have p = 0, so none.
            drel[:, 0] += torch.where(torch.isneginf(lse), 0.0, dlse).sum((0, 2))
    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal)
    num_jacobian = 0 if bias_jacobian is None else bias_jacobian.shape[0]
    dparams = torch.zeros((num_jacobian, num_heads), dtype=torch.float32, device=q.device)
    jacobian_band, jacobian_scale = (q, 1.0) if bias_jacobian is None else _jacobian_band(
        bias_jacobian, q, seqlen_k)
    q_grid = lambda m: (triton.cdiv(seqlen_q, m["BLOCK_M"]), batch * num_heads)  # noqa: E731
    bwd_q_launch[q_grid](
        q, k, v, dout, lse, delta, dq, *pointers, jacobian_band, dparams,
        *bsh_strides(q), *bsh_strides(k), *bsh_strides(v), *bsh_strides(dout),
        *bsh_strides(dq), *strides, jacobian_band.stride(0) * num_heads if num_jacobian else 0,
        *scalars(rel_scalars), **meta, NUM_JACOBIAN=num_jacobian, **INTERPRETER_BLOCKS,
    )
    return dq, dk, dv, drel, dparams * jacobian_scale


def _jacobian_band(bias_jacobian, q, seqlen_k):
    """A ParametricBias's jacobian [K, Hq, 2W + 1] as the dq kernel reads it: (a band per
    (parameter, head) [K * Hq, BAND_ROWS, C], laid out as the values' band (the same
    band_start) but without the causal mask (ds is zero there, and 0 * -inf would not be),
    the scale [K, Hq] of each). Each row is divided by its largest |entry| so that an fp16
    band (16-bit inputs) neither overflows where a derivative grows with the distance (KERPLE
    power's |d|^r2) nor loses the small entries; the kernel's sums are scaled back."""
    count, heads, entries = bias_jacobian.shape
    jacobian = bias_jacobian.reshape(count * heads, entries)
    scale = jacobian.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    band, _ = relative_bias_band(jacobian / scale, q.shape[1], seqlen_k, q.dtype)
    return band, scale.view(count, heads)


def _launch_rel_bias_grad(q, k, v, dout, lse, delta, drel, pointers, strides, rel_scalars,
                          softmax_scale, dropout_p, seed, meta):
    """Add the window zone's part of the relative bias's gradient to drel, after the dk/dv
    kernel added the far tiles' part (none with a causal mask). pointers, strides,
    rel_scalars: the dk/dv kernel's (key-major band)."""
    batch, seqlen_q, num_heads, _ = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    rel_window = rel_scalars[0]
    block_m, block_n = rel_grad_tile(meta["CAUSAL"], meta["HEAD_DIM"], seqlen_q, seqlen_k)
    first_walk, end_walk = walk_range(seqlen_q, seqlen_k, rel_window, meta["CAUSAL"],
                                      block_m, block_n)
    if end_walk == first_walk:  # no window tile: nothing to add
        return
    chunks = triton.cdiv(triton.cdiv(seqlen_k, block_n), REL_GRAD_BLOCKS_PER_PROGRAM)
    kernel_meta = {key: value for key, value in meta.items() if key != "HAS_REL_BIAS"}
    # The autotuner zeroes its output between trials, which must not drop drel's far part:
    # a buffer of its own where there is one.
    window_part = drel if meta["CAUSAL"] else torch.zeros_like(drel)
    rel_grad_launch[(end_walk - first_walk, chunks, batch * num_heads)](
        q, k, v, dout, lse, delta, window_part, *pointers,
        *bsh_strides(q), *bsh_strides(k), *bsh_strides(v), *bsh_strides(dout), *strides,
        num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k,
        seqlen_bucket(seqlen_q, seqlen_k), *rel_scalars, softmax_scale * LOG2E.value, dropout_p,
        _seed_pointer(seed, q), first_walk, REL_GRAD_BLOCKS_PER_PROGRAM,
        **kernel_meta, BLOCK_M=block_m, BLOCK_N=block_n,
    )
    if window_part is not drel:
        drel += window_part
