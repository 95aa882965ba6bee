"""Dropout on activations sharded over the tensor-parallel ranks: a stream of its own per rank,
as Megatron's RNG tracker forks one for its tensor-parallel regions.

Every rank of a tensor-parallel group is seeded alike, so dropout on replicated activations draws
the same mask on every rank, as it must. On sharded activations (attention heads under tensor
parallelism, the residual stream's sequence shards under sequence parallelism) the same stream
would drop the same pattern of each rank's own elements. `rank_seeded` draws one number from the
CPU generator, which advances it alike on every rank (what runs after the block stays in step),
and runs the block with the generators seeded from that number and the rank, restoring their
states afterwards. Activation checkpointing replays it: the recomputation starts from the saved
generator states and draws the same number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def rank_seeded(rank: int, device: torch.device) -> Iterator[None]:
    """The block's random draws (on the CPU and on `device`) from a seed of this rank's own."""
    seed = int(torch.randint(0, 2**62, (1,))) + rank
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)
        yield


class RankSeededDropout(nn.Dropout):
    """nn.Dropout whose mask comes from `rank_seeded` (for activations sharded by rank)."""

    def __init__(self, p: float, rank: int) -> None:
        super().__init__(p)
        self.rank = rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        with rank_seeded(self.rank, x.device):
            return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
