"""The plots of docs/benchmarks.md, drawn from the committed JSON records: each PNG in
docs/benchmarks/ takes the name of the JSON file it is drawn from there.

    python scripts/plot_benchmarks.py                  # rewrites every PNG in docs/benchmarks/
    python scripts/plot_benchmarks.py --out-dir /tmp/plots

A new measurement gets its JSON committed beside the others and its name in FIGURES below.
Needs matplotlib, from megatron_lite's `dev` extra (pip install -e '.[dev]').
"""

import argparse
import itertools
import json
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"

# Attention implementations as bench_attention.py names them: label, colour, line style. A bias
# variant keeps its implementation's colour, dashed or dotted.
ATTENTION_LINES = {
    "ours": ("ours (Triton)", "C0", "-"),
    "ours_alibi": ("ours + ALiBi", "C0", "--"),
    "ours_relbias": ("ours + learned relative bias (T5)", "C0", ":"),
    "sdpa_flash": ("SDPA flash backend (FA2)", "C1", "-"),
    "sdpa_cudnn": ("SDPA cuDNN backend", "C2", "-"),
    "flex": ("FlexAttention", "C3", "-"),
    "flex_alibi": ("FlexAttention + ALiBi", "C3", "--"),
}
# Training variants as bench_train.py names them: label, colour.
TRAINING_BARS = {
    "off": ("flash off (PyTorch attention)", "C7"),
    "encoder": ("flash in the encoder only", "C9"),
    "decoder": ("flash in the decoder only", "C8"),
    "on": ("flash on (our kernel)", "C0"),
    "HF peer": ("Hugging Face peer", "C4"),
}


def tflops_lines(records: list[dict], head_dim: int, causal: bool) -> dict[str, list[tuple[int, float]]]:
    """{provider: [(N, TFLOP/s), ...] by N} of the timing records at one head dim and mask."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        shape = record["shape"]
        if shape["head_dim"] == head_dim and shape["causal"] == causal:
            lines.setdefault(record["provider"], []).append((shape["seqlen"], record["tflops"]))
    return {provider: sorted(points) for provider, points in lines.items()}


def add_legend_below(figure, ax, columns: int) -> None:
    """One legend for all panels (they share their lines), under them, and the panels laid out
    in the space above it."""
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=columns, frameon=False)
    legend_inches = 0.15 + 0.25 * -(-len(labels) // columns)
    figure.tight_layout(rect=(0, legend_inches / figure.get_figheight(), 1, 0.97))


def plot_attention(plt, data: list[dict], title: str):
    """TFLOP/s forward + backward against N: a row of panels per head dim, a column per mask."""
    records = [r for r in data if r.get("mode") == "fwd_bwd"]  # bench_attention.py --json's list
    head_dims = sorted({r["shape"]["head_dim"] for r in records})
    masks = sorted({r["shape"]["causal"] for r in records})
    figure, axes = plt.subplots(len(head_dims), len(masks), figsize=(5.2 * len(masks), 3.6 * len(head_dims) + 0.6),
                                sharey=True, squeeze=False)
    top = max(r["tflops"] for r in records)
    for (row, head_dim), (column, causal) in itertools.product(enumerate(head_dims), enumerate(masks)):
        ax = axes[row][column]
        lines = tflops_lines(records, head_dim, causal)
        for provider, points in lines.items():
            label, colour, style = ATTENTION_LINES[provider]
            seqlens, tflops = zip(*points)
            ax.plot(seqlens, tflops, style, color=colour, marker="o", label=label)
        seqlens = sorted({n for points in lines.values() for n, _ in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqlens, [str(n) for n in seqlens])
        ax.minorticks_off()
        ax.set_ylim(0, 1.08 * top)
        ax.set_title(f"D = {head_dim}, {'causal' if causal else 'no mask'}")
        ax.set_xlabel("sequence length N (tokens, log scale)")
        ax.set_ylabel("TFLOP/s, forward + backward")
        ax.grid(alpha=0.3)
    add_legend_below(figure, axes[0][0], columns=3)
    figure.suptitle(title)
    return figure


def bar_positions(rows: list[dict], lengths: list[str], width: float) -> dict[tuple[str, str], float]:
    """x of each (lengths, variant) bar: a group per lengths, its bars side by side around it in
    TRAINING_BARS order."""
    positions = {}
    for at, length in enumerate(lengths):
        variants = [v for v in TRAINING_BARS if any(r["lengths"] == length and r["variant"] == v for r in rows)]
        for index, variant in enumerate(variants):
            positions[length, variant] = at + (index - (len(variants) - 1) / 2) * width
    return positions


def plot_training(plt, data: dict, title: str):
    """Tokens/s and peak memory per sequence length, one bar per variant."""
    rows = [row for row in data["rows"] if "tokens_per_sec" in row]  # not the failed ones
    lengths = list(dict.fromkeys(row["lengths"] for row in rows))
    width = 0.8 / max(sum(row["lengths"] == length for row in rows) for length in lengths)
    positions = bar_positions(rows, lengths, width)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "tokens_per_sec", 1e-3, "thousand tokens/s", "{:.0f}k"),
              (axes[1], "peak_memory_gib", 1.0, "peak GPU memory (GiB)", "{:.1f}"))
    for ax, key, scale, ylabel, value_format in panels:
        for variant, (label, colour) in TRAINING_BARS.items():
            bars = [(positions[row["lengths"], variant], row[key] * scale) for row in rows
                    if row["variant"] == variant and row[key] is not None]
            if bars:
                drawn = ax.bar(*zip(*bars), width, color=colour, label=label)
                ax.bar_label(drawn, labels=[value_format.format(value) for _, value in bars], fontsize=8)
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_xlabel("encoder:decoder length (tokens)" if ":" in lengths[0] else "sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    add_legend_below(figure, axes[0], columns=3)
    figure.suptitle(title)
    return figure


# JSON record (its name without .json) -> the PNG's title and how to draw it.
FIGURES = {
    "attention_h200_2026-11-28": (
        "Attention on one H200 (bf16, B·N = 16384 tokens, hidden 2048), 2026-11-28", plot_attention),
    "relbias_h200_2026-11-29_committed": (
        "Learned relative position bias (T5, W = 128) on one H200, 2026-11-29", plot_attention),
    "gpt_train_h200_2026-11-28": (
        "GPT-2 small shape (12 x 768), batch 16, bf16-mixed, one H200, 2026-11-28", plot_training),
    "t5_train_h200_2026-11-29": (
        "T5-base shape (12 + 12 x 768), batch 8, bf16-mixed, one H200, 2026-11-28/29", plot_training),
}


def import_pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise SystemExit("scripts/plot_benchmarks.py needs matplotlib, which comes with megatron_lite's "
                         "'dev' extra: pip install -e '.[dev]'") from error
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def write_plots(out_dir: Path) -> list[Path]:
    """Every figure of FIGURES as out_dir/<record>.png; returns their paths."""
    plt = import_pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for record, (title, plot) in FIGURES.items():
        figure = plot(plt, json.loads((RECORDS / f"{record}.json").read_text()), title)
        path = out_dir / f"{record}.png"
        # No matplotlib version stamped in: the file changes only when the drawing does.
        figure.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=RECORDS, help="where the PNGs go")
    for path in write_plots(parser.parse_args().out_dir):
        print(path)


if __name__ == "__main__":
    main()
