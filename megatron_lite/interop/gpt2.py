"""Our GPT <-> Hugging Face GPT2LMHeadModel: learned absolute positions, LayerNorm, a plain
MLP, biases everywhere, fused [q | k | v] in Conv1D layers ([in, out]: the transpose of our
nn.Linear weights, whose rows we group by head), tied or separate output layer."""

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
from megatron_lite.interop.mapping import TensorRule, grouped, same, transposed
from megatron_lite.models import GPTModel
from megatron_lite.modules.fused_layout import qkv_layout

HF_CLASS = "GPT2LMHeadModel"
# GPT2Config's defaults, for keys a config.json leaves out.
DEFAULTS = {
    "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_inner": None,
    "vocab_size": 50257, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
    "resid_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02, "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
    "tie_word_embeddings": True,
}
# (ours, theirs, Conv1D) per layer: Conv1D weights are stored transposed.
LAYER_PARTS = (
    ("attention_norm", "ln_1", False),
    ("attention.linear_qkv", "attn.c_attn", True),
    ("attention.linear_proj", "attn.c_proj", True),
    ("mlp_norm", "ln_2", False),
    ("mlp.linear_fc1", "mlp.c_fc", True),
    ("mlp.linear_fc2", "mlp.c_proj", True),
)
# Causal-mask buffers that older GPT-2 checkpoints store in every layer.
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


def rules(cfg: GPTModelConfig) -> list[TensorRule]:
    found = [same("embedding.word_embeddings.weight", "transformer.wte.weight"),
             same("embedding.position_embeddings.weight", "transformer.wpe.weight")]
    # c_attn's outputs are [q | k | v]; ours are grouped by head (fused_layout.py).
    qkv = qkv_layout(cfg.num_attention_heads, cfg.query_groups, cfg.head_dim)
    for i in range(cfg.num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"transformer.h.{i}."
        for our_name, their_name, conv1d in LAYER_PARTS:
            weight_rule = transposed if conv1d else same
            pair = [weight_rule(f"{ours}{our_name}.weight", f"{theirs}{their_name}.weight"),
                    same(f"{ours}{our_name}.bias", f"{theirs}{their_name}.bias")]
            found += [grouped(rule, qkv) for rule in pair] if our_name == "attention.linear_qkv" else pair
    found += [same("decoder.final_norm.weight", "transformer.ln_f.weight"),
              same("decoder.final_norm.bias", "transformer.ln_f.bias")]
    if not cfg.share_embeddings_and_output_weights:
        found.append(same("output_layer.weight", "lm_head.weight"))
    return found


def model_config(config: dict[str, Any], *, tied: bool, source: str) -> GPTModelConfig:
    def read(key: str) -> Any:
        return config.get(key, DEFAULTS[key])

    for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if read(key):
            raise ValueError(f"{source}: config.json's {key}=True has no equivalent in our GPT")
    hidden, positions = read("n_embd"), read("n_positions")
    activation, openai_gelu = our_activation(read("activation_function"), gated=False,
                                             key="activation_function", source=source)
    return GPTModelConfig(
        num_layers=read("n_layer"), hidden_size=hidden, num_attention_heads=read("n_head"),
        ffn_hidden_size=read("n_inner") or 4 * hidden,
        max_position_embeddings=positions, encoder_seq_length=positions,
        layernorm_epsilon=read("layer_norm_epsilon"),
        activation=activation, openai_gelu=openai_gelu,
        normalize_attention_scores=read("scale_attn_weights"),
        hidden_dropout=read("resid_pdrop"), attention_dropout=read("attn_pdrop"),
        init_method_std=read("initializer_range"),
        share_embeddings_and_output_weights=tied,
        override_vocab_size=read("vocab_size"),
    )


def import_model(config: dict[str, Any], hf_state: State, source: str) -> tuple[GPTModelConfig, State]:
    # A GPT2Model checkpoint (OpenAI's GPT-2 files) has no "transformer." prefix.
    state = with_prefix(hf_state, "transformer.", unprefixed=("lm_head.weight",))
    state = {key: tensor for key, tensor in state.items() if not key.endswith(MASK_BUFFERS)}
    tied = output_layer_tied(state, embedding="transformer.wte.weight", output="lm_head.weight",
                             config_tied=config.get("tie_word_embeddings", DEFAULTS["tie_word_embeddings"]))
    cfg = model_config(config, tied=tied, source=source)
    return cfg, import_weights(rules(cfg), GPTModel, cfg, cfg.override_vocab_size, state, source)


def hf_config(cfg: GPTModelConfig, vocab_size: int) -> dict[str, Any]:
    """config.json's model keys; ValueError listing whatever GPT-2 cannot express."""
    activation, gated = hf_activation(cfg.activation, cfg.openai_gelu)
    problems = [
        f"model.{key}={value!r} ({why})" for key, value, ok, why in (
            ("position_embedding_type", cfg.position_embedding_type,
             cfg.position_embedding_type == "learned_absolute",
             "GPT-2's positions are learned: learned_absolute"),
            ("normalization", cfg.normalization, cfg.normalization == "layernorm",
             "GPT-2 has LayerNorm only"),
            ("activation", cfg.activation, not gated, "GPT-2's MLP is not gated"),
            ("bias", cfg.bias, cfg.bias, "GPT-2's layers all have biases"),
            ("transformer_block_type", cfg.transformer_block_type,
             cfg.transformer_block_type == "pre_ln", "GPT-2 is pre-LN"),
            ("num_query_groups", cfg.num_query_groups,
             cfg.query_groups == cfg.num_attention_heads, "GPT-2 has no grouped-query attention"),
            ("kv_channels", cfg.kv_channels,
             cfg.head_dim * cfg.num_attention_heads == cfg.hidden_size,
             "GPT-2's heads split hidden_size"),
        ) if not ok
    ]
    refuse(problems, HF_CLASS)
    return {
        "n_embd": cfg.hidden_size, "n_layer": cfg.num_layers, "n_head": cfg.num_attention_heads,
        "n_inner": cfg.ffn_hidden_size, "n_positions": cfg.max_position_embeddings,
        "vocab_size": vocab_size, "activation_function": activation,
        "layer_norm_epsilon": cfg.layernorm_epsilon,
        "scale_attn_weights": cfg.normalize_attention_scores,
        "resid_pdrop": cfg.hidden_dropout, "embd_pdrop": cfg.hidden_dropout,
        "attn_pdrop": cfg.attention_dropout, "initializer_range": cfg.init_method_std,
        "tie_word_embeddings": cfg.share_embeddings_and_output_weights,
    }


def export_model(cfg: GPTModelConfig, vocab_size: int, state: State) -> tuple[dict[str, Any], State]:
    config = hf_config(cfg, vocab_size)
    return config, export_weights(rules(cfg), GPTModel, cfg, vocab_size, state)


GPT2 = HFArchitecture(model_type="gpt2", hf_class=HF_CLASS, family="gpt",
                      import_model=import_model, export_model=export_model)
