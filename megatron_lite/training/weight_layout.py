"""Checkpoints written before the fused projections were grouped, converted when they are read.

Since the change of modules/fused_layout.py, linear_qkv's rows are grouped by query group
([q_g | k_g | v_g]), cross-attention's linear_kv's too ([k_g | v_g]) and a gated MLP's
linear_fc1 interleaves gate and up row by row; before, each held its pieces one after the other.
Checkpoints record the layout of their weights under LAYOUT_KEY; one without it was written
before the change, and every path that reads a checkpoint (resume, restore_from_path,
load_model and so generation, evaluation and export) passes it through `upgrade_layout`
first: those tensors' rows (weights, biases, a LoRA adapter's B) and, when resuming, their
AdamW moments are permuted into the grouped layout, exactly (a permutation, no arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from megatron_lite.config import RunConfig
from megatron_lite.modules.fused_layout import (
    RowGroups,
    fused_layouts,
    group_rows,
    layout_of_tensor,
    regroup_state,
)
from megatron_lite.training.optim import param_groups

# What checkpoints record about their weights' layout, and the layout of today.
LAYOUT_KEY = "weight_layout"
GROUPED = "grouped"
MODEL_PREFIX = "model."  # the model's tensors' prefix in Lightning's state_dict


def upgrade_layout(checkpoint: dict[str, Any], model: nn.Module, run_cfg: RunConfig | None = None) -> None:
    """Convert, in place, a checkpoint written before the grouped layout (it has no LAYOUT_KEY)
    into it, and mark it; a checkpoint of the grouped layout is left as it is.

    `model`: a model of the checkpoint's architecture (the meta device will do; with the LoRA
    adapters or without). `run_cfg`: the run's config when the checkpoint's optimizer states
    are to be loaded (resuming): it fixes the order of the optimizer's parameters
    (optim.param_groups), and the moments of the converted weights are permuted alike.
    """
    if checkpoint.get(LAYOUT_KEY) == GROUPED:
        return
    if LAYOUT_KEY in checkpoint:
        raise ValueError(f"the checkpoint's weights have the layout {checkpoint[LAYOUT_KEY]!r}, "
                         f"which this version does not know (it knows {GROUPED!r})")
    regroup_checkpoint(checkpoint, model, run_cfg, group_rows)
    checkpoint[LAYOUT_KEY] = GROUPED


def regroup_checkpoint(checkpoint: dict[str, Any], model: nn.Module, run_cfg: RunConfig | None,
                       convert: Callable[[torch.Tensor, RowGroups], torch.Tensor]) -> None:
    """Apply `convert` (fused_layout.group_rows, or ungroup_rows to write the old layout) to
    the rows of every grouped projection's tensors in the checkpoint, and with `run_cfg` to
    their optimizer moments."""
    layouts = fused_layouts(model)
    regroup_state(checkpoint.get("state_dict", {}), layouts, convert, prefix=MODEL_PREFIX)
    if run_cfg is None:
        return
    names = {id(param): name for name, param in model.named_parameters()}
    groups = param_groups(model, run_cfg.model.optim.weight_decay, run_cfg.model.do_layer_norm_weight_decay)
    # The optimizer's state is keyed by the parameter's index in its groups, which
    # build_optimizer fills with optim.param_groups.
    order = [(names[id(param)], param.shape) for group in groups for param in group["params"]]
    for state in checkpoint.get("optimizer_states", ()):
        for index, moments in state["state"].items():
            name, shape = order[index]
            layout = layout_of_tensor(layouts, name)
            for key, value in moments.items():  # AdamW's moments, not its step count
                if layout is not None and isinstance(value, torch.Tensor) and value.shape == shape:
                    moments[key] = convert(value, layout)
