"""Perplexity of a GPT checkpoint at multiples of its training length (length extrapolation).

The held-out text is one token stream: the documents of the run's test split (model.data.
splits_string), or every document of an explicitly named data prefix, in file order, each
ending with the eod it was preprocessed with. For each multiple k of the training length
L = model.encoder_seq_length, the stream is cut into non-overlapping windows of k x L tokens and
every token of every window is scored, as in the ALiBi paper's non-overlapping evaluation
(Press et al., 2022). Scoring all positions, not only the last L of each window, keeps the text
and the token count identical at every length and needs no overlapping forward passes; a model
that breaks past L shows it in the positions beyond L, which are a growing share of each window
(half of it at 2x, seven eighths at 8x). The stream is cut to a multiple of the longest window, so
every length scores the very same tokens.

Windows become model inputs through the GPT dataset's `sample_fields`, so the run's
reset_position_ids, reset_attention_mask and eod_mask_loss apply as they did in training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from megatron_lite.config import GPTConfig, GPTModelConfig
from megatron_lite.data import (
    IndexedDataset,
    parse_data_prefix,
    parse_splits_string,
    sample_fields,
    split_boundaries,
)
from megatron_lite.models import GPTModel
from megatron_lite.training import build_tokenizer_from_config, load_model

TEST_SPLIT = 2  # (train, valid, test) in splits_string


@dataclass
class HeldOutText:
    """tokens int64 [T + 1]: T scored tokens and the label of the last one."""

    source: str
    tokens: np.ndarray

    @property
    def num_scored(self) -> int:
        return self.tokens.size - 1


@dataclass
class LengthResult:
    multiple: int
    length: int  # tokens per window: multiple x the training length
    windows: int
    scored_tokens: int
    mean_loss: float | None  # nats per scored token
    perplexity: float | None
    skipped: str | None = None  # why this model cannot run windows this long


@dataclass
class ExtrapolationResult:
    checkpoint: str
    label: str
    config: dict[str, object]  # the model keys that shape positions (see config_essentials)
    held_out: str
    held_out_tokens: int  # scored at every length
    lengths: list[LengthResult]


def interpolation_label(factor: float | None) -> str:
    return "" if factor is None else f" (interpolation x{factor:g})"


def config_essentials(cfg: GPTConfig) -> dict[str, object]:
    """What a reader of a result needs to know about the run: size, budget and positions."""
    model = cfg.model
    essentials: dict[str, object] = {
        "position_embedding_type": model.position_embedding_type,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "num_attention_heads": model.num_attention_heads,
        "encoder_seq_length": model.encoder_seq_length,
        "max_steps": cfg.trainer.max_steps,
        "global_batch_size": model.global_batch_size,
    }
    # Only the keys of this position type: the others are unused and left at their defaults.
    position = model.position_embedding_type
    if position == "learned_absolute":
        essentials["max_position_embeddings"] = model.max_position_embeddings
    if position == "rope":
        essentials["rotary_percentage"] = model.rotary_percentage
        essentials["seq_len_interpolation_factor"] = model.seq_len_interpolation_factor
    if position in ("rope", "xpos"):
        essentials["rotary_base"] = model.rotary_base
    if position == "xpos":
        essentials["xpos_scale_base"] = model.xpos_scale_base
    return essentials


def load_gpt_for_evaluation(checkpoint: str | Path,
                            seq_len_interpolation_factor: float | None = None
                            ) -> tuple[GPTModel, GPTConfig]:
    """The checkpoint's GPT in eval mode, optionally rebuilt with another positional
    interpolation factor (rope only: it changes no parameter, only how positions are scaled)."""
    model, cfg = load_model(checkpoint)
    if not isinstance(cfg, GPTConfig):
        family = type(cfg).__name__.removesuffix("Config")
        raise ValueError(f"{checkpoint} holds a {family} model: length extrapolation evaluates "
                         "GPT checkpoints only")
    if seq_len_interpolation_factor is None:
        return model, cfg
    position = cfg.model.position_embedding_type
    if position != "rope":
        raise ValueError(
            f"seq_len_interpolation_factor={seq_len_interpolation_factor} (positional "
            f"interpolation) applies to rope checkpoints only; {checkpoint} was trained with "
            f"position_embedding_type={position!r}")
    # replace() runs the config's checks again (the factor must be >= 1).
    model_cfg = dataclasses.replace(cfg.model, seq_len_interpolation_factor=seq_len_interpolation_factor)
    rebuilt = GPTModel(model_cfg, model.vocab_size)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    return rebuilt.eval(), dataclasses.replace(cfg, model=model_cfg)


def read_held_out_text(cfg: GPTConfig, multiples: Sequence[int], max_tokens: int,
                       data_prefix: str | None = None) -> HeldOutText:
    """The stream every length is scored on: at most max_tokens scored tokens, a multiple of
    the window that every length divides (the least common multiple of the multiples x L)."""
    if data_prefix is None:
        prefixes, _ = parse_data_prefix(cfg.model.data.data_prefix)
        if len(prefixes) > 1:
            raise ValueError(
                f"the run's model.data.data_prefix blends {len(prefixes)} datasets; name the "
                "held-out data with data_prefix (--data-prefix) instead")
        data_prefix, splits_string = prefixes[0], cfg.model.data.splits_string
    else:
        splits_string = None
    dataset = IndexedDataset(data_prefix)
    sequences = held_out_sequences(dataset, splits_string)
    source = (f"every document of {data_prefix}" if splits_string is None else
              f"the test split (splits_string {splits_string!r}) of {data_prefix}")
    available = int(dataset.sequence_lengths[sequences].sum(dtype=np.int64))
    unit = math.lcm(*multiples) * cfg.model.encoder_seq_length
    if max_tokens < unit:
        raise ValueError(f"max_tokens={max_tokens} is less than one window of {unit} tokens "
                         f"(the lengths {list(multiples)} x {cfg.model.encoder_seq_length} all "
                         "divide it)")
    # One token past the last scored one: it is that token's label.
    num_scored = min(max_tokens, available - 1) // unit * unit
    if num_scored <= 0:
        raise ValueError(f"{source} holds {available} tokens, fewer than one window of {unit} "
                         "tokens and its last label; give more held-out text or shorter lengths")
    return HeldOutText(source, read_tokens(dataset, sequences, num_scored + 1))


def held_out_sequences(dataset: IndexedDataset, splits_string: str | None) -> np.ndarray:
    """Sequence numbers of the test split's documents (all documents if splits_string is None),
    cut between documents as the training run's build_gpt_datasets cuts them."""
    if splits_string is None:
        return np.arange(len(dataset))
    bounds = split_boundaries(parse_splits_string(splits_string), dataset.num_documents)
    first, end = dataset.document_indices[[bounds[TEST_SPLIT], bounds[TEST_SPLIT + 1]]]
    return np.arange(first, end)


