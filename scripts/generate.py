"""Generate text from a trained checkpoint: GPT continues each prompt, T5 reads it in its encoder
and writes the output (with `<extra_id_n>` sentinels in the prompt, the masked spans).

    python scripts/generate.py nemo_experiments/megatron_gpt/<run>/checkpoints/last.ckpt \
        --prompt "The" --prompt "A class" --max-new-tokens 64 \
        [--greedy | --top-k 40 --top-p 0.9 --temperature 0.8] [--repetition-penalty 1.2] \
        [--stop "\n\n"]
    python scripts/generate.py <t5 checkpoint> --prompt "The <extra_id_0> statement ends a <extra_id_1>." --greedy
    python scripts/generate.py <checkpoint> --prompts-file prompts.txt   # one prompt per line

Prompts run as one batch, with a key/value cache (--no-cache re-runs every step over the whole
sequence). The checkpoint holds its config, so the model and the tokenizer (model.tokenizer.*)
are rebuilt from it; the tokenizer file must still exist at the path recorded there.
"""

import argparse
import sys
from pathlib import Path

import torch

from megatron_lite.generation.prompts import generate_for_prompts
from megatron_lite.training import build_tokenizer_from_config, load_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt file written by scripts/train.py")
    parser.add_argument("--prompt", action="append", default=[],
                        help="text to continue or transform (repeat for a batch; GPT: empty "
                             "starts a new document)")
    parser.add_argument("--prompts-file", help="a text file of prompts, one per line")
    parser.add_argument("--max-new-tokens", "--tokens-to-generate", dest="max_new_tokens", type=int,
                        default=64)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    parser.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest (0: all)")
    parser.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling (0: off)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 makes tokens already in the text less likely")
    parser.add_argument("--stop", action="append", default=[],
                        help="GPT: end a continuation before this string (repeatable)")
    parser.add_argument("--no-cache", action="store_true", help="re-run the whole sequence each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist")
        prompts += path.read_text().splitlines()
    return prompts or [""]


def main() -> None:
    args = parse_args()
    try:
        if args.temperature <= 0 or args.repetition_penalty <= 0:
            raise ValueError("--temperature and --repetition-penalty must be > 0")
        model, cfg = load_model(args.checkpoint)
        tokenizer = build_tokenizer_from_config(cfg)
        texts = generate_for_prompts(
            model.to(args.device), tokenizer, read_prompts(args), args.max_new_tokens,
            stop_strings=args.stop, seed=args.seed, use_cache=not args.no_cache,
            greedy=args.greedy, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
            repetition_penalty=args.repetition_penalty,
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"Error: {error}")
    print("\n\n".join(texts))


if __name__ == "__main__":
    main()
