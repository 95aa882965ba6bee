"""Key/value caches for generation: each step feeds only the new tokens, whose queries attend to
every key so far through the same attention call as training (the kernel with Sq < Sk, aligned
bottom-right, biases included).

A self-attention cache holds each layer's keys and values in buffers allocated once for the
whole generation; a cross-attention cache holds the keys and values of the encoder's output,
computed at the first step and reused after.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class SelfAttentionCache:
    """One layer's keys and values [B, capacity, Hkv, D]; the first `length` positions hold
    tokens seen so far."""
    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' k, v [B, n, Hkv, D]; the keys and values of every token so far
        (views [B, length, Hkv, D])."""
        end = self.length + k.shape[1]
        if end > self.keys.shape[1]:
            raise ValueError(f"the key/value cache holds {self.keys.shape[1]} positions; "
                             f"{end} were asked for")
        self.keys[:, self.length:end] = k
        self.values[:, self.length:end] = v
        self.length = end
        return self.keys[:, :end], self.values[:, :end]


@dataclasses.dataclass
class CrossAttentionCache:
    """One decoder layer's keys and values of the encoder's output, once computed."""
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None


@dataclasses.dataclass
class KVCache:
    """The caches of a stack's layers, and the padding mask of every position stored [B,
    capacity] (True on real tokens: batched prompts of several lengths are padded on the left;
    None without padding)."""
    self_attention: list[SelfAttentionCache]
    cross_attention: list[CrossAttentionCache] | None
    key_padding_mask: torch.Tensor | None = None

    @classmethod
    def allocate(cls, *, num_layers: int, batch: int, capacity: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device,
                 cross_attention: bool = False) -> "KVCache":
        def buffer() -> torch.Tensor:
            return torch.empty(batch, capacity, num_kv_heads, head_dim, dtype=dtype, device=device)

        return cls(
            self_attention=[SelfAttentionCache(buffer(), buffer()) for _ in range(num_layers)],
            cross_attention=[CrossAttentionCache() for _ in range(num_layers)] if cross_attention else None,
        )

    @property
    def length(self) -> int:
        return self.self_attention[0].length

    def attention_inputs(self, new_tokens: int) -> dict[str, torch.Tensor]:
        """The key padding mask of every position once `new_tokens` more are stored."""
        if self.key_padding_mask is None:
            return {}
        return {"key_padding_mask": self.key_padding_mask[:, :self.length + new_tokens]}

    def layer(self, index: int) -> tuple[SelfAttentionCache, CrossAttentionCache | None]:
        cross = None if self.cross_attention is None else self.cross_attention[index]
        return self.self_attention[index], cross
