"""GPT: token (+ learned position) embedding, a stack of transformer layers, an output layer.

Positions (model.position_embedding_type): learned absolute embeddings; rope or xpos, which
rotate q and k; or a bias of the key - query distance added to the attention scores (alibi,
kerple, kerple_power, sandwich), computed once per forward and shared by every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config import GPTModelConfig
from megatron_lite.modules import (
    KVCache,
    RotaryEmbedding,
    TransformerBlock,
    bias_inputs,
    build_position_bias,
    init_weights,
)


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

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor, length: int) -> torch.Tensor:
        """Embeddings [B, S, C] of tokens [B, S] at position_ids [B, S]; length: the sequence's
        length so far (S, or more when generating with a cache)."""
        x = self.word_embeddings(tokens)  # (B, S, C)
        if self.position_embeddings is not None:
            limit = self.position_embeddings.num_embeddings
            if length > limit:  # an out-of-range lookup would fail deep inside
                raise ValueError(
                    f"a sequence of {length} tokens is longer than "
                    f"model.max_position_embeddings={limit}: learned absolute positions have no "
                    "embedding beyond it")
            x = x + self.position_embeddings(position_ids)
        return self.dropout(x)


class GPTModel(nn.Module):
    def __init__(self, cfg: GPTModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = GPTEmbedding(cfg, vocab_size)
        self.rotary = (RotaryEmbedding(cfg) if cfg.position_embedding_type in ("rope", "xpos")
                       else None)
        self.relative_position_bias = build_position_bias(cfg, bidirectional=False)
        self.decoder = TransformerBlock(cfg)
        self.output_layer = (
            None
            if cfg.share_embeddings_and_output_weights
            else nn.Linear(cfg.hidden_size, vocab_size, bias=False)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_weights(self, self.cfg)

    def hidden_states(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states [B, S, C] for tokens [B, S] (the output layer's input).

        position_ids [B, S] default to the tokens' places in the sequence; segment_ids [B, S]
        restrict attention to tokens of the same packed document (data.reset_attention_mask);
        key_padding_mask bool [B, S] is False on padding (batched prompts). kv_cache:
        generating; tokens are the new ones, after the kv_cache.length stored (whose own mask
        then applies).
        """
        seqlen_q = tokens.shape[1]
        past = 0 if kv_cache is None else kv_cache.length
        seqlen_k = past + seqlen_q
        if position_ids is None:
            position_ids = torch.arange(past, seqlen_k, device=tokens.device).expand_as(tokens)
        x = self.embedding(tokens, position_ids, seqlen_k)  # (B, S, C)
        rotary = self.rotary(position_ids) if self.rotary is not None else None
        attention_inputs = bias_inputs(self.relative_position_bias, seqlen_q, seqlen_k)
        if key_padding_mask is not None:
            attention_inputs["key_padding_mask"] = key_padding_mask
        if kv_cache is not None:
            attention_inputs.update(kv_cache.attention_inputs(seqlen_q))
        return self.decoder(x, rotary, segment_ids, kv_cache=kv_cache, **attention_inputs)  # (B, S, C)

    def output_weight(self) -> torch.Tensor:
        """[V, C]: the output layer's weight, the word embeddings' when they are shared."""
        if self.output_layer is None:
            return self.embedding.word_embeddings.weight
        return self.output_layer.weight

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] for tokens [B, S] (see hidden_states)."""
        hidden = self.hidden_states(tokens, position_ids, segment_ids, kv_cache)  # (B, S, C)
        return F.linear(hidden, self.output_weight())
