"""The backward kernels: delta = rowsum(dout * out) - dlse; one program per key block for dk
and dv (summed over the query heads of a GQA group, so k and v are never repeated); one
program per query block for dq. Both recompute the probabilities from q, k and the lse; no
atomics for dq, dk, dv, so they are deterministic. (The relative bias's window gradient has a
kernel of its own, relative_bias_grad.py.)"""

import triton
import triton.language as tl

from .common import (
    bias_and_mask,
    causal_key_range,
    dropout_keep,
    load_alibi_slope,
    load_seed,
    load_tile,
    query_block,
    scores,
)
from .constants import LN2, LOG2E
from .relative_bias import (
    band_tile,
    band_tile_offsets,
    block_start,
    flush_far_rel_bias_grad,
    kv_near,
    rel_bias_ends,
    window_blocks,
    with_edges,
    zone_bounds,
)


@triton.jit
def bwd_delta_kernel(
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
def load_lse(Lse, row_ptrs, rows, seqlen_q):
    """lse of the rows in log2 units, +inf for rows past the end or without a visible key, so
    p = 0 there."""
    lse = tl.load(Lse + row_ptrs, mask=rows < seqlen_q, other=float("inf"))
    return tl.where(lse == float("-inf"), float("inf"), lse) * LOG2E


@triton.jit
def key_block_rows(start_n, seqlen_q, seqlen_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
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
def query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row, delta_row, rows, offs_d,
                seqlen_q, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """q and dout (BLOCK_M, BLOCK_D) of the query rows, zeros past the end; their lse (log2
    units, +inf past the end) and delta."""
    q_mask = rows[:, None] < seqlen_q
    if BLOCK_D != HEAD_DIM:
        q_mask = q_mask & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(do_base + rows[:, None] * stride_dom + offs_d[None, :], mask=q_mask, other=0.0)
    lse = load_lse(lse_row, rows, rows, seqlen_q)
    delta = tl.load(delta_row + rows, mask=rows < seqlen_q, other=0.0)
    return q, do, lse, delta


@triton.jit
def probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head, dropout_p,
                 HAS_DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """From biased, masked, log2-scaled scores s_t (BLOCK_N keys, BLOCK_M queries): (p^T as dv
    takes it, i.e. with dropout applied; ds^T = d loss / d score), both (BLOCK_N, BLOCK_M)."""
    p_t = tl.math.exp2(s_t - lse[None, :])
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
    if HAS_DROPOUT:
        # 1 / (1 - p) where kept, else 0. A float, not the bool mask: sm_90 compilation of a
        # kernel with a gather fails when it moves a bool tile through shared memory.
        keep_scale = tl.where(dropout_keep(seed, rows[None, :], cols, batch_head, dropout_p),
                              1.0 / (1.0 - dropout_p), 0.0)
        return p_t * keep_scale, p_t * (dp_t * keep_scale - delta[None, :])
    else:
        return p_t, p_t * (dp_t - delta[None, :])


# --------------------------------------------------------------------------------------------
# dk and dv
# --------------------------------------------------------------------------------------------


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

    With a relative bias, in zones as in the forward; with a causal mask the diagonal's blocks
    [edges[0], edges[1]) join the window zone. Walking down the queries, the far blocks before
    the window see the keys on its right: rel_ends = log2(e) * (bias[+W], bias[-W]). Without
    a causal mask, those blocks' part of the gradient of bias[+W] collects per key in
    far_right; the window zone's part comes from rel_bias_grad_kernel, and bias[-W]'s from
    the rows of ds summing to zero (see flush_far_rel_bias_grad)."""
    cols = (start_n + offs_n)[:, None]  # (BLOCK_N, 1)
    near = kv_near(start_n, seqlen_q, seqlen_k, rel_window, edges,
                   WIDEN=CAUSAL and MASK_EDGES and REL_ZONES, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    # (BLOCK_N, BLOCK_M): the key-major band, queries contiguous like the tile's rows
    band_offsets = band_tile_offsets(offs_n[:, None], offs_m[None, :], band_cols)
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = zone_bounds(lo, hi, near, ZONE=zone, SPLIT=REL_ZONES)
        # Two stages with a relative bias, except for the causal far zone (no gradient sums
        # there): measured fastest (docs/benchmarks.md).
        for index in tl.range(loop_lo, loop_hi, BLOCK_M,
                              num_stages=2 if HAS_REL_BIAS and (zone == 0 or not CAUSAL)
                              else None):
            start_m = block_start(index, hole, hole_width, REL_ZONES=REL_ZONES)
            right_of_window = start_m < hole  # for the far zone
            rows = start_m + offs_m  # (BLOCK_M,)
            q, do, lse, delta = query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row,
                                            delta_row, rows, offs_d, seqlen_q,
                                            HEAD_DIM=HEAD_DIM, BLOCK_D=BLOCK_D)
            s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
            s_t = s_t * qk_scale
            s_t = bias_and_mask(
                s_t, rows[None, :], cols,
                band_tile(band_row, start_n, start_m, band_start, band_cols, band_offsets,
                          QUERIES=BLOCK_N, KEYS=BLOCK_M),
                tl.where(right_of_window, rel_ends[0], rel_ends[1]), seqlen_q, seqlen_k,
                alibi_slope, key_mask_row, seg_row,
                CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
                REL_FROM_BAND=zone == 0, HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS,
                MASK_EDGES=MASK_EDGES and zone == 0)
            p_t, ds_t = probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head,
                                     dropout_p, HAS_DROPOUT=HAS_DROPOUT,
                                     DOT_PRECISION=DOT_PRECISION)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
            if HAS_REL_BIAS and REL_ZONES and zone == 1 and not CAUSAL:
                # wholly beyond the window: every element's gradient goes to one end entry
                far_right += tl.where(right_of_window, tl.sum(ds_t, axis=1), 0.0)
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    return dk, dv, far_right


@triton.jit
def bwd_kv_kernel(
    Q, K, V, DOut, Lse, Delta, DK, DV, DRelBias, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_dkb, stride_dkn, stride_dkh,
    stride_dvb, stride_dvn, stride_dvh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, Seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per (key block, batch, kv head): dk and dv summed over the head's group, and
    without a causal mask the far tiles' part of the relative bias's gradient. RelBias is the
    key-major band."""
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
    seed = load_seed(Seed, HAS_DROPOUT=HAS_DROPOUT)

    first_row, band_end, masked_end, last_rows = key_block_rows(
        start_n, seqlen_q, seqlen_k, CAUSAL=CAUSAL, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    # With a relative bias, one call walks all rows in zones; the first zone (the window, and
    # with a causal mask the diagonal's blocks) takes the edge mask. Past the last key nothing
    # else needs it here: those keys' dk, dv rows are never stored, and the far sums drop them.
    # relative_bias_grad.window_zone repeats this split.
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
        alibi_slope = load_alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI=HAS_ALIBI)
        band_row = RelBias + h * stride_relbias_h
        # (bias[+W], bias[-W]): the key-major band is mirrored
        rel_ends = rel_bias_ends(band_row, band_cols, HAS_REL_BIAS=HAS_REL_BIAS)
        far_right = tl.zeros([BLOCK_N], dtype=tl.float32)  # d bias[+W] from far tiles, per key
        dk, dv, far_right = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, stride_qm, stride_dom, lse_row, delta_row,
            far_right, start_n, first_row, split, edges, offs_m, offs_n, offs_d,
            seqlen_q, seqlen_k, qk_scale, alibi_slope, band_row, band_cols, band_start,
            rel_window, rel_ends, key_mask_row, seg_row, seed, batch_head, dropout_p,
            CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
            HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT,
            MASK_EDGES=CAUSAL or not merge_edges, REL_ZONES=merge_edges,
            HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
            DOT_PRECISION=DOT_PRECISION,
        )
        dk, dv, far_right = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, stride_qm, stride_dom, lse_row, delta_row,
            far_right, start_n, split, last_rows, (split, split), offs_m, offs_n,
            offs_d, seqlen_q, seqlen_k, qk_scale, alibi_slope, band_row, band_cols, band_start,
            rel_window, rel_ends, key_mask_row, seg_row, seed, batch_head, dropout_p,
            CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
            HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT,
            MASK_EDGES=False, REL_ZONES=HAS_REL_BIAS,
            HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
            DOT_PRECISION=DOT_PRECISION,
        )
        if HAS_REL_BIAS and not CAUSAL:
            flush_far_rel_bias_grad(DRelBias + h * (2 * rel_window + 1), far_right, cols,
                                    seqlen_k, rel_window)

    # s was scaled by softmax_scale * log2(e) for exp2; dk needs softmax_scale only.
    dk = dk * (qk_scale * LN2)
    tl.store(DK + b.to(tl.int64) * stride_dkb + h_kv * stride_dkh + cols[:, None] * stride_dkn
             + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + b.to(tl.int64) * stride_dvb + h_kv * stride_dvh + cols[:, None] * stride_dvn
             + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


# --------------------------------------------------------------------------------------------
# dq
# --------------------------------------------------------------------------------------------


@triton.jit
def _bwd_q_inner(
    dq, jacobian_sums, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
    start_m, lo, hi, edges, offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale, alibi_slope,
    band_row, band_cols, band_start, rel_window, rel_ends, jacobian_row, stride_jac_k,
    key_mask_row, seg_row, seed, batch_head, dropout_p,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    NUM_JACOBIAN: tl.constexpr, MASK_EDGES: tl.constexpr, REL_ZONES: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq of the query block at start_m over key blocks [lo, hi), in relative-bias zones and
    with the edge blocks as in the forward; and a ParametricBias's row sums (jacobian_sums,
    (BLOCK_M, 4): column k sums ds * jacobian k, see accumulate_jacobian)."""
    rows = (start_m + offs_m)[:, None]  # (BLOCK_M, 1)
    near = window_blocks(start_m + seqlen_k - seqlen_q, rel_window, OWN_BLOCK=BLOCK_M,
                         WALK_BLOCK=BLOCK_N)
    near = with_edges(near, edges, WIDEN=MASK_EDGES and REL_ZONES)
    # (BLOCK_M, BLOCK_N)
    band_offsets = band_tile_offsets(offs_m[:, None], offs_n[None, :], band_cols)
    for zone in tl.static_range(2 if REL_ZONES else 1):
        loop_lo, loop_hi, hole, hole_width = zone_bounds(lo, hi, near, ZONE=zone, SPLIT=REL_ZONES)
        # The window zone at two stages with a relative bias, the far zone at the tiles' own.
        for index in tl.range(loop_lo, loop_hi, BLOCK_N,
                              num_stages=2 if HAS_REL_BIAS and zone == 0 else None):
            start_n = block_start(index, hole, hole_width, REL_ZONES=REL_ZONES)
            cols = start_n + offs_n
            kv_mask = (cols[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
            k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :], kv_mask,
                          USE_MASK=(MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :], kv_mask,
                          USE_MASK=(MASK_EDGES and zone == 0) or BLOCK_D != HEAD_DIM)
            s = scores(
                q, k, qk_scale, rows, cols, start_m, start_n, hole, rel_ends, band_row,
                band_cols, band_start, band_offsets, seqlen_q, seqlen_k, alibi_slope,
                key_mask_row, seg_row,
                CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS,
                REL_FROM_BAND=zone == 0, HAS_KEY_MASK=HAS_KEY_MASK, HAS_SEGMENTS=HAS_SEGMENTS,
                MASK_EDGES=MASK_EDGES and zone == 0, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                DOT_PRECISION=DOT_PRECISION)
            p = tl.math.exp2(s - lse[:, None])
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
            if HAS_DROPOUT:
                keep = dropout_keep(seed, rows, cols[None, :], batch_head, dropout_p)
                dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
            if NUM_JACOBIAN > 0 and zone == 0:  # its window holds every distance: no far zone
                jacobian_sums = accumulate_jacobian(
                    jacobian_sums, ds, jacobian_row, stride_jac_k, start_m, start_n, band_start,
                    band_cols, band_offsets,
                    NUM_JACOBIAN=NUM_JACOBIAN, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return dq, jacobian_sums


@triton.jit
def accumulate_jacobian(jacobian_sums, ds, jacobian_row, stride_jac_k, start_m, start_n,
                        band_start, band_cols, band_offsets, NUM_JACOBIAN: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """jacobian_sums (BLOCK_M, 4) plus, in column k < NUM_JACOBIAN, the row sums of ds
    (BLOCK_M, BLOCK_N) times the tile of jacobian k's band (log2(e) * d bias / d param k,
    scaled, see launch._jacobian_band): the tile's share of d loss / d param k. Row sums keep
    the accumulator small; the program reduces it once, at the end."""
    which = tl.arange(0, 4)[None, :]  # (1, 4)
    for index in tl.static_range(NUM_JACOBIAN):
        tile = band_tile(jacobian_row + index * stride_jac_k, start_m, start_n, band_start,
                         band_cols, band_offsets, QUERIES=BLOCK_M, KEYS=BLOCK_N)
        row_sums = tl.sum(ds * tl.load(tile).to(tl.float32), axis=1)  # (BLOCK_M,)
        jacobian_sums += tl.where(which == index, row_sums[:, None], 0.0)
    return jacobian_sums


@triton.jit
def bwd_q_kernel(
    Q, K, V, DOut, Lse, Delta, DQ, Slopes, RelBias, KeyMask, SegIds, JacBand, DParams,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_dqb, stride_dqm, stride_dqh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b, stride_jac_k,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, Seed,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_REL_BIAS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    NUM_JACOBIAN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per (query block, batch, head): dq over the keys the block sees, and with
    a ParametricBias (NUM_JACOBIAN parameters per head; JacBand their jacobian's bands, the
    parameter's stride stride_jac_k, the head's stride_relbias_h as the values' band) the
    block's share of their gradient, added to DParams [NUM_JACOBIAN, Hq]."""
    b, h, h_kv, batch_head, start_m = query_block(seqlen_q, num_heads, kv_group,
                                                  BLOCK_M=BLOCK_M, CAUSAL=CAUSAL)

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
    lse = load_lse(Lse, row_ptrs, rows, seqlen_q)
    delta = tl.load(Delta + row_ptrs, mask=rows < seqlen_q, other=0.0)

    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh
    alibi_slope = load_alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI=HAS_ALIBI)
    band_row = RelBias + h * stride_relbias_h
    rel_ends = rel_bias_ends(band_row, band_cols, HAS_REL_BIAS=HAS_REL_BIAS)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b
    seed = load_seed(Seed, HAS_DROPOUT=HAS_DROPOUT)

    jacobian_row = JacBand + h * stride_relbias_h
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    jacobian_sums = tl.zeros([BLOCK_M, 4], dtype=tl.float32)
    full, end = causal_key_range(start_m, seqlen_q, seqlen_k, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                                 CAUSAL=CAUSAL)
    merge_edges: tl.constexpr = CAUSAL and HAS_REL_BIAS  # as in the forward
    split = end if merge_edges else full
    dq, jacobian_sums = _bwd_q_inner(
        dq, jacobian_sums, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
        start_m, 0, split, (full, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, jacobian_row,
        stride_jac_k, key_mask_row, seg_row, seed, batch_head, dropout_p,
        CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS, HAS_KEY_MASK=HAS_KEY_MASK,
        HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT, NUM_JACOBIAN=NUM_JACOBIAN,
        MASK_EDGES=merge_edges, REL_ZONES=HAS_REL_BIAS, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, DOT_PRECISION=DOT_PRECISION,
    )
    dq, jacobian_sums = _bwd_q_inner(
        dq, jacobian_sums, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn,
        start_m, split, end, (split, end), offs_m, offs_n, offs_d, seqlen_q, seqlen_k, qk_scale,
        alibi_slope, band_row, band_cols, band_start, rel_window, rel_ends, jacobian_row,
        stride_jac_k, key_mask_row, seg_row, seed, batch_head, dropout_p,
        CAUSAL=CAUSAL, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=HAS_REL_BIAS, HAS_KEY_MASK=HAS_KEY_MASK,
        HAS_SEGMENTS=HAS_SEGMENTS, HAS_DROPOUT=HAS_DROPOUT, NUM_JACOBIAN=NUM_JACOBIAN,
        MASK_EDGES=True, REL_ZONES=False, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        BLOCK_D=BLOCK_D, DOT_PRECISION=DOT_PRECISION,
    )
    if NUM_JACOBIAN > 0:
        # ds is d loss / d score in natural units, the band log2(e) times the jacobian
        which = tl.arange(0, 4)
        tl.atomic_add(DParams + which * num_heads + h, tl.sum(jacobian_sums, axis=0) * LN2,
                      mask=which < NUM_JACOBIAN, sem="relaxed")
    dq = dq * (qk_scale * LN2)
    tl.store(DQ + b.to(tl.int64) * stride_dqb + h * stride_dqh + rows[:, None] * stride_dqm
             + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=q_mask)
