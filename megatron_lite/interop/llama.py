"""Our GPT <-> Hugging Face LlamaForCausalLM: rotary positions (rope_theta, linear scaling),
RMSNorm, a gated MLP (SwiGLU), grouped-query attention, head_dim, biases or none, tied or
separate output layer.

Our rotary embedding rotates channel pairs (i, i + D/2), the rotate-half layout of HF's Llama,
so q and k weights are copied as they are: no permutation (that is needed only for checkpoints
of interleaved-pair layouts, such as Meta's original files).
"""

from __future__ import annotations

from typing import Any

from megatron_lite.config import GPTModelConfig
from megatron_lite.interop.architecture import (
    HFArchitecture,
    State,
    export_weights,
    hf_activation,
    import_weights,
    our_activation,
    output_layer_tied,
    refuse,
    with_prefix,
)
from megatron_lite.interop.mapping import TensorRule, same, stacked
from megatron_lite.models import GPTModel
from megatron_lite.modules.fused_layout import gated_fc1_layout, qkv_layout

HF_CLASS = "LlamaForCausalLM"
# LlamaConfig's defaults, for keys a config.json leaves out.
DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
    "head_dim": None, "hidden_act": "silu", "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
    "attention_dropout": 0.0, "initializer_range": 0.02, "tie_word_embeddings": False,
}
# Rotary inverse-frequency buffers that older Llama checkpoints store in every layer.
ROTARY_BUFFER = ".rotary_emb.inv_freq"


def rules(cfg: GPTModelConfig) -> list[TensorRule]:
    # Our fused projections' rows are grouped (fused_layout.py): by query group, and by feature.
    qkv = qkv_layout(cfg.num_attention_heads, cfg.query_groups, cfg.head_dim)
    fc1 = gated_fc1_layout(cfg.ffn_hidden_size)
    parameters = ("weight", "bias") if cfg.bias else ("weight",)
    found = [same("embedding.word_embeddings.weight", "model.embed_tokens.weight")]
    for i in range(cfg.num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"model.layers.{i}."
        found += [same(f"{ours}attention_norm.weight", f"{theirs}input_layernorm.weight"),
                  same(f"{ours}mlp_norm.weight", f"{theirs}post_attention_layernorm.weight")]
        for p in parameters:
            found += [
                stacked(f"{ours}attention.linear_qkv.{p}",
                        [f"{theirs}self_attn.{x}_proj.{p}" for x in "qkv"], *qkv),
                same(f"{ours}attention.linear_proj.{p}", f"{theirs}self_attn.o_proj.{p}"),
                # Our fused fc1 is [gate_i | up_i] per feature: gate goes through the activation.
                stacked(f"{ours}mlp.linear_fc1.{p}",
                        [f"{theirs}mlp.gate_proj.{p}", f"{theirs}mlp.up_proj.{p}"], *fc1),
                same(f"{ours}mlp.linear_fc2.{p}", f"{theirs}mlp.down_proj.{p}"),
            ]
    found.append(same("decoder.final_norm.weight", "model.norm.weight"))
    if not cfg.share_embeddings_and_output_weights:
        found.append(same("output_layer.weight", "lm_head.weight"))
    return found


def rope_settings(config: dict[str, Any], source: str) -> tuple[float, float | None]:
    """(rope_theta, linear interpolation factor or None) from transformers 5's rope_parameters or
    the rope_theta / rope_scaling keys of earlier versions."""
    parameters = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = parameters.get("rope_theta", config.get("rope_theta", DEFAULTS["rope_theta"]))
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    partial = parameters.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"{source}: config.json's partial_rotary_factor={partial}: Llama rotates "
                         "every channel of a head, and ours would rotate a different subset")
    if rope_type == "default":
        return float(theta), None
    if rope_type == "linear":
        return float(theta), float(parameters["factor"])
    raise ValueError(
        f"{source}: config.json's rope type {rope_type!r} is not implemented here; ours are "
        "'default' and 'linear' (model.seq_len_interpolation_factor)"
    )


