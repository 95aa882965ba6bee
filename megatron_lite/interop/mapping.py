"""State-dict mapping between our models and Hugging Face's, stated once as rules.

A rule ties one of our tensors to one or more Hugging Face tensors: the same tensor, its
transpose (GPT-2's Conv1D stores [in, out], nn.Linear [out, in]), or several HF tensors stacked
along dim 0 into one of our fused projections ([q | k | v], [gate | up], [k | v]), whose rows we
keep grouped (modules/fused_layout.py: per query group [q_g | k_g | v_g], per feature
[gate_i | up_i]) where HF keeps them one piece after the other. The same rules
convert both ways, and give the tensors (names and shapes) a config implies, against which a
checkpoint is checked before anything is converted: missing, unexpected and misshapen tensors are
listed together, by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from megatron_lite.modules.fused_layout import RowGroups, group_rows, ungroup_rows

# Names listed in an error message before "... and N more".
LISTED_NAMES = 8


@dataclass(frozen=True)
class TensorRule:
    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False
    # Rows of each piece in ours (when there are several: HF's tensors, or the pieces of one
    # fused HF tensor): how ours splits back.
    sizes: tuple[int, ...] | None = None
    # Our rows are grouped (fused_layout.group_rows) into this many groups; 1: not grouped.
    groups: int = 1

    def __post_init__(self) -> None:
        # Internal invariants of the rule tables.
        assert len(self.theirs) == 1 or (self.sizes is not None and len(self.sizes) == len(self.theirs))
        assert not (self.transpose and len(self.theirs) > 1)
        assert self.groups == 1 or self.sizes is not None

    @property
    def layout(self) -> RowGroups:
        assert self.sizes is not None
        return RowGroups(self.sizes, self.groups)


def same(ours: str, theirs: str) -> TensorRule:
    return TensorRule(ours, (theirs,))


def transposed(ours: str, theirs: str) -> TensorRule:
    return TensorRule(ours, (theirs,), transpose=True)


def stacked(ours: str, theirs: Iterable[str], sizes: Iterable[int], groups: int = 1) -> TensorRule:
    """HF tensors of `sizes` rows stacked into ours, grouped in `groups` groups."""
    return TensorRule(ours, tuple(theirs), sizes=tuple(sizes), groups=groups)


def grouped(rule: TensorRule, layout: RowGroups) -> TensorRule:
    """`rule` (one HF tensor, or several stacked) with our rows grouped as `layout` says."""
    return dataclasses.replace(rule, sizes=layout.sizes, groups=layout.groups)


def to_ours(hf_state: Mapping[str, torch.Tensor], rules: Iterable[TensorRule]) -> dict[str, torch.Tensor]:
    """Our state dict from a HF one that `check_tensors` accepted."""
    state = {}
    for rule in rules:
        pieces = [hf_state[name] for name in rule.theirs]
        tensor = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        tensor = tensor.t().contiguous() if rule.transpose else tensor
        state[rule.ours] = group_rows(tensor, rule.layout) if rule.groups > 1 else tensor
    return state


def to_hf(state: Mapping[str, torch.Tensor], rules: Iterable[TensorRule]) -> dict[str, torch.Tensor]:
    """The HF state dict of ours (views where possible: the writer copies)."""
    hf_state = {}
    for rule in rules:
        tensor = state[rule.ours]
        if rule.groups > 1:
            tensor = ungroup_rows(tensor, rule.layout)
        if rule.transpose:
            tensor = tensor.t()
        pieces = tensor.split(list(rule.sizes)) if len(rule.theirs) > 1 else (tensor,)
        hf_state.update(zip(rule.theirs, pieces, strict=True))
    return hf_state


def model_shapes(model_type: type[nn.Module], model_cfg: object, vocab_size: int) -> dict[str, torch.Size]:
    """Our state dict's shapes for a config, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = model_type(model_cfg, vocab_size)
    return {key: tensor.shape for key, tensor in model.state_dict().items()}


def hf_shapes(shapes: Mapping[str, torch.Size], rules: Iterable[TensorRule]) -> dict[str, torch.Size]:
    """The HF tensors' shapes that our `shapes` map to."""
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    return {key: tensor.shape for key, tensor in to_hf(meta, rules).items()}


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return shown + (f", ... and {more} more" if more > 0 else "")


def check_tensors(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], *,
                  source: str, expected_from: str) -> None:
    """ValueError listing every tensor of `found` that is missing, unexpected or of another
    shape than `expected` (what `expected_from`, a config, implies)."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    misshapen = [f"{key} {list(found[key].shape)} (expected {list(expected[key])})"
                 for key in sorted(expected.keys() & found.keys())
                 if found[key].shape != expected[key]]
    problems = [f"{what} ({len(names)}): {_listing(names)}"
                for what, names in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                    ("tensors of another shape", misshapen)) if names]
    if problems:
        raise ValueError(
            f"{source}: the weights are not those of the model {expected_from} describes "
            "(another architecture or size?):\n  " + "\n  ".join(problems)
        )
