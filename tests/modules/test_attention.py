"""The attention seam: fused-qkv views, GQA without repeats, flash vs PyTorch path, fallback,
and packed-document masking against running each document on its own."""

from __future__ import annotations

import warnings

import pytest
import torch

import megatron_lite.modules.attention as attention_module
from megatron_lite_kernels.flash_attention import flash_attention_supported
from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel
from megatron_lite.training import masked_lm_loss

VOCAB = 64


def tiny_config(**overrides) -> GPTModelConfig:
    values = dict(
        num_layers=2, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4, num_query_groups=2,
        encoder_seq_length=24, max_position_embeddings=24, hidden_dropout=0.0, attention_dropout=0.0,
    )
    values.update(overrides)
    return GPTModelConfig(**values)


def needs_kernel_on_cpu() -> None:
    """The flash tests run the real kernel on CPU tensors, through the Triton interpreter (the
    suite's conftest sets TRITON_INTERPRET=1 where there is no CUDA GPU)."""
    if not flash_attention_supported(torch.device("cpu")):
        pytest.skip("the Triton kernel runs on CPU tensors only under TRITON_INTERPRET=1")


def twin(cfg: GPTModelConfig, **changes) -> tuple[GPTModel, GPTModel]:
    """Two models with the same weights, the second built with `changes`."""
    torch.manual_seed(0)
    first = GPTModel(cfg, VOCAB)
    second = GPTModel(tiny_config(**{**cfg.__dict__, **changes}), VOCAB)
    second.load_state_dict(first.state_dict())
    return first, second


def packed_batch(seq: int = 24):
    """Two rows of three documents each, with position ids restarting at every document."""
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, seq))
    lengths = [[7, 9, 8], [12, 5, 7]]
    segment_ids = torch.stack([torch.repeat_interleave(torch.arange(3), torch.tensor(row)) for row in lengths])
    position_ids = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths])
    return tokens, position_ids, segment_ids.to(torch.int32), lengths


@pytest.mark.parametrize("groups", [2, 4], ids=["gqa", "mha"])
def test_q_k_v_come_from_the_projection_grouped_by_query_group(monkeypatch, groups):
    """linear_qkv's rows: per query group, its q heads, then k, then v (Megatron's layout); k and
    v are views (and q too with one head per group), kv heads are not repeated."""
    model = GPTModel(tiny_config(num_query_groups=groups), VOCAB)
    layer = model.decoder.layers[0].attention
    seen = {}
    layer.linear_qkv.register_forward_hook(lambda mod, inp, out: seen.setdefault("qkv", out))
    real = attention_module.dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.setdefault("qkv_heads", (q, k, v))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(attention_module, "dot_product_attention", spy)
    model(torch.randint(0, VOCAB, (2, 10)))
    q, k, v = seen["qkv_heads"]
    assert q.shape == (2, 10, 4, 8) and k.shape == v.shape == (2, 10, groups, 8)
    fused = seen["qkv"].view(2, 10, groups, 4 // groups + 2, 8)  # (B, S, G, r + 2, D)
    torch.testing.assert_close(q.view(2, 10, groups, 4 // groups, 8), fused[:, :, :, :-2], rtol=0, atol=0)
    torch.testing.assert_close(k, fused[:, :, :, -2], rtol=0, atol=0)
    torch.testing.assert_close(v, fused[:, :, :, -1], rtol=0, atol=0)
    storage = seen["qkv"].untyped_storage().data_ptr()
    views = (q, k, v) if groups == 4 else (k, v)  # GQA's q heads are gathered: a copy
    for tensor in views:
        assert tensor.untyped_storage().data_ptr() == storage  # a view, no copy


@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_flash_and_pytorch_paths_give_the_same_loss_and_gradients(position):
    needs_kernel_on_cpu()
    cfg = tiny_config(position_embedding_type=position, use_flash_attention=False)
    reference, flash = twin(cfg, use_flash_attention=True)
    tokens, position_ids, segment_ids, _ = packed_batch()
    labels = torch.roll(tokens, -1, dims=1)
    mask = torch.ones_like(tokens, dtype=torch.float32)
    losses = []
    for model in (reference, flash):
        loss = masked_lm_loss(model(tokens, position_ids, segment_ids), labels, mask)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p_ref), p_flash in zip(reference.named_parameters(), flash.parameters()):
        assert p_ref.grad.abs().max() > 0, name
        torch.testing.assert_close(p_flash.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_flash_without_a_usable_kernel_warns_once_and_runs_the_pytorch_path(monkeypatch):
    monkeypatch.setattr(attention_module, "flash_attention_supported", lambda device: False)
    attention_module._warn_flash_unavailable.cache_clear()
    reference, flash = twin(tiny_config(), use_flash_attention=True)
    tokens = torch.randint(0, VOCAB, (2, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = flash(tokens)
        flash(tokens)
    messages = [str(w.message) for w in caught if "use_flash_attention" in str(w.message)]
    assert len(messages) == 1 and "PyTorch attention path" in messages[0]
    torch.testing.assert_close(out, reference(tokens), rtol=0, atol=0)
    attention_module._warn_flash_unavailable.cache_clear()


@pytest.mark.parametrize("use_flash", [False, True], ids=["pytorch", "flash"])
@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_document_masking_matches_each_document_run_alone(use_flash, position):
    if use_flash:
        needs_kernel_on_cpu()
    torch.manual_seed(3)
    model = GPTModel(tiny_config(position_embedding_type=position, use_flash_attention=use_flash), VOCAB)
    tokens, position_ids, segment_ids, lengths = packed_batch()
    packed = model(tokens, position_ids, segment_ids)  # (B, S, V)
    for row, row_lengths in enumerate(lengths):
        start = 0
        for length in row_lengths:
            alone = model(tokens[row:row + 1, start:start + length])  # positions 0..length-1
            torch.testing.assert_close(packed[row:row + 1, start:start + length], alone,
                                       rtol=1e-5, atol=1e-5)
            start += length
    # Without the segment ids, later documents see earlier ones: the logits differ.
    unmasked = model(tokens, position_ids)
    assert not torch.allclose(unmasked[:, 10:], packed[:, 10:], atol=1e-3)
