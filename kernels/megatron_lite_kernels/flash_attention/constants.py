"""Numbers the kernels and their launchers share, named once.

They are `tl.constexpr` so that `@triton.jit` code can read them as globals (Triton accepts no
other globals); host code takes `.value`.
"""

import triton.language as tl

# The kernels' softmax runs in base 2 (exp2, log2): scores are scaled by log2(e), and the lse
# and the gradients go back to natural units with ln(2).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

# 2**-31: maps a non-negative int32 Philox draw into [0, 1).
INT31_TO_UNIT = tl.constexpr(4.6566127342e-10)

MAX_HEAD_DIM = 256

# The relative bias's band (see relative_bias.relative_bias_band): BAND_ROWS rows per head, a
# tile's row r reading row r % BAND_ROWS shifted left by r - r % BAND_ROWS columns. It serves
# tiles of up to BAND_SPAN queries + keys whose query count (key count, key-major) is a multiple
# of BAND_ROWS; its columns and every tile's first column are multiples of BAND_ALIGN, so tiles
# read it with 16-byte loads. Few rows keep the band small enough to stay in the L2 cache when
# the bias spans every distance of a long sequence (KERPLE, Sandwich).
BAND_ROWS = tl.constexpr(16)
BAND_SPAN = tl.constexpr(256)
BAND_ALIGN = tl.constexpr(16)
