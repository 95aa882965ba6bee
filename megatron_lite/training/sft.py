"""Fine-tuning's part in training: two more families, "gpt_sft" and "t5_sft", with the models,
losses, architectures and samples of GPT and T5 and datasets of their own, from jsonl files
(NeMo's model.data.train_ds / validation_ds).

The training set holds max_steps global batches, taken pass after pass over the examples (each
pass shuffled when train_ds.shuffle); validation reads the same first samples of
validation_ds every time (limit_val_batches global batches, at most one pass).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from megatron_lite.config import (
    GPTSFTConfig,
    InferenceConfig,
    SFTDatasetConfig,
    T5SFTConfig,
    T5SFTDatasetConfig,
)
from megatron_lite.data.sft import (
    GPTSFTDataset,
    PromptTemplate,
    RepeatedSamples,
    T5SFTDataset,
    read_examples,
)
from megatron_lite.generation import generate_seq2seq_text
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.tokenizers import Tokenizer
from megatron_lite.training.family import ModelFamily
from megatron_lite.training.gpt import GPT, flops_per_sequence, next_token_loss
from megatron_lite.training.t5 import T5, flops_per_pair


def prompt_template(split: SFTDatasetConfig) -> PromptTemplate:
    return PromptTemplate(prompt_template=split.prompt_template, label_key=split.label_key,
                          truncation_field=split.truncation_field,
                          truncation_method=split.truncation_method, add_bos=split.add_bos,
                          add_eos=split.add_eos)


def validation_samples(cfg: GPTSFTConfig | T5SFTConfig, available: int) -> int:
    """Samples every validation reads: trainer.limit_val_batches global batches (or that
    fraction of one pass), at most one pass over validation_ds, in whole global batches."""
    limit, batch = cfg.trainer.limit_val_batches, cfg.model.global_batch_size
    wanted = limit * batch if isinstance(limit, int) else int(limit * available)
    if available < batch:
        raise ValueError(f"model.data.validation_ds holds {available} samples, fewer than one global "
                         f"batch (model.global_batch_size={batch}); validate on more examples")
    samples = min(wanted, available) // batch * batch
    if samples < batch:
        raise ValueError(f"trainer.limit_val_batches={limit} of the {available} validation samples is "
                         f"less than one global batch (model.global_batch_size={batch})")
    return samples


def _run_datasets(cfg: GPTSFTConfig | T5SFTConfig, train: Dataset, valid: Dataset) -> tuple[Dataset, Dataset]:
    data, seed = cfg.model.data, cfg.model.seed
    return (
        RepeatedSamples(train, cfg.trainer.max_steps * cfg.model.global_batch_size, seed,
                        shuffle=data.train_ds.shuffle),
        RepeatedSamples(valid, validation_samples(cfg, len(valid)), seed,
                        shuffle=data.validation_ds.shuffle),
    )


def build_gpt_datasets(cfg: GPTSFTConfig, tokenizer: Tokenizer) -> tuple[Dataset, Dataset]:
    # Padding is never predicted nor attended to: without a pad token, eod pads (as in NeMo).
    pad_id = tokenizer.eod_id if tokenizer.pad_id is None else tokenizer.pad_id

    def split_dataset(split: SFTDatasetConfig) -> GPTSFTDataset:
        examples = read_examples(split.file_names, tokenizer, prompt_template(split), split.max_seq_length,
                                 min_seq_length=split.min_seq_length)
        return GPTSFTDataset(examples, split.max_seq_length, pad_id, pack=split.packed_sequence,
                             answer_only_loss=cfg.model.answer_only_loss)

    data = cfg.model.data
    return _run_datasets(cfg, split_dataset(data.train_ds), split_dataset(data.validation_ds))


def build_t5_datasets(cfg: T5SFTConfig, tokenizer: Tokenizer) -> tuple[Dataset, Dataset]:
    if tokenizer.pad_id is None:
        raise ValueError("the tokenizer has no pad token, which T5 pads with and starts the decoder with")

    def split_dataset(split: T5SFTDatasetConfig) -> T5SFTDataset:
        # The encoder reads the context and eos.
        examples = read_examples(split.file_names, tokenizer, prompt_template(split), split.max_seq_length - 1,
                                 min_seq_length=split.min_seq_length, max_answer_length=split.target_length)
        return T5SFTDataset(examples, split.max_seq_length, split.target_length, tokenizer.pad_id,
                            tokenizer.eod_id)

    data = cfg.model.data
    return _run_datasets(cfg, split_dataset(data.train_ds), split_dataset(data.validation_ds))


def gpt_loss(model: GPTModel, batch: dict[str, torch.Tensor], cfg: GPTSFTConfig) -> torch.Tensor:
    # Segments always: packed examples must not attend to each other, and a lone example's
    # padding (a segment of its own, after it) changes nothing for the example.
    return next_token_loss(model, batch, use_segments=True)


def gpt_tokens_per_sample(cfg: GPTSFTConfig) -> int:
    return cfg.model.data.train_ds.max_seq_length


def gpt_flops_per_sample(model: GPTModel, cfg: GPTSFTConfig) -> float:
    return flops_per_sequence(model, cfg.model.data.train_ds.max_seq_length)


def t5_generate(model: T5Model, tokenizer: Tokenizer, options: InferenceConfig, seed: int) -> str:
    """The decoder's answer to the prompt (pretraining's sample also fills in sentinels)."""
    output, _ = generate_seq2seq_text(
        model, tokenizer, options.prompt, options.tokens_to_generate, greedy=options.greedy,
        top_k=options.top_k, top_p=options.top_p, temperature=options.temperature, seed=seed,
    )
    return output


def t5_tokens_per_sample(cfg: T5SFTConfig) -> int:
    train = cfg.model.data.train_ds
    return train.max_seq_length + train.target_length


def t5_flops_per_sample(model: T5Model, cfg: T5SFTConfig) -> float:
    train = cfg.model.data.train_ds
    return flops_per_pair(model, train.max_seq_length, train.target_length)


GPT_SFT = ModelFamily(
    name="gpt_sft",
    model_name=GPT.model_name,
    config_type=GPTSFTConfig,
    model_type=GPT.model_type,
    build_datasets=build_gpt_datasets,
    loss=gpt_loss,
    tokens_per_sample=gpt_tokens_per_sample,
    flops_per_sample=gpt_flops_per_sample,
    architecture=GPT.architecture,
    generate=GPT.generate,
)

T5_SFT = ModelFamily(
    name="t5_sft",
    model_name=T5.model_name,
    config_type=T5SFTConfig,
    model_type=T5.model_type,
    build_datasets=build_t5_datasets,
    loss=T5.loss,
    tokens_per_sample=t5_tokens_per_sample,
    flops_per_sample=t5_flops_per_sample,
    architecture=T5.architecture,
    generate=t5_generate,
)
