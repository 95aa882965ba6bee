"""`model.data.*` of a fine-tuning run (NeMo's SFT keys): jsonl files rendered through a prompt
template, one section per split (train_ds, validation_ds, test_ds).

A split's samples hold one example padded to max_seq_length, or with `packed_sequence` several
examples packed into it (NeMo 1.23 has no packing key; later NeMo versions call it
packed_sequence). T5 reads the template's context in its encoder and writes the label field
with its decoder, of up to max_tgt_seq_length tokens.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.nemo import NO_TEST_STAGE, fixed, ignored

JSONL_READING = "how NeMo indexes jsonl files; the records are read into memory here"
TRUNCATION_METHODS = ("left", "right")


@dataclass
class SFTDatasetConfig:
    """One split: model.data.train_ds, validation_ds or test_ds."""

    file_names: Optional[List[str]] = MISSING  # jsonl files, read one after the other
    # NeMo writes ${model.global_batch_size} / ${model.micro_batch_size}: one batch size per run.
    global_batch_size: Optional[int] = None
    micro_batch_size: Optional[int] = None
    shuffle: bool = True  # a new order of the samples on every pass (seeded by model.seed)
    num_workers: int = 0
    max_seq_length: int = 512  # tokens of a sample (GPT); of the encoder's input (T5)
    min_seq_length: int = 1  # examples of fewer tokens (context and answer) are left out
    # The record's fields in {braces}; the label field comes last: the text before it is the
    # context, the label field the answer the loss falls on.
    prompt_template: str = "{input} {output}"
    label_key: str = "output"
    truncation_field: str = "input"  # the field that loses tokens when an example is too long
    truncation_method: str = "right"  # left | right: the end of that field that loses them
    add_bos: bool = False
    add_eos: bool = True
    add_sep: bool = fixed(False, "no separator token; write a separator into prompt_template")
    # GPT: pack consecutive examples into each sample, each in its own attention segment.
    packed_sequence: bool = False
    drop_last: bool = fixed(True, "samples come in whole global batches; an incomplete last one "
                                  "is left out")
    concat_sampling_probabilities: Optional[List[float]] = fixed(
        None, "the files of file_names are read one after the other")
    memmap_workers: Optional[int] = ignored(JSONL_READING)
    hf_dataset: Optional[bool] = ignored(JSONL_READING)
    index_mapping_dir: Optional[str] = ignored(JSONL_READING)
    pin_memory: Optional[bool] = ignored("pinned memory is used on a GPU, always")

    def check(self, prefix: str) -> None:
        if not self.file_names:
            raise ValueError(f"{prefix}file_names={self.file_names}: name one or more jsonl files")
        require_at_least(self, prefix, 1, "max_seq_length", "min_seq_length", "global_batch_size",
                         "micro_batch_size")
        require_at_least(self, prefix, 0, "num_workers")
        if self.min_seq_length > self.max_seq_length:
            raise ValueError(f"{prefix}min_seq_length={self.min_seq_length} exceeds "
                             f"{prefix}max_seq_length={self.max_seq_length}")
        self._check_template(prefix)

    def _check_template(self, prefix: str) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None]
        except ValueError as error:
            raise ValueError(f"{prefix}prompt_template={self.prompt_template!r} is not a template "
                             f"({error})") from None
        if not self.prompt_template.endswith("{" + self.label_key + "}"):
            raise ValueError(f"{prefix}prompt_template={self.prompt_template!r} must end with the "
                             f"label field {{{self.label_key}}} ({prefix}label_key): the answer is "
                             "what the model learns to write")
        if "," in self.truncation_field:
            raise ValueError(f"{prefix}truncation_field={self.truncation_field!r} names several "
                             "fields; one field is truncated here")
        if self.truncation_field not in fields or self.truncation_field == self.label_key:
            raise ValueError(f"{prefix}truncation_field={self.truncation_field!r} is not a context "
                             f"field of {prefix}prompt_template ({fields[:-1]})")
        if self.truncation_method not in TRUNCATION_METHODS:
            raise ValueError(f"{prefix}truncation_method={self.truncation_method!r} is not one of "
                             f"{TRUNCATION_METHODS}")

    def check_batch_sizes(self, prefix: str, global_batch_size: int, micro_batch_size: int) -> None:
        for key, model_value in (("global_batch_size", global_batch_size),
                                 ("micro_batch_size", micro_batch_size)):
            value = getattr(self, key)
            if value is not None and value != model_value:
                raise ValueError(f"{prefix}{key}={value} differs from model.{key}={model_value}: a "
                                 f"run has one batch size (NeMo's files interpolate ${{model.{key}}})")


@dataclass
class T5SFTDatasetConfig(SFTDatasetConfig):
    # The decoder's length (the answer and eos); null: max_seq_length, as NeMo's jsonl T5
    # dataset uses one length for both.
    max_tgt_seq_length: Optional[int] = None
    packed_sequence: bool = fixed(False, "T5 samples hold one example each")

    def check(self, prefix: str) -> None:
        super().check(prefix)
        require_at_least(self, prefix, 1, "max_tgt_seq_length")

    @property
    def target_length(self) -> int:
        return self.max_seq_length if self.max_tgt_seq_length is None else self.max_tgt_seq_length


def _validation_split() -> SFTDatasetConfig:
    return SFTDatasetConfig(shuffle=False)


def _t5_validation_split() -> T5SFTDatasetConfig:
    return T5SFTDatasetConfig(shuffle=False)


@dataclass
class GPTSFTDataConfig:
    train_ds: SFTDatasetConfig = field(default_factory=SFTDatasetConfig)
    validation_ds: SFTDatasetConfig = field(default_factory=_validation_split)
    test_ds: Optional[SFTDatasetConfig] = ignored(NO_TEST_STAGE)

    def __post_init__(self) -> None:
        self.train_ds.check("model.data.train_ds.")
        self.validation_ds.check("model.data.validation_ds.")

    @property
    def splits(self) -> dict[str, SFTDatasetConfig]:
        return {"train_ds": self.train_ds, "validation_ds": self.validation_ds}

    @property
    def seq_length(self) -> None:
        """GPTModelConfig compares a pretraining model.data.seq_length with encoder_seq_length;
        fine-tuning samples have their own lengths (max_seq_length, checked by the model
        section)."""
        return None

    def loader_workers(self) -> tuple[int, int]:
        return self.train_ds.num_workers, self.validation_ds.num_workers


@dataclass
class T5SFTDataConfig:
    train_ds: T5SFTDatasetConfig = field(default_factory=T5SFTDatasetConfig)
    validation_ds: T5SFTDatasetConfig = field(default_factory=_t5_validation_split)
    test_ds: Optional[T5SFTDatasetConfig] = ignored(NO_TEST_STAGE)

    def __post_init__(self) -> None:
        self.train_ds.check("model.data.train_ds.")
        self.validation_ds.check("model.data.validation_ds.")

    @property
    def splits(self) -> dict[str, T5SFTDatasetConfig]:
        return {"train_ds": self.train_ds, "validation_ds": self.validation_ds}

    @property
    def seq_length(self) -> None:
        """T5ModelConfig compares a pretraining model.data.seq_length with model.seq_length;
        fine-tuning inputs have their own lengths (max_seq_length)."""
        return None

    @property
    def seq_length_dec(self) -> int:
        """The longest decoder input of the splits (T5ModelConfig checks it against learned
        positions)."""
        return max(split.target_length for split in self.splits.values())

    def loader_workers(self) -> tuple[int, int]:
        return self.train_ds.num_workers, self.validation_ds.num_workers
