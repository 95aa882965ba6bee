"""scripts/plot_benchmarks.py draws every plot of docs/benchmarks.md from the committed JSON."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.gpt_testing import REPO

pytest.importorskip("matplotlib")

RECORDS = REPO / "docs" / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("plot_benchmarks", REPO / "scripts" / "plot_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plt(script):
    return script.import_pyplot()


def record(name: str):
    return json.loads((RECORDS / f"{name}.json").read_text())


def test_every_plot_is_written_and_embedded_in_the_docs(script, tmp_path):
    written = script.write_plots(tmp_path)
    assert sorted(path.name for path in written) == sorted(f"{name}.png" for name in script.FIGURES)
    assert all(path.read_bytes().startswith(PNG_SIGNATURE) for path in written)
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    for name in script.FIGURES:
        assert (RECORDS / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)  # committed beside its JSON
        assert f"](benchmarks/{name}.png)" in docs


def test_attention_plot_draws_each_implementation_per_head_dim_and_mask(script, plt):
    data = record("attention_h200_2026-11-28")
    figure = script.plot_attention(plt, data, "title")
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["D = 64, no mask", "D = 64, causal", "D = 128, no mask",
                                               "D = 128, causal"]
    assert axes[0].get_xscale() == "log"
    lines = {line.get_label(): line for line in axes[3].get_lines()}
    assert sorted(lines) == sorted(label for label, _, _ in script.ATTENTION_LINES.values()
                                   if "relative" not in label)
    ours = [r["tflops"] for r in data if r.get("provider") == "ours" and r.get("mode") == "fwd_bwd"
            and r["shape"]["head_dim"] == 128 and r["shape"]["causal"]]
    assert list(lines["ours (Triton)"].get_xdata()) == [1024, 4096, 16384]
    assert list(lines["ours (Triton)"].get_ydata()) == ours
    plt.close(figure)


def test_training_plot_draws_the_recorded_tokens_and_memory(script, plt):
    data = record("t5_train_h200_2026-11-29")
    figure = script.plot_training(plt, data, "title")
    tokens_axis, memory_axis = figure.axes
    heights = sorted(round(bar.get_height() * 1e3) for bar in tokens_axis.patches)
    assert heights == sorted(row["tokens_per_sec"] for row in data["rows"])
    assert sorted(bar.get_height() for bar in memory_axis.patches) == sorted(
        row["peak_memory_gib"] for row in data["rows"])
    plt.close(figure)
