"""Helpers of the fine-tuning tests: tiny jsonl files, and the overrides that fine-tune the tiny
pretrained GPT / T5 of tests/training/conftest.py on them through conf/megatron_*_sft YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from megatron_lite.config import RunConfig
from tests.gpt_testing import compose_gpt, tiny_trainer_overrides

GPT_SFT_CONFIG = "megatron_gpt_sft_config"
T5_SFT_CONFIG = "megatron_t5_finetuning_config"
# A mapping a tiny model learns in a few steps: each subject has its own answer.
ANSWERS = {"the cat": "a ball.", "a dog": "a bone.", "the bird": "a nest.", "my friend": "a book.",
           "the teacher": "a pen.", "a child": "a toy."}
TEMPLATE = "Q: {input} A: {output}"


def write_jsonl(path: Path, records: Sequence[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def qa_records(repeat: int = 4) -> list[dict]:
    return [{"input": subject, "output": answer} for _ in range(repeat) for subject, answer in ANSWERS.items()]


def sft_run_overrides(train_file: str, valid_file: str, log_dir: Path, restore: Path | str | None,
                      extra: dict[str, object] | None = None) -> dict[str, object]:
    """What every tiny fine-tuning run shares, GPT or T5."""
    values: dict[str, object] = {
        **tiny_trainer_overrides(log_dir),
        "trainer.limit_val_batches": 1,
        "model.data.train_ds.file_names": f"[{train_file}]",
        "model.data.validation_ds.file_names": f"[{valid_file}]",
        "model.data.train_ds.prompt_template": f"'{TEMPLATE}'",
        "model.optim.lr": 3e-3,
        "model.optim.sched.warmup_steps": 0,
        "model.optim.sched.min_lr": 3e-4,
        "inference.tokens_to_generate": 0,
    }
    if restore is not None:
        values["restore_from_path"] = f"'{restore}'"
    values.update(extra or {})
    return values


def gpt_sft_overrides(train_file: str, valid_file: str, log_dir: Path, restore: Path | str | None,
                      extra: dict[str, object] | None = None) -> list[str]:
    """Fine-tune tests.gpt_testing.tiny_overrides' GPT (2 layers, 32 wide, 32 positions)."""
    values = sft_run_overrides(train_file, valid_file, log_dir, restore)
    values.update({
        "model.encoder_seq_length": 32,
        "model.num_layers": 2,
        "model.hidden_size": 32,
        "model.ffn_hidden_size": 64,
        "model.num_attention_heads": 4,
    })
    values.update(extra or {})
    return [f"{key}={value}" for key, value in values.items()]


def t5_sft_overrides(train_file: str, valid_file: str, log_dir: Path, restore: Path | str | None,
                     extra: dict[str, object] | None = None) -> list[str]:
    """Fine-tune tests.t5_testing.tiny_t5_overrides' T5 (2 + 2 layers, 16 sentinels)."""
    values = sft_run_overrides(train_file, valid_file, log_dir, restore)
    values.update({
        "model.data.train_ds.max_seq_length": 32,
        "model.data.train_ds.max_tgt_seq_length": 16,
        "model.tokenizer.num_sentinel_tokens": 16,
    })
    for stack in ("encoder", "decoder"):
        values.update({
            f"model.{stack}.num_layers": 2,
            f"model.{stack}.hidden_size": 32,
            f"model.{stack}.ffn_hidden_size": 64,
            f"model.{stack}.num_attention_heads": 4,
            f"model.{stack}.relative_attention_num_buckets": 16,
            f"model.{stack}.relative_attention_max_distance": 32,
        })
    values.update(extra or {})
    return [f"{key}={value}" for key, value in values.items()]


def compose_sft(overrides: Sequence[str], t5: bool = False) -> RunConfig:
    return compose_gpt(overrides, config_name=T5_SFT_CONFIG if t5 else GPT_SFT_CONFIG)
