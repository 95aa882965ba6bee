"""LoRA in training (model.peft.peft_scheme=lora): adapters added to the restored model, and
checkpoints that hold only what trains.

A LoRA run freezes the model restored from restore_from_path and trains the adapters alone, so
the optimizer holds only them (optim.param_groups takes trainable parameters). Its checkpoints
hold the adapters, their optimizer state, the loops, the data position and the RNG states, plus
a checksum of the frozen weights; the frozen weights themselves are restore_from_path's. A
resumed run restores them from that path again before Lightning loads the checkpoint, and the
checksum tells whether that path still holds the weights the run was trained on. Generation
and export rebuild the model the same way and merge the adapters (training/checkpointing.py).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from megatron_lite.config import LoraTuningConfig, RunConfig
from megatron_lite.config.finetuning import FineTuningModelKeys
from megatron_lite.modules.lora import add_lora

# What a checkpoint without the frozen weights holds in their stead.
FROZEN_CHECKSUM_KEY = "frozen_weights_checksum"
# Relative difference of the checksums beyond which the frozen weights are not the same: room
# for the summation order of another device, far below any change of a weight.
CHECKSUM_TOLERANCE = 1e-9


def lora_settings(cfg: RunConfig) -> Optional[LoraTuningConfig]:
    """The run's adapters, or None: a pretraining run, or fine-tuning of every weight."""
    model = cfg.model
    return model.peft.lora if isinstance(model, FineTuningModelKeys) else None


def add_adapters(model: nn.Module, lora: LoraTuningConfig) -> list[str]:
    """The adapters of `lora` on `model`, whose other weights are frozen; returns the adapted
    layers' names."""
    return add_lora(model, rank=lora.adapter_dim, alpha=lora.scale_alpha, dropout=lora.adapter_dropout,
                    target_modules=lora.target_modules, layer_selection=lora.layer_selection,
                    init_a=lora.column_init_method, init_b=lora.row_init_method)


def check_same_adapters(cfg: RunConfig, saved_cfg: RunConfig, source: str) -> None:
    """A resumed run must add the adapters its checkpoint trained (their shapes and places)."""
    wanted, saved = _adapter_layout(lora_settings(cfg)), _adapter_layout(lora_settings(saved_cfg))
    differing = [f"{key}: {saved.get(key)!r} in the checkpoint, {wanted.get(key)!r} in this config"
                 for key in sorted(saved.keys() | wanted.keys()) if saved.get(key) != wanted.get(key)]
    if differing:
        raise ValueError(f"{source}: the checkpoint's adapters differ from model.peft.*:\n  "
                         + "\n  ".join(differing))


def _adapter_layout(lora: Optional[LoraTuningConfig]) -> dict[str, Any]:
    if lora is None:
        return {"peft_scheme": "none"}
    return {"peft_scheme": "lora", "lora_tuning.adapter_dim": lora.adapter_dim,
            "lora_tuning.target_modules": list(lora.target_modules),
            "lora_tuning.layer_selection": lora.layer_selection}


def frozen_checksum(module: nn.Module) -> list[float]:
    """The sum and the absolute sum of the frozen parameters, in float64."""
    frozen = [param for param in module.parameters() if not param.requires_grad]
    with torch.no_grad():
        total = sum(float(param.double().sum()) for param in frozen)
        magnitude = sum(float(param.double().abs().sum()) for param in frozen)
    return [total, magnitude]


def drop_frozen_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Keep the trained weights only in a checkpoint of `module` (all of them when nothing is
    frozen), with the frozen ones' checksum."""
    frozen = {name for name, param in module.named_parameters() if not param.requires_grad}
    if not frozen:
        return
    checkpoint["state_dict"] = {name: tensor for name, tensor in checkpoint["state_dict"].items()
                                if name not in frozen}
    checkpoint[FROZEN_CHECKSUM_KEY] = frozen_checksum(module)


def check_frozen_weights(module: nn.Module, checkpoint: dict[str, Any], source: str) -> None:
    """The frozen weights of `module` must be those the checkpoint's run trained with."""
    saved, current = checkpoint[FROZEN_CHECKSUM_KEY], frozen_checksum(module)
    if not all(math.isclose(a, b, rel_tol=CHECKSUM_TOLERANCE) for a, b in zip(saved, current)):
        raise ValueError(
            f"{source}: the checkpoint holds adapters trained on other frozen weights than those "
            "restore_from_path holds now (their checksums differ): the base model there has changed "
            "since the run started"
        )


def restore_frozen_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Complete a checkpoint written by drop_frozen_weights with `module`'s frozen weights
    (restored from restore_from_path), so that Lightning loads it as a whole."""
    if FROZEN_CHECKSUM_KEY not in checkpoint:
        return
    check_frozen_weights(module, checkpoint, "resuming this run")
    state = checkpoint["state_dict"]
    for name, param in module.named_parameters():
        if not param.requires_grad:
            state[name] = param.detach()
