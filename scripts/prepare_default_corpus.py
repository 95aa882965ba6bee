"""Build (first run) or find (later runs) the default corpus: Python's own pydoc topics.

Prints the data prefix and the tokenizer model path, one a line. The cache is
$MEGATRON_LITE_CACHE/pydoc, or .cache/megatron_lite/pydoc under the working directory;
--cache-dir overrides both.
"""

import argparse

from megatron_lite.data.default_corpus import prepare_default_corpus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-dir", help="where the corpus files live")
    args = parser.parse_args()
    data_prefix, tokenizer_model = prepare_default_corpus(args.cache_dir)
    print(data_prefix)
    print(tokenizer_model)


if __name__ == "__main__":
    main()
