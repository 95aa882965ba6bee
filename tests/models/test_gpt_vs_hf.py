"""Our GPT against tiny Hugging Face models with copied weights: the logits must agree in fp32.

GPT-2 covers learned positions, layernorm, gelu, biases and tied embeddings; Llama covers rope,
rmsnorm, swiglu, grouped-query attention, kv_channels != hidden / heads, no biases and a separate
output layer.
"""

from __future__ import annotations

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel
from tests.gpt_testing import copy_weight

transformers = pytest.importorskip("transformers")

VOCAB = 96


def _gpt2_pair(seq: int):
    hf_cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=seq, vocab_size=VOCAB,
        activation_function="gelu",  # exact erf gelu, as Megatron (GPT-2's default is tanh)
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    cfg = GPTModelConfig(
        num_layers=2, hidden_size=32, ffn_hidden_size=128, num_attention_heads=4,
        encoder_seq_length=seq, max_position_embeddings=seq, hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    ours = GPTModel(cfg, VOCAB).eval()
    sd = hf.state_dict()
    copy_weight(ours.embedding.word_embeddings.weight, sd["transformer.wte.weight"])
    copy_weight(ours.embedding.position_embeddings.weight, sd["transformer.wpe.weight"])

    def copy_weight_and_bias(module: torch.nn.Module, key: str, conv1d: bool = False) -> None:
        # GPT-2's Conv1D stores [in, out]: the transpose of nn.Linear.
        copy_weight(module.weight, sd[key + ".weight"].t() if conv1d else sd[key + ".weight"])
        copy_weight(module.bias, sd[key + ".bias"])

    for i, layer in enumerate(ours.decoder.layers):
        p = f"transformer.h.{i}."
        copy_weight_and_bias(layer.attention_norm, p + "ln_1")
        copy_weight_and_bias(layer.attention.linear_qkv, p + "attn.c_attn", conv1d=True)  # [q | k | v]
        copy_weight_and_bias(layer.attention.linear_proj, p + "attn.c_proj", conv1d=True)
        copy_weight_and_bias(layer.mlp_norm, p + "ln_2")
        copy_weight_and_bias(layer.mlp.linear_fc1, p + "mlp.c_fc", conv1d=True)
        copy_weight_and_bias(layer.mlp.linear_fc2, p + "mlp.c_proj", conv1d=True)
    copy_weight_and_bias(ours.decoder.final_norm, "transformer.ln_f")
    return hf, ours


def _llama_pair(seq: int, head_dim: int):
    hf_cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=head_dim, vocab_size=VOCAB, max_position_embeddings=seq,
        rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf_cfg._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    cfg = GPTModelConfig(
        num_layers=2, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4,
        num_query_groups=2, kv_channels=head_dim, encoder_seq_length=seq,
        max_position_embeddings=seq, hidden_dropout=0.0, attention_dropout=0.0,
        normalization="rmsnorm", layernorm_epsilon=1e-6, bias=False, activation="swiglu",
        position_embedding_type="rope", rotary_base=500.0,
        share_embeddings_and_output_weights=False,
    )
    ours = GPTModel(cfg, VOCAB).eval()
    sd = hf.state_dict()
    copy_weight(ours.embedding.word_embeddings.weight, sd["model.embed_tokens.weight"])
    for i, layer in enumerate(ours.decoder.layers):
        p = f"model.layers.{i}."
        qkv = [sd[p + f"self_attn.{name}_proj.weight"] for name in "qkv"]
        copy_weight(layer.attention_norm.weight, sd[p + "input_layernorm.weight"])
        copy_weight(layer.attention.linear_qkv.weight, torch.cat(qkv))
        copy_weight(layer.attention.linear_proj.weight, sd[p + "self_attn.o_proj.weight"])
        copy_weight(layer.mlp_norm.weight, sd[p + "post_attention_layernorm.weight"])
        gate_up = [sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]
        copy_weight(layer.mlp.linear_fc1.weight, torch.cat(gate_up))
        copy_weight(layer.mlp.linear_fc2.weight, sd[p + "mlp.down_proj.weight"])
    copy_weight(ours.decoder.final_norm.weight, sd["model.norm.weight"])
    copy_weight(ours.output_layer.weight, sd["lm_head.weight"])
    return hf, ours


def _assert_same_logits(hf, ours, seq: int) -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, seq))
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        actual = ours(tokens)
    assert expected.abs().max() > 1e-3  # a model with real, non-degenerate outputs
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_gpt2_logits_match():
    torch.manual_seed(1)
    hf, ours = _gpt2_pair(seq=16)
    _assert_same_logits(hf, ours, seq=16)
    # Tied: the output layer is the embedding table, as in GPT-2.
    assert ours.output_layer is None


@pytest.mark.parametrize("head_dim", [8, 12])
def test_llama_logits_match(head_dim):
    torch.manual_seed(2)
    hf, ours = _llama_pair(seq=24, head_dim=head_dim)
    _assert_same_logits(hf, ours, seq=24)
