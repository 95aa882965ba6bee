"""Faults for the non-finite tests: a NaN or an infinity added to the loss, or written into one
gradient, at a given step on a given rank.

As a script it trains the tiny GPT with them, the way scripts/train.py would, so that a test can
start it with trainer.devices=2 (Lightning launches the second rank by running it again):

    python tests/training/non_finite_run.py loss:nan:2:1 grad:inf:4:0 -- <overrides>

It prints each rank's weight checksum at the end (ranks that disagreed on a step would differ).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

# The parameter whose gradient a "grad" fault spoils, named in the stop message.
TARGET_PARAMETER = "decoder.layers.1.mlp.linear_fc1.weight"


@dataclass(frozen=True)
class Fault:
    target: str  # "loss" or "grad"
    value: float  # nan or inf
    step: int  # optimizer step (0-based, as metrics.csv counts)
    rank: int

    @classmethod
    def parse(cls, text: str) -> Fault:
        target, value, step, rank = text.split(":")
        return cls(target, float(value), int(step), int(rank))


class FaultInjector(pl.Callback):
    def __init__(self, faults: list[Fault]) -> None:
        self.faults = faults

    def _due(self, trainer: pl.Trainer, target: str) -> list[Fault]:
        return [fault for fault in self.faults if fault.target == target
                and fault.step == trainer.global_step and fault.rank == trainer.global_rank]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def spoil_loss(module, args, loss):  # the module's forward returns the micro-batch loss
            for fault in self._due(trainer, "loss") if module.training else ():
                loss = loss + fault.value
            return loss

        pl_module.register_forward_hook(spoil_loss)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parameter = dict(pl_module.model.named_parameters())[TARGET_PARAMETER]
        for fault in self._due(trainer, "grad"):
            parameter.grad.view(-1)[0] = fault.value


def weight_checksum(module: pl.LightningModule) -> float:
    return sum(float(param.detach().double().sum()) for param in module.model.parameters())


def main(argv: list[str]) -> int:
    from megatron_lite.training import train  # noqa: PLC0415
    from megatron_lite.training.errors import USER_ERRORS, user_message  # noqa: PLC0415
    from tests.gpt_testing import compose_gpt  # noqa: PLC0415

    separator = argv.index("--")
    faults = [Fault.parse(text) for text in argv[:separator]]
    try:
        module = train(compose_gpt(argv[separator + 1:]), callbacks=[FaultInjector(faults)])
    except USER_ERRORS as error:
        print(f"Error: {user_message(error)}", file=sys.stderr, flush=True)
        return 1
    # One write, newline included: the ranks share the output file, and under PYTHONUNBUFFERED a
    # print's text and its newline are two writes, between which the other rank's log can land.
    sys.stdout.write(f"checksum rank {os.environ.get('LOCAL_RANK', '0')}: {weight_checksum(module)!r}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.*
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
