"""Memory per GPU of GPT-1.3B and ~7B training steps as a function of the parallel layout,
computed from the models' shapes (megatron_lite.parallel.memory): the tables of
docs/parallelism.md.

    python scripts/parallel_memory.py                  # markdown tables, micro-batch 1
    python scripts/parallel_memory.py --json out.json  # the rows as JSON too
    python scripts/parallel_memory.py --measure        # on a GPU: one-GPU steps measured beside
                                                       # the computed rows
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from megatron_lite.parallel.memory import (
    Layout,
    count_parameters,
    estimate,
    gpt_1_3b,
    gpt_7b,
    measure_one_gpu,
    meta_model,
)

LAYOUTS = [
    Layout("1 GPU (or DDP)"),
    Layout("FSDP 8", data_parallel=8, fsdp="full"),
    Layout("FSDP 8, grad", data_parallel=8, fsdp="grad"),
    Layout("FSDP 64 (8 nodes)", data_parallel=64, fsdp="full"),
    Layout("HSDP 8 nodes x 8", data_parallel=64, fsdp="hybrid"),
    Layout("TP 2 + SP, DDP 4", data_parallel=4, tensor_parallel=2, sequence_parallel=True),
    Layout("TP 2 + SP, FSDP 4", data_parallel=4, tensor_parallel=2, sequence_parallel=True, fsdp="full"),
    Layout("TP 8 + SP", tensor_parallel=8, sequence_parallel=True),
    Layout("TP 8, no SP", tensor_parallel=8),
    Layout("TP 4 + SP x CP 2, FSDP", tensor_parallel=4, context_parallel=2, sequence_parallel=True, fsdp="full"),
]
COLUMNS = ("weights", "gradients", "adamw", "activations", "total", "activations_recomputed", "total_recomputed")
HEADER = ("| layout | GPUs | weights | grads | AdamW | activations | total | activations, recomputed | "
          "total, recomputed |\n|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--measure", action="store_true", help="measure one-GPU steps (needs CUDA)")
    args = parser.parse_args()
    records = []
    for name, (cfg, vocab) in (("GPT-1.3B", gpt_1_3b()), ("GPT-7B (Mistral-7B shape, GQA 8)", gpt_7b())):
        params = count_parameters(meta_model(cfg, vocab))
        seq = cfg.encoder_seq_length
        print(f"\n{name}: {params.total / 1e9:.2f}B parameters, sequence {seq}, micro-batch "
              f"{args.micro_batch}, bf16-mixed (GiB per GPU)\n\n{HEADER}")
        for layout in LAYOUTS:
            row = estimate(cfg, vocab, layout, args.micro_batch, seq, params).row()
            print(f"| {layout.name} | {layout.gpus} | " + " | ".join(f"{row[c]:.1f}" for c in COLUMNS) + " |")
            records.append({"model": name, "layout": layout.name, "gpus": layout.gpus, **row})
        if args.measure:
            measure(name, cfg, vocab, params, seq, records)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"micro_batch": args.micro_batch, "rows": records}, file, indent=1)


def measure(name, cfg, vocab, params, seq, records) -> None:
    """The computed one-GPU row against the allocator's, for the model (if it fits on the GPU
    with AdamW) and for a 4-layer model of the same width (the per-layer activations)."""
    import torch  # noqa: PLC0415

    free = torch.cuda.mem_get_info()[0]
    models = [("4 layers", replace(cfg, num_layers=4))]
    if 16 * params.total * 1.3 < free:
        models.insert(0, (f"{cfg.num_layers} layers", cfg))
    for label, model_cfg in models:
        for micro_batch in (1, 2):
            computed = estimate(model_cfg, vocab, Layout("1 GPU"), micro_batch, seq)
            got = measure_one_gpu(model_cfg, vocab, micro_batch, seq)
            line = {"model": f"{name}, {label}", "micro_batch": micro_batch,
                    "device": torch.cuda.get_device_name(), **{f"measured_{k}": v for k, v in got.items()},
                    "computed_weights": computed.weights / 2**30, "computed_adamw": computed.optimizer / 2**30,
                    "computed_forward": (computed.activations + computed.compute_weights) / 2**30,
                    "computed_total": (computed.states + computed.activations) / 2**30}
            print(json.dumps(line), flush=True)
            records.append(line)


if __name__ == "__main__":
    main()
