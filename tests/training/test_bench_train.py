"""scripts/bench_train.py on tiny sizes on the CPU: it times the training step scripts/train.py
runs (not a loop of its own), and the flash variants train the same model (the kernel runs under
the Triton interpreter here)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from megatron_lite.benchmarks.training import SWITCHES, length_overrides, measure_training, use_kernel_copy
from tests.gpt_testing import REPO, compose_gpt, metric_by_step, tiny_overrides
from tests.modules.test_attention import needs_kernel_on_cpu
from tests.t5_testing import compose_t5, tiny_t5_overrides

# Dropout draws random numbers and two micro-batches make a step: a loop of its own would have
# to match the real one's RNG use, accumulation and loss averaging to give the same losses.
STEP_SHAPE = {"model.micro_batch_size": 2, "model.global_batch_size": 4}
DROPOUT = {
    "gpt": {"model.hidden_dropout": 0.1, "model.attention_dropout": 0.1},
    "t5": {"model.encoder.hidden_dropout": 0.1, "model.decoder.hidden_dropout": 0.1},
}


def family_overrides(family: str, corpus: str, log_dir, extra: dict) -> list[str]:
    overrides = tiny_overrides if family == "gpt" else tiny_t5_overrides
    return [*overrides(corpus, log_dir, {**STEP_SHAPE, **DROPOUT[family], **extra}), *SWITCHES[family]["off"]]


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_timed_steps_are_the_steps_of_a_train_py_run(family, tiny_corpus, tmp_path):
    warmup, steps = 2, 3
    overrides = family_overrides(family, tiny_corpus, tmp_path / "train_py", {
        "trainer.max_steps": warmup + steps, "trainer.log_every_n_steps": 1})
    compose = compose_gpt if family == "gpt" else compose_t5
    result = measure_training(compose(overrides), steps=steps, warmup=warmup)

    run = subprocess.run(
        [sys.executable, "scripts/train.py", f"--config-name=megatron_{family}_config", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    train_py_losses = metric_by_step(tmp_path / "train_py", "train_loss")
    assert result.losses == pytest.approx([train_py_losses[step] for step in range(warmup, warmup + steps)],
                                          rel=1e-6)
    assert result.tokens_per_sec > 0 and result.step_ms > 0
    assert result.peak_memory_gib is None and result.mfu is None  # CPU: neither is known


def test_flash_variants_measure_the_same_training(tiny_corpus, tmp_path):
    needs_kernel_on_cpu()
    results = {}
    for variant in ("off", "on"):
        cfg = compose_t5([*tiny_t5_overrides(tiny_corpus, tmp_path, {
            "model.micro_batch_size": 2, "model.global_batch_size": 2,
            "model.encoder.num_layers": 1, "model.decoder.num_layers": 1}),
                          *length_overrides("t5", "16:6"), *SWITCHES["t5"][variant]])
        results[variant] = measure_training(cfg, steps=2, warmup=0)
    for result in results.values():
        assert result.tokens_per_step == 2 * (16 + 6)  # global batch x encoder + decoder positions
        assert len(result.losses) == 2
    # Same seed, weights and batches: the two paths give the same losses up to rounding.
    assert results["on"].losses == pytest.approx(results["off"].losses, rel=1e-5)


def test_kernel_copy_replaces_the_models_flash_attention(tiny_corpus, tmp_path, monkeypatch):
    needs_kernel_on_cpu()
    from megatron_lite_kernels import module_copy
    from megatron_lite.modules import attention

    monkeypatch.setattr(attention, "flash_attn_func", attention.flash_attn_func)  # restored after
    committed, loaded, calls = attention.flash_attn_func, [], []

    def counted(*args, **kwargs):
        calls.append(1)
        return committed(*args, **kwargs)

    def load_copy(path, namespace):  # stands in for loading an edited copy of the kernel
        loaded.append(path)
        return SimpleNamespace(flash_attn_func=counted)

    monkeypatch.setattr(module_copy, "load_kernel_copy", load_copy)
    module = use_kernel_copy("edited_copy")
    assert loaded == ["edited_copy"] and attention.flash_attn_func is module.flash_attn_func
    cfg = compose_t5([*tiny_t5_overrides(tiny_corpus, tmp_path, {
        "model.micro_batch_size": 2, "model.global_batch_size": 2,
        "model.encoder.num_layers": 1, "model.decoder.num_layers": 1}),
                      *length_overrides("t5", "16:6"), *SWITCHES["t5"]["on"]])
    measure_training(cfg, steps=1, warmup=0)
    assert calls  # the benchmark's model ran the copy's attention


def test_script_writes_a_row_per_length_and_variant(tiny_corpus, tmp_path):
    out, record = tmp_path / "bench.md", tmp_path / "bench.json"
    overrides = [o for o in tiny_t5_overrides(tiny_corpus, tmp_path / "unused") if "seq_length" not in o]
    result = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--lengths", "24:8,32:12", "--variants", "off,decoder",
         "--steps", "1", "--warmup", "0", "--peer", "eager", "--out", str(out), "--json", str(record), "--", *overrides],
        # Without the interpreter the flash variant warns and runs the PyTorch path: fast, and
        # the tests above cover the kernel.
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| 24:8", "| 32:12"))]
    expected = [("24:8", "off"), ("24:8", "decoder"), ("24:8", "HF peer (eager)"),
                ("32:12", "off"), ("32:12", "decoder"), ("32:12", "HF peer (eager)")]
    assert [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows] == expected
    assert all(float(row.split("|")[4].replace(",", "")) > 0 for row in rows)
    # Each row printed as it was measured, before the whole table.
    assert result.stdout.index(rows[0]) < result.stdout.index("| lengths |")
    saved = json.loads(record.read_text())
    assert saved["source"].startswith("python scripts/bench_train.py --lengths 24:8,32:12")
    assert saved["device"] == "cpu" and saved["torch"] == torch.__version__
    assert [(row["lengths"], row["variant"]) for row in saved["rows"]] == expected
    assert [row["batch"] for row in saved["rows"]] == [8, 8, 4] * 2  # global batch; the peer: micro-batch


@pytest.mark.parametrize("family,lengths,compiled", [("gpt", (16,), False), ("t5", (16, 6), False),
                                                     ("gpt", (16,), True)])
def test_hugging_face_peer_trains_the_shape_it_is_given(family, lengths, compiled):
    from megatron_lite.benchmarks.hf_peers import PeerShape, build_peer, measure_peer

    shape = PeerShape(layers=1, hidden=32, heads=4, ffn=64, vocab=100)
    model = build_peer(family, shape, lengths[0])
    assert model.config.vocab_size == 100 and model.config.num_hidden_layers == 1
    result = measure_peer(family, shape, lengths, batch=3, steps=3, warmup=1, device=torch.device("cpu"),
                          precision="32-true", compiled=compiled)
    assert result.tokens_per_step == 3 * sum(lengths)
    # Random tokens through a fresh model: losses of the order of log(vocab) at every step.
    assert all(0.5 * math.log(100) < loss < 2 * math.log(100) for loss in result.losses)
