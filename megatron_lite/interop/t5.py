"""Our T5 <-> Hugging Face T5ForConditionalGeneration, in both layouts: T5 (relu MLP, output
layer tied to the shared embeddings) and T5.1.1 (gated MLP wi_0 / wi_1, separate lm_head).

What differs between the two sides, and how it is bridged:
- HF's T5 does not scale q k^T by 1 / sqrt(head dim): an import sets
  normalize_attention_scores=False; an export of stacks that do scale folds the factor into the
  q weights (q k^T / sqrt(d) = (q / sqrt(d)) k^T), which gives the same logits.
- HF keeps the relative bias table in the first block of each stack; ours is the stack's.
- T5's original checkpoints multiply the decoder's output by d_model^-0.5 before the tied
  output layer (config.json's tie_word_embeddings=True in transformers 4, scale_decoder_outputs
  in 5). We have no such key: an import folds the factor into the decoder's final RMSNorm gain
  (norm(x) * w * s = norm(x) * (w * s)), so the round trip changes that one tensor, not the logits.
- An export always writes lm_head.weight (a copy of the embeddings when tied) and
  tie_word_embeddings=False with scale_decoder_outputs=False: what transformers 4 and 5 both
  load as "no output scaling"; 5 ties lm_head back to the embeddings when their values agree.
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lite.config import T5ModelConfig, T5StackConfig
from megatron_lite.interop.architecture import (
    HFArchitecture,
    State,
    export_weights,
    hf_activation,
    import_weights,
    our_activation,
    output_layer_tied,
    refuse,
)
from megatron_lite.interop.mapping import TensorRule, same, stacked
from megatron_lite.models import T5Model
from megatron_lite.modules.fused_layout import (
    gated_fc1_layout,
    group_rows,
    kv_layout,
    qkv_layout,
    ungroup_rows,
)

HF_CLASS = "T5ForConditionalGeneration"
# T5Config's defaults, for keys a config.json leaves out.
DEFAULTS = {
    "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
    "num_decoder_layers": None, "num_heads": 8, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1,
    "feed_forward_proj": "relu", "tie_word_embeddings": True,
}
STACKS = ("encoder", "decoder")
# The keys of one stack that T5Config holds once for both stacks.
SHARED_STACK_KEYS = ("ffn_hidden_size", "num_attention_heads", "head_dim", "activation",
                     "openai_gelu", "layernorm_epsilon", "relative_attention_num_buckets",
                     "relative_attention_max_distance")


def _stack_rules(name: str, cfg: T5StackConfig, *, decoder: bool) -> list[TensorRule]:
    # Our fused projections' rows are grouped (fused_layout.py): by head, and by feature.
    qkv = qkv_layout(cfg.num_attention_heads, cfg.query_groups, cfg.head_dim)
    kv = kv_layout(cfg.query_groups, cfg.head_dim)
    found = [same(f"{name}.relative_position_bias.relative_attention_bias.weight",
                  f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
             same(f"{name}.block.final_norm.weight", f"{name}.final_layer_norm.weight")]
    for i in range(cfg.num_layers):
        ours, theirs = f"{name}.block.layers.{i}.", f"{name}.block.{i}.layer."
        found += [
            same(f"{ours}attention_norm.weight", f"{theirs}0.layer_norm.weight"),
            stacked(f"{ours}attention.linear_qkv.weight",
                    [f"{theirs}0.SelfAttention.{x}.weight" for x in "qkv"], *qkv),
            same(f"{ours}attention.linear_proj.weight", f"{theirs}0.SelfAttention.o.weight"),
        ]
        mlp = 1  # the MLP's sub-layer: after self-attention, and cross-attention in the decoder
        if decoder:
            found += [
                same(f"{ours}cross_attention_norm.weight", f"{theirs}1.layer_norm.weight"),
                same(f"{ours}cross_attention.linear_q.weight", f"{theirs}1.EncDecAttention.q.weight"),
                stacked(f"{ours}cross_attention.linear_kv.weight",
                        [f"{theirs}1.EncDecAttention.{x}.weight" for x in "kv"], *kv),
                same(f"{ours}cross_attention.linear_proj.weight", f"{theirs}1.EncDecAttention.o.weight"),
            ]
            mlp = 2
        dense = f"{theirs}{mlp}.DenseReluDense."
        fc1 = (stacked(f"{ours}mlp.linear_fc1.weight", [dense + "wi_0.weight", dense + "wi_1.weight"],
                       *gated_fc1_layout(cfg.ffn_hidden_size))  # [gate_i | up_i]: wi_0 is the gate
               if cfg.gated_mlp else same(f"{ours}mlp.linear_fc1.weight", dense + "wi.weight"))
        found += [same(f"{ours}mlp_norm.weight", f"{theirs}{mlp}.layer_norm.weight"), fc1,
                  same(f"{ours}mlp.linear_fc2.weight", dense + "wo.weight")]
    return found


def rules(cfg: T5ModelConfig) -> list[TensorRule]:
    found = [same("word_embeddings.weight", "shared.weight")]
    found += _stack_rules("encoder", cfg.encoder, decoder=False)
    found += _stack_rules("decoder", cfg.decoder, decoder=True)
    if not cfg.share_decoder_tokens_head_embeddings:
        found.append(same("output_layer.weight", "lm_head.weight"))
    return found


def _activation(config: dict[str, Any], source: str) -> tuple[str, bool]:
    """(our activation, openai_gelu) of a T5 config."""
    projection = config.get("feed_forward_proj", DEFAULTS["feed_forward_proj"])
    gated = projection.startswith("gated-")
    # transformers reads "gated-gelu" as the tanh GELU (gelu_new) unless dense_act_fn says otherwise.
    implied = "gelu_new" if projection == "gated-gelu" else projection.removeprefix("gated-")
    return our_activation(config.get("dense_act_fn") or implied, gated=gated,
                          key="feed_forward_proj / dense_act_fn", source=source)


def model_config(config: dict[str, Any], *, tied: bool, source: str) -> T5ModelConfig:
    def read(key: str) -> Any:
        return config.get(key, DEFAULTS[key])

    hidden, heads, head_dim = read("d_model"), read("num_heads"), read("d_kv")
    dropout = read("dropout_rate")
    stack = dict(
        hidden_size=hidden, ffn_hidden_size=read("d_ff"), num_attention_heads=heads,
        kv_channels=None if head_dim * heads == hidden else head_dim,
        normalization="rmsnorm", layernorm_epsilon=read("layer_norm_epsilon"), bias=False,
        **dict(zip(("activation", "openai_gelu"), _activation(config, source))),
        position_embedding_type="relative",
        relative_attention_num_buckets=read("relative_attention_num_buckets"),
        relative_attention_max_distance=read("relative_attention_max_distance"),
        normalize_attention_scores=False, hidden_dropout=dropout, attention_dropout=dropout,
    )
    encoder_layers = read("num_layers")
    return T5ModelConfig(
        encoder=T5StackConfig(num_layers=encoder_layers, **stack),
        decoder=T5StackConfig(num_layers=read("num_decoder_layers") or encoder_layers, **stack),
        share_token_embeddings=True, share_decoder_tokens_head_embeddings=tied,
        tokens_head_bias=False, embedding_dropout=dropout, override_vocab_size=read("vocab_size"),
    )


def _scales_decoder_output(config: dict[str, Any]) -> bool:
    if "scale_decoder_outputs" in config:  # transformers 5
        return bool(config["scale_decoder_outputs"])
    return bool(config.get("tie_word_embeddings", DEFAULTS["tie_word_embeddings"]))


def import_model(config: dict[str, Any], hf_state: State, source: str) -> tuple[T5ModelConfig, State]:
    state = dict(hf_state)
    # Each stack's embed_tokens is the shared table (transformers ties them); a stored copy goes.
    for stack in STACKS:
        key = f"{stack}.embed_tokens.weight"
        if key in state and "shared.weight" in state and torch.equal(state[key], state["shared.weight"]):
            del state[key]
    # transformers 5 always ties lm_head unless the stored values differ; 4 read
    # tie_word_embeddings, which 5 no longer writes faithfully: the values decide.
    tied = output_layer_tied(state, embedding="shared.weight", output="lm_head.weight", config_tied=True)
    cfg = model_config(config, tied=tied, source=source)
    ours = import_weights(rules(cfg), T5Model, cfg, cfg.override_vocab_size, state, source)
    if _scales_decoder_output(config):
        norm = "decoder.block.final_norm.weight"
        ours[norm] = ours[norm] * cfg.decoder.hidden_size**-0.5
    return cfg, ours


def _problems(cfg: T5ModelConfig) -> list[str]:
    problems = []
    for name in STACKS:
        stack: T5StackConfig = getattr(cfg, name)
        prefix = f"model.{name}."
        problems += [
            f"{prefix}{key}={value!r} ({why})" for key, value, ok, why in (
                ("position_embedding_type", stack.position_embedding_type,
                 stack.position_embedding_type == "relative", "HF's T5 has the relative bias only"),
                ("normalization", stack.normalization, stack.normalization == "rmsnorm",
                 "T5 has RMSNorm only"),
                ("bias", stack.bias, not stack.bias, "T5's layers have no biases"),
                ("transformer_block_type", stack.transformer_block_type,
                 stack.transformer_block_type == "pre_ln", "T5 is pre-LN"),
                ("num_query_groups", stack.num_query_groups,
                 stack.query_groups == stack.num_attention_heads,
                 "HF's T5 has no grouped-query attention"),
            ) if not ok
        ]
    for key in SHARED_STACK_KEYS:
        encoder, decoder = getattr(cfg.encoder, key), getattr(cfg.decoder, key)
        if encoder != decoder:
            problems.append(f"model.encoder.{key}={encoder!r} and model.decoder.{key}={decoder!r} "
                            "differ (T5Config has one value for both stacks)")
    if not cfg.share_token_embeddings:
        problems.append("model.share_token_embeddings=False (HF's T5 shares one embedding table)")
    if cfg.tokens_head_bias:
        problems.append("model.tokens_head_bias=True (HF's T5 has no output bias; train with "
                        "model.tokens_head_bias=False)")
    return problems


def hf_config(cfg: T5ModelConfig, vocab_size: int) -> dict[str, Any]:
    """config.json's model keys; ValueError listing whatever HF's T5 cannot express."""
    refuse(_problems(cfg), HF_CLASS)
    stack = cfg.encoder
    activation, gated = hf_activation(stack.activation, stack.openai_gelu)
    return {
        "d_model": stack.hidden_size, "d_kv": stack.head_dim, "d_ff": stack.ffn_hidden_size,
        "num_layers": stack.num_layers, "num_decoder_layers": cfg.decoder.num_layers,
        "num_heads": stack.num_attention_heads,
        "relative_attention_num_buckets": stack.relative_attention_num_buckets,
        "relative_attention_max_distance": stack.relative_attention_max_distance,
        "layer_norm_epsilon": stack.layernorm_epsilon,
        # dense_act_fn named explicitly: "gated-gelu" alone would mean the tanh GELU.
        "feed_forward_proj": f"gated-{activation}" if gated else activation,
        "dense_act_fn": activation, "is_gated_act": gated,
        "dropout_rate": stack.hidden_dropout, "vocab_size": vocab_size, "is_encoder_decoder": True,
        "tie_word_embeddings": False, "scale_decoder_outputs": False,
    }


def _fold_score_scale(cfg: T5ModelConfig, state: State) -> State:
    """Our state with 1 / sqrt(head dim) folded into the q weights of every stack that scales
    its scores (HF's T5 never does)."""
    state = dict(state)
    for name in STACKS:
        stack: T5StackConfig = getattr(cfg, name)
        if not stack.normalize_attention_scores:
            continue
        scale = stack.head_dim**-0.5
        layout = qkv_layout(stack.num_attention_heads, stack.query_groups, stack.head_dim)
        q_rows = layout.sizes[0]
        for i in range(stack.num_layers):
            layer = f"{name}.block.layers.{i}."
            qkv = ungroup_rows(state[f"{layer}attention.linear_qkv.weight"], layout)  # [q | k | v]
            qkv[:q_rows] *= scale
            state[f"{layer}attention.linear_qkv.weight"] = group_rows(qkv, layout)
            if name == "decoder":
                key = f"{layer}cross_attention.linear_q.weight"
                state[key] = state[key] * scale
    return state


def export_model(cfg: T5ModelConfig, vocab_size: int, state: State) -> tuple[dict[str, Any], State]:
    config = hf_config(cfg, vocab_size)
    hf_state = export_weights(rules(cfg), T5Model, cfg, vocab_size, _fold_score_scale(cfg, state))
    hf_state.setdefault("lm_head.weight", hf_state["shared.weight"])  # tied: written as a copy
    return config, hf_state


T5 = HFArchitecture(model_type="t5", hf_class=HF_CLASS, family="t5",
                    import_model=import_model, export_model=export_model)
