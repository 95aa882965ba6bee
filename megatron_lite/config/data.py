"""`model.tokenizer.*` and `model.data.*` (NeMo's keys): the part both families share, and each
family's own sample-shaping keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING

from megatron_lite.config.checks import require_at_least

@dataclass
class TokenizerConfig:
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
class DataConfig:
    # [prefix] or [weight1, prefix1, weight2, prefix2, ...] of .bin/.idx pairs.
    data_prefix: List[Any] = MISSING
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
        if self.data_prefix != MISSING and len(self.data_prefix) == 0:
            raise ValueError("model.data.data_prefix is empty; name at least one .bin/.idx prefix")


@dataclass
class GPTDataConfig(DataConfig):
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False


@dataclass
class T5DataConfig(DataConfig):
    splits_string: str = "949,45,5"
    # Decoder length: targets (sentinels, masked spans, EOS) are padded to it.
    seq_length_dec: int = 128
    # Fraction of the raw tokens masked (noise density), and the mean length of a masked span.
    masked_lm_prob: float = 0.15
    mean_ngram_size: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, "model.data.", 1, "seq_length_dec")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"model.data.masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.mean_ngram_size < 1:
            raise ValueError(
                f"model.data.mean_ngram_size must be >= 1 (a span holds at least one token), got "
                f"{self.mean_ngram_size}"
            )