def read_tokens(dataset: IndexedDataset, sequences: np.ndarray, count: int) -> np.ndarray:
    """The first `count` tokens of `sequences` read back to back, as int64 [count]."""
    pieces, total = [], 0
    for sequence in sequences:
        if total >= count:
            break
        pieces.append(dataset.get(int(sequence)))
        total += pieces[-1].size
    return np.concatenate(pieces)[:count].astype(np.int64)


def skip_reason(model_cfg: GPTModelConfig, length: int) -> str | None:
    """Why the model cannot run windows of `length` tokens, or None."""
    limit = model_cfg.max_position_embeddings
    if model_cfg.position_embedding_type == "learned_absolute" and length > limit:
        return f"past max_position_embeddings={limit} ({length} tokens)"
    return None


def run_sample_options(cfg: GPTConfig) -> dict[str, object]:
    """sample_fields' keywords as the training run used them."""
    data = cfg.model.data
    return {"eod_id": build_tokenizer_from_config(cfg).eod_id,
            "reset_position_ids": data.reset_position_ids,
            "reset_attention_mask": data.reset_attention_mask,
            "eod_mask_loss": data.eod_mask_loss}


def window_batches(held_out: HeldOutText, length: int, windows_per_batch: int,
                   sample_options: dict[str, object]) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of consecutive non-overlapping windows of `length` tokens, as sample_fields
    makes them: tokens, labels, loss_mask, position_ids, segment_ids, each [B, length]."""
    num_windows = held_out.num_scored // length
    for first in range(0, num_windows, windows_per_batch):
        samples = [
            # length + 1 tokens: the window and the label of its last token.
            sample_fields(held_out.tokens[w * length:(w + 1) * length + 1], **sample_options)
            for w in range(first, min(first + windows_per_batch, num_windows))
        ]
        yield {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


@torch.no_grad()
def perplexity_at(model: GPTModel, cfg: GPTConfig, held_out: HeldOutText, multiple: int,
                  batch_size: int, sample_options: dict[str, object],
                  device: torch.device) -> LengthResult:
    """Perplexity over every scored token of windows `multiple` x the training length.

    batch_size counts windows of the training length: longer windows go fewer to a pass (at
    least one), so that a pass holds about the same number of tokens at every length.
    """
    length = multiple * cfg.model.encoder_seq_length
    num_windows = held_out.num_scored // length
    reason = skip_reason(cfg.model, length)
    if reason is not None:
        return LengthResult(multiple, length, num_windows, 0, None, None, reason)
    reset_attention_mask = sample_options["reset_attention_mask"]
    total_loss, scored = 0.0, 0.0
    for batch in window_batches(held_out, length, max(batch_size // multiple, 1), sample_options):
        batch = {key: value.to(device) for key, value in batch.items()}
        segment_ids = batch["segment_ids"] if reset_attention_mask else None
        logits = model(batch["tokens"], batch["position_ids"], segment_ids)  # (B, S, V)
        losses = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                 reduction="none")  # (B * S,)
        mask = batch["loss_mask"].flatten()  # (B * S,)
        total_loss += float((losses * mask).sum(dtype=torch.float64))
        scored += float(mask.sum(dtype=torch.float64))
    mean_loss = total_loss / scored
    return LengthResult(multiple, length, num_windows, int(scored), mean_loss, math.exp(mean_loss))


def evaluate_checkpoint(checkpoint: str | Path, multiples: Sequence[int], *,
                        seq_len_interpolation_factor: float | None = None,
                        data_prefix: str | None = None, max_tokens: int = 16384,
                        batch_size: int = 8, device: str | torch.device | None = None
                        ) -> ExtrapolationResult:
    """Perplexity of one checkpoint at each multiple of its training length, on the same
    held-out tokens for every multiple (see the module docstring)."""
    if not multiples or any(multiple < 1 for multiple in multiples):
        raise ValueError(f"length multiples must be whole numbers >= 1, got {list(multiples)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_gpt_for_evaluation(checkpoint, seq_len_interpolation_factor)
    model.to(device)
    held_out = read_held_out_text(cfg, multiples, max_tokens, data_prefix)
    sample_options = run_sample_options(cfg)
    lengths = [perplexity_at(model, cfg, held_out, multiple, batch_size, sample_options, device)
               for multiple in multiples]
    label = (cfg.model.position_embedding_type
             + interpolation_label(cfg.model.seq_len_interpolation_factor))
    return ExtrapolationResult(str(checkpoint), label, config_essentials(cfg), held_out.source,
                               held_out.num_scored, lengths)
