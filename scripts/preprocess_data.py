"""Tokenize local jsonl / txt / parquet files into Megatron-style indexed datasets.

    python scripts/preprocess_data.py --input 'corpus/*.jsonl' --json-keys text \
        --tokenizer-library sentencepiece --tokenizer-model tokenizers/my_tokenizer.model \
        --output-prefix data/my_corpus --append-eod --workers 8
writes data/my_corpus_text_document.bin/.idx; use data/my_corpus_text_document as data.data_prefix.
"""

import argparse

from megatron_lite.data.preprocess import TEXT_SAMPLE_BY, preprocess_data
from megatron_lite.tokenizers import LIBRARIES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", nargs="+", required=True, help="files or globs, all .jsonl, .txt or .parquet"
    )
    parser.add_argument(
        "--json-keys", nargs="+", default=["text"], help="fields to tokenize, one output each"
    )
    parser.add_argument("--tokenizer-library", choices=LIBRARIES, required=True)
    parser.add_argument("--tokenizer-model", help="the sentencepiece .model file")
    parser.add_argument(
        "--output-prefix", required=True, help="writes <prefix>_<key>_document.bin/.idx"
    )
    parser.add_argument(
        "--append-eod", action="store_true", help="end every document with the eod token"
    )
    parser.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    parser.add_argument(
        "--text-sample-by",
        choices=TEXT_SAMPLE_BY,
        default="document",
        help=".txt inputs: one document per file (default), per blank-line paragraph, or per line",
    )
    args = parser.parse_args()
    prefixes = preprocess_data(
        args.input,
        args.output_prefix,
        tokenizer_library=args.tokenizer_library,
        tokenizer_model=args.tokenizer_model,
        json_keys=args.json_keys,
        append_eod=args.append_eod,
        workers=args.workers,
        text_sample_by=args.text_sample_by,
    )
    for prefix in prefixes.values():
        print(prefix)


if __name__ == "__main__":
    main()
