"""T5: an encoder stack and a decoder stack over word embeddings, and an output layer.

The encoder reads the corrupted text with bidirectional self-attention, its padding masked as
keys; the decoder reads the target shifted right with causal self-attention, then attends to
the encoder's output (cross-attention, the encoder's padding masked). Positions per stack:
learned absolute embeddings, or a bias of the key - query distance in self-attention, computed
once per forward and shared by the stack's layers: T5's relative bias (one table per stack),
ALiBi or KERPLE. The word embeddings are shared between the stacks and with the output
layer, or not, as share_token_embeddings / share_decoder_tokens_head_embeddings say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config import T5ModelConfig, T5StackConfig
from megatron_lite.modules import KVCache, TransformerBlock, bias_inputs, build_position_bias, init_weights


class T5Stack(nn.Module):
    """One side of T5: its position handling, embedding dropout and transformer layers."""

    def __init__(self, cfg: T5StackConfig, *, decoder: bool, max_position_embeddings: int,
                 embedding_dropout: float) -> None:
        super().__init__()
        position = cfg.position_embedding_type
        self.position_embeddings = (
            nn.Embedding(max_position_embeddings, cfg.hidden_size)
            if position == "learned_absolute" else None
        )
        self.relative_position_bias = build_position_bias(cfg, bidirectional=not decoder)
        self.dropout = nn.Dropout(embedding_dropout)
        self.block = TransformerBlock(cfg, causal=decoder, cross_attention=decoder)

    def forward(
        self,
        x: torch.Tensor,
        *,
        key_padding_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_padding_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Word embeddings x [B, S, C] -> hidden states [B, S, C]. kv_cache: generating; x
        holds the new positions, after the kv_cache.length stored."""
        seqlen_q = x.shape[1]
        past = 0 if kv_cache is None else kv_cache.length
        if self.position_embeddings is not None:
            x = x + self.position_embeddings.weight[past:past + seqlen_q]
        attention_inputs = {"key_padding_mask": key_padding_mask,
                            **bias_inputs(self.relative_position_bias, seqlen_q, past + seqlen_q)}
        if kv_cache is not None:
            attention_inputs.update(kv_cache.attention_inputs(seqlen_q))
        return self.block(
            self.dropout(x),
            context=context,
            context_padding_mask=context_padding_mask,
            kv_cache=kv_cache,
            **attention_inputs,
        )


class T5Model(nn.Module):
    def __init__(self, cfg: T5ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        hidden = cfg.encoder.hidden_size  # the decoder's too (checked by the config)
        stack_options = dict(max_position_embeddings=cfg.max_position_embeddings,
                             embedding_dropout=cfg.embedding_dropout)
        # The encoder's word embeddings, and the decoder's unless share_token_embeddings=False.
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.decoder_word_embeddings = None if cfg.share_token_embeddings else nn.Embedding(vocab_size, hidden)
        self.encoder = T5Stack(cfg.encoder, decoder=False, **stack_options)
        self.decoder = T5Stack(cfg.decoder, decoder=True, **stack_options)
        self.output_layer = (
            None if cfg.share_decoder_tokens_head_embeddings
            else nn.Linear(hidden, vocab_size, bias=False)
        )
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if cfg.tokens_head_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Megatron's init, each stack with its own init_method_std and depth; the word
        embeddings with the encoder's std, the decoder's own table and the output layer with
        the decoder's."""
        init_weights(self.encoder, self.cfg.encoder)
        init_weights(self.decoder, self.cfg.decoder)
        nn.init.normal_(self.word_embeddings.weight, std=self.cfg.encoder.init_method_std)
        for layer in (self.decoder_word_embeddings, self.output_layer):
            if layer is not None:
                nn.init.normal_(layer.weight, std=self.cfg.decoder.init_method_std)
        if self.output_bias is not None:
            nn.init.zeros_(self.output_bias)

    def _decoder_embeddings(self) -> nn.Embedding:
        return self.word_embeddings if self.decoder_word_embeddings is None else self.decoder_word_embeddings

    def encode(self, text_enc: torch.Tensor, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output [B, S, C] for tokens text_enc [B, S]; enc_mask bool [B, S] is True
        on real tokens (None: no padding)."""
        return self.encoder(self.word_embeddings(text_enc), key_padding_mask=enc_mask)

    def decoder_hidden_states(self, text_dec: torch.Tensor, encoder_output: torch.Tensor,
                              enc_mask: torch.Tensor | None = None,
                              kv_cache: KVCache | None = None) -> torch.Tensor:
        """The decoder's final hidden states [B, Sd, C] for decoder inputs text_dec [B, Sd] (the
        start token, then the target shifted right) given the encoder's output [B, S, C] and
        its mask. kv_cache: generating (text_dec holds the new tokens only)."""
        return self.decoder(self._decoder_embeddings()(text_dec), context=encoder_output,
                            context_padding_mask=enc_mask, kv_cache=kv_cache)

    def output_weight(self) -> torch.Tensor:
        """[V, C]: the output layer's weight, the decoder's word embeddings' when shared."""
        return self._decoder_embeddings().weight if self.output_layer is None else self.output_layer.weight

    def decode(self, text_dec: torch.Tensor, encoder_output: torch.Tensor,
               enc_mask: torch.Tensor | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Logits [B, Sd, V] (see decoder_hidden_states)."""
        y = self.decoder_hidden_states(text_dec, encoder_output, enc_mask, kv_cache)  # (B, Sd, C)
        return F.linear(y, self.output_weight(), self.output_bias)  # (B, Sd, V)

    def forward(self, text_enc: torch.Tensor, text_dec: torch.Tensor,
                enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, Sd, V] (teacher forcing)."""
        return self.decode(text_dec, self.encode(text_enc, enc_mask), enc_mask)
