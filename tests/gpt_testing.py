"""Helpers of the GPT tests: compose configs through Hydra, write a tiny corpus, read metrics."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from megatron_lite.config import GPTConfig, register_configs, reject_unknown_keys
from megatron_lite.data import IndexedDatasetWriter, token_dtype_for_vocab
from megatron_lite.tokenizers import ByteTokenizer

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

_SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a child"]
_VERBS = ["sees", "likes", "finds", "follows", "helps", "calls"]
_OBJECTS = ["the ball.", "a tree.", "the house.", "some water.", "the moon.", "a book."]


def compose_raw(overrides: Sequence[str] = (), config_name: str = "megatron_gpt_config",
                config_dir: Path = CONF_DIR) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_gpt(overrides: Sequence[str] = (), **kwargs) -> GPTConfig:
    """What scripts/train.py hands to the library for these command-line overrides."""
    cfg = OmegaConf.to_object(compose_raw(overrides, **kwargs))
    reject_unknown_keys(cfg)
    return cfg


def write_tiny_corpus(prefix: Path, num_documents: int = 160, seed: int = 0) -> str:
    """Byte-tokenized documents of simple sentences, each ending with eod: learnable in a few
    steps by a tiny model. Returns the data prefix."""
    rng = random.Random(seed)
    tokenizer = ByteTokenizer()
    with IndexedDatasetWriter(str(prefix), token_dtype_for_vocab(tokenizer.vocab_size)) as writer:
        for _ in range(num_documents):
            sentences = [
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
                for _ in range(rng.randint(2, 8))
            ]
            writer.add_document(tokenizer.encode(" ".join(sentences)) + [tokenizer.eod_id])
    return str(prefix)


def tiny_run_overrides(data_prefix: str, log_dir: Path) -> dict[str, object]:
    """The keys every tiny CPU run shares (trainer, logs, batches, byte tokenizer, data, optimizer),
    whatever the model family."""
    return {
        "trainer.accelerator": "cpu",
        "trainer.precision": 32,
        "trainer.max_steps": 8,
        "trainer.val_check_interval": 4,
        "trainer.limit_val_batches": 2,
        "trainer.log_every_n_steps": 1,
        "trainer.num_sanity_val_steps": 0,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "exp_manager.explicit_log_dir": str(log_dir),
        "model.micro_batch_size": 4,
        "model.global_batch_size": 8,
        "model.make_vocab_size_divisible_by": 16,
        "model.tokenizer.library": "byte",
        "model.tokenizer.model": "null",
        "model.data.data_prefix": f"[{data_prefix}]",
        "model.data.num_workers": 0,
        "model.data.splits_string": "'90,10,0'",
        "model.optim.lr": 3e-3,
        "model.optim.sched.warmup_steps": 2,
        "model.optim.sched.min_lr": 3e-4,
        "inference.tokens_to_generate": 0,
    }


def tiny_overrides(data_prefix: str, log_dir: Path, extra: dict[str, object] | None = None) -> list[str]:
    """A 2-layer byte-level GPT that trains a step in well under a second on a CPU; `extra`
    adds or replaces overrides (key -> value)."""
    values = tiny_run_overrides(data_prefix, log_dir)
    values.update({
        "model.encoder_seq_length": 32,
        "model.num_layers": 2,
        "model.hidden_size": 32,
        "model.ffn_hidden_size": 64,
        "model.num_attention_heads": 4,
        "model.optim.sched.constant_steps": 0,
    })
    values.update(extra or {})
    return [f"{key}={value}" for key, value in values.items()]


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def metric_by_step(log_dir: Path, name: str) -> dict[int, float]:
    return {int(row["step"]): float(row[name]) for row in read_metrics(log_dir) if row.get(name)}


def copy_weight(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst <- src for a parameter copied from a reference model (shapes must agree)."""
    assert dst.shape == src.shape, (dst.shape, src.shape)
    with torch.no_grad():
        dst.copy_(src)
