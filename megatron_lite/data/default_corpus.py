"""The default job's corpus: the English help topics that ship with Python (`pydoc_data.topics`),
so the default training job needs no download.

One document per topic (~80 documents, ~460k characters) goes to a jsonl file, a small BPE
sentencepiece tokenizer is trained on it, and the jsonl is preprocessed with an eod after every
document. Everything is cached; a later call re-uses complete files and rebuilds missing ones.
"""

from __future__ import annotations

import json
import os
import sys
import time

from megatron_lite.data.files import atomic_output
from megatron_lite.data.indexed_dataset import IndexedDataset
from megatron_lite.data.preprocess import output_prefix_for_key, preprocess_data
from megatron_lite.data.tokenizer_training import train_sentencepiece

CACHE_ENV = "MEGATRON_LITE_CACHE"
VOCAB_SIZE = 4096  # small enough for a tiny CPU model, large enough for real subwords


def default_cache_dir() -> str:
    """`$MEGATRON_LITE_CACHE/pydoc`, or `.cache/megatron_lite/pydoc` under the working directory."""
    root = os.environ.get(CACHE_ENV) or os.path.join(".cache", "megatron_lite")
    return os.path.join(root, "pydoc")


def prepare_default_corpus(cache_dir: str | None = None) -> tuple[str, str]:
    """(data prefix, tokenizer .model path) of the default corpus, absolute, built on first use."""
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    os.makedirs(cache_dir, exist_ok=True)
    started = time.perf_counter()
    text_path = os.path.join(cache_dir, "pydoc_topics.jsonl")
    tokenizer_model = os.path.join(cache_dir, "tokenizer.model")
    data_prefix = output_prefix_for_key(os.path.join(cache_dir, "pydoc"), "text")
    built = []
    if not os.path.isfile(text_path):
        _write_topics(text_path)
        built.append("text")
    if not os.path.isfile(tokenizer_model):
        train_sentencepiece([text_path], tokenizer_model.removesuffix(".model"), VOCAB_SIZE)
        built.append("tokenizer")
    # Token ids belong to one tokenizer: a new tokenizer always means new data files.
    if "tokenizer" in built or not _is_complete(data_prefix):
        preprocess_data(
            [text_path],
            os.path.join(cache_dir, "pydoc"),
            tokenizer_library="sentencepiece",
            tokenizer_model=tokenizer_model,
            append_eod=True,
            show_progress=False,
        )
        built.append("data")
    if built:
        message = f"built {', '.join(built)} in {time.perf_counter() - started:.1f} s"
    else:
        message = "re-using cached files"
    print(f"default corpus (pydoc topics) in {cache_dir}: {message}", file=sys.stderr)
    return data_prefix, tokenizer_model


def _write_topics(path: str) -> None:
    from pydoc_data.topics import topics  # 0.5 MB of strings, loaded only when needed

    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        for title in sorted(topics):
            file.write(json.dumps({"title": title, "text": topics[title]}) + "\n")


def _is_complete(data_prefix: str) -> bool:
    try:
        IndexedDataset(data_prefix)
    except (OSError, ValueError):
        return False
    return True
