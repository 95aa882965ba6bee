"""What Triton's compiler makes of the attention kernels for sm_90, on a machine without a GPU:
shared memory, registers and spills, layout conversions, vectorised or element-wise copies,
per kernel and tile. A free predictor to read before timing a kernel change on the GPU.

    python scripts/kernel_report.py --head-dim 64 --features HAS_REL_BIAS
    python scripts/kernel_report.py --kernel-file edited_copy.py --features CAUSAL,HAS_REL_BIAS

Tiles are the module's own tuning candidates for the head dim (all of them, or --first-only).
Run without TRITON_INTERPRET.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernels"))  # the kernel package, installed or not

from megatron_lite_kernels.flash_attention import Tile  # noqa: E402
from megatron_lite_kernels.module_copy import load_kernel_copy  # noqa: E402
from megatron_lite_kernels.sm90_compile import FEATURES, compile_for_sm90, resource_report  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kernel-file", default=str(ROOT / "kernels" / "megatron_lite_kernels" / "flash_attention.py"),
                        help="the kernel module (an edited copy of kernels/flash_attention.py)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--features", default="", help=f"comma-separated, of {', '.join(FEATURES)}")
    parser.add_argument("--kernels", default="fwd,kv,dq",
                        help="fwd, kv (dk/dv), dq, relgrad (the relative bias's gradient)")
    parser.add_argument("--first-only", action="store_true", help="only the first tile of each table")
    return parser.parse_args()


def rel_grad_tiles(fa, causal: bool) -> dict:
    """The relative-bias gradient kernel's tiles per head-dim class, as its launcher picks them:
    with a causal mask its own tile at each warps/stages its tuner tries; without, the dk/dv
    kernel's tiles that its pruner keeps for a relative bias (the ones the gradient kernel can
    walk), at their warps and stages."""
    if causal and hasattr(fa, "_CAUSAL_REL_GRAD_TILES"):
        tried = fa._rel_grad_launch.configs  # warps and stages only: the tile is fixed
        return {d: [Tile(bm, bn, c.num_warps, c.num_stages, c.maxnreg) for c in tried]
                for d, (bm, bn) in fa._CAUSAL_REL_GRAD_TILES.items()}
    prune = fa._pruner(fa._KEY_MAJOR_TILES, True)
    configs = fa._configs(fa._KEY_MAJOR_TILES)
    return {d: [fa._tile(c) for c in prune(configs, {"seqlen_bucket": 2}, BLOCK_D=d,
                                            HAS_REL_BIAS=True, CAUSAL=False)]
            for d in fa._KEY_MAJOR_TILES}


def main():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("kernel_report.py compiles for sm_90: run it without TRITON_INTERPRET=1")
    args = parse_args()
    features = [name for name in args.features.split(",") if name]
    unknown = set(features) - set(FEATURES)
    if unknown:
        sys.exit(f"unknown features {sorted(unknown)}; choose from {', '.join(FEATURES)}")
    fa = load_kernel_copy(args.kernel_file, "megatron_lite_report")
    block_d = fa._head_block(args.head_dim)
    kernels = {"fwd": (fa._fwd_kernel, fa._ROW_MAJOR_TILES, {"EVEN_M": True}),
               "kv": (fa._bwd_kv_kernel, fa._KEY_MAJOR_TILES, {}),
               "dq": (fa._bwd_q_kernel, fa._DQ_TILES, {}),
               "relgrad": (getattr(fa, "_rel_bias_grad_kernel", None),
                           rel_grad_tiles(fa, "CAUSAL" in features), {})}
    if "relgrad" in args.kernels and "HAS_REL_BIAS" not in features:
        sys.exit("--kernels relgrad (the relative bias's gradient) needs --features HAS_REL_BIAS")
    print(f"{Path(args.kernel_file).name}, D = {args.head_dim}, features: {', '.join(features) or 'none'}")
    print("| kernel | BLOCK_M x BLOCK_N, warps, stages | shared KiB | registers | spill bytes | "
          "layout conversions | 16-byte copies | 4-byte copies | global loads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.kernels.split(","):
        kernel, tiles, extra = kernels[name]
        if kernel is None:
            sys.exit(f"{args.kernel_file} has no kernel for --kernels {name}")
        candidates = fa._for_head_dim(tiles, block_d)
        for tile in [Tile(*t) for t in (candidates[:1] if args.first_only else candidates)]:
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
