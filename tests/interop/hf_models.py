"""Tiny random Hugging Face models (built here, never downloaded) and the inputs the interop and
model tests compare logits on."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 96
T5_LAYOUTS = ("t5", "t5.1.1", "t5-scaled-output")


def tiny_gpt2(*, seq: int = 16, tied: bool = True, scale_attn_weights: bool = True,
              activation: str = "gelu"):
    """activation: "gelu" (exact, erf) or GPT-2's own tanh form "gelu_new" (openai_gelu)."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=seq, vocab_size=VOCAB,
        activation_function=activation,
        scale_attn_weights=scale_attn_weights, tie_word_embeddings=tied,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama(*, seq: int = 24, head_dim: int = 12, tied: bool = False, bias: bool = False,
               rope_scaling: dict | None = None):
    """Grouped-query attention (4 heads, 2 key/value heads), head_dim != hidden / heads."""
    torch.manual_seed(2)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=head_dim, vocab_size=VOCAB, max_position_embeddings=seq,
        rms_norm_eps=1e-6, rope_theta=500.0, rope_scaling=rope_scaling, tie_word_embeddings=tied,
        attention_bias=bias, mlp_bias=bias, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).eval()
    if bias:  # HF initialises biases to zero: give them values a wrong mapping would show
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(".bias"):
                    parameter.normal_(std=0.1)
    return model


def tiny_t5(layout: str):
    """T5's layouts: "t5" (relu, lm_head tied, no output scaling), "t5.1.1" (gated tanh GELU, as
    T5.1.1 and FLAN-T5 have it, a separate lm_head, d_kv != d_model / heads),
    "t5-scaled-output" (T5's original checkpoints: tied, decoder output scaled by
    d_model^-0.5)."""
    torch.manual_seed(3)
    gated = layout == "t5.1.1"
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=12 if gated else 8, d_ff=48, num_layers=2,
        num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=12, dropout_rate=0.0, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=layout == "t5-scaled-output",
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    if gated:  # transformers 5 ties lm_head at construction; T5.1.1 has its own
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 0.5)
    return model


def gpt_tokens(seq: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, VOCAB, (2, seq))


def t5_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """text_enc [3, 20] with right padding (enc_mask), text_dec [3, 14] starting with 0."""
    torch.manual_seed(0)
    text_enc = torch.randint(2, VOCAB, (3, 20))
    enc_mask = torch.arange(20)[None, :] < torch.tensor([[20], [13], [5]])  # (B, S)
    text_dec = torch.randint(2, VOCAB, (3, 14))
    text_dec[:, 0] = 0  # the start token
    return text_enc, enc_mask, text_dec


@torch.no_grad()
def hf_logits(hf, family: str, seq: int = 16) -> torch.Tensor:
    """HF's logits on the inputs our_logits reads (GPT: tokens [2, seq])."""
    if family == "t5":
        text_enc, enc_mask, text_dec = t5_inputs()
        return hf(input_ids=text_enc, attention_mask=enc_mask.long(), decoder_input_ids=text_dec).logits
    return hf(input_ids=gpt_tokens(seq)).logits


@torch.no_grad()
def our_logits(model, family: str, seq: int = 16) -> torch.Tensor:
    if family == "t5":
        text_enc, enc_mask, text_dec = t5_inputs()
        return model(text_enc, text_dec, enc_mask)
    return model(gpt_tokens(seq))
