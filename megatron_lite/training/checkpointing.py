"""Checkpoint files: complete-or-absent writes, reading, and restoring weights into a new run.

A checkpoint is Lightning's dict (model, optimizer, scheduler and loop states, callback states)
plus what MegatronLightningModule.on_save_checkpoint adds: the config it was made with, the
model family, the padded vocabulary size and the consumed samples. A LoRA run's checkpoints
hold the adapters in place of the frozen weights (training/adapters.py); reading one as a model
merges them into the weights of its restore_from_path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from megatron_lite.config import RunConfig, config_from_dict
from megatron_lite.modules.lora import merge_lora
from megatron_lite.training.adapters import (
    FROZEN_CHECKSUM_KEY,
    add_adapters,
    check_frozen_weights,
    lora_settings,
)
from megatron_lite.training.distributed_checkpoint import (
    is_distributed_checkpoint,
    publish,
    read_distributed_checkpoint,
    read_metadata,
    temporary_path,
)
from megatron_lite.training.families import family_named, family_of_model
from megatron_lite.training.family import ModelFamily
from megatron_lite.training.files import atomic_file
from megatron_lite.training.gpt import GPT
from megatron_lite.training.module import CONFIG_KEY, FAMILY_KEY, VOCAB_KEY
from megatron_lite.training.weight_layout import LAYOUT_KEY, upgrade_layout

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # MegatronLightningModule.model's key prefix in Lightning's state_dict
LAST_NAME = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `path.tmp`, flushes it to disk, then renames it to `path` (files.atomic_file).

    The rename is atomic, so a `*.ckpt` file is always a whole checkpoint: a crash mid-write
    leaves at most a `.tmp` file (never resumed from, deleted when the run resumes) and the
    previous checkpoint of that name.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():  # a sharded checkpoint of that name (the run changed layout)
            staged = temporary_path(path)
            with atomic_file(staged) as file:
                torch.save(checkpoint, file)
            publish(staged, path)  # the folder replaced whole
            return
        with atomic_file(path) as file:
            torch.save(checkpoint, file)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """A file as Lightning reads it; a sharded checkpoint (a torch.distributed.checkpoint
        folder) read whole into the same form, so that one process or DDP resumes from it."""
        if is_distributed_checkpoint(Path(path)):
            return read_distributed_checkpoint(Path(path), optimizer=True)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The `*.ckpt` files of a run, and its complete sharded checkpoints (`*.ckpt` folders
    holding their marker); temporary files and folders of interrupted writes excluded."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(path for path in checkpoint_dir.glob("*.ckpt")
                  if path.is_file() or is_distributed_checkpoint(path))


def newest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The complete checkpoint of the most training steps, or None.

    Lightning writes a validation's top-k checkpoint, then last.ckpt; a run killed in between
    has a top-k file newer than last.ckpt, and resuming from it loses nothing. On a tie
    last.ckpt wins. A file that cannot be read as a checkpoint is skipped, with a warning.
    """
    newest, newest_rank = None, None
    for path in complete_checkpoints(checkpoint_dir):
        try:
            step = int(checkpoint_metadata(path)["global_step"])
        except ValueError as error:
            logger.warning("not resuming from %s: %s", path, error)
            continue
        rank = (step, path.name == LAST_NAME, path.stat().st_mtime)
        if newest_rank is None or rank > newest_rank:
            newest, newest_rank = path, rank
    return newest


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """What a checkpoint holds besides the optimizer state, the weights too where they come
    free: a file memory-mapped, a sharded checkpoint's meta.pt alone (config, step, consumed
    samples, vocabulary; no weights)."""
    path = Path(path)
    if is_distributed_checkpoint(path):
        return _checked(read_metadata(path), path)
    return read_checkpoint(path, mmap=True)


