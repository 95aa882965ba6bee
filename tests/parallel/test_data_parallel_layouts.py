"""parallelize's data-parallel forms on CPU processes (gloo) against what DDP computes, the
gradient averaged over the ranks' batches (here: every rank's batch through one unparallelized
copy of the model, losses averaged): a tiny GPT (2 layers, hidden 64, no biases: the key
projection's bias has no gradient but rounding noise, which Adam would scale up to whole
updates) trained 3 steps with AdamW
on different batches per rank, gradients clipped, ends with the same weights and the same
gradient norms. `replicate`, FSDP2 'full' and 'grad', and hybrid sharding over 2 simulated
nodes x 2 processes, on 4 processes."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import Replicate, Shard

from megatron_lite.config import GPTConfig, GPTModelConfig, TrainerConfig
from megatron_lite.models import GPTModel
from megatron_lite.parallel.parallelize import parallelize
from megatron_lite.parallel.strategy import build_device_mesh
from megatron_lite.training.gpt import loss as gpt_loss
from megatron_lite.training.grad_norm import clip_gradients, gradient_norm
from tests.parallel.distributed_testing import spawn_ranks

pytestmark = pytest.mark.distributed

SEQ, VOCAB, MAX_NORM = 16, 96, 0.5  # small enough that clipping applies


def config(world: int, fsdp: bool, strategy: str, nodes: int) -> GPTConfig:
    return GPTConfig(
        trainer=TrainerConfig(devices=world // nodes, num_nodes=nodes, precision="32"),
        model=GPTModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                             encoder_seq_length=SEQ, max_position_embeddings=SEQ, hidden_dropout=0.0,
                             attention_dropout=0.0, bias=False, micro_batch_size=2, global_batch_size=2 * world,
                             fsdp=fsdp, fsdp_sharding_strategy=strategy),
    )


def batch(rank: int, step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 * step + rank)
    tokens = torch.randint(0, VOCAB, (2, SEQ + 1), generator=generator)
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(2, SEQ),
            "position_ids": torch.arange(SEQ).expand(2, SEQ)}


def train_steps(model, cfg, ranks: list[int]) -> list[float]:
    """3 steps, each on the mean loss of these ranks' batches; the gradient norms."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    norms = []
    for step in range(3):
        optimizer.zero_grad()
        loss = sum(gpt_loss(model, batch(rank, step), cfg) for rank in ranks) / len(ranks)
        loss.backward()
        norm = gradient_norm(model.parameters())
        clip_gradients(model.parameters(), MAX_NORM, norm)
        norms.append(norm.item())
        optimizer.step()
    return norms


# (model.fsdp, model.fsdp_sharding_strategy, trainer.num_nodes) on 4 processes.
LAYOUTS = [(False, "full", 1), (True, "full", 1), (True, "grad", 1), (True, "hybrid", 2)]
# A weight's placement over the data-parallel mesh: replicated, sharded over the 4 processes,
# or replicated over the 2 nodes and sharded within each.
PLACEMENTS = {(False, 1): (Replicate(),), (True, 1): (Shard(0),), (True, 2): (Replicate(), Shard(0))}


def run_rank(rank: int, world: int) -> None:
    for fsdp, strategy, nodes in LAYOUTS:
        cfg = config(world, fsdp, strategy, nodes)
        torch.manual_seed(0)
        reference = GPTModel(cfg.model, VOCAB)
        torch.manual_seed(0)
        model = GPTModel(cfg.model, VOCAB)
        parallelize(model, build_device_mesh("cpu", world, 1, 1), cfg)
        assert model.output_weight().placements == PLACEMENTS[fsdp, nodes]
        want_norms = train_steps(reference, cfg, list(range(world)))
        norms = train_steps(model, cfg, [rank])
        assert norms == pytest.approx(want_norms, rel=1e-5), (fsdp, strategy)
        assert max(want_norms) > MAX_NORM  # the steps were clipped
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        for name, tensor in reference.state_dict().items():
            # Adam turns rounding differences of near-zero gradients into visible ones.
            torch.testing.assert_close(state[name], tensor, rtol=1e-5, atol=2e-5,
                                       msg=lambda message, name=name: f"{fsdp, strategy}: {name}: {message}")


def test_data_parallel_forms_equal_averaged_gradients():
    spawn_ranks(run_rank, 4)
