"""Attention TFLOP/s and peak memory: ours vs SDPA (flash, cuDNN) vs FlexAttention, one run.

    python scripts/bench_attention.py --out bench.md
    python scripts/bench_attention.py --seqlens 4096 --dims 128 --causal 1 --providers ours,sdpa_flash
    cp -r kernels/megatron_lite_kernels/flash_attention my_edit    # then edit my_edit/
    python scripts/bench_attention.py --candidate my_edit --providers ours_relbias,cand_relbias

--candidate times an edited copy of the kernel (a copy of the package folder, or a single-module
kernel file) beside the committed kernel in the same run (providers cand, cand_alibi, cand_relbias,
cand_kerple, cand_sandwich): the A/B test for a kernel change. docs/benchmarks.md keeps the
tables and JSON of these runs.
"""

import argparse
import json
import sys
import time
import traceback

import torch

from megatron_lite.benchmarks.attention import (
    PROVIDERS, Shape, agreement_with_sdpa, format_ratio, kernel_breakdown, launch_overhead_us,
    load_candidate_kernel, matmul_tflops, peak_memory_gib,
    shapes_at_fixed_tokens, tflops, time_attention,
)

# Ratio columns, each shown when both of its providers run: (numerator, denominator).
RATIOS = [("ours", "sdpa_flash"), ("ours_alibi", "ours"), ("ours_relbias", "ours"),
          ("ours_kerple", "ours"), ("ours_sandwich", "ours"), ("ours_alibi", "flex_alibi"),
          ("ours_kerple", "flex_kerple"), ("ours_sandwich", "flex_sandwich"), ("cand", "ours"),
          ("cand_alibi", "ours_alibi"), ("cand_relbias", "ours_relbias"),
          ("cand_kerple", "ours_kerple"), ("cand_sandwich", "ours_sandwich")]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384, help="B*N, held fixed")
    parser.add_argument("--hidden", type=int, default=2048, help="heads = hidden / head dim")
    parser.add_argument("--seqlens", default="1024,4096,16384")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--causal", default="0,1")
    parser.add_argument("--modes", default="fwd,fwd_bwd")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--memory-seqlens", default="8192,32768,65536",
                        help="peak memory of fwd+bwd at B=1, H=16, D=128, causal ('' to skip)")
    parser.add_argument("--memory-providers", default="ours,sdpa_flash")
    parser.add_argument("--profile", action="store_true",
                        help="also print our per-kernel GPU time and wall time per step")
    parser.add_argument("--overhead", action="store_true",
                        help="also print the CPU time per fwd+bwd call at a negligible size")
    parser.add_argument("--out", default="", help="write the markdown tables here")
    parser.add_argument("--json", default="", help="write every measurement here")
    parser.add_argument("--candidate", default="",
                        help="an edited copy of the kernel (package folder or single-module file) to "
                             "time as providers cand*")
    return parser.parse_args()


def as_list(text, kind=str):
    return [kind(item) for item in text.split(",") if item]


