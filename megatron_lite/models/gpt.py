"""GPT: token (+ learned position) embedding, a stack of transformer layers, an output layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config import GPTModelConfig
from megatron_lite.modules import RotaryEmbedding, TransformerBlock, init_weights


class GPTEmbedding(nn.Module):
    def __init__(self, cfg: GPTModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, cfg.hidden_size)
        self.position_embeddings = (
            nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
            if cfg.position_embedding_type == "learned_absolute"
            else None
        )
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(tokens)  # (B, S, C)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids)
        return self.dropout(x)


class GPTModel(nn.Module):
    def __init__(self, cfg: GPTModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = GPTEmbedding(cfg, vocab_size)
        self.rotary = RotaryEmbedding(cfg) if cfg.position_embedding_type == "rope" else None
        self.decoder = TransformerBlock(cfg)
        self.output_layer = (
            None
            if cfg.share_embeddings_and_output_weights
            else nn.Linear(cfg.hidden_size, vocab_size, bias=False)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_weights(self, self.cfg)

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] for tokens [B, S].

        position_ids [B, S] default to 0..S-1; segment_ids [B, S] restrict attention to tokens of
        the same packed document (data.reset_attention_mask).
        """
        if position_ids is None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        x = self.embedding(tokens, position_ids)  # (B, S, C)
        rotary = self.rotary(position_ids) if self.rotary is not None else None
        x = self.decoder(x, rotary, segment_ids)  # (B, S, C)
        if self.output_layer is None:
            return F.linear(x, self.embedding.word_embeddings.weight)  # (B, S, V)
        return self.output_layer(x)  # (B, S, V)
