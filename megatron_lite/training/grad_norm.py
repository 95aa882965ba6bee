"""The gradient norm and clipping by it, for plain tensors and for DTensors (FSDP2 shards,
tensor-parallel pieces), whose local values are parts of the whole gradient.

Gradients are grouped by their DTensor layout (mesh and placements): a group's norm comes from
torch.nn.utils.get_total_norm, which for DTensors reduces the shards' partial norms over the
group's mesh; the groups' norms are then combined. Clipping multiplies each group by the same
coefficient. One process or DDP gives a single group of plain tensors: the norm and the clipping
of torch.nn.utils.clip_grad_norm_.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.distributed.tensor import DTensor


def _grouped_gradients(parameters: Iterable[torch.nn.Parameter]) -> list[list[torch.Tensor]]:
    groups: dict[object, list[torch.Tensor]] = {}
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        key = (grad.device_mesh, grad.placements) if isinstance(grad, DTensor) else None
        groups.setdefault(key, []).append(grad)
    return list(groups.values())


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients together (a plain float32 tensor, equal on every rank)."""
    norms = []
    for grads in _grouped_gradients(parameters):
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if not norms:
        return torch.zeros(())
    if len(norms) == 1:
        return norms[0].float()
    return torch.linalg.vector_norm(torch.stack([norm.float() for norm in norms]))


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale the gradients by max_norm / total_norm where that is below 1 (clip_grad_norm_'s
    coefficient, with its 1e-6)."""
    coefficient = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for grads in _grouped_gradients(parameters):
        local = [grad.to_local() if isinstance(grad, DTensor) else grad for grad in grads]
        torch._foreach_mul_(local, coefficient.to(local[0].device))
