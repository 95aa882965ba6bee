"""The language-model loss from the final hidden states, without the whole batch's logits.

The output layer's logits are [tokens, vocabulary]: for GPT-2's vocabulary and a batch of 16 x
2048 tokens that is 3.3 GB in float32, and autograd keeps them (and their softmax) for the
backward. Here the tokens go through the output layer in chunks: each chunk's logits are made,
turned into its loss and into the gradients of its hidden states and of the output weight right
away (softmax - one-hot is the gradient of cross-entropy), and freed. The backward only scales
the stored gradients. Arithmetic per element is the unchunked path's: logits in the matmul's
dtype (bf16 under autocast), the softmax in float32 (float64 for float64 weights).

Under tensor parallelism the output weight is a DTensor sharded by vocabulary rows (Shard(0)):
each rank makes its chunk's logits for its own rows only, and the softmax's max, its sum and the
label's logit are all-reduced over the tensor-parallel group (Megatron's vocabulary-parallel
cross-entropy), so no rank holds any token's full logits. The hidden states' gradient is the sum
of the ranks' parts, which DTensor reduces (a Partial gradient).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

# Elements of one chunk's float32 logits (2^25: 128 MiB), which sets the chunk's tokens.
CHUNK_LOGITS = 2**25


def _log_softmax_terms(logits: torch.Tensor, local_labels: torch.Tensor, held: torch.Tensor,
                       group) -> tuple[torch.Tensor, torch.Tensor]:
    """(logsumexp over the whole vocabulary, the label's logit) of logits (n, V_local), this
    rank's rows of the vocabulary; local_labels: the labels' rows here (clamped where `held`
    is False: another rank holds the label); group: the ranks holding the other rows (None:
    these are all of them)."""
    target = logits.gather(1, local_labels[:, None])[:, 0]  # (n,)
    if group is None:
        return torch.logsumexp(logits, dim=-1), target
    maximum = logits.max(dim=-1).values  # (n,)
    dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
    sums = torch.stack(((logits - maximum[:, None]).exp().sum(dim=-1), torch.where(held, target, 0.0)))
    dist.all_reduce(sums, group=group)  # (2, n): the sum of exponentials, the label's logit
    return maximum + sums[0].log(), sums[1]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, token_weights, chunk_tokens, group=None, vocab_start=0):
        # hidden (N, C), weight (V, C), bias (V,) or None, labels (N,), token_weights (N,) fp32;
        # vocabulary-parallel: weight and bias hold rows vocab_start.. of the group's vocabulary
        needs_grad = any(ctx.needs_input_grad[:3])
        accumulate = torch.promote_types(weight.dtype, torch.float32)  # float32, float64 for float64
        total = torch.zeros((), dtype=accumulate, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=accumulate) if needs_grad else None
        grad_bias = (torch.zeros_like(bias, dtype=accumulate)
                     if needs_grad and bias is not None else None)
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            h = hidden[rows]  # (n, C)
            logits = torch.nn.functional.linear(h, weight, bias)  # (n, V)
            matmul_dtype = logits.dtype  # autocast's, as the unchunked matmuls would run
            logits = logits.to(torch.promote_types(matmul_dtype, torch.float32))  # float64 stays
            local_labels = labels[rows] - vocab_start  # (n,)
            held = (local_labels >= 0) & (local_labels < logits.shape[1])  # the label is a row here
            local_labels = local_labels.clamp(0, logits.shape[1] - 1)
            lse, target = _log_softmax_terms(logits, local_labels, held, group)  # (n,) each
            total += ((lse - target) * token_weights[rows]).sum()
            if not needs_grad:
                continue
            # d loss / d logits = (softmax - one-hot) * token weight, in float32 until the matmuls
            grad_logits = torch.exp(logits - lse[:, None])
            grad_logits[torch.arange(h.shape[0], device=h.device), local_labels] -= held.to(grad_logits.dtype)
            grad_logits *= token_weights[rows, None]
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(matmul_dtype)
            grad_hidden[rows] = (grad_logits @ weight.to(matmul_dtype)).to(hidden.dtype)
            grad_weight += (grad_logits.t() @ h.to(matmul_dtype)).to(accumulate)
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
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         loss_mask: torch.Tensor, bias: torch.Tensor | None = None,
                         chunk_tokens: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of F.linear(hidden, weight, bias) against labels over the positions
    where loss_mask is 1 (float32, float64 for float64 weights; 0 when the mask is empty),
    without the logits of all tokens.

    hidden [..., C], weight [V, C], bias [V], labels and loss_mask [...]. chunk_tokens:
    tokens per chunk (default: CHUNK_LOGITS // V, V the rows held here).

    Vocabulary-parallel when weight is a DTensor sharded by rows over a 1-D (tensor-parallel)
    mesh: hidden is then a DTensor too (replicated, or sharded by sequence), bias (if any) is
    sharded as weight, labels and loss_mask are whole on every rank; the loss is the same on
    every rank.
    """
    group, vocab_start = None, 0
    if isinstance(weight, DTensor):
        hidden, weight, bias, group, vocab_start = _vocab_parallel_inputs(hidden, weight, bias)
    vocab = weight.shape[0]
    if chunk_tokens is None:
        chunk_tokens = max(1, CHUNK_LOGITS // vocab)
    mask = loss_mask.reshape(-1).float()
    token_weights = mask / mask.sum().clamp(min=1.0)  # (N,): the mean over unmasked positions
    return _ChunkedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, labels.reshape(-1), token_weights,
        chunk_tokens, group, vocab_start)


def _vocab_parallel_inputs(hidden: DTensor, weight: DTensor, bias: DTensor | None):
    """The local tensors of a vocabulary-parallel loss: every token's hidden states (gathered
    from sequence shards; their gradient is a partial sum per rank), this rank's rows of weight
    and bias, the group and the first row held here."""
    mesh = weight.device_mesh
    assert mesh.ndim == 1 and weight.placements == (Shard(0),), weight.placements
    assert isinstance(hidden, DTensor) and hidden.device_mesh == mesh, type(hidden)
    assert bias is None or (isinstance(bias, DTensor) and bias.placements == (Shard(0),))
    local_hidden = hidden.redistribute(placements=[Replicate()]).to_local(grad_placements=[Partial()])
    local_weight = weight.to_local()
    local_bias = None if bias is None else bias.to_local()
    # Equal shares (tensor_parallel.py checks that the tensor-parallel size divides the vocabulary).
    vocab_start = mesh.get_local_rank() * local_weight.shape[0]
    return local_hidden, local_weight, local_bias, mesh.get_group(), vocab_start
