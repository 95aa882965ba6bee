"""Loss and perplexity of a checkpoint (ours, or a Hugging Face folder) on held-out text.

The text is one token stream, documents in order, each ending with its eod: every document of a
.bin/.idx prefix, or of one split of it (model.data.splits_string's cut between documents, as
training makes it), or the records of a jsonl file tokenized with the checkpoint's tokenizer.

- GPT: the stream is cut into non-overlapping windows of the training length
  (model.encoder_seq_length, or seq_length) and every position of every whole window is scored
  on its next token, through length_extrapolation's window scoring, so the run's
  reset_position_ids / reset_attention_mask / eod_mask_loss apply as in training. The tail
  shorter than a window is left out.
- T5: the stream is cut into the raw windows of T5 pretraining and each is span-corrupted as the
  training data is (the rng of window i seeded with (seed, i), model.data.masked_lm_prob and
  mean span length); every target token is scored, teacher-forced.

The loss is the mean over all scored tokens (not of per-batch means), the perplexity its exp.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from megatron_lite.config import GPTConfig, T5Config
from megatron_lite.data import (
    IndexedDataset,
    corrupt_spans,
    corrupted_lengths,
    parse_splits_string,
    raw_length_for_encoder,
    split_boundaries,
    t5_sample_fields,
    t5_sample_lengths,
)
from megatron_lite.evaluation.length_extrapolation import (
    HeldOutText,
    perplexity_at,
    read_tokens,
    run_sample_options,
)
from megatron_lite.models import T5Model
from megatron_lite.tokenizers import Tokenizer
from megatron_lite.training import build_tokenizer_from_config, load_model

SPLITS = ("train", "valid", "test")  # splits_string's three parts, in order


@dataclass
class PerplexityResult:
    checkpoint: str
    family: str
    data: str  # what was scored
    window: int  # tokens per window (GPT), or the encoder length (T5)
    windows: int
    scored_tokens: int
    mean_loss: float  # nats per scored token
    perplexity: float


def split_sequences(dataset: IndexedDataset, split: str | None, splits_string: str) -> np.ndarray:
    """Sequence numbers of one split's documents (all of them for split None), cut between
    documents as build_gpt_datasets cuts them."""
    if split is None:
        return np.arange(len(dataset))
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    part = SPLITS.index(split)
    bounds = split_boundaries(parse_splits_string(splits_string), dataset.num_documents)
    first, end = dataset.document_indices[[bounds[part], bounds[part + 1]]]
    return np.arange(first, end)


def indexed_text(data_prefix: str, split: str | None, splits_string: str) -> HeldOutText:
    dataset = IndexedDataset(data_prefix)
    sequences = split_sequences(dataset, split, splits_string)
    count = int(dataset.sequence_lengths[sequences].sum(dtype=np.int64))
    if count == 0:
        raise ValueError(f"the {split} split (splits_string {splits_string!r}) of {data_prefix} "
                         "holds no documents")
    source = (f"every document of {data_prefix}" if split is None else
              f"the {split} split (splits_string {splits_string!r}) of {data_prefix}")
    return HeldOutText(source, read_tokens(dataset, sequences, count))


def jsonl_text(path: str, tokenizer: Tokenizer, text_key: str) -> HeldOutText:
    """The records' `text_key` fields, tokenized, each followed by the eod."""
    tokens: list[int] = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                raise ValueError(f"{path}, line {number}: no string field {text_key!r}")
            tokens += tokenizer.encode(record[text_key]) + [tokenizer.eod_id]
    return HeldOutText(f"the {text_key!r} fields of {path}", np.asarray(tokens, dtype=np.int64))


def gpt_perplexity(model: torch.nn.Module, cfg: GPTConfig, text: HeldOutText, seq_length: int | None,
                   batch_size: int, device: torch.device) -> tuple[int, int, int, float]:
    """(window, windows, scored tokens, mean loss) over the whole windows of the stream."""
    window = seq_length or cfg.model.encoder_seq_length
    # replace() checks the length against learned positions (max_position_embeddings).
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoder_seq_length=window))
    if text.num_scored < window:
        raise ValueError(f"{text.source} holds {text.tokens.size} tokens, fewer than one window of "
                         f"{window} and its last label; give more text or a shorter seq_length")
    result = perplexity_at(model, cfg, text, 1, batch_size, run_sample_options(cfg), device)
    return window, result.windows, result.scored_tokens, result.mean_loss


