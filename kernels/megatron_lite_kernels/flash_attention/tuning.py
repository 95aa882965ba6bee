"""Tiles and autotuning: the candidate tiles of each kernel per head-dim class, how a launch's
candidates are pruned, and the tuned kernels the launchers call.

The tables are public: scripts/kernel_report.py compiles every candidate to show what the
compiler made of it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import triton

from .backward import bwd_kv_kernel, bwd_q_kernel
from .forward import fwd_kernel
from .relative_bias_grad import rel_bias_grad_kernel
from .support import INTERPRETER


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
ROW_MAJOR_TILES = {
    64: [Tile(128, 64, 4, 3), Tile(128, 64, 8, 3), Tile(128, 64, 8, 3, 128), Tile(128, 128, 8, 3),
         Tile(64, 64, 4, 3), Tile(64, 64, 4, 3, 128)],
    128: [Tile(128, 64, 8, 3), Tile(128, 64, 8, 2, 128), Tile(128, 128, 8, 2), Tile(128, 64, 4, 2)],
    256: [Tile(64, 64, 8, 2), Tile(64, 32, 4, 2)],
}
KEY_MAJOR_TILES = {
    64: [Tile(64, 128, 8, 3), Tile(32, 128, 4, 3), Tile(64, 64, 4, 3), Tile(32, 128, 4, 5)],
    128: [Tile(64, 128, 8, 2), Tile(32, 128, 8, 2), Tile(32, 128, 4, 3), Tile(64, 64, 4, 3)],
    256: [Tile(32, 64, 4, 2), Tile(64, 32, 4, 1)],
}
DQ_TILES = {
    64: [Tile(128, 64, 4, 3), Tile(128, 64, 8, 3), Tile(128, 64, 8, 3, 128), Tile(128, 32, 4, 3),
         Tile(64, 64, 4, 3)],
    128: [Tile(128, 64, 8, 3), Tile(128, 32, 4, 3), Tile(128, 32, 8, 3), Tile(128, 32, 8, 3, 128),
          Tile(64, 64, 4, 3)],
    256: [Tile(64, 64, 8, 2), Tile(64, 32, 4, 2)],
}
SHORT_TILE = Tile(32, 32, 4, 2)  # tiny problems (decode, short sequences): no tuning sweep

# The relative-bias gradient kernel's own tiles (causal only, see rel_grad_tile) per head-dim
# class: 64 x 64 walks the fewest elements (three walks of 64 queries per 64 keys with W = 128,
# against four per 128 keys with 64 x 128); D = 256 needs a smaller tile to fit shared memory.
CAUSAL_REL_GRAD_TILES = {64: (64, 64), 128: (64, 64), 256: (32, 64)}
CAUSAL_REL_GRAD_INTERPRETER_TILE = (32, 32)  # unlike the dk/dv kernel's, as on the GPU

# Key blocks per program of the relative-bias gradient kernel: long walks amortise its final
# reduction; at N = 16384 and batch 1 this still leaves several programs per SM.
REL_GRAD_BLOCKS_PER_PROGRAM = 16

TUNING_KEY = ["HEAD_DIM", "CAUSAL", "HAS_ALIBI", "HAS_REL_BIAS", "HAS_DROPOUT", "seqlen_bucket",
              "kv_group"]


def seqlen_bucket(seqlen_q: int, seqlen_k: int) -> int:
    """Length class for the autotuning key: 0 when either sequence is shorter than 64 (decode,
    tiny inputs), then 1 up to 512, 2 up to 2048, 3 beyond."""
    if min(seqlen_q, seqlen_k) < 64:
        return 0
    longest = max(seqlen_q, seqlen_k)
    return 1 if longest <= 512 else 2 if longest <= 2048 else 3


def head_block(head_dim: int) -> int:
    """The head dim the kernels compute with: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(head_dim))


def for_head_dim(table: dict, block_d: int):
    """The entry of a table keyed by head-dim class (64, 128, 256) for padded head dim block_d."""
    return table[min(c for c in table if c >= block_d)]


def configs_of(tiles: dict) -> list:
    """Every tile of a table (and the short tile) as triton.Configs, in a fixed order."""
    unique = {tile for group in tiles.values() for tile in group} | {SHORT_TILE}
    return [triton.Config({"BLOCK_M": t.block_m, "BLOCK_N": t.block_n}, num_warps=t.warps,
                          num_stages=t.stages, maxnreg=t.max_registers)
            for t in sorted(unique, key=lambda t: (*t[:4], t.max_registers or 0))]


def tile_of(config) -> Tile:
    return Tile(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
                config.num_stages, config.maxnreg)


