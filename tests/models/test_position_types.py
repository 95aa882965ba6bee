"""Every position type of GPT (and KERPLE in T5): each bias's values against its paper's formula
written out by hand, the flash path (the Triton kernel, through the interpreter on a CPU) against
the PyTorch path in loss and every gradient (KERPLE's parameters included), bottom-right
alignment when a query block is shorter than the keys, xPos's dependence on distance alone, a
few training steps with each type, and the configuration errors."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules import (
    KerpleBias,
    RotaryEmbedding,
    SandwichBias,
    alibi_slopes,
    dot_product_attention,
    rotate_queries_and_keys,
)
from megatron_lite.training import masked_lm_loss
from megatron_lite_kernels.flash_attention import ParametricBias
from tests.models.test_t5 import assert_same_loss_and_gradients, twin
from tests.modules.test_attention import needs_kernel_on_cpu

VOCAB = 64
BIAS_TYPES = ["alibi", "kerple", "kerple_power", "sandwich"]
ALL_TYPES = ["learned_absolute", "rope", "xpos", *BIAS_TYPES]


def config(**overrides) -> GPTModelConfig:
    values = dict(num_layers=2, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4,
                  num_query_groups=2, encoder_seq_length=24, max_position_embeddings=24,
                  hidden_dropout=0.0, attention_dropout=0.0)
    values.update(overrides)
    return GPTModelConfig(**values)


def perturbed_kerple(module: KerpleBias) -> KerpleBias:
    """Away from the initial values, so that every parameter's formula term matters."""
    with torch.no_grad():
        for index, parameter in enumerate(module.parameters()):
            parameter.copy_(torch.linspace(0.3, 1.7, parameter.numel()) + 0.1 * index)
    return module


# --- the formulas -------------------------------------------------------------------------


def test_alibi_slopes_follow_the_paper_for_8_and_12_heads():
    # Press et al.: for n a power of two, the geometric sequence starting at 2^(-8/n) with that
    # ratio; otherwise those of the largest power of two below n, then every other slope of
    # the sequence for twice that power.
    assert alibi_slopes(8).tolist() == [2.0 ** -(i + 1) for i in range(8)]
    eight = [2.0 ** -(i + 1) for i in range(8)]
    sixteen = [2.0 ** -(0.5 * (i + 1)) for i in range(16)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(eight + sixteen[0::2][:4]))


def test_kerple_values_are_the_papers_kernels():
    distance = torch.arange(-5, 6)
    log = perturbed_kerple(KerpleBias(3, "log"))
    power = perturbed_kerple(KerpleBias(3, "power"))
    for h in range(3):
        a, b, p = (x[h].item() for x in (log.kerple_a, log.kerple_b, log.kerple_p))
        r1, r2 = power.kerple_r1[h].item(), power.kerple_r2[h].item()
        for column, d in enumerate(distance.tolist()):
            assert log.values(distance)[h, column].item() == pytest.approx(
                -b * math.log(1 + a * abs(d) ** p), rel=1e-5, abs=1e-7)
            assert power.values(distance)[h, column].item() == pytest.approx(
                -r1 * abs(d) ** r2, rel=1e-5, abs=1e-7)


def test_kerple_parameters_are_projected_into_their_valid_range_and_keep_their_gradient():
    log = KerpleBias(2, "log")
    with torch.no_grad():
        log.kerple_a.fill_(-3.0)
        log.kerple_b.fill_(-1.0)
        log.kerple_p.fill_(5.0)
    value = log.values(torch.tensor([3]))[0, 0]
    # a and b at 0.01, p at 2, as the parameters themselves
    assert value.item() == pytest.approx(-0.01 * math.log(1 + 0.01 * 3.0 ** 2), rel=1e-5)
    assert log.kerple_b.tolist() == pytest.approx([0.01, 0.01]) and log.kerple_p.tolist() == [2.0, 2.0]
    # at the bound, a parameter still gets a gradient, so training can move it back
    value.backward()
    assert all(p.grad[0] != 0 for p in log.parameters())


