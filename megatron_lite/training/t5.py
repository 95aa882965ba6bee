"""T5's part in training: span-corruption datasets, loss, FLOPs, architecture and sample."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from megatron_lite.config import InferenceConfig, T5Config, T5ModelConfig
from megatron_lite.data import build_t5_datasets, t5_sample_lengths
from megatron_lite.generation import generate_seq2seq_text
from megatron_lite.models import T5Model
from megatron_lite.modules.cross_entropy import linear_cross_entropy
from megatron_lite.tokenizers import Tokenizer
from megatron_lite.training.family import (
    ModelFamily,
    linear_weights,
    require_splits,
    stack_architecture,
    validation_samples,
)


def build_datasets(cfg: T5Config, tokenizer: Tokenizer) -> tuple[Dataset, Dataset]:
    """(train, valid) span-corrupted samples sized for the whole run, as GPT's are."""
    model, data = cfg.model, cfg.model.data
    raw_length = t5_sample_lengths(model.seq_length, data.seq_length_dec, data.masked_lm_prob,
                                   data.mean_span_length, tokenizer.num_sentinel_tokens).raw_length
    train, valid, _ = build_t5_datasets(
        data.data_prefix,
        data.splits_string,
        model.seq_length,
        data.seq_length_dec,
        model.seed,
        num_samples=(
            cfg.trainer.max_steps * model.global_batch_size,
            validation_samples(cfg, raw_length - 1),  # consecutive windows share a token
            0,
        ),
        tokenizer=tokenizer,
        masked_lm_prob=data.masked_lm_prob,
        mean_ngram_size=data.mean_span_length,
        cache_dir=data.index_mapping_dir,
    )
    return require_splits(train, valid, data.splits_string)


def loss(model: T5Model, batch: dict[str, torch.Tensor], cfg: T5Config) -> torch.Tensor:
    encoder_output = model.encode(batch["text_enc"], batch["enc_mask"])  # (B, S, C)
    hidden = model.decoder_hidden_states(batch["text_dec"], encoder_output, batch["enc_mask"])
    return linear_cross_entropy(hidden, model.output_weight(), batch["labels"], batch["loss_mask"],
                                bias=model.output_bias)


def tokens_per_sample(cfg: T5Config) -> int:
    return cfg.model.seq_length + cfg.model.data.seq_length_dec


def flops_per_sample(model: T5Model, cfg: T5Config) -> float:
    return flops_per_pair(model, cfg.model.seq_length, cfg.model.data.seq_length_dec)


def flops_per_pair(model: T5Model, enc_len: int, dec_len: int) -> float:
    """Model FLOPs of forward + backward for encoder and decoder lengths, counted as for GPT (6
    per weight and token a matmul applies it to, 12 x heads x head dim per query-key pair and
    layer, padding included, no causal discount): encoder weights on encoder tokens, decoder
    weights and the output layer on decoder tokens, except cross-attention's key/value
    projection, which reads encoder tokens."""
    enc, dec = model.cfg.encoder, model.cfg.decoder
    cross_kv = sum(layer.cross_attention.linear_kv.weight.numel() for layer in model.decoder.block.layers)
    output_layer = model.vocab_size * enc.hidden_size  # the tied table or the separate layer
    matmul = (linear_weights(model.encoder) * enc_len + cross_kv * enc_len
              + (linear_weights(model.decoder) - cross_kv + output_layer) * dec_len)
    attention = 12 * (
        enc.num_layers * enc.num_attention_heads * enc.head_dim * enc_len * enc_len
        + dec.num_layers * dec.num_attention_heads * dec.head_dim * dec_len * (dec_len + enc_len)
    )
    return 6 * matmul + attention


def architecture(cfg: T5ModelConfig, vocab_size: int) -> dict[str, Any]:
    """What fixes the parameters and their meaning (relative to model.*); dropout, flash
    attention, lengths of relative-position models, data, batch sizes and lr may change."""
    arch: dict[str, Any] = {}
    for name, stack in (("encoder", cfg.encoder), ("decoder", cfg.decoder)):
        arch.update({f"{name}.{key}": value for key, value in stack_architecture(stack).items()})
        if stack.position_embedding_type == "relative":
            arch[f"{name}.relative_attention_num_buckets"] = stack.relative_attention_num_buckets
            arch[f"{name}.relative_attention_max_distance"] = stack.relative_attention_max_distance
        if stack.position_embedding_type == "learned_absolute":
            arch["max_position_embeddings"] = cfg.max_position_embeddings
    arch.update({
        "share_token_embeddings": cfg.share_token_embeddings,
        "share_decoder_tokens_head_embeddings": cfg.share_decoder_tokens_head_embeddings,
        "tokens_head_bias": cfg.tokens_head_bias,
        "padded_vocab_size": vocab_size,
    })
    return arch


def generate(model: T5Model, tokenizer: Tokenizer, options: InferenceConfig, seed: int) -> str:
    output, filled = generate_seq2seq_text(
        model, tokenizer, options.prompt, options.tokens_to_generate, greedy=options.greedy,
        top_k=options.top_k, top_p=options.top_p, temperature=options.temperature, seed=seed,
    )
    return f"output:    {output}\nfilled in: {filled}"


T5 = ModelFamily(
    name="t5",
    model_name="t5",
    config_type=T5Config,
    model_type=T5Model,
    build_datasets=build_datasets,
    loss=loss,
    tokens_per_sample=tokens_per_sample,
    flops_per_sample=flops_per_sample,
    architecture=architecture,
    generate=generate,
)
