"""Train a sentencepiece tokenizer (BPE or unigram) on local .txt / .jsonl files.

The model is set up so that every text round-trips exactly: no normalization (identity rule, no
whitespace collapsing) and byte fallback, so a character never seen in training still encodes
(as its UTF-8 bytes) instead of becoming <unk>.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import sentencepiece

from megatron_lite.data.files import expand_input_paths

MODEL_TYPES = ("bpe", "unigram")
# Special-token ids of the models we train: pad exists so that T5 and SFT batches can be padded.
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}
_TEXT_SUFFIXES = (".txt",)
_JSON_SUFFIXES = (".jsonl", ".json")


def train_sentencepiece(
    inputs: Sequence[str],
    output_prefix: str,
    vocab_size: int,
    *,
    model_type: str = "bpe",
    json_key: str = "text",
    num_threads: int | None = None,
) -> str:
    """Train on the files (names or globs) and write `<output_prefix>.model/.vocab`.

    A .txt file gives one training sentence a line; a .jsonl file one a record (its `json_key`
    field). Returns the path of the .model file, which appears only once training succeeded.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not one of {list(MODEL_TYPES)}")
    paths = expand_input_paths(inputs, "input")
    for path in paths:
        if not path.endswith(_TEXT_SUFFIXES + _JSON_SUFFIXES):
            raise ValueError(f"{path}: tokenizer training reads .txt or .jsonl files only")
    output_dir = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(output_dir, exist_ok=True)
    temporary_prefix = f"{output_prefix}.tmp-{os.getpid()}"
    sentences = _SentenceReader(paths, json_key)
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=temporary_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            # Runs of spaces (code indentation) become single pieces instead of one per space.
            allow_whitespace_only_pieces=True,
            split_digits=True,
            # Whole documents are sentences here; sentencepiece's default skips those > 4192 bytes.
            max_sentence_length=1 << 24,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
            **SPECIAL_IDS,
        )
        # .model last: its presence says the pair is complete.
        os.replace(f"{temporary_prefix}.vocab", f"{output_prefix}.vocab")
        os.replace(f"{temporary_prefix}.model", f"{output_prefix}.model")
    except RuntimeError as error:
        if sentences.error is not None:
            raise sentences.error from None
        raise ValueError(
            f"sentencepiece training failed (vocab_size={vocab_size}): {error}"
        ) from error
    finally:
        for suffix in (".model", ".vocab"):
            if os.path.exists(temporary_prefix + suffix):
                os.remove(temporary_prefix + suffix)
    return f"{output_prefix}.model"


class _SentenceReader:
    """The training sentences; keeps a reading error that sentencepiece would bury in its own."""

    def __init__(self, paths: Sequence[str], json_key: str) -> None:
        self.paths = paths
        self.json_key = json_key
        self.error: ValueError | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from _read_sentences(self.paths, self.json_key)
        except ValueError as error:
            self.error = error
            raise


def _read_sentences(paths: Sequence[str], json_key: str) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as file:
            if path.endswith(_TEXT_SUFFIXES):
                for line in file:
                    yield line.rstrip("\n")
                continue
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: not a JSON line ({error})") from error
                if not isinstance(record, dict) or not isinstance(record.get(json_key), str):
                    raise ValueError(
                        f"{path}:{line_number}: the record has no text field {json_key!r}; "
                        "choose the field with --json-key"
                    )
                yield record[json_key]
