"""GPT's part in training: its datasets, loss, FLOPs, architecture and sample."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from megatron_lite.config import GPTConfig, GPTModelConfig, InferenceConfig
from megatron_lite.data import build_gpt_datasets
from megatron_lite.generation import generate_text
from megatron_lite.models import GPTModel
from megatron_lite.modules.cross_entropy import linear_cross_entropy
from megatron_lite.parallel.context_parallel import sequence_share, share_of_mean
from megatron_lite.tokenizers import Tokenizer
from megatron_lite.training.family import (
    ModelFamily,
    linear_weights,
    require_splits,
    stack_architecture,
    validation_samples,
)


def build_datasets(cfg: GPTConfig, tokenizer: Tokenizer) -> tuple[Dataset, Dataset]:
    """(train, valid) sized for the whole run: max_steps global batches of training, and the
    global batches every validation reads again (trainer.limit_val_batches)."""
    model, data = cfg.model, cfg.model.data
    train, valid, _ = build_gpt_datasets(
        data.data_prefix,
        data.splits_string,
        model.encoder_seq_length,
        model.seed,
        num_samples=(
            cfg.trainer.max_steps * model.global_batch_size,
            validation_samples(cfg, model.encoder_seq_length),
            0,
        ),
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        eod_id=tokenizer.eod_id,
        vocab_size=tokenizer.vocab_size,
        cache_dir=data.index_mapping_dir,
    )
    return require_splits(train, valid, data.splits_string)


def loss(model: GPTModel, batch: dict[str, torch.Tensor], cfg: GPTConfig) -> torch.Tensor:
    return next_token_loss(model, batch, use_segments=cfg.model.data.reset_attention_mask)


def next_token_loss(model: GPTModel, batch: dict[str, torch.Tensor], *, use_segments: bool) -> torch.Tensor:
    """The mean cross-entropy of the batch's labels over its loss mask; use_segments: attention
    stays within each packed document (the batch's segment ids).

    Under context parallelism (apply_context_parallel marked the model) every rank of the group
    has the whole batch and computes the loss of its share of each sequence (share_of_mean)."""
    group = getattr(model, "context_parallel_group", None)
    whole_count = batch["loss_mask"].sum()
    if group is not None:
        batch = sequence_share(batch, group)
    segment_ids = batch["segment_ids"] if use_segments else None
    hidden = model.hidden_states(batch["tokens"], batch["position_ids"], segment_ids)  # (B, S, C)
    mean = linear_cross_entropy(hidden, model.output_weight(), batch["labels"], batch["loss_mask"])
    return mean if group is None else share_of_mean(mean, batch["loss_mask"].sum(), whole_count, group)


def flops_per_sample(model: GPTModel, cfg: GPTConfig) -> float:
    return flops_per_sequence(model, cfg.model.encoder_seq_length)


def flops_per_sequence(model: GPTModel, seq: int) -> float:
    """Megatron / PaLM style, for a sample of `seq` tokens: 6 x (weights used in matmuls, output
    layer included) per token + 12 x layers x attention width x sequence per token (scores and
    weighted values, no causal discount). Activation recomputation is not counted: these are
    *model* FLOPs."""
    model_cfg = model.cfg
    weights = linear_weights(model)
    if model.output_layer is None:  # tied: the embedding table is also the output matmul
        weights += model.embedding.word_embeddings.weight.numel()
    attention = 12 * model_cfg.num_layers * model_cfg.num_attention_heads * model_cfg.head_dim * seq
    return (6 * weights + attention) * seq


def architecture(cfg: GPTModelConfig, vocab_size: int) -> dict[str, Any]:
    """What fixes the parameters and their meaning; everything else may change on fine-tuning
    (dropout, flash attention, data, batch sizes, lr, rotary_base, interpolation factor...)."""
    arch = {
        **stack_architecture(cfg),
        "share_embeddings_and_output_weights": cfg.share_embeddings_and_output_weights,
        "padded_vocab_size": vocab_size,
    }
    if cfg.position_embedding_type == "learned_absolute":
        arch["max_position_embeddings"] = cfg.max_position_embeddings
    else:
        arch["rotary_percentage"] = cfg.rotary_percentage
    return arch


def tokens_per_sample(cfg: GPTConfig) -> int:
    return cfg.model.encoder_seq_length


def generate(model: GPTModel, tokenizer: Tokenizer, options: InferenceConfig, seed: int) -> str:
    return generate_text(
        model, tokenizer, options.prompt, options.tokens_to_generate, greedy=options.greedy,
        top_k=options.top_k, top_p=options.top_p, temperature=options.temperature, seed=seed,
    )


GPT = ModelFamily(
    name="gpt",
    model_name="gpt",
    config_type=GPTConfig,
    model_type=GPTModel,
    build_datasets=build_datasets,
    loss=loss,
    tokens_per_sample=tokens_per_sample,
    flops_per_sample=flops_per_sample,
    architecture=architecture,
    generate=generate,
)