def model_config(config: dict[str, Any], *, tied: bool, source: str) -> GPTModelConfig:
    def read(key: str) -> Any:
        return config.get(key, DEFAULTS[key])

    if read("attention_bias") != read("mlp_bias"):
        raise ValueError(
            f"{source}: config.json's attention_bias={read('attention_bias')} and "
            f"mlp_bias={read('mlp_bias')} differ; our model.bias sets both"
        )
    hidden, heads = read("hidden_size"), read("num_attention_heads")
    groups, head_dim = read("num_key_value_heads"), read("head_dim")
    theta, factor = rope_settings(config, source)
    positions = read("max_position_embeddings")
    return GPTModelConfig(
        num_layers=read("num_hidden_layers"), hidden_size=hidden, num_attention_heads=heads,
        num_query_groups=None if groups in (None, heads) else groups,
        kv_channels=None if head_dim in (None, hidden // heads) and hidden % heads == 0 else head_dim,
        ffn_hidden_size=read("intermediate_size"),
        **dict(zip(("activation", "openai_gelu"),
                   our_activation(read("hidden_act"), gated=True, key="hidden_act", source=source))),
        normalization="rmsnorm", layernorm_epsilon=read("rms_norm_eps"), bias=read("attention_bias"),
        position_embedding_type="rope", rotary_base=theta, seq_len_interpolation_factor=factor,
        max_position_embeddings=positions, encoder_seq_length=positions,
        hidden_dropout=0.0, attention_dropout=read("attention_dropout"),
        init_method_std=read("initializer_range"),
        share_embeddings_and_output_weights=tied,
        override_vocab_size=read("vocab_size"),
    )


def import_model(config: dict[str, Any], hf_state: State, source: str) -> tuple[GPTModelConfig, State]:
    # A LlamaModel checkpoint has no "model." prefix.
    state = with_prefix(hf_state, "model.", unprefixed=("lm_head.weight",))
    state = {key: tensor for key, tensor in state.items() if not key.endswith(ROTARY_BUFFER)}
    tied = output_layer_tied(state, embedding="model.embed_tokens.weight", output="lm_head.weight",
                             config_tied=config.get("tie_word_embeddings", DEFAULTS["tie_word_embeddings"]))
    cfg = model_config(config, tied=tied, source=source)
    return cfg, import_weights(rules(cfg), GPTModel, cfg, cfg.override_vocab_size, state, source)


def hf_config(cfg: GPTModelConfig, vocab_size: int) -> dict[str, Any]:
    """config.json's model keys; ValueError listing whatever Llama cannot express."""
    activation, gated = hf_activation(cfg.activation, cfg.openai_gelu)
    problems = [
        f"model.{key}={value!r} ({why})" for key, value, ok, why in (
            ("position_embedding_type", cfg.position_embedding_type,
             cfg.position_embedding_type == "rope", "Llama's positions are rotary: rope"),
            ("rotary_percentage", cfg.rotary_percentage, cfg.rotary_percentage == 1.0,
             "Llama rotates every channel of a head: 1.0"),
            ("normalization", cfg.normalization, cfg.normalization == "rmsnorm",
             "Llama has RMSNorm only"),
            ("activation", cfg.activation, gated, "Llama's MLP is gated: swiglu, geglu or reglu"),
            ("transformer_block_type", cfg.transformer_block_type,
             cfg.transformer_block_type == "pre_ln", "Llama is pre-LN"),
            ("normalize_attention_scores", cfg.normalize_attention_scores,
             cfg.normalize_attention_scores, "Llama scales scores by 1 / sqrt(head_dim)"),
        ) if not ok
    ]
    refuse(problems, HF_CLASS)
    # rope_theta and rope_scaling: the keys transformers 4 reads and 5 converts.
    config = {
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.query_groups, "head_dim": cfg.head_dim,
        "hidden_act": activation, "rms_norm_eps": cfg.layernorm_epsilon,
        "max_position_embeddings": cfg.encoder_seq_length, "rope_theta": cfg.rotary_base,
        "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.attention_dropout,
        "initializer_range": cfg.init_method_std, "vocab_size": vocab_size,
        "tie_word_embeddings": cfg.share_embeddings_and_output_weights,
    }
    if cfg.seq_len_interpolation_factor is not None:
        config["rope_scaling"] = {"rope_type": "linear", "factor": cfg.seq_len_interpolation_factor}
    return config


def export_model(cfg: GPTModelConfig, vocab_size: int, state: State) -> tuple[dict[str, Any], State]:
    config = hf_config(cfg, vocab_size)
    return config, export_weights(rules(cfg), GPTModel, cfg, vocab_size, state)


LLAMA = HFArchitecture(model_type="llama", hf_class=HF_CLASS, family="gpt",
                       import_model=import_model, export_model=export_model)
