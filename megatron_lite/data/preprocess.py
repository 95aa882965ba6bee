"""Tokenize local jsonl / txt / parquet files into indexed datasets (`<prefix>_<key>_document`).

Files are read with Hugging Face `datasets` (imported here only, so training never needs it),
tokenized by a pool of worker processes in document order, and written with
`IndexedDatasetWriter`. Megatron-LM's tools/preprocess_data.py makes the same files.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from megatron_lite.data.files import expand_input_paths
from megatron_lite.data.indexed_dataset import IndexedDatasetWriter, token_dtype_for_vocab
from megatron_lite.tokenizers import Tokenizer, build_tokenizer

# File suffix -> the `datasets` builder that reads it.
_BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}
TEXT_SAMPLE_BY = ("document", "paragraph", "line")


def output_prefix_for_key(output_prefix: str, json_key: str) -> str:
    return f"{output_prefix}_{json_key}_document"


def preprocess_data(
    inputs: Sequence[str],
    output_prefix: str,
    *,
    tokenizer_library: str,
    tokenizer_model: str | None = None,
    json_keys: Sequence[str] = ("text",),
    append_eod: bool = False,
    workers: int = 1,
    text_sample_by: str = "document",
    show_progress: bool = True,
) -> dict[str, str]:
    """Tokenize every record of `inputs` (file names or globs, one format) into one indexed
    dataset per json key; returns {key: dataset prefix}.

    A .txt file is one document (`text_sample_by="document"`), or one per blank-line separated
    paragraph or per line. `append_eod` ends each document with the tokenizer's eod id, which is
    what lets the GPT dataset see document boundaries in packed samples.
    """
    paths = expand_input_paths(inputs, "--input")
    builder = _builder_for(paths)
    if text_sample_by not in TEXT_SAMPLE_BY:
        raise ValueError(f"text_sample_by={text_sample_by!r} is not one of {list(TEXT_SAMPLE_BY)}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    tokenizer = build_tokenizer(tokenizer_library, tokenizer_model)
    output_dir = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(output_dir, exist_ok=True)
    # `datasets` converts the input to Arrow files first; keep them beside the output (the same
    # disk, which must hold the result anyway) and delete them afterwards.
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".datasets-cache-") as cache_dir:
        records = _load_records(paths, builder, json_keys, text_sample_by, cache_dir, show_progress)
        prefixes = {key: output_prefix_for_key(output_prefix, key) for key in json_keys}
        dtype = token_dtype_for_vocab(tokenizer.vocab_size)
        with contextlib.ExitStack() as stack:
            writers = [
                stack.enter_context(IndexedDatasetWriter(prefixes[key], dtype)) for key in json_keys
            ]
            encoded = _encode_all(records, tokenizer_library, tokenizer_model, append_eod, workers)
            for documents in tqdm(
                encoded, total=len(records), unit="doc", disable=not show_progress
            ):
                for writer, tokens in zip(writers, documents, strict=True):
                    writer.add_document(tokens)
    return prefixes


def _builder_for(paths: Sequence[str]) -> str:
    builders = set()
    for path in paths:
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in _BUILDER_BY_SUFFIX:
            raise ValueError(
                f"--input: {path} is not one of the formats {sorted(_BUILDER_BY_SUFFIX)}"
            )
        builders.add(_BUILDER_BY_SUFFIX[suffix])
    if len(builders) > 1:
        raise ValueError(
            f"--input mixes formats ({sorted(builders)}); preprocess each format separately and "
            "blend the outputs with data.data_prefix"
        )
    return builders.pop()


class _Records:
    """The (text of key 1, text of key 2, ...) tuples of a loaded dataset, in file order."""

    def __init__(self, dataset, json_keys: Sequence[str], paths: Sequence[str]) -> None:
        self.dataset = dataset.select_columns(list(json_keys))
        self.json_keys = json_keys
        self.paths = paths

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        number = 0
        for batch in self.dataset.iter(batch_size=1024):
            for texts in zip(*(batch[key] for key in self.json_keys), strict=True):
                for key, text in zip(self.json_keys, texts, strict=True):
                    if not isinstance(text, str):
                        raise ValueError(
                            f"record {number} of {list(self.paths)} has no text in field {key!r} "
                            f"(found {text!r})"
                        )
                yield texts
                number += 1


def _load_records(
    paths: Sequence[str],
    builder: str,
    json_keys: Sequence[str],
    text_sample_by: str,
    cache_dir: str,
    show_progress: bool,
) -> _Records:
    import datasets  # here, not at the top: training imports this package without `datasets`

    options = {"sample_by": text_sample_by} if builder == "text" else {}
    was_disabled = datasets.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(
            builder, data_files=list(paths), split="train", cache_dir=cache_dir, **options
        )
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    missing = [key for key in json_keys if key not in dataset.column_names]
    if missing:
        raise ValueError(
            f"--json-keys {missing} not found in {list(paths)}; its fields are "
            f"{dataset.column_names}"
        )
    return _Records(dataset, json_keys, paths)


# Each worker process builds its own tokenizer once (sentencepiece processors are not shared).
_worker_tokenizer: Tokenizer | None = None
_worker_append_eod = False


def _init_worker(library: str, model: str | None, append_eod: bool) -> None:
    global _worker_tokenizer, _worker_append_eod
    _worker_tokenizer = build_tokenizer(library, model)
    _worker_append_eod = append_eod


def _encode_texts(texts: tuple[str, ...]) -> list[np.ndarray]:
    assert _worker_tokenizer is not None, "_init_worker has not run in this process"
    encoded = []
    for text in texts:
        ids = _worker_tokenizer.encode(text)
        if _worker_append_eod:
            ids.append(_worker_tokenizer.eod_id)
        encoded.append(np.asarray(ids, dtype=np.int32))  # compact to send between processes
    return encoded


def _encode_all(
    records: _Records, library: str, model: str | None, append_eod: bool, workers: int
) -> Iterator[list[np.ndarray]]:
    if workers == 1:
        _init_worker(library, model, append_eod)
        yield from map(_encode_texts, records)
        return
    with multiprocessing.Pool(workers, _init_worker, (library, model, append_eod)) as pool:
        chunksize = max(1, min(256, len(records) // (workers * 8)))
        yield from pool.imap(_encode_texts, records, chunksize=chunksize)
