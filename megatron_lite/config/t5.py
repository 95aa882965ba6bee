"""The root of `conf/megatron_t5_config.yaml`: T5's model section with its two stacks.

`model.encoder` and `model.decoder` come from `conf/megatron_model_base_config.yaml` (one file,
included twice, as in NeMo); each is a TransformerConfig plus T5's relative-position keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.data import T5DataConfig, TokenizerConfig
from megatron_lite.config.model import ModelCommonConfig
from megatron_lite.config.nemo import NeMoModelKeys, NeMoStackKeys, NeMoT5StackKeys, fixed
from megatron_lite.config.run import RunConfig
from megatron_lite.config.transformer import TransformerConfig

# NeMo's types for a T5 stack, and KERPLE's power variant (kerple is its logarithmic one).
T5_POSITION_TYPES = ("learned_absolute", "relative", "alibi", "kerple", "kerple_power")


@dataclass
class T5StackConfig(NeMoT5StackKeys, NeMoStackKeys, TransformerConfig):
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    relative_position_bias_self_attention_only: bool = True

    def check_stack(self, prefix: str, *, bidirectional: bool) -> None:
        self.check_transformer(prefix)
        position = self.position_embedding_type
        if position not in T5_POSITION_TYPES:
            raise ValueError(
                f"{prefix}position_embedding_type={position!r} is not implemented for T5; use one "
                f"of {T5_POSITION_TYPES}"
            )
        if not self.relative_position_bias_self_attention_only:
            raise ValueError(
                f"{prefix}relative_position_bias_self_attention_only=False is not implemented: the "
                "positional biases apply to self-attention, never to cross-attention"
            )
        if position == "relative":
            self._check_buckets(prefix, bidirectional)

    def _check_buckets(self, prefix: str, bidirectional: bool) -> None:
        """T5's buckets: per direction, the first half are exact distances 0..max_exact-1, the
        rest log-spaced from max_exact up to max_distance. That needs max_exact >= 1 and
        max_exact < max_distance, or the log-spaced buckets have no distances to cover."""
        buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
        # Exact buckets per direction: a quarter of them (bidirectional), or half (causal).
        factor = 4 if bidirectional else 2
        max_exact = buckets // factor
        kind = "bidirectional (encoder)" if bidirectional else "causal (decoder)"
        if max_exact < 1:
            raise ValueError(
                f"{prefix}relative_attention_num_buckets={buckets} is too few: {kind} buckets need "
                f"at least {factor}"
            )
        if max_exact >= distance:
            raise ValueError(
                f"{prefix}relative_attention_num_buckets={buckets} is larger than "
                f"{prefix}relative_attention_max_distance={distance} allows: {kind} buckets give "
                f"distances 0..{max_exact - 1} a bucket each, so the log-spaced buckets would have "
                f"to start at or beyond max_distance; use fewer than {factor * distance} buckets "
                "or a larger max_distance"
            )


@dataclass
class T5ModelConfig(NeMoModelKeys, ModelCommonConfig):
    seq_length: int = 512  # encoder length; the decoder's is data.seq_length_dec
    max_position_embeddings: int = 512
    pipeline_model_parallel_split_rank: int = fixed(0, "no pipeline parallelism")
    # The word embeddings' init std. The model initialises them with model.encoder.init_method_std
    # (a decoder table of its own with the decoder's), which this must equal when set.
    embedding_init_method_std: Optional[float] = None
    embedding_dropout: float = 0.1
    share_token_embeddings: bool = True  # one word-embedding table for encoder and decoder
    share_decoder_tokens_head_embeddings: bool = True  # the output layer is that table
    tokens_head_bias: bool = True

    # NeMo's 100 sentinels: T5 cannot go without them.
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(num_sentinel_tokens=100))
    encoder: T5StackConfig = field(default_factory=T5StackConfig)
    decoder: T5StackConfig = field(default_factory=T5StackConfig)
    data: T5DataConfig = field(default_factory=T5DataConfig)

    def __post_init__(self) -> None:
        self.check_common()
        self.encoder.check_stack("model.encoder.", bidirectional=True)
        self.decoder.check_stack("model.decoder.", bidirectional=False)
        self.check_tensor_parallel(self.encoder, "model.encoder.")
        self.check_tensor_parallel(self.decoder, "model.decoder.")
        if self.context_parallel_size != 1:
            raise ValueError(
                f"model.context_parallel_size={self.context_parallel_size} is not implemented for "
                "T5 (context parallelism splits GPT's sequences only); use model.fsdp=True or "
                "tensor parallel"
            )
        if self.encoder.hidden_size != self.decoder.hidden_size:
            raise ValueError(
                f"model.encoder.hidden_size={self.encoder.hidden_size} and "
                f"model.decoder.hidden_size={self.decoder.hidden_size} differ; they must match: "
                "the decoder's cross-attention reads the encoder's output, and the stacks share "
                "the word embeddings"
            )
        require_at_least(self, "model.", 1, "seq_length", "max_position_embeddings")
        if (self.embedding_init_method_std is not None
                and self.embedding_init_method_std != self.encoder.init_method_std):
            raise ValueError(
                f"model.embedding_init_method_std={self.embedding_init_method_std} differs from "
                f"model.encoder.init_method_std={self.encoder.init_method_std}: the embeddings are "
                "initialised with the encoder's std; set both alike"
            )
        if not 0.0 <= self.embedding_dropout < 1.0:
            raise ValueError(f"model.embedding_dropout must be in [0, 1), got {self.embedding_dropout}")
        if self.data.seq_length is not None and self.data.seq_length != self.seq_length:
            raise ValueError(
                f"model.data.seq_length={self.data.seq_length} differs from "
                f"model.seq_length={self.seq_length}; they must match"
            )
        for stack, key, length in (("encoder", "model.seq_length", self.seq_length),
                                   ("decoder", "model.data.seq_length_dec", self.data.seq_length_dec)):
            if (getattr(self, stack).position_embedding_type == "learned_absolute"
                    and length > self.max_position_embeddings):
                raise ValueError(
                    f"{key}={length} exceeds model.max_position_embeddings="
                    f"{self.max_position_embeddings}: the {stack}'s learned absolute positions "
                    "have no embedding beyond it"
                )
        if self.tokenizer.num_sentinel_tokens < 1:
            raise ValueError(
                "model.tokenizer.num_sentinel_tokens=0: T5's span corruption marks every masked "
                "span with a sentinel token <extra_id_n> appended to the vocabulary; set it (NeMo "
                "uses 100)"
            )


@dataclass
class T5Config(RunConfig):
    name: str = "megatron_t5"
    model: T5ModelConfig = field(default_factory=T5ModelConfig)

    def startup_notes(self) -> list[str]:
        notes = super().startup_notes()
        data = self.model.data
        if data.mean_ngram_size is None:
            notes.append(
                f"model.data.mean_ngram_size=null: masked spans have T5's mean length of "
                f"{data.mean_span_length:g} tokens (NeMo draws n-grams up to max_ngram_size instead)"
            )
        return notes
