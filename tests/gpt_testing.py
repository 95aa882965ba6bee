"""Helpers of the GPT tests: compose configs through Hydra, write a tiny corpus (and the tokenizer
files NeMo users bring, trained on it), read metrics."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from megatron_lite.config import RunConfig, register_configs, run_config
from megatron_lite.data import IndexedDatasetWriter, token_dtype_for_vocab
from megatron_lite.tokenizers import ByteTokenizer, Tokenizer

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


def compose_gpt(overrides: Sequence[str] = (), **kwargs) -> RunConfig:
    """What scripts/train.py hands to the library for these command-line overrides (a GPTConfig
    for our GPT YAML; the family follows the composed keys, as in the script)."""
    return run_config(OmegaConf.to_container(compose_raw(overrides, **kwargs), resolve=False))


def tiny_documents(num_documents: int = 160, seed: int = 0) -> list[str]:
    """Documents of simple sentences: learnable in a few steps by a tiny model."""
    rng = random.Random(seed)
    return [
        " ".join(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
                 for _ in range(rng.randint(2, 8)))
        for _ in range(num_documents)
    ]


def write_tiny_corpus(prefix: Path, num_documents: int = 160, seed: int = 0,
                      tokenizer: Tokenizer | None = None) -> str:
    """The tiny documents tokenized (bytes by default), each ending with eod. Returns the data
    prefix."""
    tokenizer = tokenizer or ByteTokenizer()
    with IndexedDatasetWriter(str(prefix), token_dtype_for_vocab(tokenizer.vocab_size)) as writer:
        for document in tiny_documents(num_documents, seed):
            writer.add_document(tokenizer.encode(document) + [tokenizer.eod_id])
    return str(prefix)


def write_gpt2_bpe_files(directory: Path, vocab_size: int = 300) -> tuple[str, str]:
    """A GPT-2 style byte-level BPE (vocab.json, merges.txt with <|endoftext|>) trained on the
    tiny documents, as NeMo's GPT2BPETokenizer reads them. Returns (vocab_file, merge_file)."""
    from tokenizers import Tokenizer as HFBackend, models, pre_tokenizers, trainers  # noqa: PLC0415

    backend = HFBackend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(tiny_documents(), trainer)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file, merge_file = backend.model.save(str(directory))
    return vocab_file, merge_file


def write_wordpiece_vocab(directory: Path) -> str:
    """A BERT vocab.txt (specials, then the tiny documents' words and characters), as NeMo's
    BertWordPieceCase reads it."""
    words = sorted({word for document in tiny_documents() for word in document.replace(".", " .").split()})
    characters = sorted({character for word in words for character in word})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words,
              *(c for c in characters if c not in words), *(f"##{c}" for c in characters)]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return str(path)


def write_tokenizer_folder(directory: Path) -> str:
    """A Hugging Face tokenizer folder (tokenizer.json, tokenizer_config.json) holding the tiny
    GPT-2 BPE, as save_pretrained writes one."""
    from tokenizers import Tokenizer as HFBackend, decoders, models, pre_tokenizers  # noqa: PLC0415

    vocab_file, merge_file = write_gpt2_bpe_files(directory / "bpe")
    backend = HFBackend(models.BPE.from_file(vocab_file, merge_file))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "bos_token": {"content": "<|endoftext|>"}}))
    return str(directory)


def tiny_trainer_overrides(log_dir: Path) -> dict[str, object]:
    """The keys every tiny CPU run shares, pretraining or fine-tuning: trainer, logs, batches,
    byte tokenizer."""
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
    }


def tiny_run_overrides(data_prefix: str, log_dir: Path) -> dict[str, object]:
    """The keys every tiny CPU pretraining run shares (tiny_trainer_overrides, data, optimizer),
    whatever the model family."""
    return {
        **tiny_trainer_overrides(log_dir),
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
