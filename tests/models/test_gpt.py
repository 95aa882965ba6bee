"""GPT pieces that the Hugging Face comparisons do not cover: activations, post-LN, partial and
interpolated rotary, scaled init, activation checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel
from megatron_lite.modules import MLP, RotaryEmbedding, TransformerLayer, apply_rotary
from megatron_lite.training import masked_lm_loss

VOCAB = 64


def config(**overrides) -> GPTModelConfig:
    values = dict(num_layers=4, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4,
                  encoder_seq_length=16, max_position_embeddings=16, hidden_dropout=0.0,
                  attention_dropout=0.0)
    values.update(overrides)
    return GPTModelConfig(**values)


@pytest.mark.parametrize(
    "activation, formula",
    [
        ("gelu", lambda h: F.gelu(h)),
        ("relu", lambda h: F.relu(h)),
        ("squared-relu", lambda h: F.relu(h) ** 2),
        ("geglu", lambda h: F.gelu(h[..., 0::2]) * h[..., 1::2]),
        ("reglu", lambda h: F.relu(h[..., 0::2]) * h[..., 1::2]),
        ("swiglu", lambda h: F.silu(h[..., 0::2]) * h[..., 1::2]),
    ],
)
def test_mlp_activations(activation, formula):
    torch.manual_seed(0)
    mlp = MLP(config(activation=activation))
    x = torch.randn(2, 5, 32)
    h = x @ mlp.linear_fc1.weight.t() + mlp.linear_fc1.bias
    expected = formula(h) @ mlp.linear_fc2.weight.t() + mlp.linear_fc2.bias
    torch.testing.assert_close(mlp(x), expected)


def test_post_ln_normalizes_after_each_residual_and_has_no_final_norm():
    torch.manual_seed(0)
    cfg = config(transformer_block_type="post_ln")
    layer = TransformerLayer(cfg)
    x = torch.randn(2, 6, 32)
    h = layer.attention_norm(x + layer.attention(x, None, None))
    torch.testing.assert_close(layer(x, None, None), layer.mlp_norm(h + layer.mlp(h)))
    assert GPTModel(cfg, VOCAB).decoder.final_norm is None
    assert GPTModel(config(), VOCAB).decoder.final_norm is not None


def test_partial_rotary_rotates_the_leading_channels_only():
    cfg = config(position_embedding_type="rope", rotary_percentage=0.5, kv_channels=16)
    positions = torch.arange(10)[None]
    cos, sin, xpos_scale = RotaryEmbedding(cfg)(positions)
    assert xpos_scale is None
    assert cos.shape == (1, 10, 1, 8)
    x = torch.randn(1, 10, 4, 16)
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out[..., 8:], x[..., 8:], rtol=0, atol=0)
    # The rotated half is a rotation of each (i, i + 4) pair by position * 10000^(-2i/8).
    angle = positions[0, :, None] * 10000.0 ** (-torch.arange(0, 8, 2) / 8)  # (S, 4)
    x1, x2 = x[..., :4], x[..., 4:8]
    c, s = angle.cos()[None, :, None], angle.sin()[None, :, None]
    torch.testing.assert_close(out[..., :4], x1 * c - x2 * s)
    torch.testing.assert_close(out[..., 4:8], x2 * c + x1 * s)


def test_seq_len_interpolation_divides_positions():
    plain = RotaryEmbedding(config(position_embedding_type="rope"))
    stretched = RotaryEmbedding(config(position_embedding_type="rope", seq_len_interpolation_factor=4.0))
    positions = torch.arange(32)[None]
    torch.testing.assert_close(stretched(positions)[0], plain(positions.float() / 4)[0])


def test_scaled_init_of_output_projections():
    torch.manual_seed(0)
    cfg = config(num_layers=8, hidden_size=256, ffn_hidden_size=1024, num_attention_heads=4)
    model = GPTModel(cfg, 512)
    layer = model.decoder.layers[0]
    scaled = 0.02 / math.sqrt(2 * 8)
    assert layer.attention.linear_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.mlp.linear_fc2.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.attention.linear_qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embedding.word_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.attention.linear_qkv.bias.abs().max() == 0
    unscaled = GPTModel(config(num_layers=8, hidden_size=256, ffn_hidden_size=1024,
                               num_attention_heads=4, use_scaled_init_method=False), 512)
    assert unscaled.decoder.layers[0].mlp.linear_fc2.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("method, layers, recomputed", [("uniform", 2, 4), ("block", 1, 1), ("block", 3, 3)])
def test_activation_checkpointing_recomputes_and_changes_nothing(method, layers, recomputed):
    # Dropout on: the recomputation must replay the same masks.
    base = config(hidden_dropout=0.2, attention_dropout=0.2, ffn_dropout=0.1)
    ckpt = config(hidden_dropout=0.2, attention_dropout=0.2, ffn_dropout=0.1,
                  activations_checkpoint_granularity="full", activations_checkpoint_method=method,
                  activations_checkpoint_num_layers=layers)
    torch.manual_seed(0)
    plain = GPTModel(base, VOCAB)
    checkpointed = GPTModel(ckpt, VOCAB)
    checkpointed.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, VOCAB, (2, 16))
    forwards = {"count": 0}

    def count(*args):
        forwards["count"] += 1

    for layer in checkpointed.decoder.layers:
        layer.register_forward_pre_hook(count)
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(7)
        # Early stop would end a recomputation once it has what backward needs: count them all.
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            loss = masked_lm_loss(model(tokens), torch.roll(tokens, -1, 1), torch.ones(2, 16))
            loss.backward()
        losses.append(loss)
    assert forwards["count"] == 4 + recomputed  # each checkpointed layer ran again in backward
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for p_plain, p_ckpt in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p_ckpt.grad, p_plain.grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("position", ["rope", "kerple"])
def test_torch_compile_sees_the_whole_model_as_one_graph(position):
    # The flash kernel is a custom op and draws its dropout seed on the device: torch.compile
    # traces a training forward (dropout on) without a graph break.
    from tests.modules.test_attention import needs_kernel_on_cpu

    needs_kernel_on_cpu()
    model = GPTModel(config(position_embedding_type=position, use_flash_attention=True,
                            attention_dropout=0.1, hidden_dropout=0.1), VOCAB).train()
    explanation = torch._dynamo.explain(model)(torch.randint(0, VOCAB, (2, 16)))
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("activation", ["gelu", "geglu"])
def test_openai_gelu_is_the_tanh_approximation(activation):
    torch.manual_seed(0)
    mlp = MLP(config(activation=activation, openai_gelu=True))
    x = torch.randn(2, 5, 32)
    h = x @ mlp.linear_fc1.weight.t() + mlp.linear_fc1.bias
    tanh_gelu = lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))  # noqa: E731
    h = tanh_gelu(h) if activation == "gelu" else tanh_gelu(h[..., 0::2]) * h[..., 1::2]
    torch.testing.assert_close(mlp(x), h @ mlp.linear_fc2.weight.t() + mlp.linear_fc2.bias)


@pytest.mark.parametrize("block_type", ["pre_ln", "post_ln"])
def test_selective_checkpointing_keeps_attention_and_recomputes_the_rest(block_type):
    # Dropout on everywhere: the recomputed MLP and residual branches must replay their masks.
    import megatron_lite.modules.attention as attention_module

    options = dict(hidden_dropout=0.2, attention_dropout=0.2, ffn_dropout=0.1,
                   transformer_block_type=block_type)
    torch.manual_seed(0)
    plain = GPTModel(config(**options), VOCAB)
    selective = GPTModel(config(**options, activations_checkpoint_granularity="selective"), VOCAB)
    selective.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, VOCAB, (2, 16))
    calls = {"attention": 0, "mlp": 0}
    real_attention = attention_module.dot_product_attention

    def counted_attention(*args, **kwargs):
        calls["attention"] += 1
        return real_attention(*args, **kwargs)

    for layer in selective.decoder.layers:
        layer.mlp.register_forward_pre_hook(lambda *_: calls.__setitem__("mlp", calls["mlp"] + 1))
    losses, saved = [], []
    for model in (plain, selective):
        torch.manual_seed(7)
        calls.update(attention=0, mlp=0)
        sizes = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(attention_module, "dot_product_attention", counted_attention)
            with torch.autograd.graph.saved_tensors_hooks(
                    lambda t: sizes.append(t.numel()) or t, lambda t: t), \
                    torch.utils.checkpoint.set_checkpoint_early_stop(False):
                loss = masked_lm_loss(model(tokens), torch.roll(tokens, -1, 1), torch.ones(2, 16))
            loss.backward()
        losses.append(loss)
        saved.append(sum(sizes))
    assert calls == {"attention": 4, "mlp": 8}  # the kernel ran once per layer, the MLP twice
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for p_plain, p_selective in zip(plain.parameters(), selective.parameters()):
        torch.testing.assert_close(p_selective.grad, p_plain.grad, rtol=1e-6, atol=1e-7)
    assert saved[1] < 0.6 * saved[0]  # what autograd keeps for the backward


def test_torch_compile_key_compiles_the_layers_and_changes_nothing():
    torch.manual_seed(0)
    eager = GPTModel(config(position_embedding_type="rope", num_layers=1), VOCAB)
    compiled = GPTModel(config(position_embedding_type="rope", num_layers=1, torch_compile=True), VOCAB)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.decoder.compiled_spans is not None and eager.decoder.compiled_spans is None
    tokens = torch.randint(0, VOCAB, (2, 16))
    results = []
    for model in (eager, compiled):
        loss = masked_lm_loss(model(tokens), torch.roll(tokens, -1, 1), torch.ones(2, 16))
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
