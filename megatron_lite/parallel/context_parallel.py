"""Context parallelism: one sequence split over the ranks of a process group, its attention
computed as ring attention over our flash kernel (Liu et al., 2023), forward and backward.

Layout (Megatron core's load balancing for causal attention): the sequence is cut into 2P
chunks of L tokens; rank r holds chunks r and 2P - 1 - r, so that every rank does the same
causal work. `split_for_context_parallel` / `gather_from_context_parallel` convert.

Forward: P steps. At step s rank r holds the keys and values of rank j = (r - s) mod P, attends
its queries to them and merges the partial result into its running one by the log-sum-exp that
the kernel returns: lse = logaddexp(lse, lse_s), out = out e^(lse_old - lse) + out_s e^(lse_s - lse).
With the balanced layout each step is one kernel call (causal attention only at step 0):
- s = 0: the local 2L tokens against themselves, causal: chunk 2P-1-r sees all of chunk r;
- j < r: every local query against j's first chunk (earlier than both of ours), unmasked;
- j > r: the second local chunk against both of j's chunks (both earlier), unmasked.
Keys and values are passed on to rank r + 1 while a step computes.

Backward: the same ring. A step's gradients come from the kernel's backward given the final
output and lse (p = exp(s - lse), delta = rowsum(dout * out) are the whole attention's), dq
adds up locally, and dk, dv travel with their keys and values, arriving home after P steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from megatron_lite_kernels.attention_reference import attention_mask, attention_reference


def split_for_context_parallel(x: torch.Tensor, rank: int, world: int, dim: int = 1) -> torch.Tensor:
    """Rank `rank`'s share of x along dim: chunks rank and 2 * world - 1 - rank of 2 * world."""
    chunks = x.chunk(2 * world, dim=dim)
    return torch.cat([chunks[rank], chunks[2 * world - 1 - rank]], dim=dim)


def gather_from_context_parallel(local: torch.Tensor, group: dist.ProcessGroup | None = None,
                                 dim: int = 1) -> torch.Tensor:
    """The whole sequence from every rank's share (not differentiable: for tests and output)."""
    world = dist.get_world_size(group)
    shares = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(shares, local.contiguous(), group=group)
    chunks: list[torch.Tensor | None] = [None] * (2 * world)
    for rank, share in enumerate(shares):
        first, second = share.chunk(2, dim=dim)
        chunks[rank], chunks[2 * world - 1 - rank] = first, second
    return torch.cat(chunks, dim=dim)


# One step's attention, flash or PyTorch: (out [B, Sq, H, D], lse float32 [B, H, Sq]) forward,
# and (dq, dk, dv) backward given the whole attention's out and lse. `masks` is a StepMasks.


