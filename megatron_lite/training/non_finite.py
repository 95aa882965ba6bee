"""A training step whose loss or gradient norm is not finite (model.non_finite_action).

The decision is the same on every rank: each rank's flags (its loss, its gradient norm) are
summed over the data-parallel group before anyone acts, so that no rank updates its weights
while another skips, and no rank stops while the others wait for it.
"""

from __future__ import annotations

import torch
from pytorch_lightning.strategies import Strategy
from torch.distributed.tensor import DTensor
from torch import nn


def agreed_non_finite(loss: torch.Tensor, grad_norm: torch.Tensor, strategy: Strategy) -> tuple[bool, bool]:
    """(the loss is not finite on some rank, the gradient norm is not finite on some rank)."""
    flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm)]).float()
    loss_flag, grad_flag = strategy.reduce(flags, reduce_op="sum").tolist()
    return loss_flag > 0, grad_flag > 0


def first_non_finite_gradient(model: nn.Module) -> str | None:
    """The name of the first parameter (in the model's order) whose gradient holds a NaN or an
    infinity on this rank (in this rank's shard, for a sharded gradient)."""
    for name, param in model.named_parameters():
        grad = param.grad
        if isinstance(grad, DTensor):  # this rank's shard of it
            grad = grad.to_local()
        if grad is not None and not torch.isfinite(grad).all():
            return name
    return None


def describe(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, model: nn.Module,
             loss_bad: bool, grads_bad: bool) -> str:
    """One line naming the step, what is not finite and the first parameter to blame."""
    what = " and ".join(name for name, bad in (("the loss", loss_bad), ("the gradient norm", grads_bad)) if bad)
    parameter = first_non_finite_gradient(model)
    blame = ("first parameter with a non-finite gradient: " + parameter if parameter is not None
             else "every gradient is finite on this rank")
    return (f"training step {step}: {what} is not finite (this rank: loss {loss.item():.6g}, "
            f"gradient norm {grad_norm.item():.6g}); {blame}")


def drop_gradients(model: nn.Module) -> None:
    """Make the coming optimizer step a no-op: parameters without a gradient are not updated
    (no AdamW moment or weight decay either)."""
    for param in model.parameters():
        param.grad = None
