"""scripts/bench_attention.py --candidate: a second copy of the kernel module loads beside the
committed one (its custom ops renamed) and computes the same attention."""

from __future__ import annotations

import pytest
import torch

from megatron_lite_kernels.flash_attention import flash_attn_func
from megatron_lite.benchmarks import attention as bench
from tests.gpt_testing import REPO
from tests.modules.test_attention import needs_kernel_on_cpu


def test_candidate_copy_registers_its_providers_and_matches_ours(monkeypatch):
    needs_kernel_on_cpu()
    monkeypatch.setattr(bench, "PROVIDERS", dict(bench.PROVIDERS))  # leave the real table alone
    candidate = bench.load_candidate_kernel(str(REPO / "kernels" / "megatron_lite_kernels" / "flash_attention.py"))
    assert {"cand", "cand_alibi", "cand_relbias"} <= set(bench.PROVIDERS)
    assert candidate.flash_attn_func is not flash_attn_func
    q, k, v = (torch.randn(1, 40, 2, 32) for _ in range(3))
    bias = torch.randn(2, 9)
    torch.testing.assert_close(candidate.flash_attn_func(q, k, v, causal=True, relative_bias=bias),
                               flash_attn_func(q, k, v, causal=True, relative_bias=bias), rtol=0, atol=0)


def test_candidate_must_be_a_copy_of_the_kernel_module(tmp_path):
    stray = tmp_path / "other.py"
    stray.write_text("x = 1\n")
    with pytest.raises(ValueError, match="does not look like a copy of kernels/flash_attention.py"):
        bench.load_candidate_kernel(str(stray))
