"""Parallelism beyond data parallel, over torch.distributed."""

from megatron_lite.parallel.context_parallel import (
    gather_from_context_parallel,
    ring_attention,
    split_for_context_parallel,
)

__all__ = ["gather_from_context_parallel", "ring_attention", "split_for_context_parallel"]
