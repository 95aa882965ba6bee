"""Perplexity of GPT checkpoints on held-out text at multiples of their training length L
(model.encoder_seq_length): non-overlapping windows of k x L tokens, every token scored, the same
tokens at every k. Held-out text: each run's own test split (model.data.splits_string), or every
document of --data-prefix. Learned absolute positions past max_position_embeddings are a table
entry, not an error.

    python scripts/eval_length_extrapolation.py runs/alibi/checkpoints/last.ckpt \
        runs/rope/checkpoints/last.ckpt --lengths 1,2,4,8 --seq-len-interpolation-factor 4 \
        --json ppl.json --png ppl.png

One row per checkpoint, labelled by its position type; with --seq-len-interpolation-factor, a
rope checkpoint gets one more row per factor (positional interpolation: positions divided by the
factor, no fine-tuning). Prints a markdown table; --json writes the results with the command,
date and device; --png plots perplexity against the length multiple (needs matplotlib, from
megatron_lite's `dev` extra).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from megatron_lite.evaluation import ExtrapolationResult, evaluate_checkpoint
from megatron_lite.training.checkpointing import checkpoint_config, checkpoint_metadata


INTERPOLATION_STYLES = ("--", ":", "-.")  # rope rows with a factor, in the colour of rope


def positive_list(text: str, kind: type, name: str) -> list:
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes comma-separated numbers, got {text!r}") from None
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"{name} must all be > 0, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="GPT .ckpt files written by scripts/train.py")
    parser.add_argument("--lengths", default="1,2,4,8",
                        type=lambda text: positive_list(text, int, "--lengths"),
                        help="multiples of the training length (default 1,2,4,8)")
    parser.add_argument("--seq-len-interpolation-factor", default=None,
                        type=lambda text: positive_list(text, float, "--seq-len-interpolation-factor"),
                        help="rope checkpoints also evaluated with these factors (comma-separated), "
                             "one row each")
    parser.add_argument("--data-prefix", default=None,
                        help="held-out .bin/.idx prefix, all its documents (default: each run's test split)")
    parser.add_argument("--max-tokens", type=int, default=16384,
                        help="scored tokens at most, the same at every length (default 16384)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="windows of the training length per forward pass; a k-times longer "
                             "window counts k times (default 8)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--png", type=Path, default=None, help="plot perplexity against the multiple here")
    return parser.parse_args(argv)


def position_type(checkpoint: str) -> str:
    # Memory-mapped: only the config is read, not the weights.
    return checkpoint_config(checkpoint_metadata(checkpoint)).model.position_embedding_type


def evaluation_plan(checkpoints: list[str], factors: list[float] | None) -> list[tuple[str, float | None]]:
    """(checkpoint, interpolation factor or None) for every row, in the order given."""
    if not factors:
        return [(checkpoint, None) for checkpoint in checkpoints]
    types = {checkpoint: position_type(checkpoint) for checkpoint in checkpoints}
    if "rope" not in types.values():
        raise ValueError("--seq-len-interpolation-factor applies to rope checkpoints only; the "
                         f"checkpoints given use {sorted(set(types.values()))}")
    return [(checkpoint, factor) for checkpoint in checkpoints
            for factor in [None] + (factors if types[checkpoint] == "rope" else [])]


def distinct_labels(results: list[ExtrapolationResult]) -> list[str]:
    """Row labels: the position type, with the run folder when two rows would share one."""
    counts = Counter(result.label for result in results)
    return [result.label if counts[result.label] == 1
            else f"{result.label} [{Path(result.checkpoint).parent.parent.name}]"
            for result in results]


def markdown_table(results: list[ExtrapolationResult], labels: list[str]) -> str:
    multiples = [entry.multiple for entry in results[0].lengths]
    lines = ["| position type | L | " + " | ".join(f"{m}x" for m in multiples) + " |",
             "|---|---|" + "---|" * len(multiples)]
    for result, label in zip(results, labels, strict=True):
        cells = [entry.skipped if entry.perplexity is None else f"{entry.perplexity:.2f}"
                 for entry in result.lengths]
        train_length = result.config["encoder_seq_length"]
        lines.append(f"| {label} | {train_length} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def import_pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise SystemExit("--png needs matplotlib, which comes with megatron_lite's 'dev' extra: "
                         "pip install -e '.[dev]'") from error
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot(plt, results: list[ExtrapolationResult], labels: list[str], path: Path) -> None:
    """Perplexity against the length multiple, log-log, one line per row: a colour per position
    type, a dash pattern per interpolation factor; lengths a model cannot run are left out."""
    from matplotlib.ticker import FormatStrFormatter

    figure, ax = plt.subplots(figsize=(9, 4.8))
    colours: dict[str, str] = {}
    styles: dict[float | None, str] = {None: "-"}
    for result, label in zip(results, labels, strict=True):
        colour = colours.setdefault(result.config["position_embedding_type"], f"C{len(colours)}")
        factor = result.config.get("seq_len_interpolation_factor")
        style = styles.setdefault(factor, INTERPOLATION_STYLES[(len(styles) - 1) % len(INTERPOLATION_STYLES)])
        points = [(entry.multiple, entry.perplexity) for entry in result.lengths
                  if entry.perplexity is not None]
        if len(points) < len(result.lengths):
            label += f" (up to {points[-1][0]}x)" if points else " (no length it can run)"
        if points:
            ax.plot(*zip(*points), style, color=colour, marker="o", label=label)
    multiples = [entry.multiple for entry in results[0].lengths]
    ax.set_xscale("log", base=2)
    ax.set_xticks(multiples, [f"{m}x" for m in multiples])
    ax.minorticks_off()
    ax.set_yscale("log")
    # Plain numbers: a range within one decade gets only minor ticks, in scientific notation.
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("window length, in multiples of the training length (log scale)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("Held-out perplexity beyond the training length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def device_description(device: str | None) -> str:
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def record(args: argparse.Namespace, argv: list[str], results: list[ExtrapolationResult],
           labels: list[str], seconds: float) -> dict:
    return {
        "command": "python scripts/eval_length_extrapolation.py " + shlex.join(argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_description(args.device),
        "wall_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "results": [{**dataclasses.asdict(result), "label": label}
                    for result, label in zip(results, labels, strict=True)],
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    plt = import_pyplot() if args.png is not None else None  # before the evaluation, not after
    started = time.perf_counter()
    try:
        plan = evaluation_plan(args.checkpoints, args.seq_len_interpolation_factor)
        results = [
            evaluate_checkpoint(checkpoint, args.lengths, seq_len_interpolation_factor=factor,
                                data_prefix=args.data_prefix, max_tokens=args.max_tokens,
                                batch_size=args.batch_size, device=args.device)
            for checkpoint, factor in plan
        ]
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"Error: {error}")
    labels = distinct_labels(results)
    for source, tokens in dict.fromkeys((r.held_out, r.held_out_tokens) for r in results):
        print(f"held-out text: {source}, {tokens} tokens scored at every length")
    print(markdown_table(results, labels))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        seconds = time.perf_counter() - started
        args.json.write_text(json.dumps(record(args, argv, results, labels, seconds), indent=1) + "\n")
    if args.png is not None:
        plot(plt, results, labels, args.png)


if __name__ == "__main__":
    main()
