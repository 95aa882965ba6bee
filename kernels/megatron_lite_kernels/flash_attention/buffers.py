"""Where the launchers get the buffers the kernels write.

One function, called through this module (`buffers.alloc`), so that a test can replace it and
poison every output: an element a kernel fails to write then fails the test.
"""

import torch


def alloc(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)
