"""Our T5 against a tiny Hugging Face T5ForConditionalGeneration, weights converted by
megatron_lite.interop: the logits must agree in fp32, with padding in the encoder input. HF's T5
covers the relative bias (its own table per stack, bidirectional and causal buckets), T5's
RMSNorm, relu and gated-GELU, kv_channels != hidden / heads, no biases, cross-attention, and
tied or separate output layers.

Google's T5 does not scale q k^T by 1 / sqrt(head dim) (the factor is folded into the
initialisation of q). NeMo's key for that is `normalize_attention_scores=False`, which the
converter sets; with the default (True) the same logits come from q weights multiplied by
sqrt(head dim), which the second test shows.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from megatron_lite.interop import architecture_named
from megatron_lite.models import T5Model
from tests.interop.hf_models import VOCAB, t5_inputs, tiny_t5


def converted(hf) -> T5Model:
    """Our model from the HF model's config and state dict, as the converter reads a folder."""
    cfg, state = architecture_named("t5").import_model(hf.config.to_dict(), hf.state_dict(), "test")
    ours = T5Model(cfg, VOCAB).eval()
    ours.load_state_dict(state, strict=True)
    return ours


def _assert_same_logits(hf, ours) -> None:
    text_enc, enc_mask, text_dec = t5_inputs()
    with torch.no_grad():
        expected = hf(input_ids=text_enc, attention_mask=enc_mask.long(), decoder_input_ids=text_dec).logits
        actual = ours(text_enc, text_dec, enc_mask)
    assert expected.abs().max() > 1e-2  # a model with real, non-degenerate outputs
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["t5", "t5.1.1"], ids=["t5-relu-tied", "t5.1.1-geglu-kv12-untied"])
def test_t5_logits_match(layout):
    hf = tiny_t5(layout)
    ours = converted(hf)
    _assert_same_logits(hf, ours)
    assert ours.output_bias is None
    assert (ours.output_layer is None) == (layout == "t5")  # T5.1.1 has its own lm_head


def test_scaled_scores_with_sqrt_d_folded_into_q_give_the_same_logits():
    hf = tiny_t5("t5")
    unscaled = converted(hf)
    scaled_stacks = {name: dataclasses.replace(getattr(unscaled.cfg, name), normalize_attention_scores=True)
                     for name in ("encoder", "decoder")}
    scaled = T5Model(dataclasses.replace(unscaled.cfg, **scaled_stacks), VOCAB).eval()
    scaled.load_state_dict(unscaled.state_dict())
    head_dim = unscaled.cfg.encoder.head_dim
    with torch.no_grad():
        for layer in [*scaled.encoder.block.layers, *scaled.decoder.block.layers]:
            # The fused rows go head by head, [q_h | k_h | v_h] (4 heads, one per group).
            layer.attention.linear_qkv.weight.view(4, 3, head_dim, -1)[:, 0] *= math.sqrt(head_dim)
            if layer.cross_attention is not None:
                layer.cross_attention.linear_q.weight *= math.sqrt(head_dim)
    _assert_same_logits(hf, scaled)
