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
  (segment ids [B, S], self-attention): a query row that sees no key gets zeros, lse = -inf and
  zero gradients.
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
- The gradient of the returned lse, folded into delta (ds = p * (dp - delta + dlse)).

Limits: on a CPU the kernels run only under TRITON_INTERPRET=1 (the Triton interpreter, slow;
bf16 matrix products are wrong there, a known interpreter bug). ALiBi slopes get no gradient.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

# Triton picks interpreted or compiled kernels when `triton.jit` runs, i.e. at this import.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256


class FlashAttentionUnavailable(RuntimeError):
    """The Triton kernel cannot run on these tensors' device."""


def flash_attention_supported(device: torch.device | str) -> bool:
    """True where the kernel can run: a CUDA device, or any device under TRITON_INTERPRET=1."""
    return torch.device(device).type == "cuda" or INTERPRETER


# --------------------------------------------------------------------------------------------
# Triton helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _dropout_keep(seed, rows, cols, batch_head, dropout_p):
    """Keep-mask (True = kept) of the elements at rows x cols (broadcastable int32 tensors)."""
    # One Philox draw per element; the counters identify the element, so the forward, both
    # backward kernels and `dropout_keep_mask` all see the same number.
    zero = rows * 0 + cols * 0
    c0 = (cols + zero).to(tl.uint32, bitcast=True)
    c1 = (rows + zero).to(tl.uint32, bitcast=True)
    c2 = (zero + batch_head).to(tl.uint32, bitcast=True)
    r, _, _, _ = tl.philox(seed, c0, c1, c2, zero.to(tl.uint32, bitcast=True))
    r = r.to(tl.int32, bitcast=True)
    uniform = tl.where(r < 0, -r - 1, r).to(tl.float32) * 4.6566127342e-10  # [0, 1)
    return uniform >= dropout_p


@triton.jit
def _clamp(distance, rel_window):
    """distance clamped to [-W, W], the relative bias's window."""
    return tl.minimum(tl.maximum(distance, -rel_window), rel_window)


# The relative bias in the kernels. Every element of a tile wholly beyond the window on one side
# reads the same clamped end entry of the [Hq, 2W + 1] bias: such tiles (most of them, for long
# sequences) add a constant. Tiles across the window read a Toeplitz block of the band
# [Hq, 128, C] (see _relative_bias_band) with vector loads, keys contiguous. The loops run in two
# zones: the blocks across the window, then the far blocks of both sides in one loop. A per-tile
# branch instead makes the compiler convert the score tile between layouts every iteration, and a
# loop per side costs a pipeline fill per loop (it showed at N = 2048).


@triton.jit
def _window_blocks(diagonal, rel_window, OWN_BLOCK: tl.constexpr, WALK_BLOCK: tl.constexpr):
    """Where a program's loop crosses the relative bias's window: (near_lo, near_hi).

    A program owns OWN_BLOCK rows (or keys) starting at `diagonal` on the distance-0 line and
    walks blocks of WALK_BLOCK along the other axis. Walked blocks that start before near_lo lie
    wholly beyond the window on one side, those from near_hi on wholly beyond the other side.
    """
    last_far = diagonal - rel_window - WALK_BLOCK + 1  # the last block start wholly beyond
    first_far = diagonal + OWN_BLOCK - 1 + rel_window  # the first block start wholly beyond
    near_lo = (tl.maximum(last_far, -1) + WALK_BLOCK) // WALK_BLOCK * WALK_BLOCK
    near_hi = tl.cdiv(tl.maximum(first_far, 0), WALK_BLOCK) * WALK_BLOCK
    return near_lo, near_hi


@triton.jit
def _zone_bounds(lo, hi, near, ZONE: tl.constexpr, SPLIT: tl.constexpr):
    """(loop_lo, loop_hi, hole, hole_width) of the loop over blocks of [lo, hi) in ZONE.

    Unsplit: all of [lo, hi). Split at near = (near_lo, near_hi) from _window_blocks: zone 0
    walks the blocks across the window; zone 1 the far blocks of both sides, its loop index
    jumping hole_width ahead from `hole` on (the block start is index + hole_width there).
    """
    near_lo = tl.minimum(tl.maximum(near[0], lo), hi)
    near_hi = tl.minimum(tl.maximum(near[1], near_lo), hi)
    if not SPLIT:
        return lo, hi, hi, 0
    elif ZONE == 0:
        return near_lo, near_hi, near_hi, 0
    else:
        return lo, hi - (near_hi - near_lo), near_lo, near_hi - near_lo


@triton.jit
def _with_edges(near, edges, WIDEN: tl.constexpr):
    """near (from _window_blocks) widened to hold the edge blocks [edges[0], edges[1]) if WIDEN:
    zone 0 then walks them with the edge mask. With a causal mask they cross the diagonal, so
    they lie across the window anyway; one loop instead of two saves a pipeline fill."""
    if WIDEN:
        return tl.minimum(near[0], edges[0]), tl.maximum(near[1], edges[1])
    else:
        return near


@triton.jit
def _block_start(index, hole, hole_width, REL_ZONES: tl.constexpr):
    """The block start a zone loop's index stands for (see _zone_bounds)."""
    if REL_ZONES:
        return index + tl.where(index >= hole, hole_width, 0)
    else:
        return index


@triton.jit
def _band_tile(band_row, start_m, start_n, band_start, band_cols, tile_offsets,
               QUERIES: tl.constexpr, KEYS: tl.constexpr):
    """Pointers to the band entries of the tile of QUERIES queries from start_m and KEYS keys
    from start_n: its first key's column, start_n - start_m + band_start, a multiple of 16
    (vector loads), clamped into the band. Exact for any tile: one past either end lies wholly
    beyond the window, as do the band's first and last KEYS columns."""
    tl.static_assert(QUERIES <= 128 and QUERIES + KEYS <= 256, "tile larger than the band allows")
    col = tl.minimum(tl.maximum(start_n - start_m + band_start, 0), band_cols - KEYS)
    return band_row + tl.multiple_of(col, 16) + tile_offsets


@triton.jit
def _rel_bias_ends(band_row, band_cols, HAS_REL_BIAS: tl.constexpr):
    """log2(e) * (bias[-W], bias[+W]), what far tiles add: the band's first and last entries."""
    if HAS_REL_BIAS:
        return tl.load(band_row).to(tl.float32), tl.load(band_row + band_cols - 1).to(tl.float32)
    else:
        return 0.0, 0.0


@triton.jit
def _bias_and_mask(
    s, rows, cols, band_tile, rel_constant, seqlen_q, seqlen_k, alibi_slope, key_mask_row,
    seg_row,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    REL_FROM_BAND: tl.constexpr, HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr,
    MASK_EDGES: tl.constexpr,
):
    """Add the positional bias to log2-scaled scores s and set invisible ones to -inf.

    rows and cols are broadcastable index tensors ([M, 1] x [1, N] or [1, M] x [N, 1]), so the
    same code serves the forward ([rows, cols]) and the transposed backward ([cols, rows]).
    REL_FROM_BAND: read the relative bias through band_tile (pointers from _band_tile, laid out
    as s); otherwise the tile lies beyond the window and adds rel_constant (log2-scaled).
    MASK_EDGES: the tile crosses the causal diagonal or the end of the keys. With a causal mask
    the band holds it (see _relative_bias_band): tiles that read the band skip the comparison.
    """
    if HAS_ALIBI:  # alibi_slope is -slope * log2(e)
        s += alibi_slope * tl.abs(rows + (seqlen_k - seqlen_q) - cols).to(tl.float32)
    if HAS_REL_BIAS:
        if REL_FROM_BAND:
            s += tl.load(band_tile).to(tl.float32)
        else:
            s += rel_constant
    if MASK_EDGES:
        visible = cols < seqlen_k
        if CAUSAL and not (HAS_REL_BIAS and REL_FROM_BAND):
            visible = visible & (cols <= rows + (seqlen_k - seqlen_q))
        s = tl.where(visible, s, float("-inf"))
    if HAS_KEY_MASK:
        real_key = tl.load(key_mask_row + cols, mask=cols < seqlen_k, other=0)
        s = tl.where(real_key != 0, s, float("-inf"))
    if HAS_SEGMENTS:
        seg_q = tl.load(seg_row + rows, mask=rows < seqlen_q, other=-1)
        seg_k = tl.load(seg_row + cols, mask=cols < seqlen_k, other=-2)
        s = tl.where(seg_q == seg_k, s, float("-inf"))
    return s


