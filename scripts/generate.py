"""Generate text from a trained checkpoint: GPT continues the prompt, T5 reads it in its encoder
and writes the output (with `<extra_id_n>` sentinels in the prompt, the masked spans).

    python scripts/generate.py nemo_experiments/megatron_gpt/<run>/checkpoints/last.ckpt \
        --prompt "The" --tokens-to-generate 64 [--greedy | --top-k 40 --top-p 0.9 --temperature 0.8]
    python scripts/generate.py nemo_experiments/megatron_t5/<run>/checkpoints/last.ckpt \
        --prompt "The <extra_id_0> statement ends a <extra_id_1>." --greedy

The checkpoint holds its config, so the model and the tokenizer (model.tokenizer.*) are rebuilt
from it; the tokenizer file must still exist at the path recorded there.
"""

import argparse
import sys

import torch

from megatron_lite.config import InferenceConfig
from megatron_lite.training import build_tokenizer_from_config, family_of, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt file written by scripts/train.py")
    parser.add_argument("--prompt", default="", help="text to continue or transform (GPT: empty starts a new document)")
    parser.add_argument("--tokens-to-generate", type=int, default=64)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    parser.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest (0: all)")
    parser.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling (0: off)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    try:
        options = InferenceConfig(
            prompt=args.prompt, tokens_to_generate=args.tokens_to_generate, greedy=args.greedy,
            top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
        )
        model, cfg = load_model(args.checkpoint)
        tokenizer = build_tokenizer_from_config(cfg)
        text = family_of(cfg).generate(model.to(args.device), tokenizer, options, args.seed)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"Error: {error}")
    print(text)


if __name__ == "__main__":
    main()
