"""Supervised fine-tuning data: jsonl records rendered through a prompt template, the loss on
the answer only (NeMo's GPT SFT and T5 seq2seq fine-tuning data, with NeMo's keys).

A record {"input": "...", "output": "..."} and the template "{input} {output}" give the
context (the template up to the label field: "<input> ") and the answer (the label field's
text); tokens are [bos] context answer [eos], and only the answer and eos are predicted.
A record too long for max_seq_length loses tokens from its truncation field (left or right).

GPT samples hold one example padded to max_seq_length, or several packed into it: each keeps
its own positions (from 0) and segment id, so attention never crosses examples (the kernel's
document masking) and the result equals running them one by one. T5 samples: the context is
the encoder's input, the answer the decoder's target.
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from megatron_lite.data.t5_dataset import t5_sample_fields
from megatron_lite.tokenizers import Tokenizer


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """How records become token ids (NeMo's model.data.*_ds keys)."""
    prompt_template: str = "{input} {output}"
    label_key: str = "output"
    truncation_field: str = "input"
    truncation_method: str = "right"  # which end of the truncation field loses tokens
    add_bos: bool = False
    add_eos: bool = True

    def __post_init__(self) -> None:
        fields = [name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name]
        if not self.prompt_template.endswith("{" + self.label_key + "}"):
            raise ValueError(f"prompt_template {self.prompt_template!r} must end with the label "
                             f"field {{{self.label_key}}}: the answer is what the model learns to write")
        if self.truncation_field not in fields or self.truncation_field == self.label_key:
            raise ValueError(f"truncation_field {self.truncation_field!r} is not a field of "
                             f"prompt_template {self.prompt_template!r} ({fields}) other than the label")
        if self.truncation_method not in ("left", "right"):
            raise ValueError(f"truncation_method must be 'left' or 'right', got {self.truncation_method!r}")

    @property
    def fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name]


@dataclasses.dataclass(frozen=True)
class Example:
    context: list[int]  # [bos] and the template up to the answer
    answer: list[int]  # the answer and [eos]


def read_records(path: str | Path, template: PromptTemplate) -> list[tuple[int, dict]]:
    """The records of a jsonl file with their line numbers; a missing file, bad JSON or a record
    without a template field is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file {path} does not exist")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from None
        missing = [field for field in template.fields if not isinstance(record.get(field), str)]
        if missing:
            raise ValueError(f"{path}:{number} has no text field(s) {missing} that prompt_template "
                             f"{template.prompt_template!r} needs")
        records.append((number, record))
    if not records:
        raise ValueError(f"SFT data file {path} holds no records")
    return records


def tokenize_example(record: dict, tokenizer: Tokenizer, template: PromptTemplate,
                     max_seq_length: int, *, context_only: bool = False) -> Example:
    """The record's context and answer ids, its truncation field shortened to fit max_seq_length
    tokens in all, or in the context alone (`context_only`: T5, whose answer has a length of
    its own)."""
    label = "{" + template.label_key + "}"
    context_template = template.prompt_template[: -len(label)]
    pieces = _template_pieces(context_template)
    encoded = {field: tokenizer.encode(record[field]) for field in template.fields if field != template.label_key}
    answer = tokenizer.encode(record[template.label_key]) + ([tokenizer.eod_id] if template.add_eos else [])
    if template.add_bos and tokenizer.bos_id is None:
        raise ValueError("add_bos=True, but the tokenizer has no beginning-of-sequence token")
    bos = [tokenizer.bos_id] if template.add_bos else []

    def context_ids() -> list[int]:
        ids = list(bos)
        for literal, field in pieces:
            ids += tokenizer.encode(literal) if literal else []
            ids += encoded[field] if field else []
        return ids

    excess = len(context_ids()) + (0 if context_only else len(answer)) - max_seq_length
    if excess > 0:
        field = encoded[template.truncation_field]
        if excess >= len(field):
            what = "template" if context_only else "answer and template"
            raise ValueError(f"the record's {what} leave no room in max_seq_length="
                             f"{max_seq_length} even with its {template.truncation_field!r} removed")
        encoded[template.truncation_field] = field[excess:] if template.truncation_method == "left" else field[:-excess]
    return Example(context_ids(), answer)


def read_examples(file_names: Sequence[str | Path], tokenizer: Tokenizer, template: PromptTemplate,
                  max_seq_length: int, *, min_seq_length: int = 1, max_answer_length: int | None = None
                  ) -> list[Example]:
    """The examples of the jsonl files, one file after the other. Examples of fewer than
    min_seq_length tokens are left out. With max_answer_length (T5), max_seq_length bounds the
    context alone, and an answer longer than max_answer_length is an error; a record that
    cannot fit is an error naming its file and line."""
    examples = []
    for path in file_names:
        for number, record in read_records(path, template):
            try:
                example = tokenize_example(record, tokenizer, template, max_seq_length,
                                           context_only=max_answer_length is not None)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            if max_answer_length is not None and len(example.answer) > max_answer_length:
                raise ValueError(f"{path}:{number}: the answer's {len(example.answer)} tokens (eos "
                                 f"included) exceed the decoder's {max_answer_length}")
            if len(example.context) + len(example.answer) >= min_seq_length:
                examples.append(example)
    if not examples:
        raise ValueError(f"{', '.join(map(str, file_names))}: no example holds min_seq_length="
                         f"{min_seq_length} tokens")
    return examples


def _template_pieces(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field or None) pieces of a format string, in order."""
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


