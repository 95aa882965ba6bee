"""FSDP2 through train() on 2 CPU processes (gloo): the losses, gradient norms and final weights
of one process accumulating the same global batch; checkpoints moved between layouts (a sharded
FSDP checkpoint resumed by one process, one process's file resumed under FSDP, an FSDP file
resumed without FSDP) continue the uninterrupted run's curve. GPT, on 4 processes with
context parallel or with tensor + sequence parallel too, and T5 with activation checkpointing
and the 'grad' sharding strategy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megatron_lite.training import load_model, train
from megatron_lite.training.distributed_checkpoint import is_distributed_checkpoint
from tests.gpt_testing import compose_gpt, tiny_overrides, write_tiny_corpus
from tests.parallel.distributed_testing import (
    assert_same_metrics,
    assert_same_weights,
    checkpoint_at,
    run_script,
)
from tests.t5_testing import compose_t5, tiny_t5_overrides

pytestmark = pytest.mark.distributed

# Checkpoints after steps 3 and 6; one process accumulates two micro-batches per step, two
# processes one each. No dropout: ranks and one process draw their masks differently.
STEPS = {"trainer.max_steps": 6, "trainer.val_check_interval": 3, "model.micro_batch_size": 4,
         "model.global_batch_size": 8}
GPT_EXTRA = {**STEPS, "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}
FSDP = {"trainer.devices": 2, "model.fsdp": True}
RESUMED_STEPS = {3, 4, 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny_text_document")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def gpt_one(corpus, runs) -> Path:
    train(compose_gpt(tiny_overrides(corpus, runs / "gpt_one", GPT_EXTRA)))
    return runs / "gpt_one"


@pytest.fixture(scope="module")
def gpt_fsdp(corpus, runs) -> Path:
    run_script(tiny_overrides(corpus, runs / "gpt_fsdp", {**GPT_EXTRA, **FSDP,
                                                           "model.fsdp_sharded_checkpoint": True}))
    return runs / "gpt_fsdp"


def test_fsdp_on_two_processes_equals_one_process(gpt_one, gpt_fsdp):
    assert_same_metrics(gpt_one, gpt_fsdp, steps=set(range(6)))
    last = gpt_fsdp / "checkpoints" / "last.ckpt"
    assert is_distributed_checkpoint(last) and len(list(last.glob("*.distcp"))) == 2
    assert_same_weights(gpt_one / "checkpoints" / "last.ckpt", last)
    # What generation, evaluation and export read: the model, gathered in this process.
    tokens = torch.arange(1, 17)[None]
    with torch.no_grad():
        want, got = (load_model(path)[0](tokens) for path in (gpt_one / "checkpoints" / "last.ckpt", last))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_sharded_checkpoint_resumes_on_one_process(corpus, runs, gpt_one, gpt_fsdp):
    resumed = runs / "gpt_fsdp_to_one"
    train(compose_gpt(tiny_overrides(corpus, resumed, {
        **GPT_EXTRA, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(gpt_fsdp, 3)}'"})))
    assert_same_metrics(gpt_one, resumed, steps=RESUMED_STEPS)
    assert_same_weights(gpt_one / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_a_one_process_file_resumes_under_fsdp(corpus, runs, gpt_one):
    resumed = runs / "gpt_one_to_fsdp"
    run_script(tiny_overrides(corpus, resumed, {
        **GPT_EXTRA, **FSDP, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(gpt_one, 3)}'"}))
    assert_same_metrics(gpt_one, resumed, steps=RESUMED_STEPS)
    assert_same_weights(gpt_one / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_data_and_context_parallel_on_four_processes_resume_on_one(corpus, runs, gpt_one):
    """DP=2 x CP=2: the two context-parallel ranks of a data-parallel rank read the same
    samples (the sampler's rank is the data_parallel one), FSDP shards over all four; its
    sharded checkpoint resumes on one process without context parallel."""
    four, resumed = runs / "gpt_dp2_cp2", runs / "gpt_dp2_cp2_to_one"
    run_script(tiny_overrides(corpus, four, {**GPT_EXTRA, **FSDP, "trainer.devices": 4,
                                             "model.context_parallel_size": 2,
                                             "model.fsdp_sharded_checkpoint": True}))
    assert_same_metrics(gpt_one, four, steps=set(range(6)))
    train(compose_gpt(tiny_overrides(corpus, resumed, {
        **GPT_EXTRA, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(four, 3)}'"})))
    assert_same_metrics(gpt_one, resumed, steps=RESUMED_STEPS)
    assert_same_weights(gpt_one / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_tensor_and_data_parallel_on_four_processes_and_checkpoints_both_ways(corpus, runs, gpt_one):
    """TP=2 + SP x DP=2 (FSDP) on 4 processes equals one process; its sharded checkpoint
    resumes as TP=1 on one process, and one process's file resumes under TP=2 x DP=2, each on
    the uninterrupted curve. (The vocabulary is padded to make_vocab_size_divisible_by x tp:
    8 x 2 gives one process's 272 rows at 16.)"""
    tp, resumed, back = runs / "gpt_tp2_dp2", runs / "gpt_tp2_dp2_to_one", runs / "gpt_one_to_tp2_dp2"
    layout = {**GPT_EXTRA, **FSDP, "trainer.devices": 4, "model.tensor_model_parallel_size": 2,
              "model.sequence_parallel": True, "model.make_vocab_size_divisible_by": 8,
              "model.fsdp_sharded_checkpoint": True}
    run_script(tiny_overrides(corpus, tp, layout))
    assert_same_metrics(gpt_one, tp, steps=set(range(6)))
    train(compose_gpt(tiny_overrides(corpus, resumed, {
        **GPT_EXTRA, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(tp, 3)}'"})))
    assert_same_metrics(gpt_one, resumed, steps=RESUMED_STEPS)
    assert_same_weights(gpt_one / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    run_script(tiny_overrides(corpus, back, {
        **layout, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(gpt_one, 3)}'"}))
    assert_same_metrics(gpt_one, back, steps=RESUMED_STEPS)


T5_AC = {f"model.{stack}.activations_checkpoint_{key}": value for stack in ("encoder", "decoder")
         for key, value in (("granularity", "full"), ("method", "uniform"), ("num_layers", 1))}


def test_t5_under_fsdp_with_activation_checkpointing_equals_one_process_and_resumes_without(corpus, runs):
    one, fsdp, resumed = runs / "t5_one", runs / "t5_fsdp", runs / "t5_fsdp_to_one"
    train(compose_t5(tiny_t5_overrides(corpus, one, STEPS)))
    run_script(tiny_t5_overrides(corpus, fsdp, {**STEPS, **FSDP, **T5_AC, "model.fsdp_sharding_strategy": "grad"}),
               config_name="megatron_t5_config")
    assert_same_metrics(one, fsdp, steps=set(range(6)))
    assert not is_distributed_checkpoint(fsdp / "checkpoints" / "last.ckpt")  # one full file
    assert_same_weights(one / "checkpoints" / "last.ckpt", fsdp / "checkpoints" / "last.ckpt")
    train(compose_t5(tiny_t5_overrides(corpus, resumed, {
        **STEPS, "exp_manager.resume_from_checkpoint": f"'{checkpoint_at(fsdp, 3)}'"})))
    assert_same_metrics(one, resumed, steps=RESUMED_STEPS)
