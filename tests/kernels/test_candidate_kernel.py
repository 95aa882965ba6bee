"""scripts/bench_attention.py --candidate: a second copy of the kernel package (or a
single-module kernel file) loads beside the committed one, its custom ops renamed, and computes
the same attention."""

from __future__ import annotations

import pytest
import torch

from megatron_lite_kernels.flash_attention import flash_attn_func
from megatron_lite_kernels.module_copy import KERNEL_PACKAGE, load_kernel_copy
from megatron_lite.benchmarks import attention as bench
from tests.modules.test_attention import needs_kernel_on_cpu


def test_candidate_copy_registers_its_providers_and_matches_ours(monkeypatch):
    needs_kernel_on_cpu()
    monkeypatch.setattr(bench, "PROVIDERS", dict(bench.PROVIDERS))  # leave the real table alone
    candidate = bench.load_candidate_kernel(str(KERNEL_PACKAGE))
    assert {"cand", "cand_alibi", "cand_relbias", "cand_kerple", "cand_sandwich"} <= set(bench.PROVIDERS)
    assert candidate.flash_attn_func is not flash_attn_func
    q, k, v = (torch.randn(1, 40, 2, 32) for _ in range(3))
    bias = torch.randn(2, 9)
    torch.testing.assert_close(candidate.flash_attn_func(q, k, v, causal=True, relative_bias=bias),
                               flash_attn_func(q, k, v, causal=True, relative_bias=bias), rtol=0, atol=0)


def test_candidate_must_be_a_copy_of_the_kernel(tmp_path):
    stray = tmp_path / "other.py"
    stray.write_text("x = 1\n")
    for path in (stray, tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match="does not look like a copy of the flash_attention"):
            bench.load_candidate_kernel(str(path))


def test_a_single_module_kernel_file_loads_under_its_own_namespace(tmp_path):
    # The kernel before it became a package was one file; A/B runs load such a file too.
    single = tmp_path / "old_kernel.py"
    single.write_text(
        "import torch\n"
        '@torch.library.custom_op("megatron_lite::probe", mutates_args=())\n'
        "def probe(x: torch.Tensor) -> torch.Tensor:\n"
        "    return x * 2\n")
    module = load_kernel_copy(single, "megatron_lite_single_file_probe")
    assert module.probe._qualname == "megatron_lite_single_file_probe::probe"
    torch.testing.assert_close(torch.ops.megatron_lite_single_file_probe.probe(torch.ones(2)),
                               torch.full((2,), 2.0))
