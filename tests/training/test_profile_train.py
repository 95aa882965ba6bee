"""scripts/profile_train.py and megatron_lite.benchmarks.profiling on the CPU: the kernel classes,
the busy time as a union of intervals, and a smoke run of the script on the CPU preset (there
the classes hold ATen op time)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from megatron_lite.benchmarks.profiling import (
    CLASSES,
    OUR_ATTENTION_KERNELS,
    Record,
    busy_time,
    classify,
    profiled_records,
    summarize,
)
from megatron_lite.modules.cross_entropy import linear_cross_entropy
from tests.gpt_testing import REPO, tiny_overrides

FLASH, MATMUL, LOSS, NORM, OPTIMIZER, COPY, ELEMENTWISE, OTHER = CLASSES

# Kernel names as the CUDA profiler reports them (H100/H200, torch 2.11), with the ops around
# their launch where the class depends on them.
KERNELS = [
    ("fwd_kernel", (), FLASH),
    ("bwd_kv_kernel", ("EagerFlashAttentionBackward",), FLASH),
    ("flash_fwd_kernel", ("aten::_flash_attention_forward",), FLASH),
    ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80", (), FLASH),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0", (), FLASH),
    ("Memset (Device)", ("aten::zero_", "aten::zeros", "EagerFlashAttentionBackward"), FLASH),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
     ("aten::mm", "aten::matmul", "aten::linear"), MATMUL),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN", (), MATMUL),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn", (), MATMUL),
    ("nvjet_tst_256x128_64x4_2x1_v_bz_coopB_TNT", ("aten::mm", "_ChunkedLinearCrossEntropy"), MATMUL),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MaxOps<float>, unsigned int, "
     "float, 4> >(at::native::ReduceOp<float, at::native::MaxOps<float>, unsigned int, float, 4>)",
     ("aten::amax", "aten::logsumexp", "_ChunkedLinearCrossEntropy"), LOSS),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>",
     ("aten::mul", "_ChunkedLinearCrossEntropyBackward", "autograd::engine::evaluate_function: "
      "_ChunkedLinearCrossEntropyBackward"), LOSS),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
     "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>", (), LOSS),
    ("void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>", (), LOSS),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>", (), NORM),
    ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernel_32x32<float, float>", (), NORM),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::MulFunctor<float>>",
     ("aten::mul", "aten::rms_norm"), NORM),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)1, false>>", ("aten::_fused_adamw_",), OPTIMIZER),
    ("void at::native::lpnorm_cleanup<float, (at::native::NormType)1, float>", ("aten::_foreach_norm",), OPTIMIZER),
    ("Memcpy HtoD (Pageable -> Device)", ("aten::copy_", "aten::_to_copy", "aten::to"), COPY),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::bfloat16_copy_kernel_cuda("
     "at::TensorIteratorBase&)::{lambda(float)#1}>", ("aten::copy_",), COPY),
    ("triton_poi_fused_add_mul_0", (), ELEMENTWISE),
    ("triton_red_fused_sum_1", (), ELEMENTWISE),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", (), ELEMENTWISE),
    ("void at::native::(anonymous namespace)::indexSelectLargeIndex<float, long, unsigned int, 2, 2, -2, true>",
     ("aten::index_select", "aten::embedding"), OTHER),
    # The CPU's ops, without a GPU.
    ("aten::mm", ("aten::matmul", "_ChunkedLinearCrossEntropy"), MATMUL),
    ("aten::exp", ("_ChunkedLinearCrossEntropy",), LOSS),
    ("aten::native_layer_norm", ("aten::layer_norm",), NORM),
    ("aten::copy_", ("aten::_to_copy",), COPY),
    ("aten::add_", (), ELEMENTWISE),
    ("aten::view", ("aten::reshape",), OTHER),
]


@pytest.mark.parametrize("name,scope,expected", KERNELS)
def test_kernels_fall_into_their_class(name, scope, expected):
    assert classify(name, scope) == expected


def test_every_kernel_our_flash_attention_launches_is_named():
    # The launched @triton.jit functions end in _kernel; their helpers do not.
    source = "\n".join(path.read_text() for path in
                       (REPO / "kernels/megatron_lite_kernels/flash_attention").glob("*.py"))
    jitted = re.findall(r"@triton\.jit[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", source)
    assert set(OUR_ATTENTION_KERNELS) == {name for name in jitted if name.endswith("_kernel")}
    assert all(classify(name) == FLASH for name in OUR_ATTENTION_KERNELS)


def test_busy_time_is_the_union_of_overlapping_intervals():
    assert busy_time([]) == 0.0
    assert busy_time([(0, 10), (5, 15)]) == 15  # two streams overlapping
    assert busy_time([(20, 30), (0, 10), (22, 25), (30, 31)]) == 21  # nested, touching, unsorted


def test_summary_per_step_classes_and_idle_fraction():
    # Two steps of 100 us each: 160 us of kernels on overlapping streams, busy 80 + 30 + 15 us.
    records = [
        Record("fwd_kernel", 0, 50), Record("nvjet_tst_128x256", 40, 80),  # [0, 80)
        Record("triton_poi_fused_add_0", 100, 120), Record("Memset (Device)", 100, 130),  # [100, 130)
        Record("fwd_kernel", 150, 160), Record("fwd_kernel", 155, 165),  # [150, 165)
    ]
    profile = summarize(records, wall_s=200e-6, steps=2, source="cuda kernels", peak_memory_gib=1.5)
    assert profile.step_ms == pytest.approx(0.1)
    assert profile.busy_ms == pytest.approx(0.0625)
    assert profile.idle_fraction == pytest.approx(1 - 125 / 200)
    assert profile.record_ms == pytest.approx(0.08)  # summed, not the union
    assert profile.records_per_step == 3
    rows = {row["class"]: row for row in profile.classes}
    assert [row["class"] for row in profile.classes] == list(CLASSES)
    assert rows[FLASH]["ms"] == pytest.approx(0.035) and rows[FLASH]["count"] == 1.5
    assert rows[FLASH]["percent_of_busy"] == pytest.approx(100 * 70 / 125)
    assert rows[MATMUL]["ms"] == pytest.approx(0.02)
    assert rows[COPY]["ms"] == pytest.approx(0.015) and rows[ELEMENTWISE]["ms"] == pytest.approx(0.01)
    assert rows[OTHER]["ms"] == 0 and rows[OTHER]["count"] == 0
    assert [(row["name"], row["class"]) for row in profile.top][:2] == [("fwd_kernel", FLASH),
                                                                       ("nvjet_tst_128x256", MATMUL)]
    assert profile.top[0]["count"] == 1.5 and profile.peak_memory_gib == 1.5


def test_cpu_ops_get_their_self_time_and_the_ops_around_them():
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(40, 8, requires_grad=True)
    norm = torch.nn.LayerNorm(8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss = linear_cross_entropy(norm(hidden), weight, torch.randint(0, 40, (6,)), torch.ones(6))
        loss.backward()
    kernels, ops = profiled_records(prof)
    assert kernels == []
    by_name = {}
    for op in ops:
        by_name.setdefault(op.name, []).append(op)
    chunk_mm = [op for op in by_name["aten::mm"] if "_ChunkedLinearCrossEntropy" in op.scope]
    assert chunk_mm and all(classify(op.name, op.scope) == MATMUL for op in chunk_mm)
    assert all(classify(op.name, op.scope) == LOSS for op in by_name["aten::logsumexp"])
    assert all(classify(op.name, op.scope) == NORM for op in by_name["aten::native_layer_norm"])
    assert all(op.name.startswith("aten::") for op in ops)  # no scopes or annotations
    assert all(0 <= op.time <= op.end - op.start for op in ops)
    # Self times add up to the time spent inside ops: nothing counted twice (within the
    # rounding of the profiler's timestamps, a fraction of a microsecond per op).
    assert sum(op.time for op in ops) == pytest.approx(busy_time((op.start, op.end) for op in ops), rel=1e-2)


def test_script_profiles_the_cpu_preset(tiny_corpus, tmp_path):
    record, trace = tmp_path / "profile.json", tmp_path / "trace.json"
    overrides = [o for o in tiny_overrides(tiny_corpus, tmp_path / "unused") if "seq_length" not in o]
    result = subprocess.run(
        [sys.executable, "scripts/profile_train.py", "--lengths", "24", "--variant", "off", "--warmup", "1",
         "--steps", "2", "--json", str(record), "--trace", str(trace), "--", "+preset=cpu_default", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No GPU kernels" in result.stdout and "| class | ms/step | % of busy | ops/step |" in result.stdout
    saved = json.loads(record.read_text())
    assert saved["source"].startswith("python scripts/profile_train.py --lengths 24")
    assert saved["device"] == "cpu" and saved["torch"] == torch.__version__
    (row,) = saved["rows"]
    assert (row["lengths"], row["variant"], row["source"], row["steps"]) == ("24", "off", "cpu ops", 2)
    assert [entry["class"] for entry in row["classes"]] == list(CLASSES)
    classes = {entry["class"]: entry for entry in row["classes"]}
    assert classes[MATMUL]["ms"] > 0 and classes[LOSS]["ms"] > 0 and classes[FLASH]["ms"] == 0
    assert 0 < row["busy_ms"] < row["step_ms"] and 0 < row["idle_fraction"] < 1
    assert row["peak_memory_gib"] is None and len(row["losses"]) == 2 and len(row["top"]) == 15
    assert "traceEvents" in json.loads(trace.read_text())
