"""The language-model loss from the final hidden states, without the whole batch's logits.

The output layer's logits are [tokens, vocabulary]: for GPT-2's vocabulary and a batch of 16 x
2048 tokens that is 3.3 GB in float32, and autograd keeps them (and their softmax) for the
backward. Here the tokens go through the output layer in chunks: each chunk's logits are made,
turned into its loss and into the gradients of its hidden states and of the output weight right
away (softmax - one-hot is the gradient of cross-entropy), and freed. The backward only scales
the stored gradients. Arithmetic per element is the unchunked path's: logits in the matmul's
dtype (bf16 under autocast), the softmax in float32.
"""

from __future__ import annotations

import torch

# Elements of one chunk's float32 logits (2^25: 128 MiB), which sets the chunk's tokens.
CHUNK_LOGITS = 2**25


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, token_weights, chunk_tokens):
        # hidden (N, C), weight (V, C), bias (V,) or None, labels (N,), token_weights (N,) fp32
        needs_grad = any(ctx.needs_input_grad[:3])
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        grad_bias = (torch.zeros_like(bias, dtype=torch.float32)
                     if needs_grad and bias is not None else None)
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            h = hidden[rows]  # (n, C)
            logits = torch.nn.functional.linear(h, weight, bias)  # (n, V)
            matmul_dtype = logits.dtype  # autocast's, as the unchunked matmuls would run
            logits = logits.float()
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            target = logits.gather(1, labels[rows, None])[:, 0]  # (n,)
            total += ((lse - target) * token_weights[rows]).sum()
            if not needs_grad:
                continue
            # d loss / d logits = (softmax - one-hot) * token weight, in float32 until the matmuls
            grad_logits = torch.exp(logits - lse[:, None])
            grad_logits[torch.arange(h.shape[0], device=h.device), labels[rows]] -= 1.0
            grad_logits *= token_weights[rows, None]
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(matmul_dtype)
            grad_hidden[rows] = (grad_logits @ weight.to(matmul_dtype)).to(hidden.dtype)
            grad_weight += (grad_logits.t() @ h.to(matmul_dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * grad_total).to(ctx.bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         loss_mask: torch.Tensor, bias: torch.Tensor | None = None,
                         chunk_tokens: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of F.linear(hidden, weight, bias) against labels over the positions
    where loss_mask is 1 (float32; 0 when the mask is empty), without the logits of all tokens.

    hidden [..., C], weight [V, C], bias [V], labels and loss_mask [...]. chunk_tokens:
    tokens per chunk (default: CHUNK_LOGITS // V).
    """
    vocab = weight.shape[0]
    if chunk_tokens is None:
        chunk_tokens = max(1, CHUNK_LOGITS // vocab)
    mask = loss_mask.reshape(-1).float()
    token_weights = mask / mask.sum().clamp(min=1.0)  # (N,): the mean over unmasked positions
    return _ChunkedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, labels.reshape(-1), token_weights,
        chunk_tokens)
