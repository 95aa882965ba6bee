"""FlashAttention-2 in Triton: forward and backward, with masks, ALiBi and dropout in the kernel.

Algorithm (Dao, 2023). The forward walks the key/value blocks of one block of query rows,
keeping a running row maximum and row sum (online softmax, in base 2), and stores the output and
the log-sum-exp (lse) of each row: nothing of size Sq x Sk ever reaches memory, and the backward
needs only q, k, v, out, lse and the incoming gradient, so memory is linear in the sequence length.
The backward runs three kernels: `delta = rowsum(dout * out)`; one program per key block that
recomputes the probabilities of every query block that sees it and accumulates dk and dv in
registers (summed over the query heads of a GQA group, so k and v are never repeated); one
program per query block that accumulates dq (and a fourth for a relative bias's gradient, below).
dq, dk and dv use no atomics and are deterministic.

Supported:
- q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D] with Hq % Hkv == 0 (GQA / MQA), any strides whose
  last one is 1 (views of a fused qkv projection are read in place), fp16, bf16 or fp32
  (accumulation always fp32; fp32 inputs use exact fp32 matrix products, not tf32).
- Head dims 1..256, padded internally to a power of two of at least 16.
- causal, aligned bottom-right when Sq != Sk (FlashAttention >= 2.1): query i sees key j iff
  j <= i + Sk - Sq.
- key padding (bool [B, Sk], True = real key, or key lengths [B]) and packed-document masking
  (segment ids [B, S] of a self-attention, or a pair of query ids [B, Sq] and key ids [B, Sk],
  which the kernel reads from one [B, Sq + Sk] row): a query row that sees no key gets zeros,
  lse = -inf and zero gradients.
- ALiBi from per-head slopes ([Hq] or [B, Hq]): bias -slope * |i + Sk - Sq - j|, computed in the
  kernel (with causal masking this is the usual causal ALiBi up to a per-row constant).
- Attention dropout from a counter-based RNG (Philox on (key, query, batch*head) counters and a
  seed): the backward regenerates the same keep-mask, and `dropout_keep_mask` returns it.
- A learned relative position bias by distance (T5's buckets, gathered per distance by the
  caller into [Hq, 2W + 1]): relative_bias[h, clamp(j - i', -W, W) + W], added in the kernel
  (tiles beyond the window add its end value, tiles across it read a per-call Toeplitz band of
  it, fp16 for 16-bit inputs; with a causal mask the band also holds the mask, -inf above the
  diagonal, so those tiles skip the mask arithmetic). Its gradient: a fourth kernel walks the
  tiles across the window along their diagonals of tiles, where every tile has the same
  distances, so a walk's ds tiles add up in registers and are reduced by distance once
  (recomputing two of the tiles' matrix products); the dk/dv kernel sums the far tiles' ds
  right of the window (entry +W; without a causal mask); entry -W is minus the sum of all
  others, since every row of ds sums to zero.
- A bias by distance that is a function of a few parameters per head (KERPLE): a
  ParametricBias (values, params [K, Hq], jacobian [K, Hq, 2W + 1] by distance) as
  relative_bias. The values go in as above; the params' gradient, sum of ds * jacobian, is
  reduced per head in the dq kernel from bands of the jacobian, so such a bias needs no
  gradient by distance and no walk (a full-range window has no far tiles to sum either).
- The gradient of the returned lse, folded into delta (ds = p * (dp - delta + dlse)).

Limits: on a CPU the kernels run only under TRITON_INTERPRET=1 (the Triton interpreter, slow;
bf16 matrix products are wrong there, a known interpreter bug). ALiBi slopes get no gradient.

Layout, in the order a reader meets it:
- interface.py: flash_attn_func (checks.py checks its arguments, support.py says where the
  kernels run), then op.py: the custom ops and the autograd Function;
- launch.py: buffers, grids and arguments of every launch; tuning.py: the tile tables and the
  autotuned kernels;
- forward.py, backward.py (delta, dk/dv, dq), common.py (what both share: masks, biases,
  dropout's keep-mask);
- relative_bias.py (the band and the zones of a block walk) and relative_bias_grad.py (the
  gradient's walk kernel); dropout.py (the keep-mask written out); constants.py.
"""
from .constants import MAX_HEAD_DIM
from .dropout import dropout_keep_mask
from .interface import ParametricBias, flash_attn_func
from .op import flash_attn_backward_op, flash_attn_forward_op
from .support import FlashAttentionUnavailable, flash_attention_supported

__all__ = [
    "MAX_HEAD_DIM",
    "FlashAttentionUnavailable",
    "ParametricBias",
    "dropout_keep_mask",
    "flash_attention_supported",
    "flash_attn_backward_op",
    "flash_attn_forward_op",
    "flash_attn_func",
]
