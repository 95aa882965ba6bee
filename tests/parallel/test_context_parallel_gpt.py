"""A GPT under context parallelism (2 CPU processes, gloo): every rank holds the whole batch and
computes the loss of its share of each sequence through ring attention; the loss equals the
one-process loss and the gradients averaged over the ranks (as data-parallel averaging over the
data x context ranks does) equal the one-process gradients. Learned and rotary positions, packed
documents with positions reset at each, GQA; the PyTorch path, and the kernel (interpreter) once."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from megatron_lite.models import GPTModel
from megatron_lite.config.parallel import check_context_parallel
from megatron_lite.parallel.context_parallel import apply_context_parallel
from megatron_lite.training.gpt import loss
from tests.gpt_testing import compose_gpt
from tests.parallel.distributed_testing import spawn_ranks

pytestmark = pytest.mark.distributed

VOCAB, BATCH, SEQLEN = 64, 2, 16


def gpt_config(position: str, use_flash: bool):
    return compose_gpt([
        "model.num_layers=2", "model.hidden_size=32", "model.ffn_hidden_size=64",
        "model.num_attention_heads=4", "model.num_query_groups=2", f"model.encoder_seq_length={SEQLEN}",
        f"model.max_position_embeddings={SEQLEN}", f"model.position_embedding_type={position}",
        "model.hidden_dropout=0.0", "model.attention_dropout=0.0", f"model.use_flash_attention={use_flash}",
        "model.data.reset_attention_mask=true", "model.data.reset_position_ids=true",
        "model.data.data_prefix=[unused]", "model.tokenizer.library=byte",
    ])


def packed_batch() -> dict[str, torch.Tensor]:
    """Two documents per row (positions restart at each), a few positions out of the loss."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQLEN + 1), generator=generator)
    lengths = torch.tensor([[5, 11], [12, 4]])
    segment_ids = torch.stack([torch.repeat_interleave(torch.arange(2), row) for row in lengths])
    position_ids = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths])
    loss_mask = (torch.rand(BATCH, SEQLEN, generator=generator) > 0.2).float()
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": loss_mask,
            "position_ids": position_ids, "segment_ids": segment_ids.int()}


def run_rank(rank: int, world: int, cfg, use_flash: bool) -> None:
    if use_flash:
        os.environ["TRITON_INTERPRET"] = "1"
    torch.manual_seed(0)
    model = GPTModel(cfg.model, VOCAB)
    params = [p for p in model.parameters()]
    batch = packed_batch()
    whole = loss(model, batch, cfg)
    whole_grads = torch.autograd.grad(whole, params)

    apply_context_parallel(model, init_device_mesh("cpu", (world,), mesh_dim_names=("context_parallel",)))
    shared = loss(model, batch, cfg)
    grads = torch.autograd.grad(shared, params)
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-6)
    for (name, _), grad, want in zip(model.named_parameters(), grads, whole_grads):
        averaged = grad.clone()
        dist.all_reduce(averaged)
        torch.testing.assert_close(averaged / world, want, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_gpt_loss_and_gradients_equal_one_process(position):
    spawn_ranks(run_rank, 2, gpt_config(position, False), False)


def test_gpt_through_the_kernel():
    from tests.modules.test_attention import needs_kernel_on_cpu

    needs_kernel_on_cpu()
    spawn_ranks(run_rank, 2, gpt_config("rope", True), True)


def test_unsupported_layouts_are_named():
    with pytest.raises(ValueError, match=r"position_embedding_type='alibi' with model.context_parallel_size=2"):
        compose_gpt(["model.position_embedding_type=alibi", "model.context_parallel_size=2",
                     "model.data.data_prefix=[unused]"])
    with pytest.raises(ValueError, match="encoder_seq_length=18 is not divisible by 2 x model.context_parallel"):
        check_context_parallel("rope", 2, {"model.encoder_seq_length": 18})
