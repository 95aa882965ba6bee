"""`model.tokenizer.*` and `model.data.*` (NeMo's keys): the part both families share, and each
family's own sample-shaping keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.nemo import NeMoDataKeys, NeMoGPTDataKeys, NeMoT5DataKeys, NeMoTokenizerKeys

# The keys of data_prefix's dict form, one blend per split (NeMo's names); test may be left out.
DATA_PREFIX_SPLITS = ("train", "validation", "test")
# T5's mean span length when model.data.mean_ngram_size is null (NeMo's default there).
T5_MEAN_SPAN_LENGTH = 3.0


@dataclass
class TokenizerConfig(NeMoTokenizerKeys):
    library: str = "sentencepiece"
    type: Optional[str] = None
    model: Optional[str] = None
    vocab_file: Optional[str] = None
    merge_file: Optional[str] = None
    # <extra_id_0..N-1> appended above the tokenizer's vocabulary (T5's span corruption).
    num_sentinel_tokens: int = 0

    def __post_init__(self) -> None:
        if self.num_sentinel_tokens < 0:
            raise ValueError(
                f"model.tokenizer.num_sentinel_tokens must be >= 0, got {self.num_sentinel_tokens}"
            )


@dataclass
class DataConfig(NeMoDataKeys):
    # NeMo's three forms: a prefix of a .bin/.idx pair; a list [prefix] or [weight1, prefix1,
    # weight2, prefix2, ...] split by splits_string; or {train: ..., validation: ..., test: ...},
    # a prefix or list per split (splits_string is then not used).
    data_prefix: Any = MISSING
    # Where the shuffled sample indices are cached; next to the data when null.
    index_mapping_dir: Optional[str] = None
    data_impl: str = "mmap"
    splits_string: str = "900,50,50"
    # Must equal the model's sequence length (NeMo's YAML interpolates it).
    seq_length: Optional[int] = None
    num_workers: int = 2
    dataloader_type: str = "single"
    validation_drop_last: bool = True

    def __post_init__(self) -> None:
        if self.data_impl != "mmap":
            raise ValueError(
                f"model.data.data_impl={self.data_impl!r} is not implemented; only 'mmap' "
                "(.bin/.idx files from scripts/preprocess_data.py)"
            )
        if self.dataloader_type != "single":
            raise ValueError(
                f"model.data.dataloader_type={self.dataloader_type!r} is not implemented; only "
                "'single' (Megatron's sequential pretraining sampler)"
            )
        if not self.validation_drop_last:
            raise ValueError(
                "model.data.validation_drop_last=False is not implemented: validation uses whole "
                "global batches"
            )
        require_at_least(self, "model.data.", 0, "num_workers")
        self._check_data_prefix()

    def loader_workers(self) -> tuple[int, int]:
        """Worker processes of the train and the validation loader."""
        return self.num_workers, self.num_workers

    def _check_data_prefix(self) -> None:
        prefix = self.data_prefix
        if isinstance(prefix, dict):
            unknown = sorted(set(prefix) - set(DATA_PREFIX_SPLITS))
            if unknown:
                raise ValueError(
                    f"model.data.data_prefix has the key {unknown[0]!r}; its dict form takes "
                    f"{DATA_PREFIX_SPLITS} (test may be left out)"
                )
            for split in DATA_PREFIX_SPLITS[:2]:
                if split not in prefix:
                    raise ValueError(
                        f"model.data.data_prefix names no {split!r} data; its dict form needs "
                        "train and validation"
                    )
            for split, value in prefix.items():
                _check_blend(f"model.data.data_prefix.{split}", value)
        else:
            _check_blend("model.data.data_prefix", prefix)


def _check_blend(key: str, value: Any) -> None:
    """A prefix or a non-empty list (the list's weights and prefixes are checked when the data
    is opened)."""
    if isinstance(value, str) and value:
        return
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{key} is empty; name at least one .bin/.idx prefix")
        return
    raise ValueError(
        f"{key}={value!r} is not a data prefix: give a path prefix, a list [prefix] or "
        "[weight1, prefix1, ...], or a dict {train: ..., validation: ..., test: ...}"
    )


@dataclass
class GPTDataConfig(NeMoGPTDataKeys, DataConfig):
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False


@dataclass
class T5DataConfig(NeMoT5DataKeys, DataConfig):
    splits_string: str = "949,45,5"
    # Decoder length: targets (sentinels, masked spans, EOS) are padded to it.
    seq_length_dec: int = 128
    # Fraction of the raw tokens masked (noise density), and the mean length of a masked span.
    masked_lm_prob: float = 0.15
    mean_ngram_size: Optional[float] = T5_MEAN_SPAN_LENGTH  # null: T5's 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, "model.data.", 1, "seq_length_dec")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"model.data.masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.mean_ngram_size is not None and self.mean_ngram_size < 1:
            raise ValueError(
                f"model.data.mean_ngram_size must be >= 1 (a span holds at least one token), got "
                f"{self.mean_ngram_size}"
            )

    @property
    def mean_span_length(self) -> float:
        return T5_MEAN_SPAN_LENGTH if self.mean_ngram_size is None else self.mean_ngram_size
