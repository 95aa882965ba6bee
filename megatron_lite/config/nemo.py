"""NeMo 1.23's keys that have no feature of their own here, so that a NeMo YAML loads verbatim.

Every key of NeMo's megatron_gpt_config.yaml, megatron_t5_config.yaml and
megatron_model_base_config.yaml is a field of our schema. Most are implemented with NeMo's
meaning; the rest are of two kinds, marked in the field's metadata by the helpers below:

- `ignored(reason)`: a knob that only picks how NeMo computes something we compute our own way
  (apex / Transformer Engine fusions, NCCL and pipeline communication, timers, profilers). Its
  default is None, "not set"; a value set in a YAML file or on the command line is listed once at
  start-up (`ignored_keys`), with its reason.
- `fixed(value, reason)`: a feature we do not have, accepted at the value that turns it off
  (NeMo's default). Any other value stops at start-up with `<key>=<value> is not implemented:
  <reason>` (`check_fixed_keys`).

The mixins group the keys by the section they sit in; the schema's dataclasses inherit them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

_IGNORED = "nemo_ignored"
_FIXED = "nemo_fixed"

# Reasons a key is ignored, as the start-up line prints them.
FUSION = "an apex / Megatron fused kernel or numerics switch (our kernels are our own)"
COMMUNICATION = "NCCL, DDP or pipeline communication tuning"
PROFILING = "timers, profilers, logging or memory housekeeping"
TRANSFORMER_ENGINE = "Transformer Engine and fp8 settings (fp8 itself is refused)"
INERT = "a setting of a feature that is off (its switch is refused when on)"
T5_MASKING = ("a detail of NeMo's T5 masking; megatron_lite corrupts T5-style spans of mean length "
              "model.data.mean_ngram_size (docs/data.md, section 7)")
NO_TEST_STAGE = "the test stage, which training never runs"


def ignored(reason: str) -> Any:
    return dataclasses.field(default=None, metadata={_IGNORED: reason})


def fixed(value: Any, reason: str) -> Any:
    return dataclasses.field(default=value, metadata={_FIXED: reason})


def _fields(cfg: Any, prefix: str) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, value) of every field of `cfg` and of the dataclasses inside it."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        yield prefix + field.name, field, value
        if dataclasses.is_dataclass(value):
            yield from _fields(value, f"{prefix}{field.name}.")


def ignored_keys(cfg: Any, prefix: str = "") -> dict[str, list[str]]:
    """{reason: [key, ...]} of the ignored keys that are set."""
    found: dict[str, list[str]] = {}
    for key, field, value in _fields(cfg, prefix):
        if _IGNORED in field.metadata and value is not None:
            found.setdefault(field.metadata[_IGNORED], []).append(key)
    return found


def check_fixed_keys(cfg: Any, prefix: str = "") -> None:
    """ValueError naming the first fixed key set away from the value we implement."""
    for key, field, value in _fields(cfg, prefix):
        if _FIXED in field.metadata and value != field.default:
            raise ValueError(f"{key}={value!r} is not implemented: {field.metadata[_FIXED]}")


@dataclass
class NeMoStackKeys:
    """Keys of a transformer stack, in GPT's model section and in each T5 stack."""

    apply_query_key_layer_scaling: Optional[bool] = ignored(FUSION)
    persist_layer_norm: Optional[bool] = ignored(FUSION)
    bias_activation_fusion: Optional[bool] = ignored(FUSION)
    bias_dropout_add_fusion: Optional[bool] = ignored(FUSION)
    masked_softmax_fusion: Optional[bool] = ignored(FUSION)
    grad_div_ar_fusion: Optional[bool] = ignored(COMMUNICATION)
    onnx_safe: Optional[bool] = ignored(FUSION)
    enable_megatron_timers: Optional[bool] = ignored(PROFILING)
    headscale: bool = fixed(False, "no learned per-head output scale")
    fp32_residual_connection: bool = fixed(False, "the residual stream keeps the compute dtype")


@dataclass
class NeMoT5StackKeys:
    """Keys only NeMo's megatron_model_base_config.yaml (a T5 stack) has."""

    arch: str = fixed("transformer", "stacks are transformers (no perceiver)")
    hidden_steps: Optional[int] = ignored(INERT)  # perceiver only
    num_self_attention_per_cross_attention: Optional[int] = ignored(INERT)  # perceiver only
    # Only how NeMo splits a fused q/k/v weight when it loads a converted checkpoint.
    megatron_legacy: Optional[bool] = ignored(FUSION)
    num_moe_experts: int = fixed(1, "no mixture of experts")
    moe_frequency: Optional[int] = ignored(INERT)
    moe_dropout: Optional[float] = ignored(INERT)


