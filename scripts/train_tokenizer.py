"""Train a sentencepiece tokenizer (BPE or unigram, byte fallback) on local .txt / .jsonl files.

    python scripts/train_tokenizer.py --input 'corpus/*.jsonl' --vocab-size 8000 \
        --output-prefix tokenizers/my_tokenizer
writes tokenizers/my_tokenizer.model (tokenizer.model=...) and .vocab.
"""

import argparse

from megatron_lite.data.tokenizer_training import MODEL_TYPES, train_sentencepiece


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help=".txt (one sentence a line) or .jsonl files or globs",
    )
    parser.add_argument(
        "--json-key", default="text", help="text field of .jsonl records (default: text)"
    )
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="bpe")
    parser.add_argument(
        "--output-prefix", required=True, help="writes <prefix>.model and <prefix>.vocab"
    )
    args = parser.parse_args()
    model = train_sentencepiece(
        args.input,
        args.output_prefix,
        args.vocab_size,
        model_type=args.model_type,
        json_key=args.json_key,
    )
    print(model)


if __name__ == "__main__":
    main()
