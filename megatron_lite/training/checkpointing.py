"""Checkpoint files: complete-or-absent writes, reading, and restoring weights into a new run.

A checkpoint is Lightning's dict (model, optimizer, scheduler and loop states, callback states)
plus what GPTLightningModule.on_save_checkpoint adds: the config it was made with, the padded
vocabulary size and the consumed samples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from megatron_lite.config import GPTConfig, GPTModelConfig, config_from_dict
from megatron_lite.models import GPTModel
from megatron_lite.training.module import CONFIG_KEY, VOCAB_KEY

MODEL_PREFIX = "model."  # GPTLightningModule.model's key prefix in Lightning's state_dict
TEMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `path.tmp`, flushes it to disk, then renames it to `path`.

    The rename is atomic, so a `*.ckpt` file is always a whole checkpoint: a crash mid-write
    leaves at most a `.tmp` file (never resumed from) and the previous checkpoint of that name.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + TEMP_SUFFIX)
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The `*.ckpt` files of a run (temporary files of interrupted writes excluded)."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(checkpoint_dir.glob("*.ckpt"))


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """`last.ckpt`, else the most recently written checkpoint, else None."""
    checkpoints = complete_checkpoints(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    if last in checkpoints:
        return last
    return max(checkpoints, key=lambda path: path.stat().st_mtime, default=None)


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint dict on the CPU; a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} is not a megatron_lite checkpoint (it holds no {CONFIG_KEY!r})")
    return checkpoint


def architecture(cfg: GPTModelConfig, vocab_size: int) -> dict[str, Any]:
    """What fixes the parameters and their meaning; everything else may change on fine-tuning
    (dropout, flash attention, data, batch sizes, lr, rotary_base, interpolation factor...)."""
    arch = {
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_query_groups": cfg.query_groups,
        "kv_channels": cfg.head_dim,
        "normalization": cfg.normalization,
        "activation": cfg.activation,
        "bias": cfg.bias,
        "transformer_block_type": cfg.transformer_block_type,
        "position_embedding_type": cfg.position_embedding_type,
        "share_embeddings_and_output_weights": cfg.share_embeddings_and_output_weights,
        "padded_vocab_size": vocab_size,
    }
    if cfg.position_embedding_type == "learned_absolute":
        arch["max_position_embeddings"] = cfg.max_position_embeddings
    else:
        arch["rotary_percentage"] = cfg.rotary_percentage
    return arch


def checkpoint_config(checkpoint: dict[str, Any]) -> GPTConfig:
    return config_from_dict(checkpoint[CONFIG_KEY])


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint["state_dict"]
    return {key.removeprefix(MODEL_PREFIX): value for key, value in state.items()
            if key.startswith(MODEL_PREFIX)}


def check_structure(model: GPTModel, checkpoint: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint whose architecture differs from `model`'s, listing every difference
    (rather than letting load_state_dict fail on the first mismatched shape)."""
    saved = architecture(checkpoint_config(checkpoint).model, checkpoint[VOCAB_KEY])
    wanted = architecture(model.cfg, model.vocab_size)

    def show(arch: dict[str, Any], key: str) -> str:
        return repr(arch[key]) if key in arch else "not used"

    differing = [
        f"{key}: {show(saved, key)} in the checkpoint, {show(wanted, key)} in this config"
        for key in sorted(saved.keys() | wanted.keys())
        if saved.get(key) != wanted.get(key)
    ]
    if differing:
        raise ValueError(
            f"{source}: the checkpoint's model differs in structure from model.* "
            "(padded_vocab_size follows the tokenizer and model.make_vocab_size_divisible_by / "
            "model.override_vocab_size):\n  " + "\n  ".join(differing)
        )


def restore_weights(model: GPTModel, path: str | Path) -> None:
    """Load a checkpoint's weights into `model` (restore_from_path)."""
    checkpoint = read_checkpoint(path)
    check_structure(model, checkpoint, f"restore_from_path={path}")
    model.load_state_dict(model_state_dict(checkpoint), strict=True)


def load_model(path: str | Path) -> tuple[GPTModel, GPTConfig]:
    """The model of a checkpoint, built from the config it holds (for generation)."""
    checkpoint = read_checkpoint(path)
    cfg = checkpoint_config(checkpoint)
    model = GPTModel(cfg.model, checkpoint[VOCAB_KEY])
    model.load_state_dict(model_state_dict(checkpoint), strict=True)
    return model.eval(), cfg