def main():
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention.py needs a CUDA GPU")
    if args.candidate:
        load_candidate_kernel(args.candidate)
    providers = as_list(args.providers)
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        sys.exit(f"unknown providers {sorted(unknown)}; choose from {sorted(PROVIDERS)}")
    modes = as_list(args.modes)
    records = []
    lines = [f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
             f"triton {__import__('triton').__version__}, bf16; TFLOP/s (median)", ""]
    ratios = [(top, bottom) for top, bottom in RATIOS if top in providers and bottom in providers]
    header = ("| N | D | causal | mode | " + " | ".join(providers)
              + "".join(f" | {top} / {bottom}" for top, bottom in ratios) + " |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]

    shapes = shapes_at_fixed_tokens(args.tokens, args.hidden, as_list(args.seqlens, int),
                                    as_list(args.dims, int), [bool(int(c)) for c in as_list(args.causal)])
    for shape in shapes:
        # Our kernel with each positional bias among the providers, kernel by kernel.
        biases = [PROVIDERS[name][1] for name in providers
                  if name.startswith("ours_") and PROVIDERS[name][1] is not None]
        for bias in [None, *biases] if args.profile else []:
            per_kernel, wall_ms = kernel_breakdown(shape, bias)
            kernels_ms = ", ".join(f"{name[:24]} {ms:.3f}" for name, ms in per_kernel.items())
            print(f"{shape} bias={bias}: wall {wall_ms:.3f} ms/step, GPU {sum(per_kernel.values()):.3f} ms: "
                  f"{kernels_ms}")
            records.append({"shape": vars(shape), "bias": bias, "wall_ms": wall_ms, "kernels_ms": per_kernel})
        if "ours" in providers:
            error = agreement_with_sdpa(shape)
            records.append({"shape": vars(shape), "max_abs_diff_vs_sdpa_flash": error})
            print(f"{shape}: max |ours - sdpa_flash| = {error:.2e}", flush=True)
        for mode in modes:
            speed = {}
            for name in providers:
                started = time.time()
                try:
                    ms = time_attention(name, shape, mode)
                    speed[name] = tflops(shape, mode, ms)
                    records.append({"shape": vars(shape), "mode": mode, "provider": name, "ms": ms,
                                    "tflops": speed[name]})
                except Exception as error:  # a peer that cannot run this shape is a table entry
                    speed[name] = float("nan")
                    records.append({"shape": vars(shape), "mode": mode, "provider": name,
                                    "error": "".join(traceback.format_exception_only(error)).strip()[:300]})
                print(f"  {name:11s} {mode:7s} N={shape.seqlen:6d} D={shape.head_dim:3d} "
                      f"causal={int(shape.causal)}: {speed[name]:7.1f} TFLOP/s "
                      f"({time.time() - started:.0f}s incl. compile/tune)", flush=True)
            cells = " | ".join("err" if speed[p] != speed[p] else f"{speed[p]:.0f}" for p in providers)
            ratio_cells = "".join(f" | {format_ratio(speed[top], speed[bottom])}" for top, bottom in ratios)
            lines.append(f"| {shape.seqlen} | {shape.head_dim} | {int(shape.causal)} | {mode} | {cells}"
                         f"{ratio_cells} |")
            save(args, lines, records)

    memory_seqlens = as_list(args.memory_seqlens, int)
    if memory_seqlens:
        memory_providers = as_list(args.memory_providers)
        lines += ["", "Peak memory of forward + backward beyond inputs, their gradients and dout "
                  "(B=1, H=16, D=128, causal, bf16), GiB", "",
                  "| N | " + " | ".join(memory_providers) + " |", "|---|" + "---|" * len(memory_providers)]
        for seqlen in memory_seqlens:
            shape = Shape(1, 16, seqlen, 128, True)
            cells = []
            for name in memory_providers:
                try:
                    gib = peak_memory_gib(name, shape)
                    cells.append(f"{gib:.3f}")
                    records.append({"shape": vars(shape), "provider": name, "peak_gib": gib})
                except Exception as error:
                    cells.append("err")
                    records.append({"shape": vars(shape), "provider": name, "error": str(error)[:300]})
                torch.cuda.empty_cache()
            lines.append(f"| {seqlen} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)

    if args.overhead:
        overhead = launch_overhead_us()
        records.append({"launch_overhead_us": overhead})
        lines += ["", "Wall time per forward + backward at B=1, H=1, N=128, D=64 (launch overhead): "
                  + ", ".join(f"{name} {us:.0f} us" for name, us in overhead.items())]
    lines += ["", f"bf16 8192^3 matmul in the same run: {matmul_tflops():.0f} TFLOP/s"]
    save(args, lines, records)
    print("\n" + "\n".join(lines))


def save(args, lines, records):
    """Write what has been measured so far (a run cut short still leaves its tables)."""
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