@triton.jit
def _scores(
    q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row, band_cols,
    band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope, key_mask_row, seg_row,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    REL_FROM_BAND: tl.constexpr, HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr,
    MASK_EDGES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """The forward's and the dq kernel's log2-scaled scores of queries q (rows) against keys k
    (cols), biased and masked: (BLOCK_M, BLOCK_N). A far block before `hole` (see
    _zone_bounds) adds rel_ends[0], one after it rel_ends[1]."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    band_tile = _band_tile(band_row, start_m, start_n, band_start, band_cols, band_offsets,
                           BLOCK_M, BLOCK_N)
    return _bias_and_mask(s, rows, cols[None, :], band_tile,
                          tl.where(start_n < hole, rel_ends[0], rel_ends[1]), seqlen_q, seqlen_k,
                          alibi_slope, key_mask_row, seg_row, CAUSAL, HAS_ALIBI, HAS_REL_BIAS,
                          REL_FROM_BAND, HAS_KEY_MASK, HAS_SEGMENTS, MASK_EDGES)


@triton.jit
def _query_block(seqlen_q, num_heads, kv_group, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """This program's (batch, head, kv head, batch*head, first row) in a query-block grid."""
    m_block = tl.program_id(0)
    if CAUSAL:  # the last query blocks see the most keys: start them first
        m_block = tl.cdiv(seqlen_q, BLOCK_M) - 1 - m_block
    batch_head = tl.program_id(1)
    h = batch_head % num_heads
    return batch_head // num_heads, h, h // kv_group, batch_head, m_block * BLOCK_M


@triton.jit
def _alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI: tl.constexpr):
    """-slope * log2(e) of this head (0 without ALiBi): the factor of |i' - j| in log2 units."""
    if HAS_ALIBI:
        return tl.load(Slopes + b * stride_slopes_b + h).to(tl.float32) * -1.4426950408889634
    else:
        return 0.0


@triton.jit
def _load_tile(ptrs, mask, USE_MASK: tl.constexpr):
    """Masked load (zeros outside) only where a mask is needed: unmasked loads vectorise best."""
    if USE_MASK:
        return tl.load(ptrs, mask=mask, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr):
    """Key blocks that rows [start_m, start_m + BLOCK_M) see: [0, full) need no edge mask,
    [full, end) do."""
    if CAUSAL:
        # Row i sees keys j <= i + Sk - Sq; the first row of the block sees the fewest.
        end = tl.minimum(seqlen_k, tl.maximum(start_m + BLOCK_M + seqlen_k - seqlen_q, 0))
        full = (start_m + seqlen_k - seqlen_q + 1) // BLOCK_N * BLOCK_N
    else:
        end = seqlen_k
        full = seqlen_k
    full = tl.minimum(tl.maximum(full, 0), seqlen_k // BLOCK_N * BLOCK_N)
    full = tl.minimum(full, end)
    return full, end


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
    start_m, lo, hi, edges, offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale, alibi_slope,
    band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row, seg_row, seed,
    batch_head, dropout_p,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    MASK_EDGES: tl.constexpr, REL_ZONES: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online softmax over key blocks [lo, hi) for the query block at start_m.

    REL_ZONES: walk the relative bias's zones (see _zone_bounds); rel_ends = log2(e) *
    (bias[-W], bias[+W]), what the far blocks left and right of the window add. MASK_EDGES:
    the blocks need the edge mask; with REL_ZONES only the blocks [edges[0], edges[1]) do, and
    zone 0 takes them."""
    rows = (start_m + offs_m)[:, None]  # (BLOCK_M, 1)
    near = _window_blocks(start_m + seqlen_k - seqlen_q, rel_window, BLOCK_M, BLOCK_N)
    near = _with_edges(near, edges, MASK_EDGES and REL_ZONES)
    # (BLOCK_M, BLOCK_N)
    band_offsets = offs_m[:, None] * tl.multiple_of(band_cols, 16) + offs_n[None, :]
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = _zone_bounds(lo, hi, near, zone, REL_ZONES)
        # Edge blocks with a relative bias at two stages, the zones at the tiles' own (three):
        # the combination measured fastest (docs/benchmarks.md).
        for index in tl.range(loop_lo, loop_hi, BLOCK_N,
                              num_stages=2 if HAS_REL_BIAS and MASK_EDGES and zone == 0 else None):
            start_n = _block_start(index, hole, hole_width, REL_ZONES)
            cols = start_n + offs_n  # (BLOCK_N,)
            kv_mask = (cols[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
            k = _load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :], kv_mask,
                           (MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            s = _scores(q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row,
                        band_cols, band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope,
                        key_mask_row, seg_row, CAUSAL, HAS_ALIBI, HAS_REL_BIAS, zone == 0,
                        HAS_KEY_MASK, HAS_SEGMENTS, MASK_EDGES and zone == 0, BLOCK_M, BLOCK_N,
                        DOT_PRECISION)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row with no visible key so far keeps m = -inf; subtract 0 instead of inf - inf.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            if HAS_DROPOUT:
                p = tl.where(_dropout_keep(seed, rows, cols[None, :], batch_head, dropout_p), p,
                             0.0)
            v = _load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :], kv_mask,
                           (MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(
    Q, K, V, Out, Lse, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_ob, stride_om, stride_oh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr,
):
    b, h, h_kv, batch_head, start_m = _query_block(seqlen_q, num_heads, kv_group, BLOCK_M, CAUSAL)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh

    q_mask = ((start_m + offs_m)[:, None] < seqlen_q) & (offs_d[None, :] < HEAD_DIM)
    q = _load_tile(q_base + (start_m + offs_m)[:, None] * stride_qm + offs_d[None, :], q_mask,
                   not EVEN_M or BLOCK_D != HEAD_DIM)

    alibi_slope = _alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI)
    band_row = RelBias + h * stride_relbias_h
    rel_ends = _rel_bias_ends(band_row, band_cols, HAS_REL_BIAS)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full, end = _causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, CAUSAL)
    # With a causal relative bias, the first call's window zone also takes the diagonal's
    # blocks (see _with_edges) and the second call has none left.
    merge_edges: tl.constexpr = CAUSAL and HAS_REL_BIAS
    split = end if merge_edges else full
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        start_m, 0, split, (full, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT, merge_edges,
        HAS_REL_BIAS,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        start_m, split, end, (split, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT, True, False,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
    )

    blind = l_i == 0.0  # rows that saw no key: output 0, lse -inf
    out = acc / tl.where(blind, 1.0, l_i)[:, None]
    if HAS_DROPOUT:
        out = out * (1.0 / (1.0 - dropout_p))
    lse = tl.where(blind, float("-inf"), (m_i + tl.math.log2(tl.where(blind, 1.0, l_i))) * 0.6931471805599453)

    rows = start_m + offs_m
    tl.store(Lse + batch_head.to(tl.int64) * seqlen_q + rows, lse, mask=rows < seqlen_q)
    o_base = Out + b.to(tl.int64) * stride_ob + h * stride_oh
    tl.store(o_base + rows[:, None] * stride_om + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=q_mask)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _bwd_delta_kernel(
    Out, DOut, DLse, Delta,
    stride_ob, stride_om, stride_oh, stride_dob, stride_dom, stride_doh,
    num_heads, seqlen_q,
    HAS_DLSE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta = rowsum(dout * out) - dlse, in fp32, [B, H, Sq]."""
    batch_head = tl.program_id(1)
    b = batch_head // num_heads
    h = batch_head % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < seqlen_q) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(Out + b.to(tl.int64) * stride_ob + h * stride_oh + rows[:, None] * stride_om
                + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DOut + b.to(tl.int64) * stride_dob + h * stride_doh + rows[:, None] * stride_dom
                 + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    delta = tl.sum(o * do, axis=1)
    row_ptrs = batch_head.to(tl.int64) * seqlen_q + rows
    if HAS_DLSE:
        delta -= tl.load(DLse + row_ptrs, mask=rows < seqlen_q, other=0.0)
    tl.store(Delta + row_ptrs, delta, mask=rows < seqlen_q)


@triton.jit
def _load_lse(Lse, row_ptrs, rows, seqlen_q):
    """lse of the rows, +inf for rows past the end or without a visible key, so p = 0 there."""
    lse = tl.load(Lse + row_ptrs, mask=rows < seqlen_q, other=float("inf"))
    return tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634


@triton.jit
def _kv_near(start_n, seqlen_q, seqlen_k, rel_window, edges, WIDEN: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A key block's window zone as query blocks (near_lo, near_hi), before clamping to its
    rows, widened to the edge blocks if WIDEN: the dk/dv kernel's split, which the
    relative-bias gradient kernel repeats."""
    near = _window_blocks(start_n - (seqlen_k - seqlen_q), rel_window, BLOCK_N, BLOCK_M)
    return _with_edges(near, edges, WIDEN)


@triton.jit
def _key_block_rows(start_n, seqlen_q, seqlen_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    """The query rows of the key block at start_n: (first_row, band_end, masked_end, last_rows).

    Row i sees key j iff i >= j - (Sk - Sq). Rows before first_row see none of the block; rows
    from band_end on see all of it, so only [first_row, band_end) needs the causal mask, and
    every row needs the edge mask ([first_row, masked_end)) when the block runs past the last
    key. last_rows: the query rows rounded up to whole blocks."""
    last_rows = tl.cdiv(seqlen_q, BLOCK_M) * BLOCK_M
    if CAUSAL:
        first_row = tl.maximum(start_n - (seqlen_k - seqlen_q), 0) // BLOCK_M * BLOCK_M
        band_end = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - (seqlen_k - seqlen_q), 0),
                           BLOCK_M) * BLOCK_M
        band_end = tl.minimum(band_end, last_rows)
    else:
        first_row = 0
        band_end = 0
    masked_end = tl.where(start_n + BLOCK_N > seqlen_k, last_rows, band_end)
    return first_row, band_end, masked_end, last_rows


@triton.jit
def _query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row, delta_row, rows, offs_d,
                 seqlen_q, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """q and dout (BLOCK_M, BLOCK_D) of the query rows, zeros past the end; their lse (log2
    units, +inf past the end) and delta."""
    q_mask = rows[:, None] < seqlen_q
    if BLOCK_D != HEAD_DIM:
        q_mask = q_mask & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(do_base + rows[:, None] * stride_dom + offs_d[None, :], mask=q_mask, other=0.0)
    lse = _load_lse(lse_row, rows, rows, seqlen_q)
    delta = tl.load(delta_row + rows, mask=rows < seqlen_q, other=0.0)
    return q, do, lse, delta


@triton.jit
def _probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head, dropout_p,
                  HAS_DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """From biased, masked, log2-scaled scores s_t (BLOCK_N keys, BLOCK_M queries): (p^T as dv
    takes it, i.e. with dropout applied; ds^T = d loss / d score), both (BLOCK_N, BLOCK_M)."""
    p_t = tl.math.exp2(s_t - lse[None, :])
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
    if HAS_DROPOUT:
        # 1 / (1 - p) where kept, else 0. A float, not the bool mask: sm_90 compilation of a
        # kernel with a gather fails when it moves a bool tile through shared memory.
        keep_scale = tl.where(_dropout_keep(seed, rows[None, :], cols, batch_head, dropout_p),
                              1.0 / (1.0 - dropout_p), 0.0)
        return p_t * keep_scale, p_t * (dp_t * keep_scale - delta[None, :])
    else:
        return p_t, p_t * (dp_t - delta[None, :])


@triton.jit
def _bwd_kv_inner(
    dk, dv, k, v, q_base, do_base, stride_qm, stride_dom, lse_row, delta_row,
    far_right, start_n, lo, hi, edges, offs_m, offs_n, offs_d,
    seqlen_q, seqlen_k, qk_scale, alibi_slope, band_row, band_cols, band_start, rel_window,
    rel_ends, key_mask_row, seg_row, seed, batch_head, dropout_p,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    MASK_EDGES: tl.constexpr, REL_ZONES: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Accumulate dk, dv of one key block over query blocks [lo, hi), working transposed:
    (BLOCK_N, BLOCK_M) tiles, so that p^T and ds^T feed the matrix products directly.

    With a relative bias, in zones as in _fwd_inner; with a causal mask the diagonal's blocks
    [edges[0], edges[1]) join the window zone. Walking down the queries, the far blocks before
    the window see the keys on its right: rel_ends = log2(e) * (bias[+W], bias[-W]). Without
    a causal mask, those blocks' part of the gradient of bias[+W] collects per key in
    far_right; the window zone's part comes from _rel_bias_grad_kernel, and bias[-W]'s from
    the rows of ds summing to zero (see _flush_far_rel_bias_grad)."""
    cols = (start_n + offs_n)[:, None]  # (BLOCK_N, 1)
    near = _kv_near(start_n, seqlen_q, seqlen_k, rel_window, edges,
                    CAUSAL and MASK_EDGES and REL_ZONES, BLOCK_M, BLOCK_N)
    # (BLOCK_N, BLOCK_M): the key-major band, queries contiguous like the tile's rows
    band_offsets = offs_n[:, None] * tl.multiple_of(band_cols, 16) + offs_m[None, :]
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = _zone_bounds(lo, hi, near, zone, REL_ZONES)
        # Two stages with a relative bias, except for the causal far zone (no gradient sums
        # there): measured fastest (docs/benchmarks.md).
        for index in tl.range(loop_lo, loop_hi, BLOCK_M,
                              num_stages=2 if HAS_REL_BIAS and (zone == 0 or not CAUSAL)
                              else None):
            start_m = _block_start(index, hole, hole_width, REL_ZONES)
            right_of_window = start_m < hole  # for the far zone
            rows = start_m + offs_m  # (BLOCK_M,)
            q, do, lse, delta = _query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row,
                                             delta_row, rows, offs_d, seqlen_q, HEAD_DIM, BLOCK_D)
            s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
            s_t = s_t * qk_scale
            s_t = _bias_and_mask(
                s_t, rows[None, :], cols,
                _band_tile(band_row, start_n, start_m, band_start, band_cols, band_offsets,
                           BLOCK_N, BLOCK_M),
                tl.where(right_of_window, rel_ends[0], rel_ends[1]), seqlen_q, seqlen_k,
                alibi_slope, key_mask_row, seg_row, CAUSAL, HAS_ALIBI, HAS_REL_BIAS,
                zone == 0, HAS_KEY_MASK, HAS_SEGMENTS, MASK_EDGES and zone == 0)
            p_t, ds_t = _probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head,
                                      dropout_p, HAS_DROPOUT, DOT_PRECISION)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
            if HAS_REL_BIAS and REL_ZONES and zone == 1 and not CAUSAL:
                # wholly beyond the window: every element's gradient goes to one end entry
                far_right += tl.where(right_of_window, tl.sum(ds_t, axis=1), 0.0)
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    return dk, dv, far_right


