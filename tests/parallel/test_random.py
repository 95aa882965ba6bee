"""Dropout on sharded activations draws a stream of each rank's own (megatron_lite.parallel.random),
while what runs after stays in step across ranks; activation checkpointing replays its masks; and
apply_tensor_parallel gives it to the attention's heads, the MLP's features and, under sequence
parallelism, to every hidden and embedding dropout (2 CPU processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.utils.checkpoint import checkpoint

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel
from megatron_lite.modules.attention import _Attention
from megatron_lite.parallel.random import RankSeededDropout, rank_seeded
from megatron_lite.parallel.tensor_parallel import apply_tensor_parallel
from tests.parallel.distributed_testing import spawn_ranks


def draws(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a draw inside rank_seeded, the next draw after it), from seed 0."""
    torch.manual_seed(0)
    with rank_seeded(rank, torch.device("cpu")):
        inside = torch.rand(8)
    return inside, torch.rand(8)


def test_ranks_draw_their_own_stream_and_stay_in_step_after_it():
    inside_0, after_0 = draws(0)
    inside_1, after_1 = draws(1)
    assert not torch.equal(inside_0, inside_1)
    assert torch.equal(inside_0, draws(0)[0])  # reproducible from the seed
    assert torch.equal(after_0, after_1)  # replicated work after the block draws alike on every rank


def test_checkpointing_replays_the_masks():
    dropout = RankSeededDropout(0.5, rank=1)
    x = torch.randn(4, 16, requires_grad=True)

    def grad(use_checkpoint: bool) -> torch.Tensor:
        torch.manual_seed(3)
        fn = lambda t: (dropout(t) * 2).sin()  # noqa: E731
        out = checkpoint(fn, x, use_reentrant=False) if use_checkpoint else fn(x)
        (g,) = torch.autograd.grad(out.sum(), x)
        return g

    assert torch.equal(grad(True), grad(False))
    assert (grad(False) == 0).any()  # dropout is on


def run_rank(rank: int, world: int) -> None:
    cfg = GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                         encoder_seq_length=8, max_position_embeddings=8, hidden_dropout=0.5,
                         attention_dropout=0.5, ffn_dropout=0.5, use_flash_attention=False)
    torch.manual_seed(0)
    model = GPTModel(cfg, 64)
    apply_tensor_parallel(model, init_device_mesh("cpu", (world,)), sequence_parallel=True)
    attention = [m for m in model.modules() if isinstance(m, _Attention)]
    assert attention and all(m.dropout_rank == rank for m in attention)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    # the embedding's, and each layer's hidden and MLP dropout
    assert len(dropouts) == 5 and all(isinstance(m, RankSeededDropout) and m.rank == rank for m in dropouts)
    torch.manual_seed(1)
    mlp_dropout = model.get_submodule("decoder.layers.0.mlp.dropout")  # no layout hooks on it
    mask = (mlp_dropout(torch.ones(64)) == 0).float()
    masks = [torch.empty_like(mask) for _ in range(world)]
    dist.all_gather(masks, mask)
    assert not torch.equal(masks[0], masks[1])


@pytest.mark.distributed
def test_tensor_parallel_seeds_the_sharded_dropouts_by_rank():
    spawn_ranks(run_rank, 2)