@pytest.mark.parametrize("kind", ["log", "power"])
def test_kerple_jacobian_is_the_formulas_derivative(kind):
    # The flash kernel's gradient of KERPLE's parameters is only as right as this hand-written
    # jacobian: against autograd through values(), d = 0 included (where ln |d| is not finite).
    module = perturbed_kerple(KerpleBias(3, kind))
    distance = torch.arange(-6, 7)
    values = module.values(distance)  # (H, N)
    expected = torch.stack([
        torch.stack([torch.stack(torch.autograd.grad(values[h, n], list(module.parameters()),
                                                     retain_graph=True))[:, h]
                     for n in range(distance.numel())], dim=-1)
        for h in range(3)], dim=1)  # (K, H, N)
    torch.testing.assert_close(module.jacobian(distance), expected, rtol=1e-5, atol=1e-6)


def test_kerple_goes_to_the_kernel_as_a_parametric_bias_while_training_only():
    flash = KerpleBias(2, "log", parametric=True)
    bias = flash.attention_inputs(5, 5)["relative_bias"]
    assert isinstance(bias, ParametricBias) and bias.params.requires_grad
    assert not bias.values.requires_grad and bias.jacobian.shape == (3, 2, 9)
    with torch.no_grad():  # generation: the values alone
        assert isinstance(flash.attention_inputs(5, 5)["relative_bias"], torch.Tensor)
    assert isinstance(KerpleBias(2, "log").attention_inputs(5, 5)["relative_bias"], torch.Tensor)


def test_sandwich_values_are_the_inner_product_of_sinusoids():
    heads, head_dim = 4, 8
    values = SandwichBias(heads, head_dim).values(torch.arange(-6, 7))
    for h in range(1, heads + 1):
        for column, d in enumerate(range(-6, 7)):
            inner = sum(math.cos(abs(d) / 10000 ** (2 * k / head_dim))
                        for k in range(1, head_dim // 2 + 1))
            expected = (inner - head_dim / 2) / (8 * h / heads)
            assert values[h - 1, column].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert values[:, 6].abs().max() == 0  # distance 0


def test_xpos_scores_depend_on_the_distance_only_and_decay():
    gamma = 8.0
    rotary = RotaryEmbedding(config(position_embedding_type="xpos", xpos_scale_base=gamma))
    tables = rotary(torch.arange(16)[None])
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8).expand(1, 16, 1, 8), torch.randn(1, 1, 1, 8).expand(1, 16, 1, 8)
    q, k = rotate_queries_and_keys(q, k, tables)
    scores = torch.einsum("bmhd,bnhd->mn", q, k)  # (16, 16)
    for shift in (1, 5):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift])
    # One channel pair (0, D/2), frequency 1 and zeta = 0.4 / 1.4: the score of a query at m and
    # a key at n is zeta^((m - n) / gamma) cos(m - n), decaying with distance into the past.
    unit = torch.zeros(1, 16, 1, 8)
    unit[..., 0] = 1.0
    q, k = rotate_queries_and_keys(unit, unit, tables)
    scores = torch.einsum("bmhd,bnhd->mn", q, k)
    distance = torch.arange(16)[:, None] - torch.arange(16)[None, :]  # m - n
    expected = (0.4 / 1.4) ** (distance / gamma) * torch.cos(distance.float())
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


# --- flash against the PyTorch path ------------------------------------------------------


def gpt_twins(position: str) -> tuple[GPTModel, GPTModel]:
    torch.manual_seed(0)
    reference = GPTModel(config(position_embedding_type=position), VOCAB)
    if isinstance(reference.relative_position_bias, KerpleBias):
        perturbed_kerple(reference.relative_position_bias)
    flash = GPTModel(config(position_embedding_type=position, use_flash_attention=True), VOCAB)
    flash.load_state_dict(reference.state_dict())
    return reference, flash


@pytest.mark.parametrize("position", ALL_TYPES)
def test_gpt_flash_equals_the_pytorch_path_in_loss_and_every_gradient(position):
    needs_kernel_on_cpu()
    reference, flash = gpt_twins(position)
    torch.manual_seed(1)
    tokens, labels = torch.randint(0, VOCAB, (2, 24)), torch.randint(0, VOCAB, (2, 24))
    losses = []
    for model in (reference, flash):
        loss = masked_lm_loss(model(tokens), labels, torch.ones(2, 24))
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p_ref), p_flash in zip(reference.named_parameters(), flash.parameters()):
        assert p_ref.grad is not None and p_ref.grad.abs().max() > 0, name
        torch.testing.assert_close(p_flash.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["kerple", "kerple_power"])
