"""T5 pieces the Hugging Face comparison does not cover: the flash switches (each alone and both,
loss and every gradient, relative-bias tables included), which attention each switch routes,
padding, fused projections, ALiBi and learned positions, tying, activation checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

import megatron_lite.modules.attention as attention_module
from megatron_lite.models import T5Model
from megatron_lite.training import masked_lm_loss
from tests.modules.test_attention import needs_kernel_on_cpu
from tests.t5_testing import tiny_t5_config

VOCAB = 64
SWITCHES = [(True, False), (False, True), (True, True)]
SWITCH_IDS = ["encoder-flash", "decoder-flash", "both-flash"]


def batch(seq: int = 20, seq_dec: int = 12):
    """Two rows, the second with 7 padded encoder positions."""
    torch.manual_seed(1)
    text_enc = torch.randint(0, VOCAB, (2, seq))
    enc_mask = torch.arange(seq)[None, :] < torch.tensor([[seq], [seq - 7]])  # (B, S)
    text_dec = torch.randint(0, VOCAB, (2, seq_dec))
    labels = torch.randint(0, VOCAB, (2, seq_dec))
    loss_mask = torch.ones(2, seq_dec)
    loss_mask[1, 9:] = 0.0
    return text_enc, text_dec, enc_mask, labels, loss_mask


def twin(encoder_flash: bool, decoder_flash: bool, **cfg_options) -> tuple[T5Model, T5Model]:
    """A PyTorch-path model and one with the given switches, with the same weights."""
    torch.manual_seed(0)
    reference = T5Model(tiny_t5_config(**cfg_options), VOCAB)
    switched_options = {**cfg_options,
                        "encoder": {**cfg_options.get("encoder", {}), "use_flash_attention": encoder_flash},
                        "decoder": {**cfg_options.get("decoder", {}), "use_flash_attention": decoder_flash}}
    switched = T5Model(tiny_t5_config(**switched_options), VOCAB)
    switched.load_state_dict(reference.state_dict())
    return reference, switched


def assert_same_loss_and_gradients(reference: T5Model, switched: T5Model) -> None:
    text_enc, text_dec, enc_mask, labels, loss_mask = batch()
    losses = []
    for model in (reference, switched):
        loss = masked_lm_loss(model(text_enc, text_dec, enc_mask), labels, loss_mask)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p_ref), p_switched in zip(reference.named_parameters(), switched.parameters()):
        assert p_ref.grad is not None and p_ref.grad.abs().max() > 0, name
        torch.testing.assert_close(p_switched.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("encoder_flash, decoder_flash", SWITCHES, ids=SWITCH_IDS)
def test_flash_switches_give_the_same_loss_and_gradients_with_relative_bias(encoder_flash, decoder_flash):
    needs_kernel_on_cpu()
    # GQA and a window (W = 6) shorter than both sequences, so the bias is clamped in the kernel.
    reference, switched = twin(encoder_flash, decoder_flash, stack={"num_query_groups": 2})
    assert_same_loss_and_gradients(reference, switched)
    tables = [name for name, _ in switched.named_parameters() if "relative_attention_bias" in name]
    assert tables == ["encoder.relative_position_bias.relative_attention_bias.weight",
                      "decoder.relative_position_bias.relative_attention_bias.weight"]


@pytest.mark.parametrize("position", ["alibi", "learned_absolute"])
def test_both_switches_with_alibi_and_learned_positions(position):
    needs_kernel_on_cpu()
    reference, switched = twin(True, True, stack={"position_embedding_type": position})
    assert_same_loss_and_gradients(reference, switched)


@pytest.mark.parametrize("encoder_flash, decoder_flash", SWITCHES, ids=SWITCH_IDS)
def test_each_switch_routes_its_attentions(monkeypatch, encoder_flash, decoder_flash):
    needs_kernel_on_cpu()
    calls = []
    real = attention_module.flash_attn_func

    def spy(q, k, v, **kwargs):
        calls.append("cross" if q.shape[1] != k.shape[1] else "self-causal" if kwargs["causal"] else "self")
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(attention_module, "flash_attn_func", spy)
    _, switched = twin(encoder_flash, decoder_flash, decoder={"num_layers": 3})
    text_enc, text_dec, enc_mask, _, _ = batch()
    switched(text_enc, text_dec, enc_mask)
    expected = ["self"] * 2 * encoder_flash + ["self-causal", "cross"] * 3 * decoder_flash
    assert calls == expected  # encoder layers first, then each decoder layer's two attentions


@pytest.mark.parametrize("use_flash", [False, True], ids=["pytorch", "flash"])
@pytest.mark.parametrize("position", ["relative", "alibi", "learned_absolute"])
def test_padding_is_honoured(use_flash, position):
    if use_flash:
        needs_kernel_on_cpu()
    torch.manual_seed(0)
    # One layer a stack: each check is about one attention's masking (a layer more would only
    # repeat it, at 0.2 s an interpreted kernel call).
    model = T5Model(tiny_t5_config(stack={"position_embedding_type": position, "use_flash_attention": use_flash,
                                          "num_layers": 1}), VOCAB).eval()
    text_enc, text_dec, enc_mask, _, _ = batch()
    with torch.no_grad():
        logits = model(text_enc, text_dec, enc_mask)  # (B, Sd, V)
        # Other tokens at the padded encoder positions change nothing.
        repadded = text_enc.masked_fill(~enc_mask, 5)
        torch.testing.assert_close(model(repadded, text_dec, enc_mask), logits, rtol=0, atol=0)
        # The padded row equals that row run alone without its padding.
        alone = model(text_enc[1:, :13], text_dec[1:], None)
        torch.testing.assert_close(logits[1:], alone, rtol=1e-5, atol=1e-5)
        # The decoder is causal: later decoder tokens do not change earlier logits.
        changed = text_dec.clone()
        changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
        torch.testing.assert_close(model(text_enc, changed, enc_mask)[:, :6], logits[:, :6], rtol=0, atol=1e-6)
        # Without the mask the padded tokens are seen: the logits of that row differ.
        assert not torch.allclose(model(text_enc, text_dec)[1], logits[1], atol=1e-4)


def test_projections_are_fused_and_q_k_v_are_views(monkeypatch):
    torch.manual_seed(0)
    model = T5Model(tiny_t5_config(), VOCAB)
    layer = model.decoder.block.layers[0]
    outputs = {}
    layer.attention.linear_qkv.register_forward_hook(lambda m, i, out: outputs.setdefault("qkv", out))
    layer.cross_attention.linear_kv.register_forward_hook(lambda m, i, out: outputs.setdefault("kv", out))
    seen = []
    real = attention_module.dot_product_attention
    monkeypatch.setattr(attention_module, "dot_product_attention",
                        lambda q, k, v, **kw: seen.append((q, k, v)) or real(q, k, v, **kw))
    text_enc, text_dec, enc_mask, _, _ = batch()
    model(text_enc, text_dec, enc_mask)
    # Encoder layers 0, 1, then decoder layer 0's self- and cross-attention.
    (_, k_self, v_self), (_, k_cross, v_cross) = seen[2], seen[3]
    for tensor, fused in ((k_self, "qkv"), (v_self, "qkv"), (k_cross, "kv"), (v_cross, "kv")):
        assert tensor.untyped_storage().data_ptr() == outputs[fused].untyped_storage().data_ptr()
    assert k_cross.shape == (2, 20, 4, 8)  # the encoder's length


def test_embedding_tying_follows_the_share_keys():
    tied = T5Model(tiny_t5_config(), VOCAB)
    assert tied.decoder_word_embeddings is None and tied.output_layer is None
    assert tied.output_bias is not None and tied.output_bias.shape == (VOCAB,)
    untied = T5Model(tiny_t5_config(share_token_embeddings=False, share_decoder_tokens_head_embeddings=False,
                                    tokens_head_bias=False), VOCAB)
    assert untied.decoder_word_embeddings is not None and untied.output_layer is not None
    assert untied.output_bias is None
    parameters = {name: p.numel() for name, p in untied.named_parameters()}
    assert parameters["word_embeddings.weight"] == parameters["output_layer.weight"] == VOCAB * 32
    # Shared head, own decoder table: the logits are the decoder table's, not the encoder's.
    head_from_decoder = T5Model(tiny_t5_config(share_token_embeddings=False, tokens_head_bias=False), VOCAB)
    text_enc, text_dec, enc_mask, _, _ = batch()
    with torch.no_grad():
        head_from_decoder.decoder_word_embeddings.weight.mul_(2)
        hidden = head_from_decoder.decoder(head_from_decoder.decoder_word_embeddings(text_dec),
                                           context=head_from_decoder.encode(text_enc, enc_mask),
                                           context_padding_mask=enc_mask)
        expected = hidden @ head_from_decoder.decoder_word_embeddings.weight.t()
        torch.testing.assert_close(head_from_decoder(text_enc, text_dec, enc_mask), expected)


def test_activation_checkpointing_in_both_stacks_changes_nothing():
    options = {"hidden_dropout": 0.2, "attention_dropout": 0.2}
    checkpointing = {"activations_checkpoint_granularity": "full", "activations_checkpoint_method": "uniform",
                     "activations_checkpoint_num_layers": 1}
    torch.manual_seed(0)
    plain = T5Model(tiny_t5_config(stack=options), VOCAB)
    checkpointed = T5Model(tiny_t5_config(stack={**options, **checkpointing}), VOCAB)
    checkpointed.load_state_dict(plain.state_dict())
    text_enc, text_dec, enc_mask, labels, loss_mask = batch()
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(7)
        loss = masked_lm_loss(model(text_enc, text_dec, enc_mask), labels, loss_mask)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for p_plain, p_ckpt in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p_ckpt.grad, p_plain.grad, rtol=1e-6, atol=1e-7)


def test_selective_checkpointing_changes_nothing_with_cross_attention():
    torch.manual_seed(0)
    options = dict(stack={"hidden_dropout": 0.1, "attention_dropout": 0.1})
    plain = T5Model(tiny_t5_config(**options), VOCAB)
    selective = T5Model(tiny_t5_config(stack={**options["stack"],
                                              "activations_checkpoint_granularity": "selective"}), VOCAB)
    selective.load_state_dict(plain.state_dict())
    text_enc, text_dec, enc_mask, labels, loss_mask = batch()
    losses = []
    for model in (plain, selective):
        torch.manual_seed(5)
        loss = masked_lm_loss(model(text_enc, text_dec, enc_mask), labels, loss_mask)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for p_plain, p_selective in zip(plain.parameters(), selective.parameters()):
        torch.testing.assert_close(p_selective.grad, p_plain.grad, rtol=1e-6, atol=1e-7)
