"""Bad input stops a conversion with a ValueError that names the problem: another architecture,
what one side cannot express (listed by key), missing, unexpected or misshapen tensors (listed
by name), settings we do not implement."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.interop import checkpoint_from_hf, export_checkpoint_to_hf
from megatron_lite.interop.gpt2 import GPT2
from megatron_lite.interop.gpt2 import hf_config as gpt2_config
from megatron_lite.interop.llama import LLAMA
from megatron_lite.interop.llama import hf_config as llama_config
from megatron_lite.interop.t5 import T5
from megatron_lite.interop.t5 import hf_config as t5_config
from megatron_lite.models import T5Model
from tests.interop.checkpoints import save_checkpoint
from tests.interop.hf_models import VOCAB, tiny_gpt2, tiny_llama
from tests.t5_testing import tiny_t5_config

SOURCE = "hf/folder"


def gpt2_import(config_changes=None, state_changes=None):
    hf = tiny_gpt2()
    config = {**hf.config.to_dict(), **(config_changes or {})}
    return GPT2.import_model(config, {**hf.state_dict(), **(state_changes or {})}, SOURCE)


def test_missing_unexpected_and_misshapen_tensors_are_listed():
    state = tiny_gpt2().state_dict()
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.2.attn.c_attn.weight"] = torch.zeros(32, 96)
    state["transformer.h.0.ln_1.weight"] = torch.zeros(48)
    with pytest.raises(ValueError) as error:
        GPT2.import_model(tiny_gpt2().config.to_dict(), state, SOURCE)
    message = str(error.value)
    assert message.startswith(f"{SOURCE}: the weights are not those of the model config.json describes")
    assert "missing tensors (1): transformer.h.1.mlp.c_fc.weight" in message
    assert "unexpected tensors (1): transformer.h.2.attn.c_attn.weight" in message
    assert "tensors of another shape (1): transformer.h.0.ln_1.weight [48] (expected [32])" in message


def test_weights_of_another_size_than_config_json_are_refused():
    with pytest.raises(ValueError, match=r"missing tensors \(12\): transformer\.h\.2\.") as error:
        gpt2_import({"n_layer": 3})
    with pytest.raises(ValueError, match=r"tensors of another shape .*mlp\.c_fc\.weight \[32, 128\] "
                                         r"\(expected \[32, 64\]\)"):
        gpt2_import({"n_inner": 64})
    assert "another architecture or size" in str(error.value)


@pytest.mark.parametrize("architecture, changes, match", [
    (GPT2, {"activation_function": "quick_gelu"},
     "activation_function='quick_gelu' is not an activation of ours"),
    (GPT2, {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
    (LLAMA, {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}},
     "rope type 'llama3' is not implemented here"),
    (LLAMA, {"attention_bias": True}, "attention_bias=True and mlp_bias=False differ"),
    (T5, {"feed_forward_proj": "gated-silu", "dense_act_fn": "mish"},
     "feed_forward_proj / dense_act_fn='mish' is not an activation of ours"),
], ids=["gpt2-quick-gelu", "gpt2-layer-scaling", "llama3-rope", "llama-bias-mix", "t5-mish"])
def test_hf_settings_we_do_not_implement_are_refused(architecture, changes, match):
    config = {"model_type": architecture.model_type, "vocab_size": VOCAB, **changes}
    with pytest.raises(ValueError, match=match):
        architecture.import_model(config, {}, SOURCE)


def gpt_config(**changes) -> GPTModelConfig:
    values = dict(num_layers=1, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4)
    return GPTModelConfig(**{**values, **changes})


@pytest.mark.parametrize("write, cfg, keys", [
    (llama_config, gpt_config(), ["model.position_embedding_type='learned_absolute'",
                                  "model.normalization='layernorm'", "model.activation='gelu'"]),
    (llama_config, gpt_config(position_embedding_type="rope", rotary_percentage=0.5,
                              normalization="rmsnorm", activation="swiglu"),
     ["model.rotary_percentage=0.5 (Llama rotates every channel of a head: 1.0)"]),
    (gpt2_config, gpt_config(transformer_block_type="post_ln", num_query_groups=2, bias=False),
     ["model.transformer_block_type='post_ln'", "model.num_query_groups=2", "model.bias=False"]),
    (gpt2_config, gpt_config(position_embedding_type="alibi", activation="swiglu"),
     ["model.position_embedding_type='alibi'", "model.activation='swiglu'"]),
], ids=["llama-from-gpt2-like", "llama-partial-rotary", "gpt2-post-ln-gqa", "gpt2-alibi-swiglu"])
def test_what_a_hf_class_cannot_express_is_refused_by_key(write, cfg, keys):
    with pytest.raises(ValueError, match="cannot write a ") as error:
        write(cfg, VOCAB)
    for key in keys:
        assert key in str(error.value)


def test_t5_export_refusals_name_the_keys():
    cfg = tiny_t5_config(stack={"normalization": "rmsnorm", "bias": False},
                         encoder={"ffn_hidden_size": 64}, decoder={"position_embedding_type": "alibi"})
    with pytest.raises(ValueError) as error:
        t5_config(cfg, VOCAB)
    message = str(error.value)
    for part in ("model.decoder.position_embedding_type='alibi'",
                 "model.encoder.ffn_hidden_size=64 and model.decoder.ffn_hidden_size=48 differ",
                 "model.tokens_head_bias=True (HF's T5 has no output bias"):
        assert part in message


def test_another_architecture_than_asked_for_is_refused(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match=r"holds a 'llama' model .*not the 'gpt2' asked for"):
        checkpoint_from_hf(tmp_path / "llama", family="gpt2")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"model_type='bert' is not an architecture we convert; "
                                         r"these are: \['gpt2', 'llama', 't5'\]"):
        checkpoint_from_hf(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a Hugging Face model folder: it has no config.json"):
        checkpoint_from_hf(tmp_path / "empty")

    t5 = T5Model(tiny_t5_config(stack={"normalization": "rmsnorm", "bias": False},
                                tokens_head_bias=False), VOCAB)
    checkpoint = save_checkpoint(tmp_path / "t5.ckpt", t5)
    with pytest.raises(ValueError, match="a LlamaForCausalLM is a gpt model; the checkpoint holds a t5 model"):
        export_checkpoint_to_hf(checkpoint, tmp_path / "out", family="llama")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        export_checkpoint_to_hf(checkpoint, tmp_path / "taken")
