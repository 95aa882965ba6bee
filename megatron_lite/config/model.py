"""`model.*`: the keys every family has (batch sizes, parallelism, vocabulary, tokenizer,
optimizer), and GPT's model section: those plus one transformer stack and GPT's own keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.data import GPTDataConfig, TokenizerConfig
from megatron_lite.config.nemo import NeMoGPTModelKeys, NeMoModelKeys, NeMoStackKeys
from megatron_lite.config.optim import OptimConfig
from megatron_lite.config.parallel import ParallelKeys, check_context_parallel
from megatron_lite.config.transformer import TransformerConfig

# NeMo's types, and KERPLE's power variant (kerple is its logarithmic one, as in NeMo).
GPT_POSITION_TYPES = ("learned_absolute", "rope", "alibi", "kerple", "kerple_power", "xpos",
                      "sandwich")
ROTARY_TYPES = ("rope", "xpos")
# What a non-finite loss or gradient norm does to a training step (model.non_finite_action).
NON_FINITE_ACTIONS = ("stop", "skip")


@dataclass
class ModelCommonConfig(ParallelKeys):
    micro_batch_size: int = 4
    global_batch_size: int = 8
    make_vocab_size_divisible_by: int = 128
    override_vocab_size: Optional[int] = None
    seed: int = 1234
    # A checkpoint to resume training from when exp_manager finds none to resume (NeMo's GPT YAML
    # interpolates exp_manager.resume_from_checkpoint from it).
    resume_from_checkpoint: Optional[str] = None

    # Precision. megatron_amp_O2 (NeMo: half-precision weights with fp32 master weights in the
    # optimizer) runs as trainer.precision's mixed precision, fp32 weights under autocast: the
    # same or better numerics, more memory. It is noted at start-up.
    megatron_amp_O2: bool = False
    # fp16's dynamic loss scaling: the first scale, the clean steps before it doubles, and the
    # overflowing steps in a row before it halves (NeMo's hysteresis).
    native_amp_init_scale: float = 2.0**32
    native_amp_growth_interval: int = 1000
    hysteresis: int = 2
    # DDP's gradient buckets are the gradients' own storage (saves one copy of the gradients).
    gradient_as_bucket_view: bool = True
    # True: weight decay on every parameter; False: not on biases and norm gains (NeMo's default).
    do_layer_norm_weight_decay: bool = False
    # A non-finite loss or gradient norm: "stop" training with a message naming the step and the
    # first parameter whose gradient is not finite, or "skip" the optimizer step (all ranks
    # agree) and count it in the logged skipped_steps. Under fp16 (trainer.precision=16),
    # overflowing gradients are the loss scaler's to skip; the action applies to the loss.
    non_finite_action: str = "stop"

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def check_common(self) -> None:
        self.check_parallel()
        if self.non_finite_action not in NON_FINITE_ACTIONS:
            raise ValueError(
                f"model.non_finite_action={self.non_finite_action!r} is not one of {NON_FINITE_ACTIONS}"
            )
        if self.native_amp_init_scale <= 0:
            raise ValueError(f"model.native_amp_init_scale must be > 0, got {self.native_amp_init_scale}")
        require_at_least(self, "model.", 1, "native_amp_growth_interval", "hysteresis")
        require_at_least(self, "model.", 1, "micro_batch_size", "global_batch_size",
                         "make_vocab_size_divisible_by")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"model.global_batch_size={self.global_batch_size} is not a multiple of "
                f"model.micro_batch_size={self.micro_batch_size}"
            )
        if self.override_vocab_size is not None and self.override_vocab_size < 1:
            raise ValueError(f"model.override_vocab_size must be >= 1, got {self.override_vocab_size}")
        tp = self.tensor_model_parallel_size
        if self.override_vocab_size is not None and self.override_vocab_size % tp:
            raise ValueError(
                f"model.override_vocab_size={self.override_vocab_size} is not divisible by "
                f"model.tensor_model_parallel_size={tp}: each rank holds an equal share of the "
                "vocabulary"
            )

    def check_tensor_parallel(self, stack: TransformerConfig, prefix: str) -> None:
        """A stack's heads, key/value groups and MLP width split evenly over the
        tensor-parallel ranks, each rank holding whole heads and whole groups."""
        tp = self.tensor_model_parallel_size
        for key, value in (("num_attention_heads", stack.num_attention_heads),
                           ("num_query_groups", stack.query_groups),
                           ("ffn_hidden_size", stack.ffn_hidden_size)):
            if value % tp:
                raise ValueError(
                    f"{prefix}{key}={value} is not divisible by model.tensor_model_parallel_size="
                    f"{tp}: each tensor-parallel rank holds an equal share"
                    + (" of whole key/value groups (GQA)" if key == "num_query_groups" else "")
                )


@dataclass
class GPTModelConfig(NeMoGPTModelKeys, NeMoModelKeys, NeMoStackKeys, ModelCommonConfig, TransformerConfig):
    encoder_seq_length: int = 512
    max_position_embeddings: int = 512
    rotary_percentage: float = 1.0
    rotary_base: float = 10000.0
    seq_len_interpolation_factor: Optional[float] = None
    # xPos's decay scale (Sun et al., 2023: 512); not a NeMo key (NeMo fixes 2048).
    xpos_scale_base: float = 512.0
    share_embeddings_and_output_weights: bool = True

    data: GPTDataConfig = field(default_factory=GPTDataConfig)

    def __post_init__(self) -> None:
        self.check_common()
        self.check_transformer("model.")
        self.check_tensor_parallel(self, "model.")
        require_at_least(self, "model.", 1, "encoder_seq_length", "max_position_embeddings")
        self._check_positions()
        check_context_parallel(self.position_embedding_type, self.context_parallel_size,
                               {"model.encoder_seq_length": self.encoder_seq_length})
        if self.data.seq_length is not None and self.data.seq_length != self.encoder_seq_length:
            raise ValueError(
                f"model.data.seq_length={self.data.seq_length} differs from "
                f"model.encoder_seq_length={self.encoder_seq_length}; they must match"
            )

    def _check_positions(self) -> None:
        position = self.position_embedding_type
        if position not in GPT_POSITION_TYPES:
            raise ValueError(
                f"model.position_embedding_type={position!r} is not one of {GPT_POSITION_TYPES}"
            )
        if position == "learned_absolute" and self.encoder_seq_length > self.max_position_embeddings:
            raise ValueError(
                f"model.encoder_seq_length={self.encoder_seq_length} exceeds "
                f"model.max_position_embeddings={self.max_position_embeddings}: learned absolute "
                "positions have no embedding beyond it"
            )
        self._check_type_specific_keys(position)
        if position in ROTARY_TYPES:
            self._check_rotary()

    def _check_type_specific_keys(self, position: str) -> None:
        """A key that only one position type reads, set away from its default under another
        type, is a mistake (it would be silently ignored)."""
        defaults = GPTModelConfig.__dataclass_fields__
        for key, types in (("rotary_percentage", ("rope",)), ("rotary_base", ROTARY_TYPES),
                           ("seq_len_interpolation_factor", ("rope",)),
                           ("xpos_scale_base", ("xpos",))):
            value = getattr(self, key)
            if position not in types and value != defaults[key].default:
                raise ValueError(
                    f"model.{key}={value} applies to position_embedding_type "
                    f"{' or '.join(types)} only, not {position!r}: remove it or change the type"
                )

    def _check_rotary(self) -> None:
        if not 0.0 < self.rotary_percentage <= 1.0:
            raise ValueError(f"model.rotary_percentage must be in (0, 1], got {self.rotary_percentage}")
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
        if self.xpos_scale_base <= 0:
            raise ValueError(f"model.xpos_scale_base must be > 0, got {self.xpos_scale_base}")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_percentage)
