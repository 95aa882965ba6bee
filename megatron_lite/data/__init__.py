"""The data pipeline: tokenizer training, preprocessing into indexed datasets, GPT datasets."""

from megatron_lite.data.blended_dataset import BlendedDataset, build_blending_indices
from megatron_lite.data.default_corpus import default_cache_dir, prepare_default_corpus
from megatron_lite.data.gpt_dataset import GPTDataset, build_sample_index, sample_fields
from megatron_lite.data.gpt_datasets import (
    build_gpt_datasets,
    parse_data_prefix,
    parse_splits_string,
    split_boundaries,
    split_token_counts,
)
from megatron_lite.data.indexed_dataset import (
    IndexedDataset,
    IndexedDatasetWriter,
    token_dtype_for_vocab,
)
from megatron_lite.data.preprocess import preprocess_data
from megatron_lite.data.span_corruption import (
    corrupt_spans,
    corrupted_lengths,
    noise_span_counts,
    raw_length_for_encoder,
    reconstruct_text_tokens,
)
from megatron_lite.data.t5_dataset import (
    T5Dataset,
    T5SampleLengths,
    build_t5_datasets,
    t5_sample_fields,
    t5_sample_lengths,
)
from megatron_lite.data.tokenizer_training import train_sentencepiece

__all__ = [
    "BlendedDataset",
    "GPTDataset",
    "IndexedDataset",
    "IndexedDatasetWriter",
    "T5Dataset",
    "T5SampleLengths",
    "build_blending_indices",
    "build_gpt_datasets",
    "build_sample_index",
    "build_t5_datasets",
    "corrupt_spans",
    "corrupted_lengths",
    "default_cache_dir",
    "noise_span_counts",
    "parse_data_prefix",
    "parse_splits_string",
    "prepare_default_corpus",
    "preprocess_data",
    "raw_length_for_encoder",
    "reconstruct_text_tokens",
    "sample_fields",
    "split_boundaries",
    "split_token_counts",
    "t5_sample_fields",
    "t5_sample_lengths",
    "token_dtype_for_vocab",
    "train_sentencepiece",
]
