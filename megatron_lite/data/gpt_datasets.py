"""`build_gpt_datasets`: the train/valid/test GPT datasets of `data.data_prefix` and
`data.splits_string`, blended when several prefixes are given.

data_prefix takes NeMo's three forms: a prefix, a list [prefix] or [weight1, prefix1, ...]
(every prefix is cut into train/valid/test by splits_string), or a dict {train: ...,
validation: ..., test: ...} giving each split its own prefix or list (read whole).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from megatron_lite.data.blended_dataset import BlendedDataset, build_blending_indices
from megatron_lite.data.gpt_dataset import GPTDataset
from megatron_lite.data.index_cache import cache_paths, load_or_build, parameter_hash
from megatron_lite.data.indexed_dataset import IndexedDataset

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
# The keys of data_prefix's dict form, in SPLIT_NAMES' order (NeMo's names).
DATA_PREFIX_KEYS = ("train", "validation", "test")
_BLEND_KEYS = ("dataset_index", "dataset_sample_index")


def parse_data_prefix(data_prefix: str | Sequence[object]) -> tuple[list[str], list[float]]:
    """(prefixes, weights summing to 1) of [prefix] or [weight1, prefix1, weight2, prefix2, ...]."""
    items = [data_prefix] if isinstance(data_prefix, str) else list(data_prefix)
    usage = "expected [prefix] or [weight1, prefix1, weight2, prefix2, ...]"
    if len(items) == 1:
        if not isinstance(items[0], str) or not items[0]:
            raise ValueError(f"data.data_prefix={items!r}: {usage}")
        return [items[0]], [1.0]
    if not items or len(items) % 2:
        raise ValueError(f"data.data_prefix={items!r} has {len(items)} entries: {usage}")
    weights = []
    for position in range(0, len(items), 2):
        weight, prefix = items[position], items[position + 1]
        try:
            value = float(weight)  # YAML and the command line may give "0.3"
        except (TypeError, ValueError):
            raise ValueError(
                f"data.data_prefix[{position}]={weight!r} is not a weight: {usage}"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"data.data_prefix[{position}]={weight!r}: weights must be positive")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(
                f"data.data_prefix[{position + 1}]={prefix!r} is not a path prefix: {usage}"
            )
        weights.append(value)
    total = sum(weights)
    return [str(prefix) for prefix in items[1::2]], [weight / total for weight in weights]


def parse_splits_string(splits_string: str) -> list[float]:
    """[train, valid, test] fractions from "969,30,1" (or "969/30/1"; missing parts are 0)."""
    parts = re.split(r"[,/]", str(splits_string))
    if len(parts) > 3:
        raise ValueError(
            f"data.splits_string={splits_string!r} has more than 3 parts (train,valid,test)"
        )
    try:
        shares = [float(part) for part in parts]
    except ValueError:
        raise ValueError(
            f"data.splits_string={splits_string!r} is not a list of numbers like '969,30,1'"
        ) from None
    if any(not math.isfinite(share) or share < 0 for share in shares) or sum(shares) <= 0:
        raise ValueError(
            f"data.splits_string={splits_string!r}: shares must be non-negative with a positive sum"
        )
    shares += [0.0] * (3 - len(shares))
    return [share / sum(shares) for share in shares]


def split_boundaries(fractions: Sequence[float], num_documents: int) -> list[int]:
    """[0, end of train, end of valid, end of test = num_documents]: contiguous ranges, each
    fraction rounded; the rounding excess comes off the train split, as in Megatron-LM."""
    ends = np.cumsum([round(fraction * num_documents) for fraction in fractions])
    ends -= ends[-1] - num_documents
    return [0] + [min(max(int(end), 0), num_documents) for end in ends]


def _split_documents(dataset: IndexedDataset, fractions: Sequence[float]) -> list[np.ndarray]:
    """Sequence numbers of each split. Splits cut between documents, never inside one."""
    bounds = split_boundaries(fractions, dataset.num_documents)
    first_sequences = dataset.document_indices[bounds]  # document -> its first sequence
    return [np.arange(first_sequences[s], first_sequences[s + 1]) for s in range(3)]


@dataclass
class _Blend:
    """What one split reads: its datasets, the sequences of each it may use, and their weights."""

    prefixes: list[str]
    weights: list[float]
    sources: list[IndexedDataset]
    documents: list[np.ndarray]
    origin: str  # how the user named this data, for error messages

    @property
    def num_tokens(self) -> int:
        return sum(int(source.sequence_lengths[documents].sum(dtype=np.int64))
                   for source, documents in zip(self.sources, self.documents, strict=True))


def _split_blends(
    data_prefix: str | Sequence[object] | Mapping[str, object], splits_string: str
) -> list[_Blend | None]:
    """The blend of each split (None where a split has no data). Opening the datasets checks
    their files."""
    if isinstance(data_prefix, Mapping):
        unknown = sorted(set(data_prefix) - set(DATA_PREFIX_KEYS))
        if unknown:
            raise ValueError(
                f"data.data_prefix has the key {unknown[0]!r}; its dict form takes {DATA_PREFIX_KEYS}"
            )
        blends: list[_Blend | None] = []
        for key in DATA_PREFIX_KEYS:
            if data_prefix.get(key) is None:
                blends.append(None)
                continue
            prefixes, weights = parse_data_prefix(data_prefix[key])
            sources = [IndexedDataset(prefix) for prefix in prefixes]
            documents = [np.arange(len(source)) for source in sources]
            blends.append(_Blend(prefixes, weights, sources, documents, f"data.data_prefix.{key}"))
        return blends
    prefixes, weights = parse_data_prefix(data_prefix)
    fractions = parse_splits_string(splits_string)
    sources = [IndexedDataset(prefix) for prefix in prefixes]
    documents = [_split_documents(source, fractions) for source in sources]
    return [
        _Blend(prefixes, weights, sources, [d[split] for d in documents],
               f"data.splits_string={splits_string!r}") if fractions[split] else None
        for split in range(3)
    ]


def split_token_counts(
    data_prefix: str | Sequence[object] | Mapping[str, object], splits_string: str
) -> list[int]:
    """Tokens of the (train, valid, test) splits, every prefix of a blend counted once."""
    return [0 if blend is None else blend.num_tokens for blend in _split_blends(data_prefix, splits_string)]


def build_gpt_datasets(
    data_prefix: str | Sequence[object] | Mapping[str, object],
    splits_string: str,
    seq_length: int,
    seed: int,
    num_samples: Sequence[int],
    *,
    reset_position_ids: bool,
    reset_attention_mask: bool,
    eod_mask_loss: bool,
    eod_id: int,
    vocab_size: int | None = None,
    cache_dir: str | None = None,
) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
    """(train, valid, test) datasets of `num_samples` = (train, valid, test) samples each.

    A split without data (a 0 share in `splits_string`, no entry in the dict form) or asked for
    0 samples is None. Each data prefix is split on its own and blended with the weights of
    `data_prefix`. Index arrays are cached in `cache_dir` (default: next to each dataset's
    files). With `vocab_size`, reading a sample holding a token id outside [0, vocab_size) is a
    ValueError naming the file (data made with another tokenizer).
    """
    if len(num_samples) != 3 or any(count < 0 for count in num_samples):
        raise ValueError(
            f"num_samples must be 3 non-negative counts (train, valid, test), got {num_samples}"
        )
    gpt_options = {
        "eod_id": eod_id,
        "reset_position_ids": reset_position_ids,
        "reset_attention_mask": reset_attention_mask,
        "eod_mask_loss": eod_mask_loss,
        "vocab_size": vocab_size,
        "cache_dir": cache_dir,
    }
    datasets: list[Dataset | None] = []
    for name, blend, count in zip(SPLIT_NAMES, _split_blends(data_prefix, splits_string),
                                  num_samples, strict=True):
        if blend is None or count == 0:
            datasets.append(None)
            continue
        for source, prefix, documents in zip(blend.sources, blend.prefixes, blend.documents, strict=True):
            if documents.size == 0:
                raise ValueError(
                    f"{blend.origin} leaves the {name} split of {prefix} without documents "
                    f"({source.num_documents} in all) while {count} {name} samples are requested; "
                    "give the split a larger share or use more documents"
                )

        def source_dataset(source: int, count: int, blend: _Blend = blend) -> GPTDataset:
            return GPTDataset(blend.sources[source], blend.documents[source], seq_length, count,
                              seed, **gpt_options)

        if len(blend.sources) == 1:
            datasets.append(source_dataset(0, count))
        else:
            blend_cache = cache_dir or os.path.dirname(os.path.abspath(blend.prefixes[0]))
            dataset_index, dataset_sample_index = _blending_indices(blend.weights, count, blend_cache)
            per_source = np.bincount(dataset_index, minlength=len(blend.sources))
            parts = [source_dataset(s, int(n)) if n else None for s, n in enumerate(per_source)]
            datasets.append(BlendedDataset(parts, dataset_index, dataset_sample_index))
        logger.info(
            "%s: %d samples of %d tokens from %s",
            name,
            count,
            seq_length + 1,
            ", ".join(f"{d.size} documents of {p}"
                      for d, p in zip(blend.documents, blend.prefixes, strict=True)),
        )
    return tuple(datasets)


def _blending_indices(
    weights: list[float], num_samples: int, cache_dir: str
) -> tuple[np.ndarray, np.ndarray]:
    """`build_blending_indices`, cached: its Python loop takes about a second a million samples."""
    digest = parameter_hash({"weights": weights, "num_samples": num_samples})
    arrays = load_or_build(
        cache_paths(cache_dir, f"blend_{digest}", _BLEND_KEYS),
        lambda: dict(zip(_BLEND_KEYS, build_blending_indices(weights, num_samples), strict=True)),
    )
    return arrays["dataset_index"], arrays["dataset_sample_index"]
