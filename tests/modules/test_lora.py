"""LoRA: adapters change nothing at first, only they train, merging equals the adapted model,
target modules and layer selection pick the right layers, bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules.lora import LoraLinear, add_lora, lora_state_dict, merge_lora
from megatron_lite.training import masked_lm_loss
from tests.models.test_position_types import config
from tests.t5_testing import tiny_t5_config

VOCAB = 64


def trained_adapters(model: GPTModel, tokens: torch.Tensor, steps: int = 5) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = masked_lm_loss(model(tokens[:, :-1]), tokens[:, 1:], torch.ones(2, 24))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_adapters_start_as_nothing_train_alone_and_merge_exactly():
    torch.manual_seed(0)
    model = GPTModel(config(), VOCAB)
    tokens = torch.randint(0, VOCAB, (2, 25))
    before = model(tokens[:, :-1]).detach()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = add_lora(model, rank=4, alpha=8.0, target_modules=["attention_qkv", "mlp_fc2"])
    assert len(names) == 4  # two layers x two targets
    torch.testing.assert_close(model(tokens[:, :-1]), before, rtol=0, atol=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(model)) and len(trainable) == 8
    losses = trained_adapters(model, tokens)
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():  # the base weights did not move
        base_name = name.replace(".base.", ".")
        if base_name in frozen:
            assert torch.equal(p, frozen[base_name]), name
    adapted = model(tokens[:, :-1]).detach()
    merge_lora(model)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    torch.testing.assert_close(model(tokens[:, :-1]), adapted, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == set(frozen)  # the plain model's keys again


def test_layer_selection_and_t5_cross_attention():
    model = T5Model(tiny_t5_config(), VOCAB)
    names = add_lora(model, rank=2, alpha=2.0, target_modules=["attention_qkv"], layer_selection=[2])
    assert names == ["encoder.block.layers.1.attention.linear_qkv",
                     "decoder.block.layers.1.attention.linear_qkv",
                     "decoder.block.layers.1.cross_attention.linear_q",
                     "decoder.block.layers.1.cross_attention.linear_kv"]


@pytest.mark.parametrize("options, message", [
    (dict(rank=4, alpha=1.0, target_modules=["attention_kqv"]), "not among"),
    (dict(rank=0, alpha=1.0), "rank"),
    (dict(rank=2, alpha=1.0, layer_selection=[9]), "no layer to adapt"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        add_lora(GPTModel(config(), VOCAB), **options)


def test_nemos_init_methods():
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, 8))
    model = GPTModel(config(), VOCAB)
    before = model(tokens).detach()
    add_lora(model, rank=4, alpha=4.0, init_a="zero", init_b="normal")
    torch.testing.assert_close(model(tokens), before, rtol=0, atol=0)  # A at zero: no update yet
    layer = model.decoder.layers[0].attention.linear_qkv
    assert layer.lora_a.abs().sum() == 0 and 0.1 < layer.lora_b.std() < 0.3  # N(0, 0.2)
    other = GPTModel(config(), VOCAB)
    add_lora(other, rank=4, alpha=4.0, init_a="xavier", init_b="normal")
    assert not torch.allclose(other(tokens), before)
    with pytest.raises(ValueError, match="init method 'kaiming' is not one of"):
        add_lora(GPTModel(config(), VOCAB), rank=4, alpha=4.0, init_a="kaiming")
