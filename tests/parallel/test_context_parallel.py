"""Ring attention over 2 and 4 CPU processes (gloo): the output and the gradients of q, k, v
equal plain attention over the whole sequence, causal (load-balanced layout) and not, with GQA,
key padding and packed documents; through the PyTorch path, and through the Triton kernel
(interpreter) on 2 processes, dropout included."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from megatron_lite.parallel import gather_from_context_parallel, ring_attention, split_for_context_parallel
from megatron_lite_kernels.attention_reference import attention_reference
from tests.parallel.distributed_testing import spawn_ranks

pytestmark = pytest.mark.distributed


def whole_inputs(seqlen: int):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, seqlen, 4, 16, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, seqlen, 2, 16, generator=generator, dtype=torch.float64) for _ in range(2))
    dout = torch.randn(2, seqlen, 4, 16, generator=generator, dtype=torch.float64)
    return q, k, v, dout


def whole_masks(seqlen: int) -> dict[str, torch.Tensor]:
    """Right padding on one row, holes on the other, and documents that cross the chunks."""
    real = torch.ones(2, seqlen, dtype=torch.bool)
    real[0, seqlen - 5:] = False
    real[1, ::7] = False
    lengths = torch.tensor([3, seqlen // 2, seqlen - 3 - seqlen // 2])
    segments = torch.repeat_interleave(torch.arange(3), lengths).expand(2, -1).contiguous()
    return {"key_padding_mask": real, "segment_ids": segments}


def run_rank(rank: int, world: int, causal: bool, use_flash: bool, seqlen: int,
             masked: bool = False) -> None:
    if use_flash:
        os.environ["TRITON_INTERPRET"] = "1"
    q, k, v, dout = whole_inputs(seqlen)
    masks = whole_masks(seqlen) if masked else {}
    dtype = torch.float32
    local = [split_for_context_parallel(x.to(dtype), rank, world).requires_grad_() for x in (q, k, v)]
    local_masks = {name: split_for_context_parallel(x, rank, world) for name, x in masks.items()}
    out = ring_attention(*local, causal=causal, use_flash=use_flash, **local_masks)
    grads = torch.autograd.grad(out, local, split_for_context_parallel(dout.to(dtype), rank, world))
    whole = [gather_from_context_parallel(x.detach()) for x in (out, *grads)]
    q64, k64, v64 = (x.clone().requires_grad_() for x in (q, k, v))
    expected_out = attention_reference(q64, k64, v64, causal=causal, **masks)
    expected = [expected_out, *torch.autograd.grad(expected_out, (q64, k64, v64), dout)]
    for name, got, want in zip(("out", "dq", "dk", "dv"), whole, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("causal", [True, False])
def test_ring_attention_equals_attention_over_the_whole_sequence(world, causal):
    spawn_ranks(run_rank, world, causal, False, 8 * world)


@pytest.mark.parametrize("causal", [True, False])
def test_ring_attention_with_padding_and_documents(causal):
    spawn_ranks(run_rank, 2, causal, False, 24, True)


def test_ring_attention_through_the_kernel():
    from tests.modules.test_attention import needs_kernel_on_cpu

    needs_kernel_on_cpu()
    spawn_ranks(run_rank, 2, True, True, 24, True)


def run_dropout_rank(rank: int, world: int) -> None:
    """With dropout (the same seed draws the same keep-masks), the backward is the gradient of
    what the forward computed: a central difference of <out, dout> along a random direction of
    q, k and v matches the analytic gradients. And dropout is on: out differs from no dropout."""
    os.environ["TRITON_INTERPRET"] = "1"
    q, k, v, dout = (split_for_context_parallel(x.float(), rank, world) for x in whole_inputs(16))
    generator = torch.Generator().manual_seed(7)
    directions = [torch.randn(x.shape, generator=generator) for x in (q, k, v)]

    def objective(*inputs):
        torch.manual_seed(3)  # the seed the ring draws its steps' seeds from
        out = ring_attention(*inputs, causal=True, dropout_p=0.3)
        return out, (out.double() * dout.double()).sum()

    inputs = [x.clone().requires_grad_() for x in (q, k, v)]
    out, value = objective(*inputs)
    grads = torch.autograd.grad(value, inputs)
    analytic = torch.tensor(sum(float((g.double() * d).sum()) for g, d in zip(grads, directions)),
                            dtype=torch.float64)
    eps = 1e-2
    with torch.no_grad():
        plus = objective(*(x + eps * d for x, d in zip((q, k, v), directions)))[1]
        minus = objective(*(x - eps * d for x, d in zip((q, k, v), directions)))[1]
    numeric = (plus - minus) / (2 * eps)
    for total in (analytic, numeric):
        dist.all_reduce(total)  # the objective is the sum over ranks
    torch.testing.assert_close(numeric, analytic, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(out, ring_attention(q, k, v, causal=True), atol=1e-3)


def test_ring_attention_with_dropout_through_the_kernel():
    from tests.modules.test_attention import needs_kernel_on_cpu

    needs_kernel_on_cpu()
    spawn_ranks(run_dropout_rank, 2)


def test_split_and_gather_are_inverse_and_balanced():
    # chunks r and 2P - 1 - r: rank 0 of 2 holds chunks 0 and 3 of 4
    x = torch.arange(8)[None]
    assert split_for_context_parallel(x, 0, 2).tolist() == [[0, 1, 6, 7]]
    assert split_for_context_parallel(x, 1, 2).tolist() == [[2, 3, 4, 5]]