@triton.jit
def _flush_far_rel_bias_grad(drel_row, far_right, cols, seqlen_k, rel_window):
    """Add a key block's far-tile sums for bias[+W] (per key, see _bwd_kv_inner) to drel[+W],
    and subtract them from drel[-W].

    Every row of ds sums to zero (sum_j p_ij (dp_ij - delta_i) = delta_i - delta_i; the lse
    gradient's share is added by the launcher), so drel[-W], the sum over all elements at
    distance -W or beyond, is minus the sum over all the others: every kernel that adds to the
    other entries subtracts as much from drel[-W], and no kernel sums the elements beyond the
    window's left end (with a causal mask, all far tiles). Keys past the end are left out: with
    a relative bias the far tiles of a last, partial key block are not masked (only their dk,
    dv rows, never stored, and these sums see those keys)."""
    total = tl.sum(tl.where(cols < seqlen_k, far_right, 0.0), axis=0)
    tl.atomic_add(drel_row + 2 * rel_window, total, sem="relaxed")
    tl.atomic_add(drel_row, -total, sem="relaxed")


@triton.jit
def _diagonal_sums(x, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Sums of x (ROWS, COLS), COLS <= ROWS, along its diagonals a - b, as two
    (ROWS // COLS, COLS) tensors: [block, rho] sums a - b = COLS * block - rho over the rows
    a = COLS * block + a' with a' + rho < COLS, then a - b = COLS * (block + 1) - rho over the
    others.

    Rotating each row a left by a % COLS (one gather along the rows) puts x[a, (a + rho) % COLS]
    in column rho: its distance a - b is a - a % COLS - rho, plus COLS where a % COLS + rho
    wrapped past the row's end.
    """
    a = tl.arange(0, ROWS)[:, None] % COLS
    rho = tl.arange(0, COLS)[None, :]
    rotated = tl.reshape(tl.gather(x, (a + rho) % COLS, axis=1), [ROWS // COLS, COLS, COLS])
    wraps = tl.reshape(tl.broadcast_to(a + rho >= COLS, [ROWS, COLS]), [ROWS // COLS, COLS, COLS])
    return (tl.sum(tl.where(wraps, 0.0, rotated), axis=1),
            tl.sum(tl.where(wraps, rotated, 0.0), axis=1))


@triton.jit
def _bwd_kv_kernel(
    Q, K, V, DOut, Lse, Delta, DK, DV, DRelBias, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_dkb, stride_dkn, stride_dkh,
    stride_dvb, stride_dvn, stride_dvh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per (key block, batch, kv head): dk and dv summed over the head's group, and
    without a causal mask the far tiles' part of the relative bias's gradient."""
    start_n = tl.program_id(0) * BLOCK_N
    batch_kv_head = tl.program_id(1)
    num_kv_heads = num_heads // kv_group
    b = batch_kv_head // num_kv_heads
    h_kv = batch_kv_head % num_kv_heads

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    cols = start_n + offs_n
    kv_mask = (cols[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
    k = tl.load(K + b.to(tl.int64) * stride_kb + h_kv * stride_kh + cols[:, None] * stride_kn
                + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b.to(tl.int64) * stride_vb + h_kv * stride_vh + cols[:, None] * stride_vn
                + offs_d[None, :], mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b

    first_row, band_end, masked_end, last_rows = _key_block_rows(start_n, seqlen_q, seqlen_k,
                                                                 CAUSAL, BLOCK_M, BLOCK_N)
    # With a relative bias, one call walks all rows in zones; the first zone (the window, and
    # with a causal mask the diagonal's blocks) takes the edge mask. Past the last key nothing
    # else needs it here: those keys' dk, dv rows are never stored, and the far sums drop them.
    # _rel_bias_grad_kernel repeats this split.
    merge_edges: tl.constexpr = HAS_REL_BIAS
    split = last_rows if merge_edges else masked_end
    edges = (first_row, band_end) if merge_edges else (first_row, masked_end)

    for g in range(0, kv_group):
        h = h_kv * kv_group + g
        batch_head = b * num_heads + h
        q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
        do_base = DOut + b.to(tl.int64) * stride_dob + h * stride_doh
        lse_row = Lse + batch_head.to(tl.int64) * seqlen_q
        delta_row = Delta + batch_head.to(tl.int64) * seqlen_q
        alibi_slope = _alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI)
        band_row = RelBias + h * stride_relbias_h
        rel_ends = _rel_bias_ends(band_row, band_cols, HAS_REL_BIAS)  # (bias[+W], bias[-W])
        far_right = tl.zeros([BLOCK_N], dtype=tl.float32)  # d bias[+W] from far tiles, per key
        dk, dv, far_right = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, stride_qm, stride_dom, lse_row, delta_row,
            far_right, start_n, first_row, split, edges, offs_m, offs_n, offs_d,
            seqlen_q, seqlen_k, qk_scale, alibi_slope, band_row, band_cols, band_start,
            rel_window, rel_ends, key_mask_row, seg_row, seed, batch_head, dropout_p,
            CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT,
            CAUSAL or not merge_edges, merge_edges,
            HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
        )
        dk, dv, far_right = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, stride_qm, stride_dom, lse_row, delta_row,
            far_right, start_n, split, last_rows, (split, split), offs_m, offs_n,
            offs_d, seqlen_q, seqlen_k, qk_scale, alibi_slope, band_row, band_cols, band_start,
            rel_window, rel_ends, key_mask_row, seg_row, seed, batch_head, dropout_p,
            CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT, False,
            HAS_REL_BIAS,
            HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
        )
        if HAS_REL_BIAS and not CAUSAL:
            _flush_far_rel_bias_grad(DRelBias + h * (2 * rel_window + 1), far_right, cols,
                                     seqlen_k, rel_window)

    # s was scaled by softmax_scale * log2(e) for exp2; dk needs softmax_scale only.
    dk = dk * (qk_scale * 0.6931471805599453)
    tl.store(DK + b.to(tl.int64) * stride_dkb + h_kv * stride_dkh + cols[:, None] * stride_dkn
             + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + b.to(tl.int64) * stride_dvb + h_kv * stride_dvh + cols[:, None] * stride_dvn
             + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _window_zone(start_n, seqlen_q, seqlen_k, rel_window, CAUSAL: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The query rows [zone_lo, zone_hi) of the dk/dv kernel's window zone (its first zone,
    which reads the band) for the key block at start_n, with BLOCK_M x BLOCK_N tiles: whole
    query blocks."""
    first_row, band_end, _, last_rows = _key_block_rows(start_n, seqlen_q, seqlen_k, CAUSAL,
                                                        BLOCK_M, BLOCK_N)
    near = _kv_near(start_n, seqlen_q, seqlen_k, rel_window, (first_row, band_end), CAUSAL,
                    BLOCK_M, BLOCK_N)
    zone_lo, zone_hi, _, _ = _zone_bounds(first_row, last_rows, near, 0, True)
    return zone_lo, zone_hi


@triton.jit
def _walk_key_blocks(walk, first_block, last_block, seqlen_q, seqlen_k, rel_window,
                     CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key blocks [n_lo, n_hi) of [first_block, last_block) whose window zone (as the dk/dv
    kernel with these tiles has it) holds the query block at start_n + walk * BLOCK_M. A zone's
    bounds less start_n only shrink as n grows (clamping at the ends), so the blocks that
    qualify are contiguous."""
    n_lo = last_block
    n_hi = first_block
    for n in range(first_block, last_block):
        start_n = n * BLOCK_N
        zone_lo, zone_hi = _window_zone(start_n, seqlen_q, seqlen_k, rel_window, CAUSAL,
                                        BLOCK_M, BLOCK_N)
        start_m = start_n + walk * BLOCK_M
        inside = (zone_lo <= start_m) & (start_m < zone_hi)
        n_lo = tl.where(inside, tl.minimum(n_lo, n), n_lo)
        n_hi = tl.where(inside, tl.maximum(n_hi, n + 1), n_hi)
    return n_lo, n_hi


@triton.jit
def _rel_bias_grad_kernel(
    Q, K, V, DOut, Lse, Delta, DRelBias, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, seed, first_walk, blocks_per_program,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The relative bias's gradient from the window-zone tiles (_window_zone) of a tiling.

    Without a causal mask the tiling is the dk/dv kernel's, whose far tiles gave bias[+W]
    their part; with one, no far tile takes part (entry -W gets minus the sum of the others,
    see _flush_far_rel_bias_grad), so any tiling covers what is left: the launcher picks one
    for this kernel alone.

    One program per (walk, run of key blocks, batch * head): walk w takes from each key block
    the query block that starts w * BLOCK_M after it, where that block lies in the key block's
    window zone. Every tile of a walk has the same distances (key - aligned query =
    a - b - w * BLOCK_M - (Sk - Sq) at tile element [a, b]) and the same bias tile, so the
    walk's ds tiles add up in registers and are reduced along their diagonals once, at the
    end: no per-tile gather or atomics in any loop. The price is the scores and dp of these
    tiles computed a second time (two matrix products per window tile). seqlen_bucket only
    serves the autotuner's key."""
    tl.static_assert(BLOCK_M <= BLOCK_N, "the diagonal sums need BLOCK_M <= BLOCK_N")
    walk = tl.program_id(0) + first_walk
    first_block = tl.program_id(1) * blocks_per_program
    last_block = tl.minimum(first_block + blocks_per_program, tl.cdiv(seqlen_k, BLOCK_N))
    batch_head = tl.program_id(2)
    b = batch_head // num_heads
    h = batch_head % num_heads
    h_kv = h // kv_group
    n_lo, n_hi = _walk_key_blocks(walk, first_block, last_block, seqlen_q, seqlen_k, rel_window,
                                  CAUSAL, BLOCK_M, BLOCK_N)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    do_base = DOut + b.to(tl.int64) * stride_dob + h * stride_doh
    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh
    lse_row = Lse + batch_head.to(tl.int64) * seqlen_q
    delta_row = Delta + batch_head.to(tl.int64) * seqlen_q
    alibi_slope = _alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b
    # (BLOCK_N, BLOCK_M): the walk's bias tile, from the key-major band as in the dk/dv kernel
    band_offsets = offs_n[:, None] * tl.multiple_of(band_cols, 16) + offs_m[None, :]
    bias_t = tl.load(_band_tile(RelBias + h * stride_relbias_h, 0, walk * BLOCK_M, band_start,
                                band_cols, band_offsets, BLOCK_N, BLOCK_M)).to(tl.float32)

    ds_sum = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for n in tl.range(n_lo, n_hi):
        start_n = n * BLOCK_N
        start_m = start_n + walk * BLOCK_M
        cols = (start_n + offs_n)[:, None]  # (BLOCK_N, 1)
        kv_mask = (cols < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_base + cols * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        rows = start_m + offs_m  # (BLOCK_M,)
        q, do, lse, delta = _query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row,
                                         delta_row, rows, offs_d, seqlen_q, HEAD_DIM, BLOCK_D)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale + bias_t
        # The relative bias is in already, and with it the causal mask (the band's -inf): the
        # other masks apply.
        s_t = _bias_and_mask(s_t, rows[None, :], cols, bias_t, 0.0, seqlen_q, seqlen_k,
                             alibi_slope, key_mask_row, seg_row, False, HAS_ALIBI, False, False,
                             HAS_KEY_MASK, HAS_SEGMENTS, True)
        _, ds_t = _probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head, dropout_p,
                                HAS_DROPOUT, DOT_PRECISION)
        ds_sum += ds_t

    # (BLOCK_N // BLOCK_M, BLOCK_M) each, see _diagonal_sums
    unwrapped, wrapped = _diagonal_sums(ds_sum, BLOCK_N, BLOCK_M)
    diagonal = (BLOCK_M * tl.arange(0, BLOCK_N // BLOCK_M)[:, None] - tl.arange(0, BLOCK_M)[None, :]
                - walk * BLOCK_M - (seqlen_k - seqlen_q))
    # Distances -W and beyond are left out, and their sum subtracted from drel[-W] (see
    # _flush_far_rel_bias_grad): that entry is minus the sum of all the others.
    drel_row = DRelBias + h * (2 * rel_window + 1) + rel_window
    any_tile = diagonal * 0 + n_lo < n_hi
    unwrapped_in = any_tile & (diagonal > -rel_window)
    wrapped_in = any_tile & (diagonal + BLOCK_M > -rel_window)
    tl.atomic_add(drel_row + tl.minimum(diagonal, rel_window), unwrapped, mask=unwrapped_in,
                  sem="relaxed")
    tl.atomic_add(drel_row + tl.minimum(diagonal + BLOCK_M, rel_window), wrapped, mask=wrapped_in,
                  sem="relaxed")
    total = (tl.sum(tl.sum(tl.where(unwrapped_in, unwrapped, 0.0), axis=1), axis=0)
             + tl.sum(tl.sum(tl.where(wrapped_in, wrapped, 0.0), axis=1), axis=0))
    tl.atomic_add(drel_row - rel_window, -total, sem="relaxed")


@triton.jit
def _bwd_q_inner(
    dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
    start_m, lo, hi, edges, offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale, alibi_slope,
    band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row, seg_row, seed,
    batch_head, dropout_p,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    MASK_EDGES: tl.constexpr, REL_ZONES: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dq of the query block at start_m over key blocks [lo, hi), in relative-bias zones and
    with the edge blocks as in _fwd_inner."""
    rows = (start_m + offs_m)[:, None]  # (BLOCK_M, 1)
    near = _window_blocks(start_m + seqlen_k - seqlen_q, rel_window, BLOCK_M, BLOCK_N)
    near = _with_edges(near, edges, MASK_EDGES and REL_ZONES)
    # (BLOCK_M, BLOCK_N)
    band_offsets = offs_m[:, None] * tl.multiple_of(band_cols, 16) + offs_n[None, :]
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = _zone_bounds(lo, hi, near, zone, REL_ZONES)
        # The window zone at two stages with a relative bias, the far zone at the tiles' own.
        for index in tl.range(loop_lo, loop_hi, BLOCK_N,
                              num_stages=2 if HAS_REL_BIAS and zone == 0 else None):
            start_n = _block_start(index, hole, hole_width, REL_ZONES)
            cols = start_n + offs_n
            kv_mask = (cols[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
            k = _load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :], kv_mask,
                           (MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            v = _load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :], kv_mask,
                           (MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            s = _scores(q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row,
                        band_cols, band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope,
                        key_mask_row, seg_row, CAUSAL, HAS_ALIBI, HAS_REL_BIAS, zone == 0,
                        HAS_KEY_MASK, HAS_SEGMENTS, MASK_EDGES and zone == 0, BLOCK_M, BLOCK_N,
                        DOT_PRECISION)
            p = tl.math.exp2(s - lse[:, None])
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
            if HAS_DROPOUT:
                keep = _dropout_keep(seed, rows, cols[None, :], batch_head, dropout_p)
                dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def _bwd_q_kernel(
    Q, K, V, DOut, Lse, Delta, DQ, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_dqb, stride_dqm, stride_dqh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per (query block, batch, head): dq over the keys the block sees."""
    b, h, h_kv, batch_head, start_m = _query_block(seqlen_q, num_heads, kv_group, BLOCK_M, CAUSAL)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    rows = start_m + offs_m
    q_mask = (rows[:, None] < seqlen_q) & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + rows[:, None] * stride_qm
                + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(DOut + b.to(tl.int64) * stride_dob + h * stride_doh + rows[:, None] * stride_dom
                 + offs_d[None, :], mask=q_mask, other=0.0)
    row_ptrs = batch_head.to(tl.int64) * seqlen_q + rows
    lse = _load_lse(Lse, row_ptrs, rows, seqlen_q)
    delta = tl.load(Delta + row_ptrs, mask=rows < seqlen_q, other=0.0)

    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh
    alibi_slope = _alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI)
    band_row = RelBias + h * stride_relbias_h
    rel_ends = _rel_bias_ends(band_row, band_cols, HAS_REL_BIAS)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    full, end = _causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, CAUSAL)
    merge_edges: tl.constexpr = CAUSAL and HAS_REL_BIAS  # as in the forward
    split = end if merge_edges else full
    dq = _bwd_q_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
        start_m, 0, split, (full, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT, merge_edges,
        HAS_REL_BIAS,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
    )
    dq = _bwd_q_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
        start_m, split, end, (split, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL, HAS_ALIBI, HAS_REL_BIAS, HAS_KEY_MASK, HAS_SEGMENTS, HAS_DROPOUT, True, False,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, DOT_PRECISION,
    )
    dq = dq * (qk_scale * 0.6931471805599453)
    tl.store(DQ + b.to(tl.int64) * stride_dqb + h * stride_dqh + rows[:, None] * stride_dqm
             + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit
def _dropout_mask_kernel(Mask, num_heads, seqlen_q, seqlen_k, dropout_p, seed,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The kernels' keep-mask, written out as bool [B, H, Sq, Sk] (for tests and debugging)."""
    batch_head = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    keep = _dropout_keep(seed, rows, cols, batch_head, dropout_p)
    tl.store(Mask + (batch_head.to(tl.int64) * seqlen_q + rows) * seqlen_k + cols, keep,
             mask=(rows < seqlen_q) & (cols < seqlen_k))


# --------------------------------------------------------------------------------------------
# Launch configurations
# --------------------------------------------------------------------------------------------


def _seqlen_bucket(seqlen_q: int, seqlen_k: int) -> int:
    """Length class for the autotuning key: 0 when either sequence is shorter than 64 (decode,
    tiny inputs), then 1 up to 512, 2 up to 2048, 3 beyond."""
    if min(seqlen_q, seqlen_k) < 64:
        return 0
    longest = max(seqlen_q, seqlen_k)
    return 1 if longest <= 512 else 2 if longest <= 2048 else 3


class Tile(NamedTuple):
    """A tuning candidate. max_registers caps the registers per thread (ptxas .maxnreg) where
    ptxas would take more than the kernel needs: at 128, two programs of 8 warps (four of 4)
    share an SM. The relative bias's band tile pushes the forward past 128 (about 170 at 8
    warps and at 4), costing programs per SM; capped, it compiles without spills
    (docs/benchmarks.md)."""
    block_m: int
    block_n: int
    warps: int
    stages: int
    max_registers: Optional[int] = None


# Candidate tiles per head-dim class. The forward and the dq kernel walk keys for a block of
# queries; the dk/dv kernel walks queries for a block of keys. Larger head dims need smaller
# tiles to fit in shared memory and registers.
_ROW_MAJOR_TILES = {
    64: [Tile(128, 64, 4, 3), Tile(128, 64, 8, 3), Tile(128, 64, 8, 3, 128), Tile(128, 128, 8, 3),
         Tile(64, 64, 4, 3), Tile(64, 64, 4, 3, 128)],
    128: [Tile(128, 64, 8, 3), Tile(128, 64, 8, 2, 128), Tile(128, 128, 8, 2), Tile(128, 64, 4, 2)],
    256: [Tile(64, 64, 8, 2), Tile(64, 32, 4, 2)],
}
_KEY_MAJOR_TILES = {
    64: [Tile(64, 128, 8, 3), Tile(32, 128, 4, 3), Tile(64, 64, 4, 3), Tile(32, 128, 4, 5)],
    128: [Tile(64, 128, 8, 2), Tile(32, 128, 8, 2), Tile(32, 128, 4, 3), Tile(64, 64, 4, 3)],
    256: [Tile(32, 64, 4, 2), Tile(64, 32, 4, 1)],
}
_DQ_TILES = {
    64: [Tile(128, 64, 4, 3), Tile(128, 64, 8, 3), Tile(128, 64, 8, 3, 128), Tile(128, 32, 4, 3),
         Tile(64, 64, 4, 3)],
    128: [Tile(128, 64, 8, 3), Tile(128, 32, 4, 3), Tile(128, 32, 8, 3), Tile(128, 32, 8, 3, 128),
          Tile(64, 64, 4, 3)],
    256: [Tile(64, 64, 8, 2), Tile(64, 32, 4, 2)],
}
_SHORT_TILE = Tile(32, 32, 4, 2)  # tiny problems (decode, short sequences): no tuning sweep


def _configs(tiles: dict) -> list:
    unique = {tile for group in tiles.values() for tile in group} | {_SHORT_TILE}
    return [triton.Config({"BLOCK_M": t.block_m, "BLOCK_N": t.block_n}, num_warps=t.warps,
                          num_stages=t.stages, maxnreg=t.max_registers)
            for t in sorted(unique, key=lambda t: (*t[:4], t.max_registers or 0))]


def _for_head_dim(table: dict, block_d: int):
    """The entry of a table keyed by head-dim class (64, 128, 256) for padded head dim block_d."""
    return table[min(c for c in table if c >= block_d)]


def _tile(config) -> Tile:
    return Tile(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
                config.num_stages, config.maxnreg)


def _pruner(tiles: dict, rel_bias_needs_wide_keys: bool):
    """early_config_prune: the tiles of this head dim's class, or the short tile alone for the
    short length class (a 128-row tile would be mostly padding). rel_bias_needs_wide_keys: with
    a relative bias and no causal mask, keep only tiles with BLOCK_M <= BLOCK_N
    (_rel_bias_grad_kernel then walks the dk/dv kernel's tiles, and its _diagonal_sums needs
    them), and of those the ones with 64 queries or more where there are any: narrower ones
    multiply that kernel's walks (measured slower overall even where they suit the dk/dv
    kernel alone; docs/benchmarks.md)."""
    def prune(configs, named_args, **kwargs):
        if named_args["seqlen_bucket"] == 0:
            wanted = [_SHORT_TILE]
        else:
            wanted = _for_head_dim(tiles, kwargs["BLOCK_D"])
        if rel_bias_needs_wide_keys and kwargs["HAS_REL_BIAS"] and not kwargs["CAUSAL"]:
            wanted = [tile for tile in wanted if tile.block_m <= tile.block_n]
            wanted = [tile for tile in wanted if tile.block_m >= 64] or wanted
        return [config for config in configs if _tile(config) in wanted]
    return prune


def _autotune(kernel, tiles: dict, reset_to_zero=None, rel_bias_needs_wide_keys=False):
    prune = _pruner(tiles, rel_bias_needs_wide_keys)
    return _tuned(kernel, _configs(tiles), _TUNING_KEY, reset_to_zero,
                  prune_configs_by={"early_config_prune": prune})


def _tuned(kernel, configs: list, key: list, reset_to_zero, **options):
    options.update(key=key, reset_to_zero=reset_to_zero)
    try:  # shorter timing runs per candidate (the `do_bench` hook is newer than some tritons)
        return triton.autotune(configs, **options, do_bench=_quick_bench)(kernel)
    except TypeError:
        return triton.autotune(configs, **options)(kernel)


def _quick_bench(fn, quantiles=None):
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


_TUNING_KEY = ["HEAD_DIM", "CAUSAL", "HAS_ALIBI", "HAS_REL_BIAS", "HAS_DROPOUT", "seqlen_bucket",
               "kv_group"]


_fwd_heuristics = triton.heuristics({"EVEN_M": lambda args: args["seqlen_q"] % args["BLOCK_M"] == 0})
if INTERPRETER:
    _fwd_launch = _fwd_heuristics(_fwd_kernel)
    _bwd_kv_launch, _bwd_q_launch = _bwd_kv_kernel, _bwd_q_kernel
    _rel_grad_launch = _rel_bias_grad_kernel
    # The interpreter runs one config, not a tuning sweep; unequal tiles keep the index
    # arithmetic honest in tests.
    _INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 16}
else:
    _fwd_launch = _autotune(_fwd_heuristics(_fwd_kernel), _ROW_MAJOR_TILES)
    _bwd_kv_launch = _autotune(_bwd_kv_kernel, _KEY_MAJOR_TILES, reset_to_zero=["DRelBias"],
                               rel_bias_needs_wide_keys=True)
    _bwd_q_launch = _autotune(_bwd_q_kernel, _DQ_TILES)
    # Its tile comes from _rel_grad_tile; warps and stages are its own (it also pipelines k
    # and v, so some of the dk/dv kernel's stage counts overflow shared memory: the tuner
    # skips them).
    _rel_grad_launch = _tuned(
        _rel_bias_grad_kernel,
        [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)],
        ["BLOCK_M", "BLOCK_N", *(key for key in _TUNING_KEY if key != "HAS_REL_BIAS")],
        reset_to_zero=["DRelBias"])
    _INTERPRETER_BLOCKS = {}
_BWD_KV_INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 32} if INTERPRETER else {}

# The relative-bias gradient kernel's own tiles (causal only, see _rel_grad_tile) per head-dim
# class: 64 x 64 walks the fewest elements (three walks of 64 queries per 64 keys with W = 128,
# against four per 128 keys with 64 x 128); D = 256 needs a smaller tile to fit shared memory.
_CAUSAL_REL_GRAD_TILES = {64: (64, 64), 128: (64, 64), 256: (32, 64)}
_CAUSAL_REL_GRAD_INTERPRETER_TILE = (32, 32)  # unlike the dk/dv kernel's, as on the GPU


def _rel_grad_tile(causal: bool, head_dim: int, seqlen_q: int, seqlen_k: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the relative-bias gradient kernel. Without a causal mask, the
    tile the dk/dv kernel last ran with: the window zone it covers is the complement of that
    kernel's far tiles. With one, a tile of its own (no far tile takes part)."""
    if causal:
        if INTERPRETER:
            return _CAUSAL_REL_GRAD_INTERPRETER_TILE
        if _seqlen_bucket(seqlen_q, seqlen_k) == 0:
            return _SHORT_TILE.block_m, _SHORT_TILE.block_n
        return _for_head_dim(_CAUSAL_REL_GRAD_TILES, _head_block(head_dim))
    if INTERPRETER:
        blocks = _BWD_KV_INTERPRETER_BLOCKS
    else:
        blocks = _bwd_kv_launch.best_config.kwargs  # set by the autotuner on every launch
    return blocks["BLOCK_M"], blocks["BLOCK_N"]


# Key blocks per program of the relative-bias gradient kernel: long walks amortise its final
# reduction; at N = 16384 and batch 1 this still leaves several programs per SM.
_REL_GRAD_BLOCKS_PER_PROGRAM = 16


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _alloc(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every buffer the kernels write (tests poison it to prove each element gets written)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _head_block(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _bsh_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """Batch, sequence and head strides of a [B, S, H, D] tensor whose last stride is 1."""
    return x.stride(0), x.stride(1), x.stride(2)


_BAND_ROWS = 128  # the most queries (keys, keys_major) of a tile the band serves


@triton.jit
def _band_kernel(Bias, Band, stride_bias_h, stride_band_h, rel_window, lead, band_cols,
                 MIRRORED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """BLOCK_R rows of one head's band (see _relative_bias_band): band[h, r, c] = log2(e) *
    bias[h, clamp(c - r - lead, -W, W) + W], the entries mirrored (2W - entry) if MIRRORED;
    CAUSAL: -inf where the key comes after the query (c - r - lead > 0, < 0 if MIRRORED)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    h = tl.program_id(1)
    for first_col in range(0, band_cols, BLOCK_C):
        cols = first_col + tl.arange(0, BLOCK_C)[None, :]  # (1, BLOCK_C)
        distance = cols - rows - lead  # j - i' (i' - j if MIRRORED)
        clamped = _clamp(distance, rel_window)
        entry = rel_window - clamped if MIRRORED else rel_window + clamped
        value = tl.load(Bias + h * stride_bias_h + entry).to(tl.float32) * 1.4426950408889634
        if CAUSAL:
            future = distance < 0 if MIRRORED else distance > 0
            value = tl.where(future, float("-inf"), value)
        tl.store(Band + h * stride_band_h + rows * band_cols + cols,
                 value.to(Band.dtype.element_ty), mask=cols < band_cols)


def _relative_bias_band(relative_bias, seqlen_q, seqlen_k, dtype, keys_major=False,
                        causal=False):
    """The relative bias [Hq, 2W + 1] as the kernels read it: (band [Hq, 128, C], band_start).

    band[h, r, c] = log2(e) * bias[h, clamp(c - r - P, -W, W) + W]. The bias of a tile (queries
    start_m + r, r < 128; keys start_n + n) is the Toeplitz block at rows r, columns
    start_n - start_m + band_start + n, band_start = P - (Sk - Sq): keys contiguous, read with
    vector loads instead of a gather per element. P >= W + 127 and C >= P + W + 255 leave
    clamped end values at both ends for any tile of up to 256 queries + keys (see _band_tile);
    P = Sk - Sq and C = 0 (mod 16) align every tile's first key.
    keys_major: the band for the dk/dv kernel's (keys, queries) tiles, queries contiguous: the
    same construction for the mirrored bias (distance i - j) with queries and keys swapped.
    causal: the band also holds the causal mask, -inf where j > i' (the kernels then skip the
    mask arithmetic in every tile that reads the band: it cost about as much as the band's
    read).
    fp16 for 16-bit inputs (half the bytes of fp32; its 2^-11 relative error stays below the
    rounding of p before the second matrix product), fp32 for fp32 inputs. One kernel writes
    it (three torch operations took several times as long).
    """
    heads, entries = relative_bias.shape
    window = (entries - 1) // 2
    shift = seqlen_q - seqlen_k if keys_major else seqlen_k - seqlen_q
    lead = window + _BAND_ROWS - 1 + (shift - window - _BAND_ROWS + 1) % 16  # P
    cols = (lead + window + 2 * _BAND_ROWS - 1 + 15) // 16 * 16  # C
    band_dtype = torch.float32 if dtype == torch.float32 else torch.float16
    band = _alloc((heads, _BAND_ROWS, cols), band_dtype, relative_bias.device)
    rows_per_program = 32
    _band_kernel[(_BAND_ROWS // rows_per_program, heads)](
        relative_bias, band, relative_bias.stride(0), band.stride(0), window, lead, cols,
        MIRRORED=keys_major, CAUSAL=causal, BLOCK_R=rows_per_program, BLOCK_C=256)
    return band, lead - shift


def _optional_args(q, k, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                   keys_major=False):
    """Pointers and strides of the optional inputs (an absent one points at q, unread; the
    relative bias as its band, with the causal mask if causal, keys_major for the dk/dv
    kernel), and the relative-bias scalars (W, band columns, band_start)."""
    slopes_stride = 0 if alibi_slopes is None or alibi_slopes.dim() == 1 else alibi_slopes.stride(0)
    band, rel_scalars = None, (0, 0, 0)
    if relative_bias is not None:
        band, band_start = _relative_bias_band(relative_bias, q.shape[1], k.shape[1], q.dtype,
                                               keys_major, causal)
        rel_scalars = ((relative_bias.shape[1] - 1) // 2, band.shape[2], band_start)
    pointers = tuple(q if x is None else x for x in (alibi_slopes, band, key_mask, segment_ids))
    strides = (slopes_stride,
               0 if band is None else band.stride(0),
               0 if key_mask is None else key_mask.stride(0),
               0 if segment_ids is None else segment_ids.stride(0))
    return pointers, strides, rel_scalars


def _common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p):
    head_dim = q.shape[-1]
    return dict(
        CAUSAL=causal, HAS_ALIBI=alibi_slopes is not None, HAS_REL_BIAS=relative_bias is not None,
        HAS_KEY_MASK=key_mask is not None, HAS_SEGMENTS=segment_ids is not None,
        HAS_DROPOUT=dropout_p > 0.0, HEAD_DIM=head_dim, BLOCK_D=_head_block(head_dim),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )


def _forward(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal, softmax_scale,
             dropout_p, seed):
    batch, seqlen_q, num_heads, _ = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    out = _alloc(q.shape, q.dtype, q.device)
    lse = _alloc((batch, num_heads, seqlen_q), torch.float32, q.device)
    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal)
    grid = lambda meta: (triton.cdiv(seqlen_q, meta["BLOCK_M"]), batch * num_heads)  # noqa: E731
    _fwd_launch[grid](
        q, k, v, out, lse, *pointers,
        *_bsh_strides(q), *_bsh_strides(k), *_bsh_strides(v), *_bsh_strides(out), *strides,
        num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k, _seqlen_bucket(seqlen_q, seqlen_k),
        *rel_scalars, softmax_scale * LOG2E, dropout_p, seed,
        **_common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p),
        **_INTERPRETER_BLOCKS,
    )
    return out, lse


def _backward(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias, key_mask, segment_ids,
              causal, softmax_scale, dropout_p, seed):
    """dq, dk, dv, and the relative bias gradient (fp32 [Hq, 2W + 1]; empty without one)."""
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    if dlse is not None:
        dlse = dlse.contiguous()  # read as a dense [B, H, Sq] buffer; autograd may hand an expand
    delta = _alloc(lse.shape, torch.float32, lse.device)
    delta_rows = 64
    _bwd_delta_kernel[(triton.cdiv(seqlen_q, delta_rows), batch * num_heads)](
        out, dout, lse if dlse is None else dlse, delta,
        *_bsh_strides(out), *_bsh_strides(dout), num_heads, seqlen_q,
        HAS_DLSE=dlse is not None, HEAD_DIM=head_dim, BLOCK_D=_head_block(head_dim),
        BLOCK_M=delta_rows,
    )

    dq = _alloc(q.shape, q.dtype, q.device)
    dk = _alloc(k.shape, k.dtype, k.device)
    dv = _alloc(v.shape, v.dtype, v.device)
    # Accumulated with atomics, so it starts at zero (and the autotuner re-zeroes it).
    drel = torch.zeros(relative_bias.shape if relative_bias is not None else (0,),
                       dtype=torch.float32, device=q.device)
    meta = _common_meta(q, alibi_slopes, relative_bias, key_mask, segment_ids, causal, dropout_p)

    def scalars(rel_scalars):
        return (num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k,
                _seqlen_bucket(seqlen_q, seqlen_k), *rel_scalars, softmax_scale * LOG2E,
                dropout_p, seed)

    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal, keys_major=True)
    kv_grid = lambda m: (triton.cdiv(seqlen_k, m["BLOCK_N"]), batch * num_kv_heads)  # noqa: E731
    _bwd_kv_launch[kv_grid](
        q, k, v, dout, lse, delta, dk, dv, drel, *pointers,
        *_bsh_strides(q), *_bsh_strides(k), *_bsh_strides(v), *_bsh_strides(dout),
        *_bsh_strides(dk), *_bsh_strides(dv), *strides, *scalars(rel_scalars),
        **meta, **_BWD_KV_INTERPRETER_BLOCKS,
    )
    if relative_bias is not None:
        _launch_rel_bias_grad(q, k, v, dout, lse, delta, drel, pointers, strides, rel_scalars,
                              softmax_scale, dropout_p, seed, meta)
        if dlse is not None:
            # A row's ds sums to its lse gradient, not zero: drel[-W] takes the difference (it
            # is what the other entries leave, see _flush_far_rel_bias_grad). Rows that see no
            # key have p = 0, so none.
            drel[:, 0] += torch.where(torch.isneginf(lse), 0.0, dlse).sum((0, 2))
    pointers, strides, rel_scalars = _optional_args(q, k, alibi_slopes, relative_bias,
                                                    key_mask, segment_ids, causal)
    q_grid = lambda m: (triton.cdiv(seqlen_q, m["BLOCK_M"]), batch * num_heads)  # noqa: E731
    _bwd_q_launch[q_grid](
        q, k, v, dout, lse, delta, dq, *pointers,
        *_bsh_strides(q), *_bsh_strides(k), *_bsh_strides(v), *_bsh_strides(dout),
        *_bsh_strides(dq), *strides, *scalars(rel_scalars),
        **meta, **_INTERPRETER_BLOCKS,
    )
    return dq, dk, dv, drel


def _walk_range(seqlen_q: int, seqlen_k: int, rel_window: int, causal: bool, block_m: int,
                block_n: int) -> tuple[int, int]:
    """[first, end) of the walks of _rel_bias_grad_kernel: the window zone (_window_zone)
    relative to its key block's start, in query blocks, before the clamping at the sequence
    ends (which only shrinks a zone or empties it). Python's // rounds down, as the kernel's
    block arithmetic does where it matters."""
    shift = seqlen_k - seqlen_q
    # _window_blocks: past the last block wholly beyond the window, up to the first one beyond
    # the other side
    lo = (-shift - rel_window - block_m + 1) // block_m + 1
    hi = -((shift - block_n + 1 - rel_window) // block_m)
    if causal:  # from the first row that sees the key block, and its diagonal blocks
        lo = -shift // block_m
        hi = max(hi, -((shift - block_n + 1) // block_m))
    return lo, hi


def _launch_rel_bias_grad(q, k, v, dout, lse, delta, drel, pointers, strides, rel_scalars,
                          softmax_scale, dropout_p, seed, meta):
    """Add the window zone's part of the relative bias's gradient to drel, after the dk/dv
    kernel added the far tiles' part (none with a causal mask). pointers, strides,
    rel_scalars: the dk/dv kernel's (key-major band)."""
    batch, seqlen_q, num_heads, _ = q.shape
    seqlen_k, num_kv_heads = k.shape[1], k.shape[2]
    rel_window = rel_scalars[0]
    block_m, block_n = _rel_grad_tile(meta["CAUSAL"], meta["HEAD_DIM"], seqlen_q, seqlen_k)
    first_walk, end_walk = _walk_range(seqlen_q, seqlen_k, rel_window, meta["CAUSAL"],
                                       block_m, block_n)
    chunks = triton.cdiv(triton.cdiv(seqlen_k, block_n), _REL_GRAD_BLOCKS_PER_PROGRAM)
    kernel_meta = {key: value for key, value in meta.items() if key != "HAS_REL_BIAS"}
    # The autotuner zeroes its output between trials, which must not drop drel's far part:
    # a buffer of its own where there is one.
    window_part = drel if meta["CAUSAL"] else torch.zeros_like(drel)
    _rel_grad_launch[(end_walk - first_walk, chunks, batch * num_heads)](
        q, k, v, dout, lse, delta, window_part, *pointers,
        *_bsh_strides(q), *_bsh_strides(k), *_bsh_strides(v), *_bsh_strides(dout), *strides,
        num_heads, num_heads // num_kv_heads, seqlen_q, seqlen_k,
        _seqlen_bucket(seqlen_q, seqlen_k), *rel_scalars, softmax_scale * LOG2E, dropout_p,
        seed, first_walk, _REL_GRAD_BLOCKS_PER_PROGRAM,
        **kernel_meta, BLOCK_M=block_m, BLOCK_N=block_n,
    )
    if window_part is not drel:
        drel += window_part


# --------------------------------------------------------------------------------------------
# Custom ops (torch.compile traces through them) and autograd
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("megatron_lite::flash_attn_forward", mutates_args=())
def flash_attn_forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    alibi_slopes: Optional[torch.Tensor], relative_bias: Optional[torch.Tensor],
    key_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
    causal: bool, softmax_scale: float, dropout_p: float, dropout_seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, Sq, Hq, D] and lse float32 [B, Hq, Sq] of checked, normalised inputs."""
    return _forward(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                    softmax_scale, dropout_p, dropout_seed)


@flash_attn_forward_op.register_fake
def _(q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal, softmax_scale,
      dropout_p, dropout_seed):
    batch, seqlen_q, num_heads, _ = q.shape
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            q.new_empty((batch, num_heads, seqlen_q), dtype=torch.float32))


@torch.library.custom_op("megatron_lite::flash_attn_backward", mutates_args=())
def flash_attn_backward_op(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, dlse: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor], relative_bias: Optional[torch.Tensor],
    key_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
    causal: bool, softmax_scale: float, dropout_p: float, dropout_seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (dk and dv summed over each GQA group) and d relative_bias (empty if none)."""
    return _backward(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias, key_mask,
                     segment_ids, causal, softmax_scale, dropout_p, dropout_seed)


@flash_attn_backward_op.register_fake
def _(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
      softmax_scale, dropout_p, dropout_seed):
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            torch.empty(k.shape, dtype=k.dtype, device=k.device),
            torch.empty(v.shape, dtype=v.dtype, device=v.device),
            q.new_empty(relative_bias.shape if relative_bias is not None else (0,),
                        dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    (q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids,
     causal, softmax_scale, dropout_p, seed) = inputs
    out, lse = output
    # An unused output's gradient arrives as None, not a tensor of zeros: most callers never
    # use lse, and its gradient would cost a fill, a read in delta and a bias-gradient term.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(q, k, v, out, lse, alibi_slopes, relative_bias, key_mask, segment_ids)
    ctx.options = (causal, softmax_scale, dropout_p, seed)


def _backward_with(backward):
    """An autograd backward for the 11 forward inputs that runs `backward` (the custom op, or
    the plain launcher) on the saved tensors."""
    def run(ctx, dout, dlse):
        q, k, v, out, lse, alibi_slopes, relative_bias, key_mask, segment_ids = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv, drel = backward(dout, q, k, v, out, lse, dlse, alibi_slopes, relative_bias,
                                    key_mask, segment_ids, *ctx.options)
        drel = None if relative_bias is None else drel.to(relative_bias.dtype)
        return dq, dk, dv, None, drel, None, None, None, None, None, None
    return run


flash_attn_forward_op.register_autograd(_backward_with(flash_attn_backward_op),
                                         setup_context=_setup_context)


class _EagerFlashAttention(torch.autograd.Function):
    """The same forward and backward without the custom-op dispatcher, whose Python overhead
    (tens of microseconds a call) shows at short sequences; torch.compile uses the custom op."""

    @staticmethod
    def forward(ctx, q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                softmax_scale, dropout_p, dropout_seed):
        inputs = (q, k, v, alibi_slopes, relative_bias, key_mask, segment_ids, causal,
                  softmax_scale, dropout_p, dropout_seed)
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    backward = staticmethod(_backward_with(_backward))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, alibi_slopes, relative_bias, key_padding_mask, segment_ids, dropout_p):
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
    if segment_ids is not None:
        if seqlen_q != seqlen_k or tuple(segment_ids.shape) != (batch, seqlen_q):
            raise ValueError(
                "flash_attn_func: segment_ids are for self-attention and must have shape "
                f"[B, S] = [{batch}, {seqlen_q}] with Sq == Sk, got {tuple(segment_ids.shape)} "
                f"for Sq={seqlen_q}, Sk={seqlen_k}")
        if segment_ids.is_floating_point() or segment_ids.dtype == torch.bool:
            raise ValueError(f"flash_attn_func: segment_ids must be integers, got {segment_ids.dtype}")
        if segment_ids.device != q.device:
            raise ValueError(f"flash_attn_func: segment_ids is on {segment_ids.device}, q on {q.device}")
    if not flash_attention_supported(q.device):
        raise FlashAttentionUnavailable(
            f"flash_attn_func: the Triton kernel needs a CUDA device, got tensors on {q.device} "
            "(set TRITON_INTERPRET=1 before importing kernels to run it on the CPU, slowly)")


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
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
    segment_ids: torch.Tensor | None = None,
    relative_bias: torch.Tensor | None = None,
    return_lse: bool = False,
    dropout_seed: int | None = None,
):
    """Softmax(q k^T * scale + bias, masked) v, computed by the Triton kernels.

    q [B, Sq, Hq, D]; k, v [B, Sk, Hkv, D]. Returns out [B, Sq, Hq, D] (q's dtype), and with
    return_lse also the log-sum-exp float32 [B, Hq, Sq] (differentiable). See the module doc
    and `kernels.attention_reference` for the exact semantics. Without `dropout_seed`, a seed is
    drawn from torch's default generator, so `torch.manual_seed` makes dropout reproducible.
    `relative_bias` [Hq, 2W + 1] (differentiable) adds relative_bias[h, clamp(j - i', -W, W) + W]:
    T5's bucketed bias, or any bias of the distance that is constant beyond W.
    """
    _check_inputs(q, k, v, alibi_slopes, relative_bias, key_padding_mask, segment_ids, dropout_p)
    batch, seqlen_q, _, head_dim = q.shape
    seqlen_k = k.shape[1]
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())

    key_mask = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            positions = torch.arange(seqlen_k, device=q.device)
            key_padding_mask = positions[None, :] < key_padding_mask[:, None]
        key_mask = key_padding_mask.contiguous().view(torch.uint8)  # (B, Sk)
    if segment_ids is not None:
        segment_ids = segment_ids.to(torch.int32).contiguous()  # (B, S)
    if alibi_slopes is not None:
        alibi_slopes = alibi_slopes.to(torch.float32).contiguous()
    if relative_bias is not None:
        relative_bias = relative_bias.to(torch.float32).contiguous()  # (Hq, 2W + 1)

    attention = (flash_attn_forward_op if torch.compiler.is_compiling()
                 else _EagerFlashAttention.apply)
    out, lse = attention(
        _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v),
        alibi_slopes, relative_bias, key_mask, segment_ids,
        bool(causal), float(softmax_scale), float(dropout_p), int(dropout_seed or 0),
    )
    return (out, lse) if return_lse else out


def dropout_keep_mask(batch: int, num_heads: int, seqlen_q: int, seqlen_k: int, dropout_p: float,
                      dropout_seed: int, device: torch.device | str) -> torch.Tensor:
    """bool [B, Hq, Sq, Sk]: the keep-mask that `flash_attn_func` uses with this seed."""
    if not flash_attention_supported(device):
        raise FlashAttentionUnavailable(f"dropout_keep_mask: the Triton kernel cannot run on {device}")
    mask = _alloc((batch, num_heads, seqlen_q, seqlen_k), torch.bool, torch.device(device))
    block = 32
    grid = (triton.cdiv(seqlen_q, block), triton.cdiv(seqlen_k, block), batch * num_heads)
    _dropout_mask_kernel[grid](mask, num_heads, seqlen_q, seqlen_k, float(dropout_p),
                               int(dropout_seed), BLOCK_M=block, BLOCK_N=block)
    return mask
