"""The learned relative position bias in the kernels: its band, and the zones of a block walk.

The bias comes as [Hq, 2W + 1] by distance (T5's buckets gathered per distance by the caller);
the kernels add bias[h, clamp(j - i', -W, W) + W] with i' = i + Sk - Sq. Every element of a
tile wholly beyond the window on one side reads the same clamped end entry: such tiles (most of
them, for long sequences) add a constant. Tiles across the window read a Toeplitz block of a
per-call band [Hq, BAND_ROWS, C] (relative_bias_band) with vector loads, keys contiguous.

So each program walks its blocks in two zones: the blocks across the window, then the far
blocks of both sides in one loop (zone_bounds). A per-tile branch instead makes the compiler
convert the score tile between layouts every iteration, and a loop per side costs a pipeline
fill per loop (it showed at N = 2048).

The gradient of the bias's entries: the window's come from rel_bias_grad_kernel
(relative_bias_grad.py), the far tiles' right of the window from the dk/dv kernel
(flush_far_rel_bias_grad), and entry -W from every row of ds summing to zero.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import buffers
from .constants import BAND_ALIGN, BAND_ROWS, BAND_SPAN, LOG2E


@triton.jit
def clamp_to_window(distance, rel_window):
    """distance clamped to [-W, W], the relative bias's window."""
    return tl.minimum(tl.maximum(distance, -rel_window), rel_window)


@triton.jit
def window_blocks(diagonal, rel_window, OWN_BLOCK: tl.constexpr, WALK_BLOCK: tl.constexpr):
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
def zone_bounds(lo, hi, near, ZONE: tl.constexpr, SPLIT: tl.constexpr):
    """(loop_lo, loop_hi, hole, hole_width) of the loop over blocks of [lo, hi) in ZONE.

    Unsplit: all of [lo, hi). Split at near = (near_lo, near_hi) from window_blocks: zone 0
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
def with_edges(near, edges, WIDEN: tl.constexpr):
    """near (from window_blocks) widened to hold the edge blocks [edges[0], edges[1]) if WIDEN:
    zone 0 then walks them with the edge mask. With a causal mask they cross the diagonal, so
    they lie across the window anyway; one loop instead of two saves a pipeline fill."""
    if WIDEN:
        return tl.minimum(near[0], edges[0]), tl.maximum(near[1], edges[1])
    else:
        return near


@triton.jit
def block_start(index, hole, hole_width, REL_ZONES: tl.constexpr):
    """The block start a zone loop's index stands for (see zone_bounds)."""
    if REL_ZONES:
        return index + tl.where(index >= hole, hole_width, 0)
    else:
        return index


