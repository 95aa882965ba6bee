"""Generation tokens/s: our GPT with its key/value cache (flash on and off) against Hugging Face
GPT-2's generate, the same shape, one run.

    python scripts/bench_generate.py --batches 1,32 --json generate.json
"""

import argparse
import json
import sys

import torch

from megatron_lite.benchmarks.generation import GenerationShape, measure_hf, measure_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_generate.py needs a CUDA GPU")
    shape = GenerationShape(args.layers, args.hidden, args.heads, args.vocab, args.prompt, args.new_tokens)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; {shape}; new tokens/s, bf16")
    print("| batch | ours (flash) | ours (PyTorch attention) | HF GPT-2 generate | flash / HF |")
    print("|---|---|---|---|---|")
    records = []
    for batch in (int(b) for b in args.batches.split(",")):
        flash, plain, hf = measure_ours(shape, batch, True), measure_ours(shape, batch, False), measure_hf(shape, batch)
        records.append({"shape": vars(shape), "batch": batch, "ours_flash": flash, "ours_pytorch": plain, "hf": hf})
        print(f"| {batch} | {flash:,.0f} | {plain:,.0f} | {hf:,.0f} | {flash / hf:.2f} |", flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
