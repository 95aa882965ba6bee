"""Choosing the next token (greedy, or sampled with temperature, top-k and top-p), and text
generation from a GPT one token at a time.

No key/value cache: each step re-runs the model over the last encoder_seq_length tokens, which
is simple and fast enough for the small models and short samples this serves.
"""

from __future__ import annotations

import torch

from megatron_lite.models import GPTModel
from megatron_lite.tokenizers import Tokenizer


def sample_next_token(
    logits: torch.Tensor,
    *,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next ids [B] from float logits [B, V].

    vocab_size: ids at or above it (the padding rows of the embedding table) are never chosen.
    top_k: sample among the k likeliest tokens (0: all of them).
    top_p: sample among the likeliest tokens whose probabilities first reach top_p together
    (nucleus sampling; 0 or 1: all of them). Applied after top_k, as in NeMo and HF.
    """
    if vocab_size is not None:
        logits = logits.clone()
        logits[:, vocab_size:] = float("-inf")
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the likelier ones already hold top_p (the likeliest always stays).
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(before >= top_p, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate_ids(
    model: GPTModel,
    prompt_ids: list[int],
    tokens_to_generate: int,
    *,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The ids generated after `prompt_ids` (at most tokens_to_generate, ending at stop_id);
    the sampling options are `sample_next_token`'s."""
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    context = model.cfg.encoder_seq_length
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    generated: list[int] = []
    for _ in range(tokens_to_generate):
        logits = model(ids[:, -context:])[:, -1].float()  # (1, V)
        next_id = int(sample_next_token(
            logits, greedy=greedy, top_k=top_k, top_p=top_p, temperature=temperature,
            vocab_size=vocab_size, generator=generator,
        )[0])
        generated.append(next_id)
        if next_id == stop_id:
            break
        ids = torch.cat([ids, ids.new_tensor([[next_id]])], dim=1)
    model.train(was_training)
    return generated


def generate_text(
    model: GPTModel,
    tokenizer: Tokenizer,
    prompt: str,
    tokens_to_generate: int,
    *,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: int = 0,
) -> str:
    """The prompt followed by its continuation, as text (decoded together, so the joint keeps
    its spacing)."""
    # An empty prompt starts a fresh document, which is what follows an end-of-document token.
    prompt_ids = tokenizer.encode(prompt) or [tokenizer.eod_id]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    new_ids = generate_ids(
        model, prompt_ids, tokens_to_generate, greedy=greedy, top_k=top_k, top_p=top_p,
        temperature=temperature, vocab_size=tokenizer.vocab_size, stop_id=tokenizer.eod_id,
        generator=generator,
    )
    return tokenizer.decode([i for i in prompt_ids + new_ids if i != tokenizer.eod_id])