@dataclass
class NeMoModelKeys:
    """Keys of the model section both families have."""

    grad_allreduce_chunk_size_mb: Optional[int] = ignored(COMMUNICATION)
    grad_div_ar_fusion: Optional[bool] = ignored(COMMUNICATION)
    fp16_lm_cross_entropy: bool = fixed(False, "the loss is computed in float32")
    use_cpu_initialization: Optional[bool] = ignored(FUSION)
    apex_transformer_log_level: Optional[int] = ignored(PROFILING)


@dataclass
class NeMoGPTModelKeys:
    """Keys only NeMo's GPT model section has."""

    mcore_gpt: Optional[bool] = ignored(FUSION)  # Megatron core's GPTModel or NeMo's own
    rampup_batch_size: Optional[List[int]] = fixed(None, "the global batch size is constant")
    virtual_pipeline_model_parallel_size: Optional[int] = fixed(None, "no pipeline parallelism")
    pre_process: bool = fixed(True, "no pipeline parallelism: every model has its embedding")
    post_process: bool = fixed(True, "no pipeline parallelism: every model has its output layer")
    attention_type: str = fixed("multihead", "attention is multi-head (or grouped-query)")
    overlap_p2p_comm: Optional[bool] = ignored(COMMUNICATION)
    batch_p2p_comm: Optional[bool] = ignored(COMMUNICATION)
    gradient_accumulation_fusion: Optional[bool] = ignored(FUSION)
    get_attention_mask_from_fusion: Optional[bool] = ignored(FUSION)
    sync_batch_comm: Optional[bool] = ignored(COMMUNICATION)
    nccl_communicator_config_path: Optional[str] = ignored(COMMUNICATION)
    num_micro_batches_with_partial_activation_checkpoints: Optional[int] = ignored(INERT)
    activations_checkpoint_layers_per_pipeline: Optional[int] = ignored(INERT)
    transformer_engine: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    fp8: bool = fixed(False, "no fp8 training; use trainer.precision=bf16")
    fp8_e4m3: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    fp8_hybrid: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    fp8_margin: Optional[int] = ignored(TRANSFORMER_ENGINE)
    fp8_interval: Optional[int] = ignored(TRANSFORMER_ENGINE)
    fp8_amax_history_len: Optional[int] = ignored(TRANSFORMER_ENGINE)
    fp8_amax_compute_algo: Optional[str] = ignored(TRANSFORMER_ENGINE)
    reduce_amax: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    use_emha: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    ub_tp_comm_overlap: Optional[bool] = ignored(TRANSFORMER_ENGINE)
    ub_tp_comm_overlap_cfg: Optional[Any] = ignored(TRANSFORMER_ENGINE)
    cpu_offloading: bool = fixed(False, "activations and weights stay on the device")
    cpu_offloading_num_layers: Optional[int] = ignored(INERT)
    cpu_offloading_activations: Optional[bool] = ignored(INERT)
    cpu_offloading_weights: Optional[bool] = ignored(INERT)
    sharp: Optional[bool] = ignored(COMMUNICATION)
    megatron_timer_kwargs: Optional[Dict[str, Any]] = ignored(PROFILING)
    nsys_profile: Optional[Dict[str, Any]] = ignored(PROFILING)
    gc_interval: Optional[int] = ignored(PROFILING)


@dataclass
class NeMoTokenizerKeys:
    delimiter: Optional[str] = fixed(None, "no tabular tokenizer")
    # How NeMo adds special tokens to a sentencepiece model; ours are always appended above it.
    sentencepiece_legacy: Optional[bool] = ignored(FUSION)


@dataclass
class NeMoDataKeys:
    skip_warmup: Optional[bool] = ignored(PROFILING)  # pre-reading the mmap


@dataclass
class NeMoGPTDataKeys:
    no_seqlen_plus_one_input_tokens: bool = fixed(
        False, "samples hold seq_length + 1 tokens (inputs and shifted labels)")
    pad_samples_to_global_batch_size: bool = fixed(
        False, "validation reads whole global batches (validation_drop_last)")
    shuffle_documents: bool = fixed(True, "documents are shuffled every epoch")
    exchange_indices_distributed: Optional[bool] = ignored(COMMUNICATION)
    mock_dataset: bool = fixed(False, "data comes from .bin/.idx files")


@dataclass
class NeMoT5DataKeys:
    dataset_type: str = fixed("t5", "T5 pretraining is span corruption ('t5')")
    short_seq_prob: float = fixed(0.0, "every sample fills model.seq_length")
    permutation: bool = fixed(False, "masked spans keep their order")
    max_ngram_size: Optional[int] = ignored(T5_MASKING)
    geometric_dist: Optional[bool] = ignored(T5_MASKING)
    whole_word_masking: Optional[bool] = ignored(T5_MASKING)
    favor_longer_ngrams: Optional[bool] = ignored(T5_MASKING)
    respect_document_boundaries: Optional[bool] = ignored(T5_MASKING)
