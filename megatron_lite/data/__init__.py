"""The data pipeline: tokenizer training, preprocessing into indexed datasets, GPT datasets."""

from megatron_lite.data.indexed_dataset import (
    IndexedDataset,
    IndexedDatasetWriter,
    token_dtype_for_vocab,
)
from megatron_lite.data.preprocess import preprocess_data
from megatron_lite.data.tokenizer_training import train_sentencepiece

__all__ = [
    "IndexedDataset",
    "IndexedDatasetWriter",
    "preprocess_data",
    "token_dtype_for_vocab",
    "train_sentencepiece",
]
