"""Our GPT against tiny Hugging Face models, weights converted by megatron_lite.interop: the
logits must agree in fp32.

GPT-2 covers learned positions, layernorm, gelu, biases and tied embeddings; Llama covers rope,
rmsnorm, swiglu, grouped-query attention, kv_channels != hidden / heads, no biases and a separate
output layer. (tests/interop adds the round trip through files and back to Hugging Face.)
"""

from __future__ import annotations

import pytest
import torch

from megatron_lite.interop import architecture_named
from megatron_lite.models import GPTModel
from tests.interop.hf_models import VOCAB, gpt_tokens, tiny_gpt2, tiny_llama


def converted(hf) -> GPTModel:
    """Our model from the HF model's config and state dict, as the converter reads a folder."""
    architecture = architecture_named(hf.config.model_type)
    cfg, state = architecture.import_model(hf.config.to_dict(), hf.state_dict(), "test")
    ours = GPTModel(cfg, VOCAB).eval()
    ours.load_state_dict(state, strict=True)
    return ours


def _assert_same_logits(hf, ours, seq: int) -> None:
    tokens = gpt_tokens(seq)
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        actual = ours(tokens)
    assert expected.abs().max() > 1e-3  # a model with real, non-degenerate outputs
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_gpt2_logits_match():
    hf = tiny_gpt2(seq=16)
    ours = converted(hf)
    _assert_same_logits(hf, ours, seq=16)
    # Tied: the output layer is the embedding table, as in GPT-2.
    assert ours.output_layer is None


@pytest.mark.parametrize("head_dim", [8, 12])
def test_llama_logits_match(head_dim):
    hf = tiny_llama(seq=24, head_dim=head_dim)
    ours = converted(hf)
    assert (ours.cfg.kv_channels, ours.cfg.query_groups) == (None if head_dim == 8 else 12, 2)
    _assert_same_logits(hf, ours, seq=24)
