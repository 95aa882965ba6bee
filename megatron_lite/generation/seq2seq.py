"""Sequence-to-sequence generation from T5: the encoder reads the input once, the decoder
writes the output one token at a time from the start token, greedy or sampled.

With a key/value cache (the default) each step feeds the decoder one token per row: its
self-attention reads the cached keys of the tokens written so far, its cross-attention the keys
and values of the encoder's output, computed at the first step. use_cache=False re-runs the
decoder over every token written so far, the reference the cache must equal.

Text inputs may hold T5's sentinels written out, as in "The <extra_id_0> statement ends a
<extra_id_1>."; the model then writes the masked spans: "<extra_id_0> break<extra_id_1> loop".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from megatron_lite.generation.sampling import sample_next_token
from megatron_lite.models import T5Model
from megatron_lite.modules import KVCache
from megatron_lite.tokenizers import Tokenizer

_SENTINEL = re.compile(r"\s*<extra_id_(\d+)>\s*")


@torch.no_grad()
def generate_seq2seq_ids(
    model: T5Model,
    encoder_ids: torch.Tensor,
    tokens_to_generate: int,
    *,
    start_id: int,
    enc_mask: torch.Tensor | None = None,
    stop_id: int | None = None,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    vocab_size: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The decoder's output ids [B, T] (T <= tokens_to_generate) for encoder_ids [B, S].

    enc_mask: bool [B, S], True on real tokens (None: no padding). Decoding starts from start_id
    (T5 uses the pad token) and ends when every row has written stop_id; a row that has
    stopped repeats stop_id. The sampling options are `sample_next_token`'s.
    """
    max_positions = model.cfg.max_position_embeddings
    for stack, length, what in ((model.cfg.encoder, encoder_ids.shape[1], "the encoder input's length"),
                                (model.cfg.decoder, tokens_to_generate, "tokens_to_generate")):
        if stack.position_embedding_type == "learned_absolute" and length > max_positions:
            raise ValueError(
                f"{what} ({length}) exceeds the learned positions "
                f"(model.max_position_embeddings={max_positions})"
            )
    was_training = model.training
    model.eval()
    encoder_output = model.encode(encoder_ids, enc_mask)  # (B, S, C)
    batch = encoder_ids.shape[0]
    decoded = encoder_ids.new_full((batch, 1), start_id)  # (B, 1 + t)
    stopped = torch.zeros(batch, dtype=torch.bool, device=encoder_ids.device)
    cache = _decoder_cache(model, batch, tokens_to_generate) if use_cache else None
    for _ in range(tokens_to_generate):
        new = decoded if cache is None else decoded[:, -1:]  # with a cache, the last token only
        logits = model.decode(new, encoder_output, enc_mask, kv_cache=cache)[:, -1].float()  # (B, V)
        written = decoded[:, 1:] if decoded.shape[1] > 1 else None  # (B, t): not the start token
        next_ids = sample_next_token(
            logits, greedy=greedy, top_k=top_k, top_p=top_p, temperature=temperature,
            repetition_penalty=repetition_penalty, previous_ids=written, vocab_size=vocab_size,
            generator=generator,
        )  # (B,)
        if stop_id is not None:
            next_ids = next_ids.masked_fill(stopped, stop_id)
            stopped |= next_ids == stop_id
        decoded = torch.cat([decoded, next_ids[:, None]], dim=1)
        if bool(stopped.all()):
            break
    model.train(was_training)
    return decoded[:, 1:]


def _decoder_cache(model: T5Model, batch: int, tokens_to_generate: int) -> KVCache:
    decoder = model.cfg.decoder
    parameter = next(model.parameters())
    return KVCache.allocate(num_layers=decoder.num_layers, batch=batch, capacity=tokens_to_generate,
                            num_kv_heads=decoder.query_groups, head_dim=decoder.head_dim,
                            dtype=parameter.dtype, device=parameter.device, cross_attention=True)


def encode_with_sentinels(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of text in which `<extra_id_n>` stands for sentinel n. The text between
    sentinels is encoded piece by piece, without the spaces next to a sentinel, so each piece
    starts a word as it would after a masked span in the training data."""
    parts = _SENTINEL.split(text)  # text, n, text, n, ..., text
    ids: list[int] = []
    for index, part in enumerate(parts):
        if index % 2:
            ids.append(tokenizer.sentinel_id(int(part)))
        elif part:
            ids.extend(tokenizer.encode(part))
    return ids


def fill_in_spans(input_ids: list[int], output_ids: list[int], sentinel_ids: list[int]) -> list[int]:
    """input_ids with each sentinel replaced by the span that follows the same sentinel in
    output_ids (nothing where the output has no such span)."""
    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for token in output_ids:
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    filled: list[int] = []
    for token in input_ids:
        filled.extend(spans.get(token, []) if token in sentinels else [token])
    return filled


def generate_seq2seq_texts(
    model: T5Model,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    tokens_to_generate: int,
    *,
    seed: int = 0,
    **options,
) -> list[tuple[str, str]]:
    """For each encoder input (sentinels written `<extra_id_n>`, EOS appended): the model's
    output and the prompt with its sentinels filled in from that output, as text. The inputs
    run as one batch, padded on the right and masked. options: generate_seq2seq_ids'."""
    if tokenizer.pad_id is None:
        raise ValueError("T5 generation needs the tokenizer's pad token: it is the decoder's start token")
    prompt_ids = [encode_with_sentinels(tokenizer, prompt) + [tokenizer.eod_id] for prompt in prompts]
    device = next(model.parameters()).device
    longest = max(map(len, prompt_ids))
    encoder_ids = torch.full((len(prompts), longest), tokenizer.pad_id, device=device)  # (B, S)
    for row, ids in enumerate(prompt_ids):
        encoder_ids[row, :len(ids)] = torch.tensor(ids, device=device)
    enc_mask = torch.arange(longest, device=device)[None, :] < torch.tensor(
        [len(ids) for ids in prompt_ids], device=device)[:, None]  # (B, S)
    outputs = generate_seq2seq_ids(
        model, encoder_ids, tokens_to_generate, start_id=tokenizer.pad_id, enc_mask=enc_mask,
        stop_id=tokenizer.eod_id, vocab_size=tokenizer.vocab_size,
        generator=torch.Generator(device=device).manual_seed(seed), **options,
    ).tolist()
    texts = []
    for ids, output in zip(prompt_ids, outputs):
        output = output[: output.index(tokenizer.eod_id)] if tokenizer.eod_id in output else output
        filled = fill_in_spans(ids[:-1], output, tokenizer.sentinel_ids)
        texts.append((tokenizer.decode(output), tokenizer.decode(filled)))
    return texts


def generate_seq2seq_text(model: T5Model, tokenizer: Tokenizer, prompt: str,
                          tokens_to_generate: int, **options) -> tuple[str, str]:
    """generate_seq2seq_texts for one prompt."""
    return generate_seq2seq_texts(model, tokenizer, [prompt], tokens_to_generate, **options)[0]
