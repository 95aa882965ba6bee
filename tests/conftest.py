"""Suite-wide set-up: run Triton kernels through the interpreter where there is no CUDA GPU, and
skip tests marked `gpu` there. TRITON_INTERPRET must be set before the kernel package (megatron_lite_kernels) is imported."""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
