"""LoRA (Hu et al., 2021): low-rank adapters on a frozen model's linear layers.

A target layer W becomes W x + (alpha / rank) * B A dropout(x), with A [rank, in] and B [out,
rank]. A and B start as NeMo initialises them (xavier: Xavier normal, normal: N(0, 0.2), zero);
with B at zero (the default), adding adapters changes nothing until they train. Only the
adapters are trainable (and saved when fine-tuning); merging folds B A into W, leaving plain
linear layers for export and generation.

Targets use NeMo's names: attention_qkv (the fused q, k, v projection; T5's cross-attention q
and kv projections too), attention_dense (attention's output projection), mlp_fc1, mlp_fc2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.modules.attention import CrossAttention, SelfAttention
from megatron_lite.modules.mlp import MLP
from megatron_lite.modules.transformer import TransformerLayer

INIT_METHODS = {
    "xavier": nn.init.xavier_normal_,
    "normal": lambda weight: nn.init.normal_(weight, std=0.2),
    "zero": nn.init.zeros_,
}
LORA_TARGETS = {
    "attention_qkv": ((SelfAttention, "linear_qkv"), (CrossAttention, "linear_q"),
                      (CrossAttention, "linear_kv")),
    "attention_dense": ((SelfAttention, "linear_proj"), (CrossAttention, "linear_proj")),
    "mlp_fc1": ((MLP, "linear_fc1"),),
    "mlp_fc2": ((MLP, "linear_fc2"),),
}


class LoraLinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float,
                 init_a: str = "xavier", init_b: str = "zero") -> None:
        super().__init__()
        self.base = base
        options = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **options))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank, **options))
        INIT_METHODS[init_a](self.lora_a)
        INIT_METHODS[init_b](self.lora_b)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)  # (..., out)
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * (self.lora_b @ self.lora_a).to(self.base.weight.dtype)
        return self.base


def add_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0,
             target_modules: Sequence[str] = ("attention_qkv",),
             layer_selection: Iterable[int] | None = None,
             init_a: str = "xavier", init_b: str = "zero") -> list[str]:
    """Put adapters on the target layers of every transformer layer (or of those numbered in
    layer_selection, from 1, per stack as NeMo counts them) and freeze everything else.
    init_a / init_b name the matrices' initialisations (INIT_METHODS). Returns the names of
    the adapted layers."""
    unknown = set(target_modules) - set(LORA_TARGETS)
    if unknown or not target_modules:
        raise ValueError(f"LoRA target_modules {sorted(unknown) or list(target_modules)} not among "
                         f"{sorted(LORA_TARGETS)}")
    if rank < 1:
        raise ValueError(f"LoRA's rank (adapter_dim) must be >= 1, got {rank}")
    for init in (init_a, init_b):
        if init not in INIT_METHODS:
            raise ValueError(f"LoRA init method {init!r} is not one of {sorted(INIT_METHODS)}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    selected = None if layer_selection is None else set(layer_selection)
    targets = []  # (owner module, attribute, name), all found before any is replaced
    for stack_name, stack in _stacks(model):
        for number, layer in enumerate(stack, start=1):
            if selected is not None and number not in selected:
                continue
            for owner_name, owner in layer.named_modules():
                for target in target_modules:
                    for owner_type, attribute in LORA_TARGETS[target]:
                        if isinstance(owner, owner_type):
                            targets.append((owner, attribute,
                                            f"{stack_name}.{number - 1}.{owner_name}.{attribute}"))
    if not targets:
        raise ValueError(f"LoRA found no layer to adapt (layer_selection={layer_selection})")
    for owner, attribute, _ in targets:
        setattr(owner, attribute, LoraLinear(getattr(owner, attribute), rank, alpha, dropout, init_a, init_b))
    return [name for _, _, name in targets]


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its layer's weight: the model is plain again (and trainable)."""
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, LoraLinear):
                setattr(owner, name, child.merged())
    for parameter in model.parameters():
        parameter.requires_grad_(True)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors only: what a LoRA fine-tune saves."""
    return {name: tensor for name, tensor in model.state_dict().items()
            if name.endswith((".lora_a", ".lora_b"))}


def _stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Each transformer stack's layers, by the stack's name in the model."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and module and isinstance(module[0], TransformerLayer)]
