"""A tiny corpus and one short training run, shared by the training tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_lite.training import MegatronLightningModule, train
from tests.gpt_testing import compose_gpt, tiny_overrides, write_tiny_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny_text_document")


@dataclass
class TrainedRun:
    log_dir: Path
    module: MegatronLightningModule


@pytest.fixture(scope="session")
def trained_run(tiny_corpus, tmp_path_factory) -> TrainedRun:
    """16 steps of the tiny model, validating every 4."""
    log_dir = tmp_path_factory.mktemp("runs") / "trained"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, log_dir, {
        "trainer.max_steps": 16, "inference.tokens_to_generate": 16,
    }))
    return TrainedRun(log_dir, train(cfg))


@pytest.fixture(scope="session")
def t5_trained_run(tiny_corpus, tmp_path_factory) -> TrainedRun:
    """16 steps of the tiny byte-level T5, validating every 4."""
    from tests.t5_testing import compose_t5, tiny_t5_overrides  # noqa: PLC0415

    log_dir = tmp_path_factory.mktemp("runs") / "t5_trained"
    cfg = compose_t5(tiny_t5_overrides(tiny_corpus, log_dir, {
        "trainer.max_steps": 16, "inference.tokens_to_generate": 8,
        "inference.prompt": "'the cat <extra_id_0> the ball.'",
    }))
    return TrainedRun(log_dir, train(cfg))
