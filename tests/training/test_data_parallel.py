"""Data parallel: two CPU processes (DDP over gloo, launched by Lightning from the script) give
the losses of one process accumulating the same global batch in two micro-batches."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from megatron_lite.training import train
from tests.gpt_testing import REPO, compose_gpt, metric_by_step, tiny_overrides


def test_two_ranks_match_one_rank_with_gradient_accumulation(tiny_corpus, tmp_path):
    # No dropout: ranks draw their masks from equal RNG states, one process from one stream.
    extra = {"trainer.max_steps": 6, "trainer.val_check_interval": 3, "model.micro_batch_size": 4,
             "model.global_batch_size": 8, "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}
    train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "one", extra)))
    result = subprocess.run(
        [sys.executable, "scripts/train.py",
         *tiny_overrides(tiny_corpus, tmp_path / "two", {**extra, "trainer.devices": 2,
                                                          "trainer.strategy": "ddp"})],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for metric in ("train_loss", "val_loss", "grad_norm"):
        one, two = metric_by_step(tmp_path / "one", metric), metric_by_step(tmp_path / "two", metric)
        assert one.keys() == two.keys() and len(one) >= 2, metric
        for step in one:
            assert two[step] == pytest.approx(one[step], rel=1e-5), (metric, step)
