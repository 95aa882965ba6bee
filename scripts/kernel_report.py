"""What Triton's compiler makes of the attention kernels for sm_90, on a machine without a GPU:
shared memory, registers and spills, layout conversions, vectorised or element-wise copies,
per kernel and tile. A free predictor to read before timing a kernel change on the GPU.

    python scripts/kernel_report.py --head-dim 64 --features HAS_REL_BIAS
    cp -r kernels/megatron_lite_kernels/flash_attention my_edit   # then edit my_edit/*.py
    python scripts/kernel_report.py --kernel-copy my_edit --features CAUSAL,HAS_REL_BIAS

Tiles are the module's own tuning candidates for the head dim (all of them, or --first-only).
Run without TRITON_INTERPRET.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernels"))  # the kernel package, installed or not

from megatron_lite_kernels.module_copy import KERNEL_PACKAGE, load_kernel_copy  # noqa: E402
from megatron_lite_kernels.sm90_compile import FEATURES, compile_for_sm90, resource_report  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kernel-copy", default=str(KERNEL_PACKAGE),
                        help="the kernel package (default: the installed one; or an edited copy "
                             "of its folder)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--features", default="", help=f"comma-separated, of {', '.join(FEATURES)}")
    parser.add_argument("--kernels", default="fwd,kv,dq",
                        help="fwd, kv (dk/dv), dq, relgrad (the relative bias's gradient)")
    parser.add_argument("--first-only", action="store_true", help="only the first tile of each table")
    parser.add_argument("--jacobian", type=int, default=0,
                        help="the dq kernel with a ParametricBias of this many parameters per "
                             "head (KERPLE: 3; needs HAS_REL_BIAS)")
    return parser.parse_args()


def rel_grad_tiles(fa, causal: bool) -> dict:
    """The relative-bias gradient kernel's tiles per head-dim class, as its launcher picks them:
    with a causal mask its own tile at each warps/stages its tuner tries; without, the dk/dv
    kernel's tiles that its pruner keeps for a relative bias (the ones the gradient kernel can
    walk), at their warps and stages."""
    tuning = fa.tuning
    if causal:
        tried = tuning.rel_grad_launch.configs  # warps and stages only: the tile is fixed
        return {d: [tuning.Tile(bm, bn, c.num_warps, c.num_stages, c.maxnreg) for c in tried]
                for d, (bm, bn) in tuning.CAUSAL_REL_GRAD_TILES.items()}
    prune = tuning.pruner(tuning.KEY_MAJOR_TILES, True)
    configs = tuning.configs_of(tuning.KEY_MAJOR_TILES)
    return {d: [tuning.tile_of(c) for c in prune(configs, {"seqlen_bucket": 2}, BLOCK_D=d,
                                                 HAS_REL_BIAS=True, CAUSAL=False)]
            for d in tuning.KEY_MAJOR_TILES}


def main():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("kernel_report.py compiles for sm_90: run it without TRITON_INTERPRET=1")
    args = parse_args()
    features = [name for name in args.features.split(",") if name]
    unknown = set(features) - set(FEATURES)
    if unknown:
        sys.exit(f"unknown features {sorted(unknown)}; choose from {', '.join(FEATURES)}")
    fa = load_kernel_copy(args.kernel_copy, "megatron_lite_report")
    tuning = fa.tuning
    block_d = tuning.head_block(args.head_dim)
    kernels = {"fwd": (fa.forward.fwd_kernel, tuning.ROW_MAJOR_TILES, {"EVEN_M": True}),
               "kv": (fa.backward.bwd_kv_kernel, tuning.KEY_MAJOR_TILES, {}),
               "dq": (fa.backward.bwd_q_kernel, tuning.DQ_TILES, {"NUM_JACOBIAN": args.jacobian}),
               "relgrad": (fa.relative_bias_grad.rel_bias_grad_kernel,
                           rel_grad_tiles(fa, "CAUSAL" in features), {})}
    if "relgrad" in args.kernels and "HAS_REL_BIAS" not in features:
        sys.exit("--kernels relgrad (the relative bias's gradient) needs --features HAS_REL_BIAS")
    print(f"{args.kernel_copy}, D = {args.head_dim}, features: {', '.join(features) or 'none'}")
    print("| kernel | BLOCK_M x BLOCK_N, warps, stages | shared KiB | registers | spill bytes | "
          "layout conversions | 16-byte copies | 4-byte copies | global loads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.kernels.split(","):
        kernel, tiles, extra = kernels[name]
        candidates = tuning.for_head_dim(tiles, block_d)
        for tile in candidates[:1] if args.first_only else candidates:
            constexprs = {**{f: f in features for f in FEATURES}, **extra, "HEAD_DIM": args.head_dim,
                          "BLOCK_D": block_d, "DOT_PRECISION": "tf32", "BLOCK_M": tile.block_m,
                          "BLOCK_N": tile.block_n}
            label = f"{tile.block_m} x {tile.block_n}, {tile.warps}, {tile.stages}" + (
                f", <= {tile.max_registers} registers" if tile.max_registers else "")
            try:
                report = resource_report(compile_for_sm90(
                    kernel, constexprs, num_warps=tile.warps, num_stages=tile.stages,
                    max_registers=tile.max_registers, aligned=True))
            except Exception as error:  # a tile the compiler refuses is a row, not the end
                print(f"| {name} | {label} | failed: {str(error).splitlines()[0][:80]} | | | | | | |",
                      flush=True)
                continue
            print(f"| {name} | {label} | {report['shared_bytes'] / 1024:.0f} | "
                  f"{report['registers']} | {report['spill_bytes']} | {report['layout_conversions']} | "
                  f"{report['async_copies_16B']} | {report['async_copies_4B']} | {report['global_loads']} |",
                  flush=True)


if __name__ == "__main__":
    main()
