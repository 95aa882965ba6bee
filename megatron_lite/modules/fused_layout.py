"""The row layout of fused projections: several outputs in one matmul, interleaved by group.

A fused projection's output features hold several pieces (q, k, v; k, v; an MLP's gate and up).
Laid out one piece after the other ([all q | all k | all v]), a contiguous row shard of its
weight (tensor parallel's Shard(0)) would hold all of some pieces and none of others. Grouped,
as Megatron lays them out, the rows go group by group, each group holding its share of every
piece:

    linear_qkv  num_query_groups groups of [q heads of the group | k_g | v_g]   (head_dim rows each)
    linear_kv   num_query_groups groups of [k_g | v_g]
    linear_fc1  (gated MLP) ffn_hidden_size groups of [gate_i | up_i]            (one row each)

A contiguous shard then holds whole groups for every tensor-parallel size that divides the
number of groups, so the layout, and the checkpoints, do not depend on that size.

`group_rows` turns the pieces-one-after-the-other layout (Hugging Face's, and this project's
checkpoints before the change) into the grouped one; `ungroup_rows` goes back.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class RowGroups(NamedTuple):
    """Rows of each piece (one after the other, ungrouped) and the number of groups each piece
    splits into."""
    sizes: tuple[int, ...]
    groups: int


def group_rows(tensor: torch.Tensor, layout: RowGroups) -> torch.Tensor:
    """[piece 0 | piece 1 | ...] rows (dim 0) -> groups of [piece 0's share | piece 1's | ...]."""
    sizes, groups = layout
    rest = tensor.shape[1:]
    pieces = [piece.reshape(groups, size // groups, *rest)
              for piece, size in zip(tensor.split(list(sizes)), sizes, strict=True)]
    return torch.cat(pieces, dim=1).reshape(tensor.shape)  # (G * sum(sizes) / G, ...)


def ungroup_rows(tensor: torch.Tensor, layout: RowGroups) -> torch.Tensor:
    """The inverse of group_rows."""
    sizes, groups = layout
    rest = tensor.shape[1:]
    shares = tensor.reshape(groups, -1, *rest).split([size // groups for size in sizes], dim=1)
    return torch.cat([share.reshape(size, *rest) for share, size in zip(shares, sizes, strict=True)])


def qkv_layout(num_heads: int, num_groups: int, head_dim: int) -> RowGroups:
    """linear_qkv's rows: q (num_heads heads), k and v (num_groups heads each), by query group."""
    return RowGroups((num_heads * head_dim, num_groups * head_dim, num_groups * head_dim), num_groups)


def kv_layout(num_groups: int, head_dim: int) -> RowGroups:
    """Cross-attention's linear_kv rows: k and v, by query group."""
    return RowGroups((num_groups * head_dim,) * 2, num_groups)


def gated_fc1_layout(ffn_hidden_size: int) -> RowGroups:
    """A gated MLP's linear_fc1 rows: gate and up, interleaved row by row."""
    return RowGroups((ffn_hidden_size,) * 2, ffn_hidden_size)


def fused_layouts(model: nn.Module) -> dict[str, RowGroups]:
    """The grouped projections of `model`, by the name of their layer in it ('x.linear_qkv',
    with a LoRA adapter or without). Their layouts are those of the whole projection, set when
    the module was built: tensor parallelism does not change them."""
    # Imported here: the modules import this one.
    from megatron_lite.modules.attention import CrossAttention, SelfAttention  # noqa: PLC0415
    from megatron_lite.modules.mlp import MLP  # noqa: PLC0415

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (SelfAttention, CrossAttention, MLP)):
            prefix = f"{name}." if name else ""
            found.update((prefix + layer, layout) for layer, layout in module.fused_rows.items())
    return found


def layout_of_tensor(layouts: dict[str, RowGroups], name: str) -> RowGroups | None:
    """The layout of a state-dict tensor `name` whose rows are a grouped projection's outputs:
    its weight and bias, an adapter's base weight and bias, and an adapter's B (lora_b)."""
    for suffix in ("weight", "bias", "base.weight", "base.bias", "lora_b"):
        layer = name.removesuffix("." + suffix)
        if layer != name and layer in layouts:
            return layouts[layer]
    return None


def regroup_state(state: dict[str, torch.Tensor], layouts: dict[str, RowGroups],
                  convert=group_rows, prefix: str = "") -> list[str]:
    """Convert (in place) every tensor of `state` (keys prefixed `prefix`) that belongs to a
    grouped projection; returns their names."""
    converted = []
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        layout = layout_of_tensor(layouts, key.removeprefix(prefix))
        if layout is not None:
            state[key] = convert(tensor, layout)
            converted.append(key)
    return converted