class GPTSFTDataset(torch.utils.data.Dataset):
    """GPT fine-tuning samples of max_seq_length positions: one example each, or (pack=True)
    as many consecutive examples as fit, each in its own segment. The loss falls on the answers,
    or (answer_only_loss=False) on every token an example predicts."""

    def __init__(self, examples: Sequence[Example], max_seq_length: int, pad_id: int, *, pack: bool,
                 answer_only_loss: bool = True) -> None:
        self.max_seq_length = max_seq_length
        self.pad_id = pad_id
        self.answer_only_loss = answer_only_loss
        lengths = [len(e.context) + len(e.answer) for e in examples]
        self.bins: list[list[Example]] = []
        for example, length in zip(examples, lengths):
            # +1: a sample of S inputs holds S + 1 tokens (inputs and the shifted labels)
            used = sum(len(e.context) + len(e.answer) for e in self.bins[-1]) if self.bins else None
            if pack and used is not None and used + length <= max_seq_length + 1:
                self.bins[-1].append(example)
            else:
                self.bins.append([example])

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = self.max_seq_length + 1
        window = np.full(size, self.pad_id, dtype=np.int64)
        predicted = np.zeros(size, dtype=np.float32)  # 1 where the token is one to predict
        segment = np.full(size, -1, dtype=np.int64)  # padding: a segment of its own
        position = np.zeros(size, dtype=np.int64)
        start = 0
        for number, example in enumerate(self.bins[index]):
            ids = example.context + example.answer
            end = start + len(ids)
            window[start:end] = ids
            predicted[start + (len(example.context) if self.answer_only_loss else 0):end] = 1.0
            segment[start:end] = number
            position[start:end] = np.arange(len(ids))
            start = end
        segment[start:] = len(self.bins[index])
        # Inputs are the window less its last token; labels less its first, so an input
        # predicts the next token of its own example (an example's last token predicts nothing).
        same_example = segment[:-1] == segment[1:]
        return {
            "tokens": torch.from_numpy(window[:-1]),
            "labels": torch.from_numpy(window[1:]),
            "loss_mask": torch.from_numpy(predicted[1:] * same_example),
            "position_ids": torch.from_numpy(position[:-1]),
            "segment_ids": torch.from_numpy(segment[:-1].astype(np.int32)),
        }


class T5SFTDataset(torch.utils.data.Dataset):
    """T5 fine-tuning pairs: the context is the encoder's input (with eos), the answer the
    decoder's target."""

    def __init__(self, examples: Sequence[Example], seq_length: int, seq_length_dec: int,
                 pad_id: int, eod_id: int) -> None:
        self.examples = list(examples)
        self.seq_length, self.seq_length_dec = seq_length, seq_length_dec
        self.pad_id, self.eod_id = pad_id, eod_id
        for example in self.examples:
            if len(example.context) + 1 > seq_length or len(example.answer) > seq_length_dec:
                raise ValueError(f"a pair of {len(example.context) + 1} input and "
                                 f"{len(example.answer)} output tokens does not fit seq_length="
                                 f"{seq_length} / seq_length_dec={seq_length_dec}")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        return t5_sample_fields(np.array(example.context + [self.eod_id]), np.array(example.answer),
                                seq_length=self.seq_length, seq_length_dec=self.seq_length_dec,
                                pad_id=self.pad_id)


class RepeatedSamples(torch.utils.data.Dataset):
    """num_samples samples taken pass after pass over `dataset`: every pass in an order of its
    own drawn from (seed, pass) when shuffling, else in the dataset's order. Sample i is the
    same in every run, so a run resumed at consumed_samples reads what it would have read."""

    def __init__(self, dataset: torch.utils.data.Dataset, num_samples: int, seed: int, *, shuffle: bool) -> None:
        self.dataset, self.num_samples = dataset, num_samples
        self.seed, self.shuffle = seed, shuffle
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_samples

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            size = len(self.dataset)
            rng = np.random.default_rng((self.seed, epoch))
            self._orders = {epoch: rng.permutation(size) if self.shuffle else np.arange(size)}
        return self._orders[epoch]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} of {self.num_samples}")
        epoch, position = divmod(index, len(self.dataset))
        return self.dataset[int(self._order(epoch)[position])]
