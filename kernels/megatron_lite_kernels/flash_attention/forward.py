"""The forward kernel: one program per (query block, batch * head) walks the key blocks its
rows see, with the online softmax in base 2, and stores the output and the lse of each row."""

import triton
import triton.language as tl

from .common import (
    causal_key_range,
    dropout_keep,
    load_alibi_slope,
    load_seed,
    load_tile,
    query_block,
    scores,
)
from .constants import LN2
from .relative_bias import (
    band_tile_offsets,
    block_start,
    rel_bias_ends,
    window_blocks,
    with_edges,
    zone_bounds,
)


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

    REL_ZONES: walk the relative bias's zones (see zone_bounds); rel_ends = log2(e) *
    (bias[-W], bias[+W]), what the far blocks left and right of the window add. MASK_EDGES:
    the blocks need the edge mask; with REL_ZONES only the blocks [edges[0], edges[1]) do, and
    zone 0 takes them."""
    rows = (start_m + offs_m)[:, None]  # (BLOCK_M, 1)
    near = window_blocks(start_m + seqlen_k - seqlen_q, rel_window, OWN_BLOCK=BLOCK_M,
                         WALK_BLOCK=BLOCK_N)
    near = with_edges(near, edges, WIDEN=MASK_EDGES and REL_ZONES)
    # (BLOCK_M, BLOCK_N)
    band_offsets = band_tile_offsets(offs_m[:, None], offs_n[None, :], band_cols)
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = zone_bounds(lo, hi, near, ZONE=zone, SPLIT=REL_ZONES)
        # Edge blocks with a relative bias at two stages, the zones at the tiles' own (three):
        # the combination measured fastest (docs/benchmarks.md).
        for index in tl.range(loop_lo, loop_hi, BLOCK_N,
                              num_stages=2 if HAS_REL_BIAS and MASK_EDGES and zone == 0 else None):
            start_n = block_start(index, hole, hole_width, REL_ZONES=REL_ZONES)
            cols = start_n + offs_n  # (BLOCK_N,)
            kv_mask = (cols[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
            k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :], kv_mask,
                          USE_MASK=(MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            s = scores(
                q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row,
                band_cols, band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope,
                key_mask_row, seg_row,
                CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
                REL_FROM_BAND=zone == 0, HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS,
                MASK_EDGES=MASK_EDGES and zone == 0, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                DOT_PRECISION=DOT_PRECISION)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row with no visible key so far keeps m = -inf; subtract 0 instead of inf - inf.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            if HAS_DROPOUT:
                p = tl.where(dropout_keep(seed, rows, cols[None, :], batch_head, dropout_p), p,
                             0.0)
            v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :], kv_mask,
                          USE_MASK=(MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new
    return acc, l_i, m_i


@triton.jit
def fwd_kernel(
    Q, K, V, Out, Lse, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_ob, stride_om, stride_oh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, Seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr,
):
    """out and lse of one query block of one head. RelBias is the band (relative_bias_band);
    seqlen_bucket only serves the autotuner's key."""
    b, h, h_kv, batch_head, start_m = query_block(seqlen_q, num_heads, kv_group,
                                                  BLOCK_M=BLOCK_M, CAUSAL=CAUSAL)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh

    q_mask = ((start_m + offs_m)[:, None] < seqlen_q) & (offs_d[None, :] < HEAD_DIM)
    q = load_tile(q_base + (start_m + offs_m)[:, None] * stride_qm + offs_d[None, :], q_mask,
                  USE_MASK=not EVEN_M or BLOCK_D != HEAD_DIM)

    alibi_slope = load_alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI=HAS_ALIBI)
    band_row = RelBias + h * stride_relbias_h
    rel_ends = rel_bias_ends(band_row, band_cols, HAS_REL_BIAS=HAS_REL_BIAS)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b
    seed = load_seed(Seed, HAS_DROPOUT=HAS_DROPOUT)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full, end = causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                                 CAUSAL=CAUSAL)
    # With a causal relative bias, the first call's window zone also takes the diagonal's
    # blocks (see with_edges) and the second call has none left.
    merge_edges: tl.constexpr = CAUSAL and HAS_REL_BIAS
    split = end if merge_edges else full
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        start_m, 0, split, (full, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS, HAS_KEY_MASK=HAS_KEY_MASK,
        HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT, MASK_EDGES=merge_edges,
        REL_ZONES=HAS_REL_BIAS, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        BLOCK_D=BLOCK_D, DOT_PRECISION=DOT_PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        start_m, split, end, (split, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, key_mask_row,
        seg_row, seed, batch_head, dropout_p,
        CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS, HAS_KEY_MASK=HAS_KEY_MASK,
        HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT, MASK_EDGES=True, REL_ZONES=False,
        HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
        DOT_PRECISION=DOT_PRECISION,
    )

    blind = l_i == 0.0  # rows that saw no key: output 0, lse -inf
    out = acc / tl.where(blind, 1.0, l_i)[:, None]
    if HAS_DROPOUT:
        out = out * (1.0 / (1.0 - dropout_p))
    lse = tl.where(blind, float("-inf"), (m_i + tl.math.log2(tl.where(blind, 1.0, l_i))) * LN2)

    rows = start_m + offs_m
    tl.store(Lse + batch_head.to(tl.int64) * seqlen_q + rows, lse, mask=rows < seqlen_q)
    o_base = Out + b.to(tl.int64) * stride_ob + h * stride_oh
    tl.store(o_base + rows[:, None] * stride_om + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=q_mask)
