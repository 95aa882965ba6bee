"""Where a training step's time goes: the training step of scripts/train.py under torch.profiler
(megatron_lite.benchmarks.profiling), its GPU kernel time by class.

    python scripts/profile_train.py --config-name megatron_gpt_config --lengths 2048 --variant on \
        -- +preset=gpt/bench

Everything after `--` is a Hydra override of the config, as for scripts/train.py; --lengths
sets model.seq_length:model.data.seq_length_dec (T5) or model.encoder_seq_length (GPT), and
--variant sets the flash switches, as in scripts/bench_train.py (one length and one variant
here). Prints the step's wall time, GPU busy time (the union of the kernels' intervals) and idle
fraction, the kernel time per class (flash attention, matrix multiply, cross-entropy, ...; the
rules are CLASS_RULES in megatron_lite/benchmarks/profiling.py), the top 15 kernels and the
peak memory; --json writes it with the machine, versions, date and command, --trace the Chrome
trace (chrome://tracing, https://ui.perfetto.dev). Without a GPU the classes hold the CPU's
ATen op time instead.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import triton
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from megatron_lite.benchmarks.profiling import format_report, profile_training
from megatron_lite.benchmarks.training import SWITCHES, device_name, json_record, length_overrides
from megatron_lite.config import register_configs, reject_unknown_keys
from megatron_lite.training import family_of

CONF = Path(__file__).resolve().parents[1] / "conf"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-name", default="megatron_gpt_config")
    parser.add_argument("--config-path", default=str(CONF), help="folder of the config (absolute)")
    parser.add_argument("--lengths", default="2048", help="one length: S, or S:S_dec for T5")
    parser.add_argument("--variant", default="on", help="flash switches: off, on (T5 also encoder, decoder)")
    parser.add_argument("--steps", type=int, default=3, help="profiled optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (compile, autotune)")
    parser.add_argument("--json", default="", help="write the profile here")
    parser.add_argument("--trace", default="", help="write the Chrome trace of the profiled steps here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    return parser.parse_args()


def main() -> None:
    try:
        run(parse_args())
    except ValueError as error:  # a bad config or data: one message, as scripts/train.py
        sys.exit(f"Error: {error}")


def run(args: argparse.Namespace) -> None:
    if "," in args.lengths:
        sys.exit("--lengths takes one length here (S, or S:S_dec for T5): one profile per run")
    register_configs()
    with initialize_config_dir(config_dir=args.config_path, version_base="1.3"):
        family = family_of(OmegaConf.to_object(compose(config_name=args.config_name, overrides=args.overrides))).name
        if args.variant not in SWITCHES[family]:
            sys.exit(f"unknown variant {args.variant!r} for {family}; choose from {sorted(SWITCHES[family])}")
        overrides = [*args.overrides, *length_overrides(family, args.lengths), *SWITCHES[family][args.variant]]
        cfg = OmegaConf.to_object(compose(config_name=args.config_name, overrides=overrides))
    reject_unknown_keys(cfg)
    what = (f"{args.config_name}, lengths {args.lengths}, flash {args.variant}, batch {cfg.model.global_batch_size}; "
            f"{args.steps} profiled steps after {args.warmup}")
    print(f"profiling {what}", flush=True)
    profile = profile_training(cfg, steps=args.steps, warmup=args.warmup, trace=args.trace)
    device = torch.device("cuda" if profile.source == "cuda kernels" else "cpu")
    print(format_report(profile, f"device: {device_name(device)}, torch {torch.__version__}, "
                                 f"triton {triton.__version__}; {what}\n"), flush=True)
    if args.json:
        row = {"lengths": args.lengths, "variant": args.variant, "batch": cfg.model.global_batch_size,
               "warmup": args.warmup, **dataclasses.asdict(profile)}
        Path(args.json).write_text(json.dumps(json_record([row], device), indent=1))


if __name__ == "__main__":
    main()