def pruner(tiles: dict, rel_bias_needs_wide_keys: bool):
    """early_config_prune: the tiles of this head dim's class, or the short tile alone for the
    short length class (a 128-row tile would be mostly padding). rel_bias_needs_wide_keys: with
    a relative bias and no causal mask, keep only tiles with BLOCK_M <= BLOCK_N
    (rel_bias_grad_kernel then walks the dk/dv kernel's tiles, and its diagonal sums need
    them), and of those the ones with 64 queries or more where there are any: narrower ones
    multiply that kernel's walks (measured slower overall even where they suit the dk/dv
    kernel alone; docs/benchmarks.md)."""
    def prune(configs, named_args, **kwargs):
        if named_args["seqlen_bucket"] == 0:
            wanted = [SHORT_TILE]
        else:
            wanted = for_head_dim(tiles, kwargs["BLOCK_D"])
        if rel_bias_needs_wide_keys and kwargs["HAS_REL_BIAS"] and not kwargs["CAUSAL"]:
            wanted = [tile for tile in wanted if tile.block_m <= tile.block_n]
            wanted = [tile for tile in wanted if tile.block_m >= 64] or wanted
        return [config for config in configs if tile_of(config) in wanted]
    return prune


def _autotune(kernel, tiles: dict, reset_to_zero=None, rel_bias_needs_wide_keys=False,
              extra_key=()):
    prune = pruner(tiles, rel_bias_needs_wide_keys)
    return _tuned(kernel, configs_of(tiles), [*TUNING_KEY, *extra_key], reset_to_zero,
                  prune_configs_by={"early_config_prune": prune})


def _tuned(kernel, configs: list, key: list, reset_to_zero, **options):
    options.update(key=key, reset_to_zero=reset_to_zero)
    try:  # shorter timing runs per candidate (the `do_bench` hook is newer than some tritons)
        return triton.autotune(configs, **options, do_bench=_quick_bench)(kernel)
    except TypeError:
        return triton.autotune(configs, **options)(kernel)


def _quick_bench(fn, quantiles=None):
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


_fwd_heuristics = triton.heuristics({"EVEN_M": lambda args: args["seqlen_q"] % args["BLOCK_M"] == 0})
if INTERPRETER:
    fwd_launch = _fwd_heuristics(fwd_kernel)
    bwd_kv_launch, bwd_q_launch = bwd_kv_kernel, bwd_q_kernel
    rel_grad_launch = rel_bias_grad_kernel
    # The interpreter runs one config, not a tuning sweep; unequal tiles keep the index
    # arithmetic honest in tests.
    INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 16}
    BWD_KV_INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 32}
else:
    fwd_launch = _autotune(_fwd_heuristics(fwd_kernel), ROW_MAJOR_TILES)
    bwd_kv_launch = _autotune(bwd_kv_kernel, KEY_MAJOR_TILES, reset_to_zero=["DRelBias"],
                              rel_bias_needs_wide_keys=True)
    # DParams: a ParametricBias's gradient, added with atomics (an empty buffer without one).
    bwd_q_launch = _autotune(bwd_q_kernel, DQ_TILES, reset_to_zero=["DParams"],
                             extra_key=["NUM_JACOBIAN"])
    # Its tile comes from rel_grad_tile; warps and stages are its own (it also pipelines k
    # and v, so some of the dk/dv kernel's stage counts overflow shared memory: the tuner
    # skips them).
    rel_grad_launch = _tuned(
        rel_bias_grad_kernel,
        [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)],
        ["BLOCK_M", "BLOCK_N", *(key for key in TUNING_KEY if key != "HAS_REL_BIAS")],
        reset_to_zero=["DRelBias"])
    INTERPRETER_BLOCKS = {}
    BWD_KV_INTERPRETER_BLOCKS = {}


def rel_grad_tile(causal: bool, head_dim: int, seqlen_q: int, seqlen_k: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the relative-bias gradient kernel. Without a causal mask, the
    tile the dk/dv kernel last ran with: the window zone it covers is the complement of that
    kernel's far tiles. With one, a tile of its own (no far tile takes part)."""
    if causal:
        if INTERPRETER:
            return CAUSAL_REL_GRAD_INTERPRETER_TILE
        if seqlen_bucket(seqlen_q, seqlen_k) == 0:
            return SHORT_TILE.block_m, SHORT_TILE.block_n
        return for_head_dim(CAUSAL_REL_GRAD_TILES, head_block(head_dim))
    if INTERPRETER:
        blocks = BWD_KV_INTERPRETER_BLOCKS
    else:
        blocks = bwd_kv_launch.best_config.kwargs  # set by the autotuner on every launch
    return blocks["BLOCK_M"], blocks["BLOCK_N"]
