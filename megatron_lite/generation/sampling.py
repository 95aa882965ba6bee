"""Choosing the next token (greedy, or sampled with temperature, top-k, top-p and a repetition
penalty), and text generation from a GPT for a batch of prompts.

With a key/value cache (the default), the prompts run through the model once and each step feeds
one new token per row: its query attends to every cached key through the same attention call as
training (the flash kernel with Sq = 1). Prompts of different lengths are padded on the left and
masked as keys; their positions count real tokens only. use_cache=False re-runs the whole
sequence at every step: the reference the cache must equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from megatron_lite.models import GPTModel
from megatron_lite.modules import KVCache
from megatron_lite.tokenizers import Tokenizer


def sample_next_token(
    logits: torch.Tensor,
    *,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    previous_ids: torch.Tensor | None = None,
    vocab_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next ids [B] from float logits [B, V].

    vocab_size: ids at or above it (the padding rows of the embedding table) are never chosen.
    repetition_penalty (> 1 discourages): the logit of every id in previous_ids [B, T] is
    divided by it where positive and multiplied where negative (CTRL's penalty, as in HF).
    top_k: sample among the k likeliest tokens (0: all of them).
    top_p: sample among the likeliest tokens whose probabilities first reach top_p together
    (nucleus sampling; 0 or 1: all of them). Applied after top_k, as in NeMo and HF.
    """
    logits = logits.clone()
    if vocab_size is not None:
        logits[:, vocab_size:] = float("-inf")
    if repetition_penalty != 1.0 and previous_ids is not None:
        seen = logits.gather(1, previous_ids)  # (B, T)
        logits.scatter_(1, previous_ids, torch.where(seen > 0, seen / repetition_penalty,
                                                     seen * repetition_penalty))
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


def check_generation_length(model: GPTModel, longest_prompt: int, max_new_tokens: int) -> None:
    """Learned absolute positions end at max_position_embeddings; other positions run on."""
    limit = model.cfg.max_position_embeddings
    if model.cfg.position_embedding_type == "learned_absolute" and longest_prompt + max_new_tokens > limit:
        raise ValueError(
            f"a prompt of {longest_prompt} tokens plus {max_new_tokens} new tokens is longer than "
            f"model.max_position_embeddings={limit} (learned absolute positions end there): "
            "shorten the prompt or generate fewer tokens")


def _left_padded(prompts: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, P] padded on the left (with 0), and the mask of real tokens [B, P]."""
    longest = max(len(prompt) for prompt in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    real = torch.zeros(len(prompts), longest, dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long, device=device)
        real[row, longest - len(prompt):] = True
    return ids, real


@torch.no_grad()
def generate_batch(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_id: int | None = None,
    stop_when: Callable[[list[int]], bool] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    **sampling,
) -> list[list[int]]:
    """The ids generated after each prompt: at most max_new_tokens, ending with stop_id or
    where stop_when(ids so far) says so. sampling: sample_next_token's options."""
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generation needs at least one prompt token in every prompt")
    check_generation_length(model, max(map(len, prompts)), max_new_tokens)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, real = _left_padded(prompts, device)  # (B, P) each
    padded = not bool(real.all())
    positions = (real.cumsum(1) - 1).clamp(min=0)  # (B, P): real tokens count from 0
    cache = None
    if use_cache:
        cfg = model.cfg
        cache = KVCache.allocate(num_layers=cfg.num_layers, batch=len(prompts),
                                 capacity=ids.shape[1] + max_new_tokens,
                                 num_kv_heads=cfg.query_groups, head_dim=cfg.head_dim,
                                 dtype=next(model.parameters()).dtype, device=device)
        if padded:
            cache.key_padding_mask = torch.ones(len(prompts), cache.self_attention[0].keys.shape[1],
                                                dtype=torch.bool, device=device)
            cache.key_padding_mask[:, :ids.shape[1]] = real
    logits = _logits(model, ids, positions, real if padded else None, cache)  # (B, V)
    generated: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        # The left padding is no token seen: stand-in the row's last token, seen anyway.
        seen = torch.where(real, ids, ids[:, -1:])  # (B, T)
        next_ids = sample_next_token(logits, previous_ids=seen, generator=generator, **sampling)
        if stop_id is not None:
            next_ids = next_ids.masked_fill(done, stop_id)
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                generated[row].append(token)
        done |= torch.tensor([token == stop_id or (stop_when is not None and stop_when(row_ids))
                              for token, row_ids in zip(next_ids.tolist(), generated)],
                             device=device)
        if bool(done.all()):
            break
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        real = torch.cat([real, torch.ones_like(real[:, :1])], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
        if use_cache:
            logits = _logits(model, ids[:, -1:], positions[:, -1:], None, cache)
        else:
            logits = _logits(model, ids, positions, real if padded else None, None)
    model.train(was_training)
    return generated


def _logits(model: GPTModel, ids, positions, key_padding_mask, cache) -> torch.Tensor:
    """float logits [B, V] of the last position."""
    hidden = model.hidden_states(ids, positions, kv_cache=cache,
                                 key_padding_mask=key_padding_mask)[:, -1]  # (B, C)
    return torch.nn.functional.linear(hidden, model.output_weight()).float()


def generate_ids(model: GPTModel, prompt_ids: Sequence[int], tokens_to_generate: int,
                 **options) -> list[int]:
    """The ids generated after one prompt (generate_batch's options)."""
    return generate_batch(model, [prompt_ids], tokens_to_generate, **options)[0]


def generate_texts(
    model: GPTModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    tokens_to_generate: int,
    *,
    stop_strings: Sequence[str] = (),
    seed: int = 0,
    use_cache: bool = True,
    **sampling,
) -> list[str]:
    """Each prompt followed by its continuation, as text (decoded together, so the joint keeps
    its spacing), ended at the end-of-document token or before the first stop string."""
    # An empty prompt starts a fresh document, which is what follows an end-of-document token.
    prompt_ids = [tokenizer.encode(prompt) or [tokenizer.eod_id] for prompt in prompts]
    device = next(model.parameters()).device

    def reached_stop_string(ids: list[int]) -> bool:
        return any(stop in tokenizer.decode(ids) for stop in stop_strings)

    new_ids = generate_batch(
        model, prompt_ids, tokens_to_generate, stop_id=tokenizer.eod_id,
        stop_when=reached_stop_string if stop_strings else None, use_cache=use_cache,
        vocab_size=tokenizer.vocab_size, generator=torch.Generator(device=device).manual_seed(seed),
        **sampling)
    texts = []
    for prompt, ids in zip(prompt_ids, new_ids):
        prefix = tokenizer.decode([i for i in prompt if i != tokenizer.eod_id])
        whole = tokenizer.decode([i for i in prompt + ids if i != tokenizer.eod_id])
        # Decoded together the joint keeps its spacing; the prompt's own text is the prefix
        # unless the tokenizer merged across the joint (then stop strings are cut in the whole).
        head = prefix if whole.startswith(prefix) else ""
        continuation = whole[len(head):]
        for stop in stop_strings:
            continuation = continuation.split(stop)[0]
        texts.append(head + continuation)
    return texts


def generate_text(model: GPTModel, tokenizer: Tokenizer, prompt: str, tokens_to_generate: int,
                  **options) -> str:
    """One prompt followed by its continuation, as text (generate_texts' options)."""
    return generate_texts(model, tokenizer, [prompt], tokens_to_generate, **options)[0]
