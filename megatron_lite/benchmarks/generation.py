"""Generation throughput: our GPT with its key/value cache (the flash kernel's decode step when
use_flash_attention is on) against Hugging Face GPT-2's `generate` with its cache, the same
shape, side by side in one process.

Both decode greedily from random prompts of the same length for a fixed number of new tokens
(no early stop), in bf16 on the GPU. Throughput counts new tokens over the whole call (prefill
included), per second.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.extras import import_transformers
from megatron_lite.generation import generate_batch
from megatron_lite.models import GPTModel


@dataclasses.dataclass(frozen=True)
class GenerationShape:
    layers: int
    hidden: int
    heads: int
    vocab: int
    prompt: int
    new_tokens: int

    def our_config(self, use_flash: bool) -> GPTModelConfig:
        return GPTModelConfig(
            num_layers=self.layers, hidden_size=self.hidden, ffn_hidden_size=4 * self.hidden,
            num_attention_heads=self.heads, encoder_seq_length=self.prompt + self.new_tokens,
            max_position_embeddings=self.prompt + self.new_tokens, hidden_dropout=0.0,
            attention_dropout=0.0, use_flash_attention=use_flash)


def _timed(run) -> float:
    """Seconds of one call after a warm-up call (compilation, autotuning, allocator)."""
    run()
    torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def measure_ours(shape: GenerationShape, batch: int, use_flash: bool) -> float:
    """New tokens per second of generate_batch with the cache."""
    torch.manual_seed(0)
    model = GPTModel(shape.our_config(use_flash), shape.vocab).cuda().to(torch.bfloat16).eval()
    prompts = torch.randint(1, shape.vocab, (batch, shape.prompt)).tolist()
    seconds = _timed(lambda: generate_batch(model, prompts, shape.new_tokens, greedy=True))
    return batch * shape.new_tokens / seconds


def measure_hf(shape: GenerationShape, batch: int) -> float:
    """New tokens per second of Hugging Face GPT-2's generate (SDPA attention, its cache)."""
    transformers = import_transformers(needed_for="The Hugging Face generation peer")
    config = transformers.GPT2Config(vocab_size=shape.vocab, n_positions=shape.prompt + shape.new_tokens,
                                     n_embd=shape.hidden, n_layer=shape.layers, n_head=shape.heads,
                                     activation_function="gelu")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    model = model.cuda().to(torch.bfloat16).eval()
    prompts = torch.randint(1, shape.vocab, (batch, shape.prompt), device="cuda")
    options = dict(max_new_tokens=shape.new_tokens, min_new_tokens=shape.new_tokens,
                   do_sample=False, use_cache=True, pad_token_id=0)
    seconds = _timed(lambda: model.generate(prompts, attention_mask=torch.ones_like(prompts), **options))
    return batch * shape.new_tokens / seconds
