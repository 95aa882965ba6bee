"""Where the kernels can run: a CUDA device, or anywhere under the Triton interpreter."""

import os

import torch

# Triton picks interpreted or compiled kernels when `triton.jit` runs, i.e. when this package
# is imported: TRITON_INTERPRET must be set before that.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"


class FlashAttentionUnavailable(RuntimeError):
    """The Triton kernel cannot run on these tensors' device."""


def flash_attention_supported(device: torch.device | str) -> bool:
    """True where the kernel can run: a CUDA device, or any device under TRITON_INTERPRET=1."""
    return torch.device(device).type == "cuda" or INTERPRETER
