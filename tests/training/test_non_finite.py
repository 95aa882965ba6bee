"""A NaN or an infinity in the loss or in a gradient, on one process and on two: with
model.non_finite_action=stop (the default) training stops with a message naming the step and the
first parameter whose gradient is not finite; with skip the optimizer step is skipped on every
rank and counted in skipped_steps. fp16 scales the loss dynamically (NeMo's hysteresis)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from megatron_lite.training import train
from megatron_lite.training.errors import NonFiniteError
from megatron_lite.training.precision import HysteresisGradScaler
from tests.gpt_testing import REPO, compose_gpt, metric_by_step, tiny_overrides
from tests.training.non_finite_run import TARGET_PARAMETER, Fault, FaultInjector, weight_checksum

NAN, INF = math.nan, math.inf
SCRIPT = Path(__file__).resolve().parent / "non_finite_run.py"


class StepChecksums(pl.Callback):
    """The weights' checksum after every optimizer step: {steps done: checksum}."""

    def __init__(self) -> None:
        self.after: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module):
        self.after[0] = weight_checksum(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step] = weight_checksum(pl_module)


def run(tiny_corpus, log_dir, faults, extra=None, callbacks=()):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, log_dir, {"trainer.max_steps": 6, "trainer.val_check_interval": 6,
                                                            **(extra or {})}))
    return train(cfg, callbacks=[FaultInjector(faults), *callbacks])


@pytest.mark.parametrize("fault, message", [
    (Fault("loss", INF, 2, 0), r"training step 2: the loss is not finite \(this rank: loss inf, gradient norm "
                               "[0-9.]+\\); every gradient is finite on this rank"),
    (Fault("grad", NAN, 1, 0), r"training step 1: the gradient norm is not finite \(this rank: loss [0-9.]+, "
                               f"gradient norm nan\\); first parameter with a non-finite gradient: {TARGET_PARAMETER}"),
])
def test_stop_names_the_step_and_the_first_bad_parameter(tiny_corpus, tmp_path, fault, message):
    with pytest.raises(NonFiniteError, match=message + r".*\(model.non_finite_action=stop"):
        run(tiny_corpus, tmp_path / "run", [fault])


def test_skip_leaves_the_weights_alone_and_counts(tiny_corpus, tmp_path):
    faults = [Fault("loss", NAN, 1, 0), Fault("loss", INF, 2, 0), Fault("grad", NAN, 3, 0), Fault("grad", INF, 4, 0)]
    checksums = StepChecksums()
    with pytest.warns(UserWarning, match="the optimizer step is skipped"):
        run(tiny_corpus, tmp_path / "run", faults, {"model.non_finite_action": "skip"}, [checksums])
    after = checksums.after
    for step in range(6):  # after[step + 1] holds the weights once step `step` is done
        assert (after[step + 1] == after[step]) == (step in (1, 2, 3, 4)), step
    assert metric_by_step(tmp_path / "run", "skipped_steps") == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4}
    assert math.isfinite(metric_by_step(tmp_path / "run", "train_loss")[5])


def test_fp16_scales_the_loss_dynamically_with_hysteresis(tiny_corpus, tmp_path):
    # Two overflowing steps in a row halve the scale (hysteresis 2); both are skipped, and the
    # stop action leaves overflows to the scaler.
    extra = {"trainer.precision": 16, "model.native_amp_init_scale": 1024, "trainer.max_steps": 7}
    module = run(tiny_corpus, tmp_path / "run", [Fault("grad", INF, 2, 0), Fault("grad", INF, 3, 0)], extra)
    scaler = module.trainer.precision_plugin.scaler
    assert isinstance(scaler, HysteresisGradScaler) and scaler.hysteresis == 2
    scales = metric_by_step(tmp_path / "run", "loss_scale")
    assert [scales[step] for step in range(6)] == [1024.0] * 4 + [512.0] * 2
    assert metric_by_step(tmp_path / "run", "skipped_steps")[6] == 2
    with pytest.raises(NonFiniteError, match="training step 1: the loss is not finite"):
        run(tiny_corpus, tmp_path / "again", [Fault("loss", NAN, 1, 0)], extra)


def test_hysteresis_scaler_state_survives_a_checkpoint():
    scaler = HysteresisGradScaler("cpu", init_scale=8.0, growth_interval=3, hysteresis=3)
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def step(tested: HysteresisGradScaler, grad: float) -> None:
        tested.scale(weight.sum())
        weight.grad = torch.full((2,), grad)
        tested.unscale_(optimizer)
        tested.step(optimizer)
        tested.update()

    for grad in (INF, 1.0, INF, INF):  # a clean step resets the count of overflows
        step(scaler, grad)
    assert scaler.get_scale() == 8.0  # two overflows in a row, three tolerated
    copy = HysteresisGradScaler("cpu", init_scale=1.0, growth_interval=3, hysteresis=3)
    copy.load_state_dict(scaler.state_dict())
    for tested in (scaler, copy):
        step(tested, INF)
    assert scaler.get_scale() == copy.get_scale() == 4.0  # the third overflow in a row halves it


def start_two_ranks(tiny_corpus, log_dir, faults, extra, output):
    overrides = tiny_overrides(tiny_corpus, log_dir, {
        "trainer.max_steps": 6, "trainer.val_check_interval": 6, "trainer.devices": 2, "trainer.strategy": "ddp",
        "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0, **extra})
    command = [sys.executable, str(SCRIPT), *faults, "--", *overrides]
    with open(output, "w") as file:
        return subprocess.Popen(command, cwd=REPO, stdout=file, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def test_two_ranks_agree_to_skip_or_to_stop(tiny_corpus, tmp_path):
    # Each fault on one rank only: a gradient spoiled after the all-reduce, a loss before it.
    skip = start_two_ranks(tiny_corpus, tmp_path / "skip",
                           ["loss:nan:1:1", "loss:inf:2:0", "grad:nan:3:1", "grad:inf:4:0"],
                           {"model.non_finite_action": "skip"}, tmp_path / "skip.out")
    stop = start_two_ranks(tiny_corpus, tmp_path / "stop", ["grad:nan:2:1"], {}, tmp_path / "stop.out")
    for process in (skip, stop):
        process.wait(timeout=300)
    output = (tmp_path / "skip.out").read_text()
    assert skip.returncode == 0, output[-3000:]
    # Searched anywhere in the text: the other rank's log may share a line with a checksum.
    checksums = dict(re.findall(r"checksum rank (\d+): ([-+0-9.e]+)", output))
    assert len(checksums) == 2 and len(set(checksums.values())) == 1, checksums  # the ranks stayed equal
    assert metric_by_step(tmp_path / "skip", "skipped_steps")[5] == 4
    output = (tmp_path / "stop.out").read_text()
    assert stop.returncode != 0
    assert "Error: training step 2: the gradient norm is not finite (this rank: loss" in output
    assert f"first parameter with a non-finite gradient: {TARGET_PARAMETER}" in output, output[-3000:]
