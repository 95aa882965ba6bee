"""NeMo's meaning of keys a NeMo user relies on, in training: data_prefix as a {train,
validation, test} dict, val_check_interval and limit_val_batches as fractions, NeMo's resume
rules, do_layer_norm_weight_decay, gradient_as_bucket_view; the start-up line listing ignored
keys; and what a killed run leaves behind (half-written temporaries, a cut CSV line)."""

from __future__ import annotations

import logging

import pytest
import torch
from pytorch_lightning.strategies import DDPStrategy

from megatron_lite.data import split_token_counts
from megatron_lite.training import train
from megatron_lite.training.checkpointing import AtomicCheckpointIO
from megatron_lite.training.exp_manager import prepare_run
from megatron_lite.training.loggers import CSVMetricsLogger
from megatron_lite.training.module import CONFIG_KEY
from megatron_lite.training.optim import param_groups
from megatron_lite.training.trainer import build_strategy
from tests.gpt_testing import compose_gpt, metric_by_step, tiny_overrides


def test_dict_data_prefix_and_fractional_validation(tiny_corpus, tmp_path, caplog):
    data_prefix = f"{{train:[{tiny_corpus}],validation:{tiny_corpus}}}"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {
        "model.data.data_prefix": data_prefix, "trainer.max_steps": 8, "trainer.val_check_interval": 0.5,
        "trainer.limit_val_batches": 0.25, "model.bias_activation_fusion": True}))
    with caplog.at_level(logging.WARNING):
        module = train(cfg)
    # Validation every half of the run, after steps 4 and 8 (logged at steps 3 and 7).
    assert sorted(metric_by_step(tmp_path / "run", "val_loss")) == [3, 7]
    # A quarter of one pass over the whole validation data (the dict form reads every document).
    one_pass = (split_token_counts(cfg.model.data.data_prefix, "1,0,0")[1] - 1) // cfg.model.encoder_seq_length
    batches = int(0.25 * one_pass) // cfg.model.global_batch_size
    assert batches >= 1 and len(module.trainer.datamodule.valid_dataset) == batches * cfg.model.global_batch_size
    listed = [record.getMessage() for record in caplog.records if "NeMo keys accepted and ignored" in record.getMessage()]
    assert len(listed) == 1 and "model.bias_activation_fusion" in listed[0]


def fake_checkpoint(path, step: int) -> None:
    AtomicCheckpointIO().save_checkpoint({"global_step": step, CONFIG_KEY: {}}, path)


def resume_config(tiny_corpus, log_dir, **exp_manager):
    return compose_gpt(tiny_overrides(tiny_corpus, log_dir, {f"exp_manager.{k}": v for k, v in exp_manager.items()}))


def test_resume_rules_are_nemos(tiny_corpus, tmp_path):
    elsewhere = tmp_path / "elsewhere.ckpt"
    fake_checkpoint(elsewhere, 3)
    run_dir = tmp_path / "run"
    both = {"resume_if_exists": True, "resume_from_checkpoint": str(elsewhere)}
    # Nothing in the folder yet: resume_from_checkpoint is the fallback.
    assert prepare_run(resume_config(tiny_corpus, run_dir, **both)).resume_from == elsewhere
    # Once the folder has its own checkpoints, they win.
    fake_checkpoint(run_dir / "checkpoints" / "last.ckpt", 5)
    assert prepare_run(resume_config(tiny_corpus, run_dir, **both)).resume_from == run_dir / "checkpoints" / "last.ckpt"
    # model.resume_from_checkpoint is what NeMo's GPT YAML interpolates into exp_manager's.
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "other", {"model.resume_from_checkpoint": str(elsewhere)}))
    assert prepare_run(cfg).resume_from == elsewhere
    # resume_ignore_no_checkpoint without resume_if_exists is NeMo's default pairing, and harmless.
    cfg = resume_config(tiny_corpus, tmp_path / "new", resume_ignore_no_checkpoint=True)
    assert prepare_run(cfg).resume_from is None


def test_a_resume_clears_half_written_checkpoints(tiny_corpus, tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    fake_checkpoint(checkpoints / "last.ckpt", 4)
    (checkpoints / "last.ckpt.tmp").write_bytes(b"cut short by a kill")
    run = prepare_run(resume_config(tiny_corpus, tmp_path / "run", resume_if_exists=True))
    assert run.resume_from == checkpoints / "last.ckpt" and run.resume_step == 4
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt"]


def test_a_metrics_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train_loss\r\n0,5.5\r\n1,5.4\r\n2,5.")
    logger = CSVMetricsLogger(path, resume_step=3)
    logger.log_metrics({"train_loss": 5.3}, step=2)
    logger.save()
    assert path.read_bytes() == b"step,train_loss\r\n0,5.5\r\n1,5.4\r\n2,5.3\r\n"


@pytest.mark.parametrize("decay_all", [False, True])
def test_do_layer_norm_weight_decay(decay_all):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decayed, undecayed = param_groups(model, 0.1, decay_all)
    assert len(decayed["params"]) == (4 if decay_all else 1) and len(undecayed["params"]) == (0 if decay_all else 3)


@pytest.mark.parametrize("bucket_view", [True, False])
def test_gradient_as_bucket_view_reaches_ddp(bucket_view):
    cfg = compose_gpt(["model.data.data_prefix=[x]", "model.tokenizer.model=t", "trainer.devices=2",
                       f"model.gradient_as_bucket_view={bucket_view}"])
    strategy = build_strategy(cfg)
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["gradient_as_bucket_view"] is bucket_view
