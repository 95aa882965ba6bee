"""Our T5 against a tiny Hugging Face T5ForConditionalGeneration with copied weights: the logits
must agree in fp32, with padding in the encoder input. HF's T5 covers the relative bias (its
own table per stack, bidirectional and causal buckets), T5's RMSNorm, relu and gated-GELU,
kv_channels != hidden / heads, no biases, cross-attention, and tied embeddings.

Google's T5 does not scale q k^T by 1 / sqrt(head dim) (the factor is folded into the
initialisation of q). NeMo's key for that is `normalize_attention_scores=False`, which makes our
attention use softmax_scale = 1; with the default (True) the same logits come from q weights
multiplied by sqrt(head dim), which the second test shows. Transformers 5 always ties the output
layer to the shared embeddings and, given `tie_word_embeddings=False`, does not rescale the
decoder's output by d_model^-0.5: that is our `share_decoder_tokens_head_embeddings=True`.
"""

from __future__ import annotations

import math

import pytest
import torch

from megatron_lite.models import T5Model
from tests.gpt_testing import copy_weight
from tests.t5_testing import tiny_t5_config

transformers = pytest.importorskip("transformers")

VOCAB = 96


def t5_pair(*, activation: str, kv_channels: int | None = None):
    gated = activation == "geglu"
    hf_cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=kv_channels or 8, d_ff=48, num_layers=2,
        num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=12, dropout_rate=0.0, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    if gated:
        hf_cfg.dense_act_fn = "gelu"  # exact erf GELU, ours (HF's gated-gelu is the tanh form)
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    stack = dict(
        hidden_size=32, ffn_hidden_size=48, num_attention_heads=4, kv_channels=kv_channels,
        normalization="rmsnorm", layernorm_epsilon=1e-6, bias=False, activation=activation,
        relative_attention_num_buckets=8, relative_attention_max_distance=12,
        normalize_attention_scores=False,
    )
    cfg = tiny_t5_config(seq_length=20, seq_length_dec=14, stack=stack, encoder={"num_layers": 2},
                         decoder={"num_layers": 3}, tokens_head_bias=False)
    ours = T5Model(cfg, VOCAB).eval()
    sd = hf.state_dict()
    copy_weight(ours.word_embeddings.weight, sd["shared.weight"])
    for name, stack_module in (("encoder", ours.encoder), ("decoder", ours.decoder)):
        # HF keeps the relative bias table in the first block of each stack only.
        copy_weight(stack_module.relative_position_bias.relative_attention_bias.weight,
              sd[f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"])
        copy_weight(stack_module.block.final_norm.weight, sd[f"{name}.final_layer_norm.weight"])
        for i, layer in enumerate(stack_module.block.layers):
            p = f"{name}.block.{i}.layer."
            attn = p + "0.SelfAttention."
            copy_weight(layer.attention_norm.weight, sd[p + "0.layer_norm.weight"])
            copy_weight(layer.attention.linear_qkv.weight, torch.cat([sd[attn + x + ".weight"] for x in "qkv"]))
            copy_weight(layer.attention.linear_proj.weight, sd[attn + "o.weight"])
            ffn = 1
            if name == "decoder":
                cross = p + "1.EncDecAttention."
                copy_weight(layer.cross_attention_norm.weight, sd[p + "1.layer_norm.weight"])
                copy_weight(layer.cross_attention.linear_q.weight, sd[cross + "q.weight"])
                copy_weight(layer.cross_attention.linear_kv.weight,
                      torch.cat([sd[cross + "k.weight"], sd[cross + "v.weight"]]))
                copy_weight(layer.cross_attention.linear_proj.weight, sd[cross + "o.weight"])
                ffn = 2
            dense = f"{p}{ffn}.DenseReluDense."
            copy_weight(layer.mlp_norm.weight, sd[f"{p}{ffn}.layer_norm.weight"])
            fc1 = [sd[dense + "wi_0.weight"], sd[dense + "wi_1.weight"]] if gated else [sd[dense + "wi.weight"]]
            copy_weight(layer.mlp.linear_fc1.weight, torch.cat(fc1))  # [gate | up]: wi_0 is activated
            copy_weight(layer.mlp.linear_fc2.weight, sd[dense + "wo.weight"])
    return hf, ours


def _inputs():
    torch.manual_seed(0)
    text_enc = torch.randint(2, VOCAB, (3, 20))
    enc_mask = torch.arange(20)[None, :] < torch.tensor([[20], [13], [5]])  # (B, S) right padding
    text_dec = torch.randint(2, VOCAB, (3, 14))
    text_dec[:, 0] = 0  # the start token
    return text_enc, enc_mask, text_dec


def _assert_same_logits(hf, ours) -> None:
    text_enc, enc_mask, text_dec = _inputs()
    with torch.no_grad():
        expected = hf(input_ids=text_enc, attention_mask=enc_mask.long(), decoder_input_ids=text_dec).logits
        actual = ours(text_enc, text_dec, enc_mask)
    assert expected.abs().max() > 1e-2  # a model with real, non-degenerate outputs
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation, kv_channels", [("relu", None), ("geglu", 12)],
                         ids=["t5-relu", "t5.1.1-geglu-kv12"])
def test_t5_logits_match(activation, kv_channels):
    torch.manual_seed(1)
    hf, ours = t5_pair(activation=activation, kv_channels=kv_channels)
    _assert_same_logits(hf, ours)
    assert ours.output_layer is None and ours.output_bias is None  # tied to the word embeddings


def test_scaled_scores_with_sqrt_d_folded_into_q_give_the_same_logits():
    torch.manual_seed(2)
    hf, unscaled = t5_pair(activation="relu")
    stack = {**unscaled.cfg.encoder.__dict__, "normalize_attention_scores": True}
    cfg = tiny_t5_config(seq_length=20, seq_length_dec=14, stack=stack,
                         decoder={"num_layers": 3}, tokens_head_bias=False)
    scaled = T5Model(cfg, VOCAB).eval()
    scaled.load_state_dict(unscaled.state_dict())
    q_rows = 4 * 8  # heads x head dim: the q part of the fused projections
    with torch.no_grad():
        for layer in [*scaled.encoder.block.layers, *scaled.decoder.block.layers]:
            layer.attention.linear_qkv.weight[:q_rows] *= math.sqrt(8)
            if layer.cross_attention is not None:
                layer.cross_attention.linear_q.weight *= math.sqrt(8)
    _assert_same_logits(hf, scaled)
