"""The chunked output-layer loss against the plain one (logits of every token, then
cross-entropy): loss and gradients of the hidden states, the weight and the bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_lite.modules.cross_entropy import linear_cross_entropy
from megatron_lite.training import masked_lm_loss


def inputs(dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 7, 16, generator=generator, dtype=dtype).requires_grad_()
    weight = torch.randn(50, 16, generator=generator, dtype=dtype).requires_grad_()
    bias = torch.randn(50, generator=generator, dtype=dtype).requires_grad_()
    labels = torch.randint(0, 50, (2, 7), generator=generator)
    mask = (torch.rand(2, 7, generator=generator) > 0.3).float()
    return hidden, weight, bias, labels, mask


def plain_and_chunked(hidden, weight, bias, labels, mask, chunk_tokens, autocast=False):
    results = []
    for loss_of in (lambda: masked_lm_loss(F.linear(hidden, weight, bias), labels, mask),
                    lambda: linear_cross_entropy(hidden, weight, labels, mask, bias=bias,
                                                 chunk_tokens=chunk_tokens)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_of()
        results.append((loss, *torch.autograd.grad(loss, (hidden, weight, bias))))
    return results


@pytest.mark.parametrize("chunk_tokens", [1, 3, 14, 100])
def test_equals_the_plain_loss_in_float32(chunk_tokens):
    plain, chunked = plain_and_chunked(*inputs(), chunk_tokens=chunk_tokens)
    for name, want, got in zip(("loss", "hidden", "weight", "bias"), plain, chunked):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_is_as_accurate_as_the_plain_loss():
    # Under bf16 autocast both make the logits in bf16; against float64 math, the chunked
    # loss's errors stay within those of the plain path (its weight gradient sums the chunks in
    # float32, so it is usually closer).
    hidden, weight, bias, labels, mask = inputs()
    plain, chunked = plain_and_chunked(hidden, weight, bias, labels, mask, chunk_tokens=4,
                                       autocast=True)
    h64, w64, b64 = (x.detach().double().requires_grad_() for x in (hidden, weight, bias))
    loss64 = masked_lm_loss(F.linear(h64, w64, b64), labels, mask)
    reference = (loss64, *torch.autograd.grad(loss64, (h64, w64, b64)))
    for name, want, p, c in zip(("loss", "hidden", "weight", "bias"), reference, plain, chunked):
        plain_error = (p.double() - want).abs().max().item()
        chunked_error = (c.double() - want).abs().max().item()
        assert chunked_error <= 2 * plain_error + 1e-6, (name, chunked_error, plain_error)


def test_an_empty_mask_gives_zero_and_no_nan():
    hidden, weight, bias, labels, _ = inputs()
    loss = linear_cross_entropy(hidden, weight, labels, torch.zeros(2, 7), bias=bias, chunk_tokens=4)
    grads = torch.autograd.grad(loss, (hidden, weight, bias))
    assert loss.item() == 0.0 and all(g.abs().max() == 0 for g in grads)


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, bias, labels, mask = inputs()
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, chunk_tokens=4)
    torch.testing.assert_close(loss, masked_lm_loss(F.linear(hidden, weight, bias), labels, mask).detach())
