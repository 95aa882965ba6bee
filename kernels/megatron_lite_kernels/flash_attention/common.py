"""Triton helpers that the forward and the backward kernels share: which rows and keys a
program takes, masked loads, the ALiBi slope, dropout's keep-mask, and the scores with their
bias and masks."""

import triton
import triton.language as tl

from .constants import INT31_TO_UNIT, LOG2E
from .relative_bias import band_tile


@triton.jit
def dropout_keep(seed, rows, cols, batch_head, dropout_p):
    """Keep-mask (True = kept) of the elements at rows x cols (broadcastable int32 tensors)."""
    # One Philox draw per element; the counters identify the element, so the forward, both
    # backward kernels and `dropout_keep_mask` all see the same number.
    zero = rows * 0 + cols * 0
    c0 = (cols + zero).to(tl.uint32, bitcast=True)
    c1 = (rows + zero).to(tl.uint32, bitcast=True)
    c2 = (zero + batch_head).to(tl.uint32, bitcast=True)
    r, _, _, _ = tl.philox(seed, c0, c1, c2, zero.to(tl.uint32, bitcast=True))
    r = r.to(tl.int32, bitcast=True)
    uniform = tl.where(r < 0, -r - 1, r).to(tl.float32) * INT31_TO_UNIT  # [0, 1)
    return uniform >= dropout_p


@triton.jit
def load_seed(Seed, HAS_DROPOUT: tl.constexpr):
    """The dropout seed, read from the device (int64 [1]) so that drawing it needs no host
    round trip (and torch.compile no graph break); 0, unread, without dropout."""
    if HAS_DROPOUT:
        return tl.load(Seed)
    else:
        return 0


@triton.jit
def load_alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI: tl.constexpr):
    """-slope * log2(e) of this head (0 without ALiBi): the factor of |i' - j| in log2 units."""
    if HAS_ALIBI:
        return tl.load(Slopes + b * stride_slopes_b + h).to(tl.float32) * -LOG2E
    else:
        return 0.0


@triton.jit
def load_tile(ptrs, mask, USE_MASK: tl.constexpr):
    """Masked load (zeros outside) only where a mask is needed: unmasked loads vectorise best."""
    if USE_MASK:
        return tl.load(ptrs, mask=mask, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def query_block(seqlen_q, num_heads, kv_group, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """This program's (batch, head, kv head, batch*head, first row) in a query-block grid."""
    m_block = tl.program_id(0)
    if CAUSAL:  # the last query blocks see the most keys: start them first
        m_block = tl.cdiv(seqlen_q, BLOCK_M) - 1 - m_block
    batch_head = tl.program_id(1)
    h = batch_head % num_heads
    return batch_head // num_heads, h, h // kv_group, batch_head, m_block * BLOCK_M


@triton.jit
def causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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


@triton.jit
def bias_and_mask(
    s, rows, cols, band_tile_ptrs, rel_constant, seqlen_q, seqlen_k, alibi_slope, key_mask_row,
    seg_row,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    REL_FROM_BAND: tl.constexpr, HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr,
    MASK_EDGES: tl.constexpr,
):
    """Add the positional bias to log2-scaled scores s and set invisible ones to -inf.

    rows and cols are broadcastable index tensors ([M, 1] x [1, N] or [1, M] x [N, 1]), so the
    same code serves the forward ([rows, cols]) and the transposed backward ([cols, rows]).
    REL_FROM_BAND: read the relative bias through band_tile_ptrs (from band_tile, laid out as
    s); otherwise the tile lies beyond the window and adds rel_constant (log2-scaled).
    MASK_EDGES: the tile crosses the causal diagonal or the end of the keys. With a causal mask
    the band holds it (see relative_bias_band): tiles that read the band skip the comparison.
    """
    if HAS_ALIBI:  # alibi_slope is -slope * log2(e)
        s += alibi_slope * tl.abs(rows + (seqlen_k - seqlen_q) - cols).to(tl.float32)
    if HAS_REL_BIAS:
        if REL_FROM_BAND:
            s += tl.load(band_tile_ptrs).to(tl.float32)
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
    if HAS_SEGMENTS:  # 1: one id per position of a self-attention; 2: Sq query ids, then Sk key ids
        key_segments = seg_row
        if HAS_SEGMENTS == 2:
            key_segments = seg_row + seqlen_q
        seg_q = tl.load(seg_row + rows, mask=rows < seqlen_q, other=-1)
        seg_k = tl.load(key_segments + cols, mask=cols < seqlen_k, other=-2)
        s = tl.where(seg_q == seg_k, s, float("-inf"))
    return s


@triton.jit
def scores(
    q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row, band_cols,
    band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope, key_mask_row, seg_row,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    REL_FROM_BAND: tl.constexpr, HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr,
    MASK_EDGES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """The forward's and the dq kernel's log2-scaled scores of queries q (rows) against keys k
    (cols), biased and masked: (BLOCK_M, BLOCK_N). A far block before `hole` (see
    zone_bounds) adds rel_ends[0], one after it rel_ends[1]."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    tile_ptrs = band_tile(band_row, start_m, start_n, band_start, band_cols, band_offsets,
                          QUERIES=BLOCK_M, KEYS=BLOCK_N)
    return bias_and_mask(
        s, rows, cols[None, :], tile_ptrs, tl.where(start_n < hole, rel_ends[0], rel_ends[1]),
        seqlen_q, seqlen_k, alibi_slope, key_mask_row, seg_row,
        CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
        REL_FROM_BAND=REL_FROM_BAND, HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS,
        MASK_EDGES=MASK_EDGES)
