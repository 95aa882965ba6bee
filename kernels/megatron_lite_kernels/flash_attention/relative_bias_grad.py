"""The relative bias's gradient from the tiles across its window: a kernel that walks them along
diagonals of tiles, where every tile has the same distances, so a walk's ds tiles add up in
registers and are reduced by distance once (recomputing two of each tile's matrix products).
The far tiles' part comes from the dk/dv kernel, entry -W from every row of ds summing to zero
(relative_bias.flush_far_rel_bias_grad)."""

import triton
import triton.language as tl

from .backward import key_block_rows, probs_and_ds, query_tiles
from .common import bias_and_mask, load_alibi_slope, load_seed
from .relative_bias import band_tile, band_tile_offsets, kv_near, zone_bounds


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
def window_zone(start_n, seqlen_q, seqlen_k, rel_window, CAUSAL: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The query rows [zone_lo, zone_hi) of the dk/dv kernel's window zone (its first zone,
    which reads the band) for the key block at start_n, with BLOCK_M x BLOCK_N tiles: whole
    query blocks."""
    first_row, band_end, _, last_rows = key_block_rows(start_n, seqlen_q, seqlen_k,
                                                       CAUSAL=CAUSAL, BLOCK_M=BLOCK_M,
                                                       BLOCK_N=BLOCK_N)
    near = kv_near(start_n, seqlen_q, seqlen_k, rel_window, (first_row, band_end), WIDEN=CAUSAL,
                   BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    zone_lo, zone_hi, _, _ = zone_bounds(first_row, last_rows, near, ZONE=0, SPLIT=True)
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
        zone_lo, zone_hi = window_zone(start_n, seqlen_q, seqlen_k, rel_window, CAUSAL=CAUSAL,
                                       BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
        start_m = start_n + walk * BLOCK_M
        inside = (zone_lo <= start_m) & (start_m < zone_hi)
        n_lo = tl.where(inside, tl.minimum(n_lo, n), n_lo)
        n_hi = tl.where(inside, tl.maximum(n_hi, n + 1), n_hi)
    return n_lo, n_hi


@triton.jit
def rel_bias_grad_kernel(
    Q, K, V, DOut, Lse, Delta, DRelBias, Slopes, RelBias, KeyMask, SegIds,
    stride_qb, stride_qm, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_dob, stride_dom, stride_doh,
    stride_slopes_b, stride_relbias_h, stride_keymask_b, stride_seg_b,
    num_heads, kv_group, seqlen_q, seqlen_k, seqlen_bucket, rel_window, band_cols, band_start,
    qk_scale, dropout_p, Seed, first_walk, blocks_per_program,
    CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    HAS_SEGMENTS: tl.constexpr, HAS_DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The relative bias's gradient from the window-zone tiles (window_zone) of a tiling.

    Without a causal mask the tiling is the dk/dv kernel's, whose far tiles gave bias[+W]
    their part; with one, no far tile takes part (entry -W gets minus the sum of the others,
    see flush_far_rel_bias_grad), so any tiling covers what is left: the launcher picks one
    for this kernel alone.

    One program per (walk, run of key blocks, batch * head): walk w takes from each key block
    the query block that starts w * BLOCK_M after it, where that block lies in the key block's
    window zone. Every tile of a walk has the same distances (key - aligned query =
    a - b - w * BLOCK_M - (Sk - Sq) at tile element [a, b]) and the same bias tile, so the
    walk's ds tiles add up in registers and are reduced along their diagonals once, at the
    end: no per-tile gather or atomics in any loop. The price is the scores and dp of these
    tiles computed a second time (two matrix products per window tile). RelBias is the
    key-major band; seqlen_bucket only serves the autotuner's key."""
    tl.static_assert(BLOCK_M <= BLOCK_N, "the diagonal sums need BLOCK_M <= BLOCK_N")
    walk = tl.program_id(0) + first_walk
    first_block = tl.program_id(1) * blocks_per_program
    last_block = tl.minimum(first_block + blocks_per_program, tl.cdiv(seqlen_k, BLOCK_N))
    batch_head = tl.program_id(2)
    b = batch_head // num_heads
    h = batch_head % num_heads
    h_kv = h // kv_group
    n_lo, n_hi = _walk_key_blocks(walk, first_block, last_block, seqlen_q, seqlen_k, rel_window,
                                  CAUSAL=CAUSAL, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    do_base = DOut + b.to(tl.int64) * stride_dob + h * stride_doh
    k_base = K + b.to(tl.int64) * stride_kb + h_kv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv * stride_vh
    lse_row = Lse + batch_head.to(tl.int64) * seqlen_q
    delta_row = Delta + batch_head.to(tl.int64) * seqlen_q
    alibi_slope = load_alibi_slope(Slopes, b, h, stride_slopes_b, HAS_ALIBI=HAS_ALIBI)
    key_mask_row = KeyMask + b * stride_keymask_b
    seg_row = SegIds + b * stride_seg_b
    seed = load_seed(Seed, HAS_DROPOUT=HAS_DROPOUT)
    # (BLOCK_N, BLOCK_M): the walk's bias tile, from the key-major band as in the dk/dv kernel
    band_offsets = band_tile_offsets(offs_n[:, None], offs_m[None, :], band_cols)
    bias_t = tl.load(band_tile(RelBias + h * stride_relbias_h, 0, walk * BLOCK_M, band_start,
                               band_cols, band_offsets, QUERIES=BLOCK_N, KEYS=BLOCK_M))
    bias_t = bias_t.to(tl.float32)

    ds_sum = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for n in tl.range(n_lo, n_hi):
        start_n = n * BLOCK_N
        start_m = start_n + walk * BLOCK_M
        cols = (start_n + offs_n)[:, None]  # (BLOCK_N, 1)
        kv_mask = (cols < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_base + cols * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        rows = start_m + offs_m  # (BLOCK_M,)
        q, do, lse, delta = query_tiles(q_base, do_base, stride_qm, stride_dom, lse_row,
                                        delta_row, rows, offs_d, seqlen_q,
                                        HEAD_DIM=HEAD_DIM, BLOCK_D=BLOCK_D)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale + bias_t
        # The relative bias is in already, and with it the causal mask (the band's -inf): the
        # other masks apply.
        s_t = bias_and_mask(s_t, rows[None, :], cols, bias_t, 0.0, seqlen_q, seqlen_k,
                            alibi_slope, key_mask_row, seg_row,
                            CAUSAL=False, HAS_ALIBI=HAS_ALIBI, HAS_REL_BIAS=False,
                            REL_FROM_BAND=False, HAS_KEY_MASK=HAS_KEY_MASK,
                            HAS_SEGMENTS=HAS_SEGMENTS, MASK_EDGES=True)
        _, ds_t = probs_and_ds(s_t, v, do, lse, delta, rows, cols, seed, batch_head, dropout_p,
                               HAS_DROPOUT=HAS_DROPOUT, DOT_PRECISION=DOT_PRECISION)
        ds_sum += ds_t

    # (BLOCK_N // BLOCK_M, BLOCK_M) each, see _diagonal_sums
    unwrapped, wrapped = _diagonal_sums(ds_sum, ROWS=BLOCK_N, COLS=BLOCK_M)
    diagonal = (BLOCK_M * tl.arange(0, BLOCK_N // BLOCK_M)[:, None] - tl.arange(0, BLOCK_M)[None, :]
                - walk * BLOCK_M - (seqlen_k - seqlen_q))
    # Distances -W and beyond are left out, and their sum subtracted from drel[-W] (see
    # flush_far_rel_bias_grad): that entry is minus the sum of all the others.
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


def walk_range(seqlen_q: int, seqlen_k: int, rel_window: int, causal: bool, block_m: int,
               block_n: int) -> tuple[int, int]:
    """[first, end) of the walks of rel_bias_grad_kernel: the window zone (window_zone)
    relative to its key block's start, in query blocks, bounded by the walks that reach a query
    block of the sequence (the zones' own clamping at the sequence ends only shrinks a zone or
    empties it, so a few walks may still find no tile). Python's // rounds down, as the
    kernel's block arithmetic does where it matters."""
    shift = seqlen_k - seqlen_q
    # window_blocks: past the last block wholly beyond the window, up to the first one beyond
    # the other side
    lo = (-shift - rel_window - block_m + 1) // block_m + 1
    hi = -((shift - block_n + 1 - rel_window) // block_m)
    if causal:  # from the first row that sees the key block, and its diagonal blocks
        lo = -shift // block_m
        hi = max(hi, -((shift - block_n + 1) // block_m))
    # A walk's query block must start inside [0, Sq) for some key block: a window wider than
    # the sequences (T5's 128 at a short decoder) would otherwise launch idle programs.
    last_key_block_start = (triton.cdiv(seqlen_k, block_n) - 1) * block_n
    lo = max(lo, -(last_key_block_start // block_m))
    hi = min(hi, triton.cdiv(seqlen_q, block_m))
    return lo, max(lo, hi)
