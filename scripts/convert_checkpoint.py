"""Convert checkpoints between megatron_lite and Hugging Face transformers (local files only).

    # ours -> a folder transformers' from_pretrained loads (config.json, model.safetensors, tokenizer)
    python scripts/convert_checkpoint.py --to-hf runs/gpt/checkpoints/last.ckpt hf/gpt [--family llama]
    # a Hugging Face folder -> our .ckpt (+ its tokenizer files in <stem>_tokenizer/ beside it)
    python scripts/convert_checkpoint.py --from-hf hf/llama llama.ckpt

--family names the Hugging Face architecture: gpt2 (GPT2LMHeadModel), llama (LlamaForCausalLM)
or t5 (T5ForConditionalGeneration). Exporting, it defaults to t5 for a T5 checkpoint, llama for a
rope GPT and gpt2 otherwise; importing, the folder's config.json says, and --family only checks
it. What cannot be expressed on the other side is refused with the key named (docs/interop.md).
A LoRA checkpoint (docs/finetuning.md) is exported with its adapters merged into the weights of
its base model (its restore_from_path).
restore_from_path, scripts/generate.py and scripts/eval.py also take a Hugging Face folder as it is.
"""

import argparse
import sys

from megatron_lite.interop import (
    ARCHITECTURES,
    EXPORT_DTYPES,
    convert_hf_to_checkpoint,
    export_checkpoint_to_hf,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to-hf", action="store_true", help="our .ckpt -> a Hugging Face folder")
    direction.add_argument("--from-hf", action="store_true", help="a Hugging Face folder -> our .ckpt")
    parser.add_argument("input", help="our .ckpt (--to-hf) or a Hugging Face folder (--from-hf)")
    parser.add_argument("output", help="a new folder (--to-hf) or .ckpt file (--from-hf)")
    parser.add_argument("--family", choices=sorted(ARCHITECTURES), default=None,
                        help="the Hugging Face architecture (default: see above)")
    parser.add_argument("--dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                        help="--to-hf: the dtype of the written weights (default float32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.to_hf:
            notes = export_checkpoint_to_hf(args.input, args.output, family=args.family, dtype=args.dtype)
            for note in notes:
                print(f"Note: {note}")
            print(f"wrote {args.output}")
        else:
            tokenizer_folder = convert_hf_to_checkpoint(args.input, args.output, family=args.family)
            print(f"wrote {args.output}" + (f" and {tokenizer_folder}" if tokenizer_folder else ""))
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"Error: {error}")


if __name__ == "__main__":
    main()
