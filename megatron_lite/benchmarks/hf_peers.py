"""The same training step on a Hugging Face model of the same shape: the peer that
`scripts/bench_train.py`'s numbers are compared with, side by side in one run.

The peer is built from a config (no download) with the sizes of our benchmark presets and
trained on random tokens, as the GPU guide's peer table was: bf16 autocast, fused AdamW,
gradient clipping at 1.0. Throughput counts every position fed through the model (T5: encoder
and decoder positions), as `megatron_lite.benchmarks.training` does.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from megatron_lite.benchmarks.training import AUTOCAST, TrainingMeasurement, time_training_steps
from megatron_lite.config import RunConfig
from megatron_lite.extras import import_transformers


@dataclasses.dataclass(frozen=True)
class PeerShape:
    layers: int  # per stack for T5
    hidden: int
    heads: int
    ffn: int
    vocab: int

    @classmethod
    def of(cls, cfg: RunConfig, family: str, vocab: int) -> "PeerShape":
        """The shape of our model under cfg (T5: its encoder's, which the bench presets share
        with the decoder)."""
        stack = cfg.model.encoder if family == "t5" else cfg.model
        return cls(stack.num_layers, stack.hidden_size, stack.num_attention_heads, stack.ffn_hidden_size, vocab)


def build_peer(family: str, shape: PeerShape, seq_length: int):
    """An untrained Hugging Face GPT-2 ("gpt") or T5 ("t5") with the shape of our presets:
    GPT-2 with SDPA attention; T5 with its own attention (the relative bias rules out SDPA's
    fused kernels there), gelu feed-forward and 0.1 dropout like conf/preset/t5/bench.yaml."""
    transformers = import_transformers(needed_for="The Hugging Face peer of bench_train")

    if family == "gpt":
        config = transformers.GPT2Config(
            vocab_size=shape.vocab, n_positions=seq_length, n_embd=shape.hidden, n_layer=shape.layers,
            n_head=shape.heads, n_inner=shape.ffn)
        return transformers.GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    if family == "t5":
        config = transformers.T5Config(
            vocab_size=shape.vocab, d_model=shape.hidden, d_kv=shape.hidden // shape.heads, d_ff=shape.ffn,
            num_layers=shape.layers, num_decoder_layers=shape.layers, num_heads=shape.heads,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
            feed_forward_proj="gelu", decoder_start_token_id=0, pad_token_id=0)
        return transformers.T5ForConditionalGeneration(config)
    raise ValueError(f"peer family must be 'gpt' or 't5', got {family!r}")


def random_batch(family: str, vocab: int, batch: int, lengths: tuple[int, ...], device: torch.device) -> dict:
    """Token ids drawn uniformly, never the pad id 0 (so no position is masked)."""
    def tokens(length: int) -> torch.Tensor:
        return torch.randint(1, vocab, (batch, length), device=device)

    if family == "gpt":
        ids = tokens(lengths[0])
        return {"input_ids": ids, "labels": ids}
    return {"input_ids": tokens(lengths[0]), "labels": tokens(lengths[1])}


PEER_MODES = ("eager", "compiled")


def measure_peer(family: str, shape: PeerShape, lengths: tuple[int, ...], batch: int, *, steps: int,
                 warmup: int, device: torch.device, precision: str = "bf16-mixed",
                 compiled: bool = False) -> TrainingMeasurement:
    """Tokens/s and peak memory of `steps` training steps of the peer after `warmup` ones;
    compiled: the model under torch.compile (its compilation falls in the warm-up steps).

    lengths: (S,) for GPT, (S_enc, S_dec) for T5. No MFU: the peer's FLOPs are not counted the
    way our families count theirs."""
    torch.manual_seed(0)
    model = build_peer(family, shape, lengths[0]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    if compiled:
        model = torch.compile(model)
    batches = itertools.cycle([random_batch(family, shape.vocab, batch, lengths, device) for _ in range(4)])

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST):
            loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return time_training_steps(step, steps=steps, warmup=warmup, device=device,
                               tokens_per_step=batch * sum(lengths))