def _checked(checkpoint: Any, path: Path) -> dict[str, Any]:
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} is not a megatron_lite checkpoint (it holds no {CONFIG_KEY!r})")
    return checkpoint


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint dict on the CPU; a clear error for a missing or unreadable file. A sharded
    checkpoint (a torch.distributed.checkpoint folder) is read whole, its weights gathered from
    every rank's shards (no process group needed); another folder is read as a Hugging Face
    model (config.json + weights), converted in memory."""
    path = Path(path)
    if is_distributed_checkpoint(path):
        return _checked(read_distributed_checkpoint(path), path)
    if path.is_dir():
        # Imported here: megatron_lite.interop reads our checkpoints through this module.
        from megatron_lite.interop import checkpoint_from_hf  # noqa: PLC0415

        return checkpoint_from_hf(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} is not a megatron_lite checkpoint (it holds no {CONFIG_KEY!r})")
    if "state_dict" in checkpoint and LAYOUT_KEY not in checkpoint:  # older than the grouped layout
        with torch.device("meta"):
            skeleton = checkpoint_family(checkpoint).model_type(checkpoint_config(checkpoint).model,
                                                                 checkpoint[VOCAB_KEY])
        upgrade_layout(checkpoint, skeleton)
    return checkpoint


def checkpoint_family(checkpoint: dict[str, Any]) -> ModelFamily:
    # Checkpoints written before T5 existed name no family: they are GPT's.
    return family_named(checkpoint.get(FAMILY_KEY, GPT.name))


def checkpoint_config(checkpoint: dict[str, Any]) -> RunConfig:
    return config_from_dict(checkpoint[CONFIG_KEY], checkpoint_family(checkpoint).config_type)


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint["state_dict"]
    return {key.removeprefix(MODEL_PREFIX): value for key, value in state.items()
            if key.startswith(MODEL_PREFIX)}


def check_structure(model: nn.Module, checkpoint: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint whose family or architecture differs from `model`'s, listing every
    difference (rather than letting load_state_dict fail on the first mismatched shape)."""
    family, saved_family = family_of_model(model), checkpoint_family(checkpoint)
    if saved_family.model_name != family.model_name:
        raise ValueError(
            f"{source}: the checkpoint holds a {saved_family.model_name} model, this config builds a "
            f"{family.model_name} model"
        )
    saved = family.architecture(checkpoint_config(checkpoint).model, checkpoint[VOCAB_KEY])
    wanted = family.architecture(model.cfg, model.vocab_size)

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


def restore_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into `model` (restore_from_path)."""
    restore_checkpoint_weights(model, read_checkpoint(path), f"restore_from_path={path}")


def restore_checkpoint_weights(model: nn.Module, checkpoint: dict[str, Any], source: str) -> None:
    """Load the weights of a checkpoint already read into `model`; a LoRA checkpoint gives its
    base's weights with its adapters merged."""
    check_structure(model, checkpoint, source)
    model.load_state_dict(checkpoint_weights(checkpoint), strict=True)


def checkpoint_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every weight of the checkpoint's model: those it holds, or for a LoRA checkpoint (which
    holds the adapters only) its base's with the adapters merged."""
    if FROZEN_CHECKSUM_KEY not in checkpoint:
        return model_state_dict(checkpoint)
    return checkpoint_model(checkpoint)[0].state_dict()


def checkpoint_model(checkpoint: dict[str, Any]) -> tuple[nn.Module, RunConfig]:
    """The model of a checkpoint, built from the config it holds, with its weights; a LoRA
    checkpoint's adapters are added to the weights of its restore_from_path and merged."""
    cfg = checkpoint_config(checkpoint)
    model = checkpoint_family(checkpoint).model_type(cfg.model, checkpoint[VOCAB_KEY])
    if FROZEN_CHECKSUM_KEY not in checkpoint:
        model.load_state_dict(model_state_dict(checkpoint), strict=True)
        return model, cfg
    source = f"the LoRA checkpoint's base model, restore_from_path={cfg.restore_from_path}"
    try:
        base = read_checkpoint(cfg.restore_from_path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}, is not found: a LoRA checkpoint holds the adapters "
                                "only, and its base model must stay at that path") from None
    restore_checkpoint_weights(model, base, source)
    add_adapters(model, lora_settings(cfg))
    check_frozen_weights(model, checkpoint, source)
    result = model.load_state_dict(model_state_dict(checkpoint), strict=False)
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    missing = sorted(trained & set(result.missing_keys))
    if missing or result.unexpected_keys:
        raise ValueError(f"{source}: the checkpoint's tensors are not the adapters of its "
                         f"model.peft.* (missing: {missing}, unexpected: {result.unexpected_keys})")
    merge_lora(model)
    return model, cfg


def load_model(path: str | Path) -> tuple[nn.Module, RunConfig]:
    """The model of a checkpoint with its weights (LoRA adapters merged) and its config (for
    generation, evaluation and export)."""
    model, cfg = checkpoint_model(read_checkpoint(path))
    return model.eval(), cfg
