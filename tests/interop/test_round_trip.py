"""Tiny random Hugging Face models -> our checkpoint -> a Hugging Face folder again: our logits
within 1e-4 of HF's in fp32, the folder written back loads with from_pretrained and holds the
very tensors the model started with; and models of ours exported first."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.interop import convert_hf_to_checkpoint, export_checkpoint_to_hf
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.training import load_model
from tests.interop.checkpoints import save_checkpoint
from tests.interop.hf_models import (
    VOCAB,
    hf_logits,
    our_logits,
    tiny_gpt2,
    tiny_llama,
    tiny_t5,
    transformers,
)
from tests.t5_testing import tiny_t5_config

# name: (HF model, family, GPT sequence length)
CASES = {
    "gpt2": (lambda: tiny_gpt2(), "gpt", 16),
    "gpt2-untied-unscaled": (lambda: tiny_gpt2(tied=False, scale_attn_weights=False), "gpt", 16),
    "gpt2-tanh-gelu": (lambda: tiny_gpt2(activation="gelu_new"), "gpt", 16),
    "llama-gqa-linear-rope": (
        lambda: tiny_llama(rope_scaling={"rope_type": "linear", "factor": 2.0}), "gpt", 24),
    "llama-tied-bias": (lambda: tiny_llama(head_dim=8, tied=True, bias=True), "gpt", 24),
    "t5": (lambda: tiny_t5("t5"), "t5", None),
    "t5.1.1": (lambda: tiny_t5("t5.1.1"), "t5", None),
}


def assert_same_state(actual: dict, expected: dict, *, except_keys: tuple[str, ...] = ()) -> None:
    assert actual.keys() == expected.keys()
    differing = [key for key in expected
                 if key not in except_keys and not torch.equal(actual[key], expected[key])]
    assert not differing


@pytest.mark.parametrize("name", CASES)
def test_hf_to_ours_and_back(name, tmp_path):
    make, family, seq = CASES[name]
    hf = make()
    hf.save_pretrained(tmp_path / "hf")
    convert_hf_to_checkpoint(tmp_path / "hf", tmp_path / "ours.ckpt")
    ours, _ = load_model(tmp_path / "ours.ckpt")
    expected = hf_logits(hf, family, seq)
    assert expected.abs().max() > 1e-2  # real, non-degenerate outputs
    torch.testing.assert_close(our_logits(ours, family, seq), expected, rtol=0, atol=1e-4)
    # The folder itself, converted in memory (restore_from_path, generate.py, eval.py).
    in_memory, _ = load_model(tmp_path / "hf")
    torch.testing.assert_close(our_logits(in_memory, family, seq), expected, rtol=0, atol=1e-4)

    export_checkpoint_to_hf(tmp_path / "ours.ckpt", tmp_path / "back")
    back = type(hf).from_pretrained(tmp_path / "back").eval()
    assert_same_state(back.state_dict(), hf.state_dict())
    # config.json says what the original config said: the same weights give the same logits.
    torch.testing.assert_close(hf_logits(back, family, seq), expected, rtol=0, atol=1e-5)


def test_t5_output_scaling_is_folded_into_the_decoders_final_norm(tmp_path):
    """T5's original checkpoints scale the decoder's output by d_model^-0.5; we have no such key,
    so the factor moves into the final norm's gain: same logits, that one tensor scaled."""
    hf = tiny_t5("t5-scaled-output")
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = load_model(tmp_path / "hf")
    expected = hf_logits(hf, "t5")
    torch.testing.assert_close(our_logits(ours, "t5"), expected, rtol=0, atol=1e-4)
    export_checkpoint_to_hf(tmp_path / "hf", tmp_path / "back")
    back = type(hf).from_pretrained(tmp_path / "back").eval()
    norm = "decoder.final_layer_norm.weight"
    assert_same_state(back.state_dict(), hf.state_dict(), except_keys=(norm,))
    torch.testing.assert_close(back.state_dict()[norm], hf.state_dict()[norm] * 32**-0.5)
    torch.testing.assert_close(hf_logits(back, "t5"), expected, rtol=0, atol=1e-4)


def test_our_rope_gpt_exports_as_llama(tmp_path):
    torch.manual_seed(4)
    cfg = GPTModelConfig(
        num_layers=2, hidden_size=32, ffn_hidden_size=40, num_attention_heads=4,
        num_query_groups=2, encoder_seq_length=24, normalization="rmsnorm", bias=False,
        activation="swiglu", position_embedding_type="rope", rotary_base=2000.0,
        seq_len_interpolation_factor=2.0, share_embeddings_and_output_weights=False,
        init_method_std=0.2,
    )
    ours = GPTModel(cfg, VOCAB).eval()
    export_checkpoint_to_hf(save_checkpoint(tmp_path / "ours.ckpt", ours), tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(hf_logits(hf, "gpt", 24), our_logits(ours, "gpt", 24), rtol=0, atol=1e-4)


def test_our_t5_that_scales_scores_exports_with_the_scale_in_q(tmp_path):
    """HF's T5 never scales q k^T; ours (NeMo's default) does: the export folds 1 / sqrt(d)
    into q, self- and cross-attention alike."""
    torch.manual_seed(5)
    stack = dict(normalization="rmsnorm", bias=False, activation="geglu", init_method_std=0.2)
    cfg = tiny_t5_config(seq_length=20, seq_length_dec=14, stack=stack, decoder={"num_layers": 3},
                         tokens_head_bias=False, share_decoder_tokens_head_embeddings=False)
    ours = T5Model(cfg, VOCAB).eval()
    export_checkpoint_to_hf(save_checkpoint(tmp_path / "ours.ckpt", ours), tmp_path / "hf")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(hf_logits(hf, "t5"), our_logits(ours, "t5"), rtol=0, atol=1e-4)


def test_an_openai_style_gpt2_bin_file_converts(tmp_path):
    """OpenAI's GPT-2 files: pytorch_model.bin of a bare GPT2Model (no "transformer." prefix),
    with the causal-mask buffers older versions stored in every layer."""
    hf = tiny_gpt2()
    folder = tmp_path / "hf"
    folder.mkdir()
    hf.config.to_json_file(folder / "config.json")
    state = {key.removeprefix("transformer."): value for key, value in hf.state_dict().items()
             if key != "lm_head.weight"}
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 16, 16).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")
    ours, _ = load_model(folder)
    torch.testing.assert_close(our_logits(ours, "gpt"), hf_logits(hf, "gpt"), rtol=0, atol=1e-4)
