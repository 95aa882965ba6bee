"""The kernels' attention-dropout keep-mask, written out for tests and debugging."""

import torch
import triton
import triton.language as tl

from . import buffers
from .common import dropout_keep
from .support import FlashAttentionUnavailable, flash_attention_supported


@triton.jit
def dropout_mask_kernel(Mask, num_heads, seqlen_q, seqlen_k, dropout_p, Seed,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The kernels' keep-mask as bool [B, H, Sq, Sk]."""
    seed = tl.load(Seed)
    batch_head = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    keep = dropout_keep(seed, rows, cols, batch_head, dropout_p)
    tl.store(Mask + (batch_head.to(tl.int64) * seqlen_q + rows) * seqlen_k + cols, keep,
             mask=(rows < seqlen_q) & (cols < seqlen_k))


def seed_tensor(dropout_seed: int | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A dropout seed as the kernels read it: int64 [1] on their device."""
    if isinstance(dropout_seed, torch.Tensor):
        if dropout_seed.numel() != 1 or dropout_seed.is_floating_point():
            raise ValueError("dropout_seed must be an int or an integer tensor of one element, got "
                             f"{dropout_seed.dtype} {tuple(dropout_seed.shape)}")
        return dropout_seed.reshape(1).to(device=device, dtype=torch.int64)
    return torch.full((1,), int(dropout_seed), dtype=torch.int64, device=device)


def dropout_keep_mask(batch: int, num_heads: int, seqlen_q: int, seqlen_k: int, dropout_p: float,
                      dropout_seed: int | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """bool [B, Hq, Sq, Sk]: the keep-mask that `flash_attn_func` uses with this seed."""
    if not flash_attention_supported(device):
        raise FlashAttentionUnavailable(f"dropout_keep_mask: the Triton kernel cannot run on {device}")
    mask = buffers.alloc((batch, num_heads, seqlen_q, seqlen_k), torch.bool, torch.device(device))
    block = 32
    grid = (triton.cdiv(seqlen_q, block), triton.cdiv(seqlen_k, block), batch * num_heads)
    dropout_mask_kernel[grid](mask, num_heads, seqlen_q, seqlen_k, float(dropout_p),
                              seed_tensor(dropout_seed, device), BLOCK_M=block, BLOCK_N=block)
    return mask
