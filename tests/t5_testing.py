"""Helpers of the T5 tests: tiny configs, compose through Hydra, a tiny corpus's overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megatron_lite.config import T5Config, T5DataConfig, T5ModelConfig, T5StackConfig
from tests.gpt_testing import compose_gpt, tiny_run_overrides


def tiny_stack(**overrides) -> T5StackConfig:
    values = dict(
        num_layers=2, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4, hidden_dropout=0.0,
        attention_dropout=0.0, position_embedding_type="relative", relative_attention_num_buckets=8,
        relative_attention_max_distance=6,
    )
    values.update(overrides)
    return T5StackConfig(**values)


def tiny_t5_config(seq_length: int = 20, seq_length_dec: int = 12, stack: dict | None = None,
                   encoder: dict | None = None, decoder: dict | None = None, **model) -> T5ModelConfig:
    """A 2+2-layer T5; `stack` changes both stacks, `encoder` / `decoder` one of them."""
    values = dict(seq_length=seq_length, max_position_embeddings=max(seq_length, seq_length_dec),
                  embedding_dropout=0.0, data=T5DataConfig(seq_length_dec=seq_length_dec))
    values.update(model)
    return T5ModelConfig(
        encoder=tiny_stack(**{**(stack or {}), **(encoder or {})}),
        decoder=tiny_stack(**{**(stack or {}), **(decoder or {})}),
        **values,
    )


def compose_t5(overrides: Sequence[str] = (), **kwargs) -> T5Config:
    """What scripts/train.py hands to the library for these command-line overrides."""
    return compose_gpt(overrides, config_name="megatron_t5_config", **kwargs)


def tiny_t5_overrides(data_prefix: str, log_dir: Path, extra: dict[str, object] | None = None) -> list[str]:
    """A 2+2-layer byte-level T5 (16 sentinels) that trains a step in well under a second on a
    CPU; `extra` adds or replaces overrides (key -> value)."""
    values = tiny_run_overrides(data_prefix, log_dir)
    values.update({
        "model.seq_length": 48,
        "model.data.seq_length_dec": 16,
        "model.embedding_dropout": 0.0,
        "model.tokenizer.num_sentinel_tokens": 16,
        "model.optim.sched.warmup_ratio": "null",
    })
    for stack in ("encoder", "decoder"):
        values.update({
            f"model.{stack}.num_layers": 2,
            f"model.{stack}.hidden_size": 32,
            f"model.{stack}.ffn_hidden_size": 64,
            f"model.{stack}.num_attention_heads": 4,
            f"model.{stack}.hidden_dropout": 0.0,
            f"model.{stack}.attention_dropout": 0.0,
            f"model.{stack}.relative_attention_num_buckets": 16,
            f"model.{stack}.relative_attention_max_distance": 32,
        })
    values.update(extra or {})
    return [f"{key}={value}" for key, value in values.items()]
