"""The memory model of docs/parallelism.md (megatron_lite/parallel/memory.py): parameter counts
from the meta model, and how each layout divides each part."""

from __future__ import annotations

import pytest

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel
from megatron_lite.parallel.memory import Layout, count_parameters, estimate, gpt_1_3b, gpt_7b, meta_model


def test_parameter_counts_of_the_documented_models():
    for (cfg, vocab), billions in ((gpt_1_3b(), 1.32), (gpt_7b(), 7.24)):
        params = count_parameters(meta_model(cfg, vocab))
        assert params.total / 1e9 == pytest.approx(billions, abs=0.005)
        assert params.total == params.root + cfg.num_layers * params.per_layer


def test_tensor_parallel_shards_the_matrices_and_embeddings_not_norms_or_positions():
    cfg = GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                         encoder_seq_length=16, max_position_embeddings=16)
    model = GPTModel(cfg, 64)
    params = count_parameters(model)
    replicated = {name for name, _ in model.named_parameters()
                  if "norm" in name or "position_embeddings" in name or name.endswith(("linear_proj.bias", "fc2.bias"))}
    assert params.total == sum(p.numel() for p in model.parameters())
    assert params.total - params.tensor_parallel == sum(p.numel() for n, p in model.named_parameters()
                                                        if n in replicated)


def test_each_layout_divides_what_it_shards():
    cfg, vocab = gpt_1_3b()
    params = count_parameters(meta_model(cfg, vocab))
    one = estimate(cfg, vocab, Layout("one"), 1, 2048, params)
    fsdp = estimate(cfg, vocab, Layout("fsdp", data_parallel=8, fsdp="full"), 1, 2048, params)
    hybrid = estimate(cfg, vocab, Layout("hsdp", data_parallel=64, fsdp="hybrid"), 1, 2048, params)
    tp_sp = estimate(cfg, vocab, Layout("tp", tensor_parallel=8, sequence_parallel=True), 1, 2048, params)
    cp = estimate(cfg, vocab, Layout("cp", context_parallel=4), 1, 2048, params)
    assert one.weights == 4 * params.total and one.optimizer == 8 * params.total
    assert fsdp.gradients == pytest.approx(one.gradients / 8) and fsdp.activations == one.activations
    assert hybrid.optimizer == pytest.approx(fsdp.optimizer)  # shards within a node of 8
    assert tp_sp.activations < one.activations / 6  # all but the loss head's logits chunk split by 8
    assert cp.activations < one.activations / 3.5  # the same but the chunk, split by 4
    two = estimate(cfg, vocab, Layout("one"), 2, 2048, params)
    assert two.activations == pytest.approx(2 * one.activations, rel=0.05)