@triton.jit
def kv_near(start_n, seqlen_q, seqlen_k, rel_window, edges, WIDEN: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A key block's window zone as query blocks (near_lo, near_hi), before clamping to its
    rows, widened to the edge blocks if WIDEN: the dk/dv kernel's split, which the
    relative-bias gradient kernel repeats."""
    near = window_blocks(start_n - (seqlen_k - seqlen_q), rel_window, OWN_BLOCK=BLOCK_N,
                         WALK_BLOCK=BLOCK_M)
    return with_edges(near, edges, WIDEN=WIDEN)


@triton.jit
def band_tile_offsets(tile_rows, tile_cols, band_cols):
    """Offsets into a head's band of a tile's elements relative to its first column, for the
    tile's row indices tile_rows (ROWS, 1) and column indices tile_cols (1, COLS): row r reads
    band row r % BAND_ROWS, BAND_ROWS * (r // BAND_ROWS) columns left of row 0's. The band is
    Toeplitz (its entry is a function of column - row), so that is the entry the full Toeplitz
    block would hold, from a band BAND_ROWS rows tall instead of ROWS."""
    group = tile_rows // BAND_ROWS
    return ((tile_rows - group * BAND_ROWS) * tl.multiple_of(band_cols, BAND_ALIGN)
            - group * BAND_ROWS + tile_cols)


@triton.jit
def band_tile(band_row, start_m, start_n, band_start, band_cols, tile_offsets,
              QUERIES: tl.constexpr, KEYS: tl.constexpr):
    """Pointers to the band entries of the tile of QUERIES queries from start_m and KEYS keys
    from start_n (tile_offsets from band_tile_offsets): its first key's column, start_n - start_m +
    band_start, a multiple of BAND_ALIGN (vector loads), clamped to where every row's read
    lies in the band. Exact for any tile: one clamped at either end lies wholly beyond the
    window, as do the band's first and last columns the clamped tile reads (see
    relative_bias_band)."""
    rows: tl.constexpr = BAND_ROWS.value  # an int: the interpreter has no int % constexpr
    tl.static_assert(QUERIES % rows == 0 and QUERIES + KEYS <= BAND_SPAN.value,
                     "a tile the band does not serve (see constants.BAND_ROWS)")
    col = tl.minimum(tl.maximum(start_n - start_m + band_start, QUERIES - rows),
                     band_cols - KEYS)
    return band_row + tl.multiple_of(col, BAND_ALIGN) + tile_offsets


@triton.jit
def rel_bias_ends(band_row, band_cols, HAS_REL_BIAS: tl.constexpr):
    """log2(e) * (bias[-W], bias[+W]), what far tiles add: the band's first and last entries."""
    if HAS_REL_BIAS:
        return tl.load(band_row).to(tl.float32), tl.load(band_row + band_cols - 1).to(tl.float32)
    else:
        return 0.0, 0.0


@triton.jit
def flush_far_rel_bias_grad(drel_row, far_right, cols, seqlen_k, rel_window):
    """Add a key block's far-tile sums for bias[+W] (per key, see the dk/dv kernel) to
    drel[+W], and subtract them from drel[-W].

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
def band_kernel(Bias, Band, stride_bias_h, stride_band_h, rel_window, lead, band_cols,
                MIRRORED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_C: tl.constexpr):
    """BLOCK_C columns of one head's band (see relative_bias_band): band[h, r, c] = log2(e) *
    bias[h, clamp(c - r - lead, -W, W) + W], the entries mirrored (2W - entry) if MIRRORED;
    CAUSAL: -inf where the key comes after the query (c - r - lead > 0, < 0 if MIRRORED)."""
    rows = tl.arange(0, BAND_ROWS)[:, None]  # (BAND_ROWS, 1)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]  # (1, BLOCK_C)
    h = tl.program_id(1)
    distance = cols - rows - lead  # j - i' (i' - j if MIRRORED)
    clamped = clamp_to_window(distance, rel_window)
    entry = rel_window - clamped if MIRRORED else rel_window + clamped
    value = tl.load(Bias + h * stride_bias_h + entry).to(tl.float32) * LOG2E
    if CAUSAL:
        future = distance < 0 if MIRRORED else distance > 0
        value = tl.where(future, float("-inf"), value)
    tl.store(Band + h * stride_band_h + rows * band_cols + cols,
             value.to(Band.dtype.element_ty), mask=cols < band_cols)


def relative_bias_band(relative_bias: torch.Tensor, seqlen_q: int, seqlen_k: int,
                       dtype: torch.dtype, keys_major: bool = False,
                       causal: bool = False) -> tuple[torch.Tensor, int]:
    """The relative bias [Hq, 2W + 1] as the kernels read it: (band [Hq, BAND_ROWS, C],
    band_start).

    band[h, r, c] = log2(e) * bias[h, clamp(c - r - P, -W, W) + W]: Toeplitz, so the bias of a
    tile (queries start_m + r, keys start_n + n) is band[r % R, col + n - R * (r // R)] with
    R = BAND_ROWS and col = start_n - start_m + band_start, band_start = P - (Sk - Sq): keys
    contiguous, read with vector loads instead of a gather per element (see band_tile).
    band_tile clamps col into [Q - R, C - K] for a tile of Q queries and K keys (Q + K <=
    BAND_SPAN = S), where every read lies in the band; P >= W + S - R - 1 and C >= P + W + S - 1
    make a clamped tile read distances beyond the window only, as its true ones are. P = Sk - Sq
    and C = 0 (mod BAND_ALIGN) align every tile's first key.
    keys_major: the band for the dk/dv kernel's (keys, queries) tiles, queries contiguous: the
    same construction for the mirrored bias (distance i - j) with queries and keys swapped.
    causal: the band also holds the causal mask, -inf where j > i' (the kernels then skip the
    mask arithmetic in every tile that reads the band: it cost about as much as the band's
    read).
    R rows rather than a whole tile's: for a bias over every distance of a long sequence
    (KERPLE, Sandwich: W = S - 1) a band of R x 2S entries per head stays in the L2 cache.
    fp16 for 16-bit inputs (half the bytes of fp32; its 2^-11 relative error stays below the
    rounding of p before the second matrix product), fp32 for fp32 inputs. One kernel writes
    it (three torch operations took several times as long).
    """
    heads, entries = relative_bias.shape
    window = (entries - 1) // 2
    rows, span, align = BAND_ROWS.value, BAND_SPAN.value, BAND_ALIGN.value
    shift = seqlen_q - seqlen_k if keys_major else seqlen_k - seqlen_q
    least_lead = window + span - rows - 1
    lead = least_lead + (shift - least_lead) % align  # P
    cols = triton.cdiv(lead + window + span - 1, align) * align  # C
    band_dtype = torch.float32 if dtype == torch.float32 else torch.float16
    band = buffers.alloc((heads, rows, cols), band_dtype, relative_bias.device)
    block_c = 256
    band_kernel[(triton.cdiv(cols, block_c), heads)](
        relative_bias, band, relative_bias.stride(0), band.stride(0), window, lead, cols,
        MIRRORED=keys_major, CAUSAL=causal, BLOCK_C=block_c)
    return band, lead - shift