def t5_batches(cfg: T5Config, tokenizer: Tokenizer, text: HeldOutText, seq_length: int,
               seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Span-corrupted samples of consecutive raw windows, as T5's training data makes them."""
    data = cfg.model.data
    if tokenizer.pad_id is None:
        raise ValueError("the tokenizer has no pad token, which T5 pads with and starts the decoder with")
    raw_length = raw_length_for_encoder(seq_length, data.masked_lm_prob, data.mean_span_length)
    _, target_length = corrupted_lengths(raw_length, data.masked_lm_prob, data.mean_span_length)
    # Checks the sentinel count; the decoder length is that of the targets.
    t5_sample_lengths(seq_length, target_length, data.masked_lm_prob, data.mean_span_length,
                      tokenizer.num_sentinel_tokens)
    num_windows = text.tokens.size // raw_length
    if num_windows == 0:
        raise ValueError(f"{text.source} holds {text.tokens.size} tokens, fewer than one T5 window of "
                         f"{raw_length} (for seq_length {seq_length}); give more text")
    corruption = dict(sentinel_ids=tokenizer.sentinel_ids, eod_id=tokenizer.eod_id,
                      masked_lm_prob=data.masked_lm_prob, mean_ngram_size=data.mean_span_length)
    for first in range(0, num_windows, batch_size):
        samples = []
        for index in range(first, min(first + batch_size, num_windows)):
            window = text.tokens[index * raw_length:(index + 1) * raw_length]
            encoder_input, target = corrupt_spans(window, np.random.default_rng([seed, index]), **corruption)
            samples.append(t5_sample_fields(encoder_input, target, seq_length=seq_length,
                                            seq_length_dec=target_length, pad_id=tokenizer.pad_id))
        yield {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


@torch.no_grad()
def t5_perplexity(model: T5Model, batches: Iterator[dict[str, torch.Tensor]],
                  device: torch.device) -> tuple[int, int, float]:
    """(windows, scored tokens, mean loss) of the batches' targets."""
    total_loss, scored, windows = 0.0, 0.0, 0
    for batch in batches:
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = model(batch["text_enc"], batch["text_dec"], batch["enc_mask"])  # (B, Sd, V)
        losses = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                 reduction="none")  # (B * Sd,)
        mask = batch["loss_mask"].flatten()
        total_loss += float((losses * mask).sum(dtype=torch.float64))
        scored += float(mask.sum(dtype=torch.float64))
        windows += batch["text_enc"].shape[0]
    return windows, int(scored), total_loss / scored


def evaluate_perplexity(checkpoint: str | Path, *, data_prefix: str | None = None,
                        jsonl: str | None = None, split: str | None = None,
                        splits_string: str | None = None, text_key: str = "text",
                        seq_length: int | None = None, batch_size: int = 8,
                        seed: int | None = None, device: str | torch.device | None = None
                        ) -> PerplexityResult:
    """Loss and perplexity of a checkpoint (.ckpt or Hugging Face folder) on a .bin/.idx prefix
    (all of it, or `split` of it by splits_string, default the checkpoint's) or a jsonl file.
    seq_length: GPT's window or T5's encoder length (default: the checkpoint's); seed: T5's
    corruption (default model.seed)."""
    if (data_prefix is None) == (jsonl is None):
        raise ValueError("name the text to score: a .bin/.idx data prefix or a jsonl file (one of them)")
    if jsonl is not None and split is not None:
        raise ValueError("a split applies to a .bin/.idx data prefix, not to a jsonl file")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_model(checkpoint)
    model.to(device)
    tokenizer = build_tokenizer_from_config(cfg)
    if jsonl is not None:
        text = jsonl_text(jsonl, tokenizer, text_key)
    else:
        text = indexed_text(data_prefix, split, splits_string or cfg.model.data.splits_string)
    if isinstance(cfg, T5Config):
        length = seq_length or cfg.model.seq_length
        batches = t5_batches(cfg, tokenizer, text, length,
                             cfg.model.seed if seed is None else seed, batch_size)
        windows, scored, mean_loss = t5_perplexity(model, batches, device)
    else:
        length, windows, scored, mean_loss = gpt_perplexity(model, cfg, text, seq_length, batch_size,
                                                            device)
    family = "t5" if isinstance(cfg, T5Config) else "gpt"
    return PerplexityResult(str(checkpoint), family, text.source, length, windows, scored,
                            mean_loss, math.exp(mean_loss))


def describe(result: PerplexityResult) -> str:
    what = "encoder length" if result.family == "t5" else "window"
    return (f"{result.checkpoint} ({result.family}) on {result.data}: loss {result.mean_loss:.4f}, "
            f"perplexity {result.perplexity:.3f} ({result.scored_tokens} tokens scored, "
            f"{result.windows} windows, {what} {result.window})")

