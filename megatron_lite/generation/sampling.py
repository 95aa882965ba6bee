"""Text generation from a GPT: greedy or top-k sampling, one token at a time.

No key/value cache: each step re-runs the model over the last encoder_seq_length tokens, which
is simple and fast enough for the small models and short samples this serves.
"""

from __future__ import annotations

import torch

from megatron_lite.models import GPTModel
from megatron_lite.tokenizers import Tokenizer


@torch.no_grad()
def generate_ids(
    model: GPTModel,
    prompt_ids: list[int],
    tokens_to_generate: int,
    *,
    greedy: bool = False,
    top_k: int = 0,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The ids generated after `prompt_ids` (at most tokens_to_generate, ending at stop_id).

    vocab_size: ids at or above it (the padding rows of the embedding table) are never chosen.
    top_k: sample among the k likeliest tokens (0: all of them).
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    context = model.cfg.encoder_seq_length
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    generated: list[int] = []
    for _ in range(tokens_to_generate):
        logits = model(ids[:, -context:])[0, -1].float()  # (V,)
        if vocab_size is not None:
            logits[vocab_size:] = float("-inf")
        if greedy:
            next_id = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
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
        model, prompt_ids, tokens_to_generate, greedy=greedy, top_k=top_k,
        temperature=temperature, vocab_size=tokenizer.vocab_size, stop_id=tokenizer.eod_id,
        generator=generator,
    )
    return tokenizer.decode([i for i in prompt_ids + new_ids if i != tokenizer.eod_id])
