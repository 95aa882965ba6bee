"""Loss and perplexity of a checkpoint on held-out text.

    python scripts/eval.py runs/gpt/checkpoints/last.ckpt --data-prefix data/my_text_document --split test
    python scripts/eval.py runs/gpt/checkpoints/last.ckpt --data-prefix data/other_text_document
    python scripts/eval.py hf/llama --jsonl held_out.jsonl --text-key text --seq-length 1024

The checkpoint is a .ckpt of ours or a Hugging Face folder (converted in memory); its config
gives the model and the tokenizer. The text: a .bin/.idx prefix, all of it or one split of it
(--split, cut by --splits-string, default the checkpoint's model.data.splits_string), or a jsonl
file tokenized with the checkpoint's tokenizer, each record ending with the eod. GPT scores
every token of non-overlapping windows of the training length (--seq-length); T5 scores the
targets of span-corrupted windows, corrupted as its training data is (--seed). The loss is the
mean over all scored tokens, the perplexity its exp (docs/interop.md).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from megatron_lite.evaluation.perplexity import SPLITS, describe, evaluate_perplexity


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt of ours or a Hugging Face model folder")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--data-prefix", help="a .bin/.idx prefix (scripts/preprocess_data.py)")
    text.add_argument("--jsonl", help="a jsonl file, one document a record")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="--data-prefix: score this split only (default: every document)")
    parser.add_argument("--splits-string", default=None,
                        help="--split: e.g. 949,50,1 (default: the checkpoint's model.data.splits_string)")
    parser.add_argument("--text-key", default="text", help="--jsonl: the field holding the text")
    parser.add_argument("--seq-length", type=int, default=None,
                        help="GPT's window or T5's encoder length (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--seed", type=int, default=None, help="T5's span corruption (default model.seed)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = evaluate_perplexity(
            args.checkpoint, data_prefix=args.data_prefix, jsonl=args.jsonl, split=args.split,
            splits_string=args.splits_string, text_key=args.text_key, seq_length=args.seq_length,
            batch_size=args.batch_size, seed=args.seed, device=args.device,
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"Error: {error}")
    print(describe(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")


if __name__ == "__main__":
    main()
