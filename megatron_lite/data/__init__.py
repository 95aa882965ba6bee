"""The data pipeline: tokenizer training, preprocessing into indexed datasets, GPT datasets."""

from megatron_lite.data.blended_dataset import BlendedDataset, build_blending_indices
from megatron_lite.data.default_corpus import default_cache_dir, prepare_default_corpus
from megatron_lite.data.gpt_dataset import GPTDataset, build_sample_index, sample_fields
from megatron_lite.data.gpt_datasets import (
    build_gpt_datasets,
    parse_data_prefix,
    parse_splits_string,
    split_boundaries,
)
from megatron_lite.data.indexed_dataset import (
    IndexedDataset,
    IndexedDatasetWriter,
    token_dtype_for_vocab,
)
from megatron_lite.data.preprocess import preprocess_data
from megatron_lite.data.tokenizer_training import train_sentencepiece

__all__ = [
    "BlendedDataset",
    "GPTDataset",
    "IndexedDataset",
    "IndexedDatasetWriter",
    "build_blending_indices",
    "build_gpt_datasets",
    "build_sample_index",
    "default_cache_dir",
    "parse_data_prefix",
    "parse_splits_string",
    "prepare_default_corpus",
    "preprocess_data",
    "sample_fields",
    "split_boundaries",
    "token_dtype_for_vocab",
    "train_sentencepiece",
]
