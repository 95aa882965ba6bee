"""Generation for a batch of text prompts, whichever the model's family (scripts/generate.py)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from megatron_lite.generation.sampling import generate_texts
from megatron_lite.generation.seq2seq import generate_seq2seq_texts
from megatron_lite.models import T5Model
from megatron_lite.tokenizers import Tokenizer


def generate_for_prompts(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str],
                         tokens_to_generate: int, *, stop_strings: Sequence[str] = (),
                         **options) -> list[str]:
    """One text per prompt: GPT's prompt and continuation; T5's output and its input with the
    sentinels filled in. options: seed, use_cache and sample_next_token's sampling options."""
    if not prompts:
        raise ValueError("no prompt to generate from")
    if isinstance(model, T5Model):
        if stop_strings:
            raise ValueError("stop strings apply to GPT; T5 stops at its end-of-sequence token")
        return [f"output:    {output}\nfilled in: {filled}"
                for output, filled in generate_seq2seq_texts(model, tokenizer, prompts,
                                                             tokens_to_generate, **options)]
    return generate_texts(model, tokenizer, prompts, tokens_to_generate,
                          stop_strings=stop_strings, **options)