def test_t5_kerple_flash_equals_the_pytorch_path(kind):
    needs_kernel_on_cpu()
    options = {"encoder": {"position_embedding_type": kind},
               "decoder": {"position_embedding_type": kind}}
    reference, switched = twin(True, True, **options)
    for model in (reference, switched):
        torch.manual_seed(2)
        for stack in (model.encoder, model.decoder):
            perturbed_kerple(stack.relative_position_bias)
    assert_same_loss_and_gradients(reference, switched)


@pytest.mark.parametrize("position", BIAS_TYPES)
@pytest.mark.parametrize("use_flash", [False, True])
def test_a_query_block_shorter_than_the_keys_is_aligned_bottom_right(position, use_flash):
    # Decoding: the last queries against every key give the last rows of the full attention.
    if use_flash:
        needs_kernel_on_cpu()
    model = GPTModel(config(position_embedding_type=position), VOCAB)
    bias_module = model.relative_position_bias
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 30, 4, 8) for _ in range(3))
    full = dot_product_attention(q, k, v, use_flash=use_flash, causal=True,
                                 **bias_module.attention_inputs(30, 30))
    tail = dot_product_attention(q[:, -3:], k, v, use_flash=use_flash, causal=True,
                                 **bias_module.attention_inputs(3, 30))
    torch.testing.assert_close(tail, full[:, -3:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("position", ALL_TYPES)
def test_a_tiny_gpt_learns_with_each_type_flash_on_and_off(position):
    needs_kernel_on_cpu()
    torch.manual_seed(4)
    tokens = torch.randint(0, VOCAB, (2, 25))
    curves = []
    for use_flash in (False, True):
        torch.manual_seed(0)
        # One layer: the flash path's gradients are compared layer by layer elsewhere; this is
        # about the whole training step with each type.
        model = GPTModel(config(position_embedding_type=position, use_flash_attention=use_flash, num_layers=1),
                         VOCAB)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        curve = []
        for _ in range(4):
            loss = masked_lm_loss(model(tokens[:, :-1]), tokens[:, 1:], torch.ones(2, 24))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        curves.append(curve)
    assert curves[0][-1] < curves[0][0] - 0.1
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"position_embedding_type": "nope"}, "'learned_absolute', 'rope', 'alibi', 'kerple'"),
    ({"position_embedding_type": "alibi", "rotary_percentage": 0.5},
     "model.rotary_percentage=0.5 applies to position_embedding_type rope only, not 'alibi'"),
    ({"position_embedding_type": "rope", "xpos_scale_base": 64.0},
     "model.xpos_scale_base=64.0 applies to position_embedding_type xpos only"),
    ({"position_embedding_type": "kerple", "rotary_base": 500.0},
     "model.rotary_base=500.0 applies to position_embedding_type rope or xpos only"),
    ({"position_embedding_type": "xpos", "seq_len_interpolation_factor": 2.0},
     "seq_len_interpolation_factor=2.0 applies to position_embedding_type rope only"),
])
def test_parameters_of_another_type_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(**overrides)


def test_learned_positions_past_their_table_name_both_numbers():
    model = GPTModel(config(position_embedding_type="learned_absolute"), VOCAB)
    with pytest.raises(ValueError, match="sequence of 40 tokens is longer than "
                                         "model.max_position_embeddings=24"):
        model(torch.zeros(1, 40, dtype=torch.long))


def test_t5_refuses_types_it_has_not():
    from tests.t5_testing import tiny_t5_config
    with pytest.raises(ValueError, match="'sandwich' is not implemented for T5"):
        tiny_t5_config(encoder={"position_embedding_type": "sandwich"})


def test_t5_kerple_stacks_hold_their_own_parameters():
    from tests.t5_testing import tiny_t5_config
    cfg = tiny_t5_config(encoder={"position_embedding_type": "kerple"},
                         decoder={"position_embedding_type": "kerple_power"})
    names = [name for name, _ in T5Model(cfg, VOCAB).named_parameters() if "kerple" in name]
    assert names == ["encoder.relative_position_bias.kerple_a", "encoder.relative_position_bias.kerple_b",
                     "encoder.relative_position_bias.kerple_p", "decoder.relative_position_bias.kerple_r1",
                     "decoder.relative_position_bias.kerple_r2"]
