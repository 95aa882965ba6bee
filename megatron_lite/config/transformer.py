"""One transformer stack's architecture: GPT's `model.*`, T5's `model.encoder.*` / `model.decoder.*`.

NeMo names these keys alike in both places (megatron_gpt_config.yaml and
megatron_model_base_config.yaml), so one dataclass holds them and the modules take it whatever
the family. The checks that depend on where the stack sits (which position types a family has,
sequence lengths) are the family's; `check_transformer` runs the rest, with the key prefix the
user wrote (`model.`, `model.encoder.`, `model.decoder.`) in its messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from megatron_lite.config.checks import require_at_least
NORMALIZATIONS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu", "squared-relu", "geglu", "reglu", "swiglu")
GATED_ACTIVATIONS = ("geglu", "reglu", "swiglu")
GELU_ACTIVATIONS = ("gelu", "geglu")
BLOCK_TYPES = ("pre_ln", "post_ln")
CHECKPOINT_GRANULARITIES = ("full", "selective")
CHECKPOINT_METHODS = ("uniform", "block")


@dataclass
class TransformerConfig:
    num_layers: int = 12
    hidden_size: int = 768
    ffn_hidden_size: int = 3072
    num_attention_heads: int = 12
    num_query_groups: Optional[int] = None  # null: one key/value head per query head
    kv_channels: Optional[int] = None  # head dim; null: hidden_size // num_attention_heads
    init_method_std: float = 0.02
    use_scaled_init_method: bool = True
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    ffn_dropout: float = 0.0
    normalization: str = "layernorm"
    layernorm_epsilon: float = 1e-5
    bias: bool = True
    activation: str = "gelu"
    # NeMo's: the tanh approximation of GELU (OpenAI's GPT-2, T5.1.1) for gelu / geglu.
    openai_gelu: bool = False
    transformer_block_type: str = "pre_ln"
    position_embedding_type: str = "learned_absolute"
    # False: softmax(q k^T) without the 1 / sqrt(head dim) factor, as T5 was trained.
    normalize_attention_scores: bool = True
    use_flash_attention: bool = False
    # torch.compile the stack's layers for training (the flash kernel is a custom op in the graph)
    torch_compile: bool = False
    # full: recompute whole layers (method, num_layers); selective: every layer keeps its
    # attention's inputs, output and lse and recomputes the rest (norms, projections, MLP)
    activations_checkpoint_granularity: Optional[str] = None
    activations_checkpoint_method: Optional[str] = None
    activations_checkpoint_num_layers: Optional[int] = None

    def check_transformer(self, prefix: str) -> None:
        """ValueError naming `prefix + key` for a value no stack can have."""
        self._check_shapes(prefix)
        for key, allowed in (
            ("normalization", NORMALIZATIONS),
            ("activation", ACTIVATIONS),
            ("transformer_block_type", BLOCK_TYPES),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{prefix}{key}={getattr(self, key)!r} is not one of {allowed}")
        if self.openai_gelu and self.activation not in GELU_ACTIVATIONS:
            raise ValueError(f"{prefix}openai_gelu=True chooses the tanh GELU, but "
                             f"{prefix}activation={self.activation!r} has no GELU: use one of "
                             f"{GELU_ACTIVATIONS}")
        self._check_activation_checkpointing(prefix)

    def _check_shapes(self, prefix: str) -> None:
        require_at_least(self, prefix, 1, "num_layers", "hidden_size", "ffn_hidden_size",
                         "num_attention_heads")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{prefix}hidden_size={self.hidden_size} is not divisible by "
                f"{prefix}num_attention_heads={self.num_attention_heads} (or set {prefix}kv_channels)"
            )
        if self.kv_channels is not None and self.kv_channels < 1:
            raise ValueError(f"{prefix}kv_channels must be >= 1, got {self.kv_channels}")
        if self.num_query_groups is not None and (
            self.num_query_groups < 1 or self.num_attention_heads % self.num_query_groups
        ):
            raise ValueError(
                f"{prefix}num_attention_heads={self.num_attention_heads} is not divisible by "
                f"{prefix}num_query_groups={self.num_query_groups}"
            )
        for key in ("hidden_dropout", "attention_dropout", "ffn_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{prefix}{key} must be in [0, 1), got {getattr(self, key)}")
        if self.init_method_std <= 0:
            raise ValueError(f"{prefix}init_method_std must be > 0, got {self.init_method_std}")

    def _check_activation_checkpointing(self, prefix: str) -> None:
        granularity = self.activations_checkpoint_granularity
        if granularity is None:
            # As in NeMo, method and num_layers are read only with a granularity (NeMo's base
            # config sets num_layers: 1 with granularity null).
            return
        if granularity not in CHECKPOINT_GRANULARITIES:
            raise ValueError(
                f"{prefix}activations_checkpoint_granularity={granularity!r} is not one of "
                f"{CHECKPOINT_GRANULARITIES} (or null)"
            )
        if granularity == "selective":
            return  # every layer, as in NeMo: method and num_layers are not read
        if self.activations_checkpoint_method not in CHECKPOINT_METHODS:
            raise ValueError(
                f"{prefix}activations_checkpoint_method must be one of {CHECKPOINT_METHODS} with "
                f"granularity 'full', got {self.activations_checkpoint_method!r}"
            )
        layers = self.activations_checkpoint_num_layers
        if layers is None or not 1 <= layers <= self.num_layers:
            raise ValueError(
                f"{prefix}activations_checkpoint_num_layers must be in [1, {prefix}num_layers="
                f"{self.num_layers}], got {layers}"
            )

    # Derived values (properties, so the saved config holds only what the user set).

    @property
    def head_dim(self) -> int:
        if self.kv_channels is not None:
            return self.kv_channels
        return self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        if self.num_query_groups is not None:
            return self.num_query_groups
        return self.num_attention_heads

    @property
    def gated_mlp(self) -> bool:
        return self.activation in GATED_ACTIVATIONS

    @property
    def softmax_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.normalize_attention_scores else 1.0
