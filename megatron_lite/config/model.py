"""`model.*`: the GPT architecture, batch sizes, and the tokenizer/data/optim sub-sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_lite.config.data import DataConfig, TokenizerConfig
from megatron_lite.config.optim import OptimConfig

NORMALIZATIONS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu", "squared-relu", "geglu", "reglu", "swiglu")
GATED_ACTIVATIONS = ("geglu", "reglu", "swiglu")
BLOCK_TYPES = ("pre_ln", "post_ln")
POSITION_TYPES = ("learned_absolute", "rope")
FUTURE_POSITION_TYPES = ("alibi", "kerple", "xpos", "sandwich")
CHECKPOINT_METHODS = ("uniform", "block")


@dataclass
class GPTModelConfig:
    micro_batch_size: int = 4
    global_batch_size: int = 8
    # Parallelism beyond data parallel comes with its own issue; until then only 1 / False.
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    sequence_parallel: bool = False

    encoder_seq_length: int = 512
    max_position_embeddings: int = 512
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
    transformer_block_type: str = "pre_ln"
    position_embedding_type: str = "learned_absolute"
    rotary_percentage: float = 1.0
    rotary_base: float = 10000.0
    seq_len_interpolation_factor: Optional[float] = None
    share_embeddings_and_output_weights: bool = True
    make_vocab_size_divisible_by: int = 128
    override_vocab_size: Optional[int] = None
    use_flash_attention: bool = False
    activations_checkpoint_granularity: Optional[str] = None
    activations_checkpoint_method: Optional[str] = None
    activations_checkpoint_num_layers: Optional[int] = None
    seed: int = 1234

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        self._check_parallelism()
        self._check_shapes()
        self._check_choices()
        self._check_activation_checkpointing()

    def _check_parallelism(self) -> None:
        if self.tensor_model_parallel_size != 1 or self.sequence_parallel:
            raise ValueError(
                "model.tensor_model_parallel_size > 1 and model.sequence_parallel=True are not "
                "implemented yet (tensor parallelism comes with its own issue); use data parallel "
                "(trainer.devices)"
            )
        if self.pipeline_model_parallel_size != 1:
            raise ValueError("model.pipeline_model_parallel_size > 1 is not implemented")
        for key in ("micro_batch_size", "global_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"model.global_batch_size={self.global_batch_size} is not a multiple of "
                f"model.micro_batch_size={self.micro_batch_size}"
            )

    def _check_shapes(self) -> None:
        for key in ("encoder_seq_length", "max_position_embeddings", "num_layers", "hidden_size",
                    "ffn_hidden_size", "num_attention_heads", "make_vocab_size_divisible_by"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by "
                f"model.num_attention_heads={self.num_attention_heads} (or set model.kv_channels)"
            )
        if self.kv_channels is not None and self.kv_channels < 1:
            raise ValueError(f"model.kv_channels must be >= 1, got {self.kv_channels}")
        if self.num_query_groups is not None and (
            self.num_query_groups < 1 or self.num_attention_heads % self.num_query_groups
        ):
            raise ValueError(
                f"model.num_attention_heads={self.num_attention_heads} is not divisible by "
                f"model.num_query_groups={self.num_query_groups}"
            )
        if (self.position_embedding_type == "learned_absolute"
                and self.encoder_seq_length > self.max_position_embeddings):
            raise ValueError(
                f"model.encoder_seq_length={self.encoder_seq_length} exceeds "
                f"model.max_position_embeddings={self.max_position_embeddings}: learned absolute "
                "positions have no embedding beyond it"
            )
        for key in ("hidden_dropout", "attention_dropout", "ffn_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"model.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.init_method_std <= 0:
            raise ValueError(f"model.init_method_std must be > 0, got {self.init_method_std}")
        if self.override_vocab_size is not None and self.override_vocab_size < 1:
            raise ValueError(f"model.override_vocab_size must be >= 1, got {self.override_vocab_size}")

    def _check_choices(self) -> None:
        if self.position_embedding_type in FUTURE_POSITION_TYPES:
            raise ValueError(
                f"model.position_embedding_type={self.position_embedding_type!r} is not "
                "implemented yet: it comes with the positional-embeddings work; use one of "
                f"{POSITION_TYPES}"
            )
        for key, allowed in (
            ("position_embedding_type", POSITION_TYPES),
            ("normalization", NORMALIZATIONS),
            ("activation", ACTIVATIONS),
            ("transformer_block_type", BLOCK_TYPES),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key}={getattr(self, key)!r} is not one of {allowed}")
        if self.position_embedding_type == "rope":
            if not 0.0 < self.rotary_percentage <= 1.0:
                raise ValueError(
                    f"model.rotary_percentage must be in (0, 1], got {self.rotary_percentage}"
                )
            rotary = self.head_dim * self.rotary_percentage
            if rotary != int(rotary) or int(rotary) % 2:
                raise ValueError(
                    f"model.rotary_percentage={self.rotary_percentage} of the head dim "
                    f"{self.head_dim} is {rotary}; it must be an even whole number of channels"
                )
            if self.rotary_base <= 0:
                raise ValueError(f"model.rotary_base must be > 0, got {self.rotary_base}")
            if self.seq_len_interpolation_factor is not None and self.seq_len_interpolation_factor < 1:
                raise ValueError(
                    "model.seq_len_interpolation_factor must be >= 1 (positions are divided by "
                    f"it), got {self.seq_len_interpolation_factor}"
                )
        elif self.seq_len_interpolation_factor is not None:
            raise ValueError(
                "model.seq_len_interpolation_factor applies to rotary positions only; set "
                "model.position_embedding_type=rope or leave it null"
            )

    def _check_activation_checkpointing(self) -> None:
        granularity = self.activations_checkpoint_granularity
        if granularity is None:
            if (self.activations_checkpoint_method is not None
                    or self.activations_checkpoint_num_layers is not None):
                raise ValueError(
                    "model.activations_checkpoint_method / _num_layers have no effect unless "
                    "model.activations_checkpoint_granularity=full"
                )
            return
        if granularity != "full":
            raise ValueError(
                f"model.activations_checkpoint_granularity={granularity!r} is not implemented; "
                "only 'full' (or null)"
            )
        if self.activations_checkpoint_method not in CHECKPOINT_METHODS:
            raise ValueError(
                "model.activations_checkpoint_method must be one of "
                f"{CHECKPOINT_METHODS} with granularity 'full', got {self.activations_checkpoint_method!r}"
            )
        layers = self.activations_checkpoint_num_layers
        if layers is None or not 1 <= layers <= self.num_layers:
            raise ValueError(
                f"model.activations_checkpoint_num_layers must be in [1, model.num_layers="
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
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_percentage)

    @property
    def gated_mlp(self) -> bool:
        return self.activation in GATED_ACTIVATIONS
