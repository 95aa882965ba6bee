"""scripts/bench_train.py on tiny sizes on the CPU: what it measures, and that the flash variants
train the same model (the kernel runs under the Triton interpreter here)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from megatron_lite.benchmarks.training import SWITCHES, length_overrides, measure_training, use_kernel_copy
from tests.gpt_testing import REPO
from tests.modules.test_attention import needs_kernel_on_cpu
from tests.t5_testing import compose_t5, tiny_t5_overrides


def test_flash_variants_measure_the_same_training(tiny_corpus, tmp_path):
    needs_kernel_on_cpu()
    results = {}
    for variant in ("off", "on"):
        cfg = compose_t5([*tiny_t5_overrides(tiny_corpus, tmp_path, {
            "model.micro_batch_size": 2, "model.global_batch_size": 4,
            "model.encoder.num_layers": 1, "model.decoder.num_layers": 1}),
                          *length_overrides("t5", "32:12"), *SWITCHES["t5"][variant]])
        results[variant] = measure_training(cfg, steps=2, warmup=1, device=torch.device("cpu"))
    for result in results.values():
        assert result.tokens_per_step == 4 * (32 + 12)  # global batch x encoder + decoder positions
        assert result.tokens_per_sec > 0 and result.step_ms > 0
        assert result.peak_memory_gib is None and result.mfu is None  # CPU: neither is known
    # Same seed, weights and batches: the two paths give the same losses up to rounding.
    assert results["on"].losses == pytest.approx(results["off"].losses, rel=1e-5)


def test_kernel_copy_replaces_the_models_flash_attention(tiny_corpus, tmp_path, monkeypatch):
    needs_kernel_on_cpu()
    from megatron_lite.modules import attention

    monkeypatch.setattr(attention, "flash_attn_func", attention.flash_attn_func)  # restored after
    copy = tmp_path / "edited_kernel.py"
    copy.write_text((REPO / "kernels" / "megatron_lite_kernels" / "flash_attention.py").read_text())
    module = use_kernel_copy(str(copy))
    assert attention.flash_attn_func is module.flash_attn_func
    original_forward, calls = module._forward, []

    def counted_forward(*args):
        calls.append(1)
        return original_forward(*args)
    monkeypatch.setattr(module, "_forward", counted_forward)
    cfg = compose_t5([*tiny_t5_overrides(tiny_corpus, tmp_path, {
        "model.micro_batch_size": 2, "model.global_batch_size": 2,
        "model.encoder.num_layers": 1, "model.decoder.num_layers": 1}),
                      *length_overrides("t5", "16:6"), *SWITCHES["t5"]["on"]])
    measure_training(cfg, steps=1, warmup=0, device=torch.device("cpu"))
    assert calls  # the model's attention ran the copy's kernel


def test_script_writes_a_table_row_per_length_and_variant(tiny_corpus, tmp_path):
    out = tmp_path / "bench.md"
    overrides = [o for o in tiny_t5_overrides(tiny_corpus, tmp_path / "unused") if "seq_length" not in o]
    result = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--lengths", "24:8,32:12", "--variants", "off,decoder",
         "--steps", "1", "--warmup", "0", "--peer", "--out", str(out), "--", *overrides],
        # Without the interpreter the flash variant warns and runs the PyTorch path: fast, and
        # the previous test covers the kernel.
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 24:8") or line.startswith("| 32:12")]
    assert [row.split("|")[1:3] for row in rows] == [
        [" 24:8 ", " off "], [" 24:8 ", " decoder "], [" 24:8 ", " HF peer "],
        [" 32:12 ", " off "], [" 32:12 ", " decoder "], [" 32:12 ", " HF peer "]]
    assert all(float(row.split("|")[4].replace(",", "")) > 0 for row in rows)


@pytest.mark.parametrize("family,lengths", [("gpt", (16,)), ("t5", (16, 6))])
def test_hugging_face_peer_trains_the_shape_it_is_given(family, lengths):
    from megatron_lite.benchmarks.hf_peers import PeerShape, build_peer, measure_peer

    shape = PeerShape(layers=1, hidden=32, heads=4, ffn=64, vocab=100)
    model = build_peer(family, shape, lengths[0])
    assert model.config.vocab_size == 100 and model.config.num_hidden_layers == 1
    result = measure_peer(family, shape, lengths, batch=3, steps=3, warmup=1, device=torch.device("cpu"),
                          precision="32-true")
    assert result.tokens_per_step == 3 * sum(lengths)
    # Random tokens through a fresh model: losses of the order of log(vocab) at every step.
    assert all(0.5 * math.log(100) < loss < 2 * math.log(100) for loss in result.losses)
