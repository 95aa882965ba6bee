"""`model.tokenizer.*` and `model.data.*` (NeMo's keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING


@dataclass
class TokenizerConfig:
    library: str = "sentencepiece"
    type: Optional[str] = None
    model: Optional[str] = None
    vocab_file: Optional[str] = None
    merge_file: Optional[str] = None


@dataclass
class DataConfig:
    # [prefix] or [weight1, prefix1, weight2, prefix2, ...] of .bin/.idx pairs.
    data_prefix: List[Any] = MISSING
    # Where the shuffled sample indices are cached; next to the data when null.
    index_mapping_dir: Optional[str] = None
    data_impl: str = "mmap"
    splits_string: str = "900,50,50"
    # Must equal model.encoder_seq_length (NeMo's YAML interpolates it).
    seq_length: Optional[int] = None
    num_workers: int = 2
    dataloader_type: str = "single"
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
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
        if self.num_workers < 0:
            raise ValueError(f"model.data.num_workers must be >= 0, got {self.num_workers}")
        if self.data_prefix != MISSING and len(self.data_prefix) == 0:
            raise ValueError("model.data.data_prefix is empty; name at least one .bin/.idx prefix")
