"""Training tokens/s and peak memory with the flash switches on vs off, one config per row:
the training step of scripts/train.py (megatron_lite.benchmarks.training), timed.

    python scripts/bench_train.py --config-name megatron_t5_config --lengths 512:128,2048:512 \
        --variants off,encoder,decoder,on --peer eager --out t5_train.md -- +preset=t5/bench
    python scripts/bench_train.py --config-name megatron_gpt_config --lengths 2048 \
        --variants off,on --peer eager,compiled -- +preset=gpt/bench

Everything after `--` is a Hydra override of the config, as for scripts/train.py; --lengths
sets model.seq_length:model.data.seq_length_dec (T5) or model.encoder_seq_length (GPT), and each
variant sets the flash switches. Each row is printed, and --out and --json rewritten, as soon as
it is measured; a variant that fails (e.g. out of memory) is a table entry. --json holds the rows
with the machine, versions, date and command (the format of docs/benchmarks/*train*.json).
--kernel-file times the flash variants with an edited copy of the kernel
(kernels/megatron_lite_kernels/flash_attention/; run once with it and once without, on the same
machine, for an A/B of a kernel change).
"""

import argparse
import gc
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
import triton
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from megatron_lite.benchmarks.hf_peers import PEER_MODES, PeerShape, measure_peer
from megatron_lite.benchmarks.training import (
    SWITCHES,
    TABLE_HEADER,
    device_name,
    format_row,
    json_record,
    length_overrides,
    measure_training,
    use_kernel_copy,
)
from megatron_lite.config import register_configs, reject_unknown_keys
from megatron_lite.training import build_tokenizer_from_config, family_of, padded_vocab_size

CONF = Path(__file__).resolve().parents[1] / "conf"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-name", default="megatron_t5_config")
    parser.add_argument("--config-path", default=str(CONF), help="folder of the config (absolute)")
    parser.add_argument("--lengths", default="512:128,2048:512", help="comma-separated; S:S_dec for T5")
    parser.add_argument("--variants", default="off,on", help="flash switches: off, on (T5 also encoder, decoder)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, autotune)")
    parser.add_argument("--out", default="", help="write the markdown table here")
    parser.add_argument("--json", default="", help="write every measurement here")
    parser.add_argument("--peer", default="",
                        help="also time the Hugging Face model of the same shape (GPT-2 or T5, random "
                             "tokens, micro-batch size) after each length's variants: eager, "
                             "compiled (under torch.compile) or eager,compiled")
    parser.add_argument("--kernel-file", default="",
                        help="an edited copy of the kernel (kernels/megatron_lite_kernels/flash_attention/, "
                             "in a form load_kernel_copy accepts) for the flash variants")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    return parser.parse_args()


def main() -> None:
    try:
        run(parse_args())
    except ValueError as error:  # a bad config or data: one message, as scripts/train.py
        sys.exit(f"Error: {error}")


def run(args: argparse.Namespace) -> None:
    register_configs()
    if args.kernel_file:
        use_kernel_copy(args.kernel_file)
    # Where the Hugging Face peer runs; our rows run where each config's trainer.accelerator says.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernel = f"; kernel {args.kernel_file}" if args.kernel_file else ""
    lines = [f"device: {device_name(device)}, torch {torch.__version__}, triton {triton.__version__}; "
             f"{args.steps} timed steps after {args.warmup}{kernel}", "", *TABLE_HEADER]
    records = []
    with initialize_config_dir(config_dir=args.config_path, version_base="1.3"):
        base = OmegaConf.to_object(compose(config_name=args.config_name, overrides=args.overrides))
        family = family_of(base).name
        for lengths in args.lengths.split(","):
            for variant in args.variants.split(","):
                if variant not in SWITCHES[family]:
                    sys.exit(f"unknown variant {variant!r} for {family}; choose from {sorted(SWITCHES[family])}")
                overrides = [*args.overrides, *length_overrides(family, lengths), *SWITCHES[family][variant]]
                cfg = OmegaConf.to_object(compose(config_name=args.config_name, overrides=overrides))
                reject_unknown_keys(cfg)
                lines.append(measured_row(
                    lambda: measure_training(cfg, steps=args.steps, warmup=args.warmup),
                    lengths, variant, cfg, device, records))
                report_row(args, lines, records, device)
            for peer in filter(None, args.peer.split(",")):  # the last variant's shape
                if peer not in PEER_MODES:
                    sys.exit(f"unknown --peer {peer!r}; choose from {', '.join(PEER_MODES)}")
                shape = PeerShape.of(cfg, family, padded_vocab_size(cfg, build_tokenizer_from_config(cfg)))
                lines.append(measured_row(
                    lambda: measure_peer(family, shape, tuple(int(n) for n in lengths.split(":")),
                                         cfg.model.micro_batch_size, steps=args.steps, warmup=args.warmup,
                                         device=device, precision=cfg.trainer.lightning_precision,
                                         compiled=peer == "compiled"),
                    lengths, f"HF peer ({peer})", cfg, device, records, batch=cfg.model.micro_batch_size))
                report_row(args, lines, records, device)
    print("\n" + table(lines))


def table(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def report_row(args: argparse.Namespace, lines: list[str], records: list[dict], device: torch.device) -> None:
    """Print the newest row and rewrite --out and --json with every row so far: a run stopped by
    a time limit keeps what it measured."""
    print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text(table(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(json_record(records, device), indent=1))


def measured_row(measure, lengths: str, variant: str, cfg, device: torch.device, records: list,
                 batch: int | None = None) -> str:
    """The table row of measure() (a TrainingMeasurement), or of its failure (e.g. out of
    memory), recorded in `records` either way. batch: samples per step, model.global_batch_size
    unless given."""
    batch = cfg.model.global_batch_size if batch is None else batch
    record = {"lengths": lengths, "variant": variant, "batch": batch}
    try:
        result = measure()
    except (torch.OutOfMemoryError, RuntimeError) as error:
        message = "".join(traceback.format_exception_only(error)).strip().splitlines()[0][:120]
        records.append({**record, "error": message})
        return format_row(lengths, variant, cfg, None, f"failed: {message}", batch=batch)
    finally:
        if device.type == "cuda":
            gc.collect()  # the Trainer and module of a run hold each other: free their memory for the next
            torch.cuda.empty_cache()
    records.append({**record, **vars(result)})
    return format_row(lengths, variant, cfg, result, batch=batch)


if __name__ == "__main__":
    main()