@dataclass
class StepMasks:
    """What masks one step beyond causality: the held keys' padding (bool [B, Sk], True = real)
    and the segment ids of the step's queries and keys ([B, Sq], [B, Sk]); and its dropout
    (probability and the step's seed, int64 [1] on the device)."""
    key_padding_mask: torch.Tensor | None = None
    segment_ids: tuple[torch.Tensor, torch.Tensor] | None = None
    dropout_p: float = 0.0
    seed: torch.Tensor | None = None

    def kernel_args(self, seqlen_k: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(key mask uint8 [B, Sk], segment ids int32 [B, Sq + Sk]) as the kernel ops take them."""
        from megatron_lite_kernels.flash_attention.interface import kernel_masks
        return kernel_masks(self.key_padding_mask, self.segment_ids, seqlen_k)


def _flash_forward(q, k, v, causal, scale, masks: StepMasks):
    from megatron_lite_kernels.flash_attention import flash_attn_forward_op
    key_mask, segments = masks.kernel_args(k.shape[1])
    return flash_attn_forward_op(q, k, v, None, None, None, None, key_mask, segments, causal,
                                 scale, masks.dropout_p, masks.seed)


def _flash_backward(dout, q, k, v, out, lse, causal, scale, masks: StepMasks):
    from megatron_lite_kernels.flash_attention import flash_attn_backward_op
    key_mask, segments = masks.kernel_args(k.shape[1])
    dq, dk, dv, _, _ = flash_attn_backward_op(dout, q, k, v, out, lse, None, None, None, None,
                                              key_mask, segments, causal, scale, masks.dropout_p,
                                              masks.seed, False)
    return dq, dk, dv


def _reference_forward(q, k, v, causal, scale, masks: StepMasks):
    out, lse = attention_reference(q, k, v, causal=causal, softmax_scale=scale, return_lse=True,
                                   key_padding_mask=masks.key_padding_mask, segment_ids=masks.segment_ids)
    return out, lse.float()


def _reference_backward(dout, q, k, v, out, lse, causal, scale, masks: StepMasks):
    """The kernel's backward written out in float32: p from the whole attention's lse."""
    group = q.shape[2] // k.shape[2]
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))  # (B, H, S, D)
    kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
    dof, outf = dout.float().transpose(1, 2), out.float().transpose(1, 2)
    scores = qf @ kf.transpose(-1, -2) * scale  # (B, H, Sq, Sk)
    visible = attention_mask(q.shape[0], q.shape[1], k.shape[1], device=q.device, causal=causal,
                             key_padding_mask=masks.key_padding_mask, segment_ids=masks.segment_ids)
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    # Rows that see no key in the whole sequence have lse = -inf: p = 0, not exp(nan).
    p = torch.exp(scores - torch.where(torch.isneginf(lse), 0.0, lse)[..., None])  # (B, H, Sq, Sk)
    dv = p.transpose(-1, -2) @ dof
    dp = dof @ vf.transpose(-1, -2)
    ds = p * (dp - (dof * outf).sum(-1, keepdim=True)) * scale
    dq, dk = ds @ kf, ds.transpose(-1, -2) @ qf
    batch, heads_kv = k.shape[0], k.shape[2]

    def per_kv_head(x):  # (B, Hq, Sk, D) -> (B, Sk, Hkv, D), summed over each group
        return x.view(batch, heads_kv, group, *x.shape[2:]).sum(2).transpose(1, 2)
    return (dq.transpose(1, 2).to(q.dtype), per_kv_head(dk).to(k.dtype), per_kv_head(dv).to(v.dtype))


def _merge(out, lse, part_out, part_lse):
    """Running (out [B, S, H, D] fp32, lse [B, H, S]) merged with a partial result."""
    new_lse = torch.logaddexp(lse, part_lse)
    # Rows that saw no key in either keep -inf: weight 0, not exp(nan).
    safe = torch.where(torch.isneginf(new_lse), 0.0, new_lse)
    weight_old = torch.exp(lse - safe).transpose(1, 2)[..., None]  # (B, S, H, 1)
    weight_new = torch.exp(part_lse - safe).transpose(1, 2)[..., None]
    return out * weight_old + part_out.float() * weight_new, new_lse


def _step_plan(rank: int, source: int, causal: bool, local_len: int) -> tuple[slice, slice, bool]:
    """(local queries, rows of the held keys/values, causal) of one step."""
    whole, first, second = slice(0, local_len), slice(0, local_len // 2), slice(local_len // 2, local_len)
    if not causal:
        return whole, whole, False
    if source == rank:
        return whole, whole, True
    if source < rank:
        return whole, first, False
    return second, whole, False


class _RingExchange:
    """Each tensor sent to the next rank and its counterpart received from the previous one,
    started now and finished by wait(), so that a step computes while its successor's keys and
    values travel."""

    def __init__(self, tensors: list[torch.Tensor], group) -> None:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        after = dist.get_global_rank(group, (rank + 1) % world)
        before = dist.get_global_rank(group, (rank - 1) % world)
        self.received = [torch.empty_like(t) for t in tensors]
        ops = []
        for send, recv in zip(tensors, self.received):
            ops += [dist.P2POp(dist.isend, send.contiguous(), after, group),
                    dist.P2POp(dist.irecv, recv, before, group)]
        self.requests = dist.batch_isend_irecv(ops)

    def wait(self) -> list[torch.Tensor]:
        for request in self.requests:
            request.wait()
        return self.received


@dataclass
class _RingMasks:
    """Every rank's key padding and segment ids (all-gathered once: [P, B, 2L] each, small next
    to the keys), this rank's query segment ids, and the dropout of the whole attention."""
    key_padding: torch.Tensor | None
    segments: torch.Tensor | None
    query_segments: torch.Tensor | None
    dropout_p: float
    seed: torch.Tensor | None

    @classmethod
    def gather(cls, key_padding_mask, segment_ids, dropout_p, group, device) -> _RingMasks:
        def everyone(x):
            if x is None:
                return None
            shares = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
            dist.all_gather(shares, x.contiguous(), group=group)
            return torch.stack(shares)
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device) if dropout_p > 0.0 else None
        return cls(everyone(key_padding_mask), everyone(segment_ids), segment_ids, dropout_p, seed)

    def step(self, rank: int, world: int, source: int, rows: slice, keys: slice) -> StepMasks:
        """The masks of the step where this rank's queries `rows` meet `source`'s keys `keys`;
        each (rank, source) pair draws its own dropout stream from the seed."""
        return StepMasks(
            key_padding_mask=None if self.key_padding is None else self.key_padding[source][:, keys],
            segment_ids=None if self.segments is None else (self.query_segments[:, rows],
                                                            self.segments[source][:, keys]),
            dropout_p=self.dropout_p,
            seed=None if self.seed is None else self.seed + rank * world + source,
        )


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, group, use_flash, masks: _RingMasks):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        forward = _flash_forward if use_flash else _reference_forward
        batch, local_len, heads, head_dim = q.shape
        out = torch.zeros(batch, local_len, heads, head_dim, dtype=torch.float32, device=q.device)
        lse = torch.full((batch, heads, local_len), float("-inf"), device=q.device)
        held_k, held_v = k, v
        for step in range(world):
            exchange = _RingExchange([held_k, held_v], group) if step + 1 < world else None
            source = (rank - step) % world
            rows, keys, step_causal = _step_plan(rank, source, causal, local_len)
            part_out, part_lse = forward(q[:, rows], held_k[:, keys], held_v[:, keys], step_causal, scale,
                                         masks.step(rank, world, source, rows, keys))
            out[:, rows], lse[:, :, rows] = _merge(out[:, rows], lse[:, :, rows], part_out, part_lse)
            if exchange is not None:
                held_k, held_v = exchange.wait()
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, scale, group, use_flash, masks)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        causal, scale, group, use_flash, masks = ctx.options
        backward = _flash_backward if use_flash else _reference_backward
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        local_len = q.shape[1]
        dout = dout.contiguous()
        dq = torch.zeros_like(q, dtype=torch.float32)
        held = [k, v, torch.zeros_like(k, dtype=torch.float32), torch.zeros_like(v, dtype=torch.float32)]
        for step in range(world):
            held_k, held_v, held_dk, held_dv = held
            source = (rank - step) % world
            rows, keys, step_causal = _step_plan(rank, source, causal, local_len)
            part_dq, part_dk, part_dv = backward(
                dout[:, rows], q[:, rows], held_k[:, keys], held_v[:, keys], out[:, rows],
                lse[:, :, rows].contiguous(), step_causal, scale,
                masks.step(rank, world, source, rows, keys))
            dq[:, rows] += part_dq.float()
            held_dk[:, keys] += part_dk.float()
            held_dv[:, keys] += part_dv.float()
            # The last exchange brings every dk, dv home (to the rank after the last holder).
            held = _RingExchange(held, group).wait()
        dk, dv = held[2].to(k.dtype), held[3].to(v.dtype)
        return dq.to(q.dtype), dk, dv, None, None, None, None, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                   group: dist.ProcessGroup | None = None, softmax_scale: float | None = None,
                   use_flash: bool = True, dropout_p: float = 0.0,
                   key_padding_mask: torch.Tensor | None = None,
                   segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of this rank's share of a sequence (split_for_context_parallel's layout) to the
    whole sequence: q [B, 2L, Hq, D], k, v [B, 2L, Hkv, D] -> [B, 2L, Hq, D]. use_flash: our
    kernel for each step, else the PyTorch path. key_padding_mask (bool [B, 2L], True = a real
    token) and segment_ids (int [B, 2L]: packed documents) are this rank's share of the whole
    sequence's, as q is. dropout_p needs the kernel (its keep-mask is regenerated from a seed in
    the backward). Positional biases computed in the kernel are not supported here."""
    if q.shape[1] % 2:
        raise ValueError(f"context parallel needs an even number of local tokens (two chunks), got {q.shape[1]}")
    if dropout_p > 0.0 and not use_flash:
        raise ValueError("ring attention with dropout needs the flash kernel (use_flash_attention=True): "
                         "the PyTorch path cannot regenerate a step's dropout in the backward")
    for name, x in (("key_padding_mask", key_padding_mask), ("segment_ids", segment_ids)):
        if x is not None and tuple(x.shape) != tuple(q.shape[:2]):
            raise ValueError(f"ring_attention: {name} must be this rank's share [B, 2L] = "
                             f"{list(q.shape[:2])}, got {list(x.shape)}")
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        raise ValueError(f"ring_attention: key_padding_mask must be bool (True = a real token), got "
                         f"{key_padding_mask.dtype}")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    group = group if group is not None else dist.group.WORLD
    masks = _RingMasks.gather(key_padding_mask, segment_ids, dropout_p, group, q.device)
    return _RingAttention.apply(q, k, v, causal, scale, group, use_flash, masks)


def apply_context_parallel(model: nn.Module, cp_mesh: DeviceMesh) -> None:
    """Make every attention module of a GPT run ring attention over cp_mesh's group, and mark
    the model (model.context_parallel_group), whose loss then feeds it its share of each
    sequence (`sequence_share`)."""
    from megatron_lite.modules.attention import _Attention

    group = cp_mesh.get_group()
    for module in model.modules():
        if isinstance(module, _Attention):
            module.context_parallel_group = group
    model.context_parallel_group = group


def sequence_share(batch: dict[str, torch.Tensor], group: dist.ProcessGroup) -> dict[str, torch.Tensor]:
    """This rank's share (split_for_context_parallel) of every [B, S] tensor of a batch."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    return {name: split_for_context_parallel(x, rank, world) for name, x in batch.items()}


def share_of_mean(local_mean: torch.Tensor, local_count: torch.Tensor, total_count: torch.Tensor,
                  group: dist.ProcessGroup) -> torch.Tensor:
    """A loss averaged over the `total_count` tokens of whole sequences, from this rank's mean
    over its `local_count` of them. The value is the whole loss (summed over the group), for
    logging. The gradient is world x this rank's part: data-parallel gradient averaging runs over
    the data x context ranks (their grads must add up over the context ranks, which see different
    tokens of the same samples), one division by the context-parallel size more than the whole
    loss's gradient needs."""
    part = local_mean * (local_count / total_count.clamp(min=1))
    whole = part.detach().clone()
    dist.all_reduce(whole, group=group)
    scaled = dist.get_world_size(group) * part
    return scaled + (whole - scaled).detach()
