"""Training end to end on a tiny model: the loss falls, one folder holds the run, the lr follows
the schedule, a resumed run continues exactly, restore_from_path loads exactly."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from megatron_lite.training import load_model, lr_at_step, restore_weights, train
from megatron_lite.training.checkpointing import read_checkpoint
from tests.gpt_testing import compose_gpt, metric_by_step, read_metrics, tiny_overrides


def test_tiny_model_trains_and_writes_one_run_folder(trained_run, capsys):
    log_dir = trained_run.log_dir
    losses = metric_by_step(log_dir, "train_loss")
    val = metric_by_step(log_dir, "val_loss")
    assert sorted(losses) == list(range(16))
    assert losses[0] > math.log(259) - 0.5  # starts near uniform over the byte vocabulary
    assert sum(list(losses.values())[-4:]) / 4 < losses[0] - 1.0
    assert sorted(val) == [3, 7, 11, 15] and val[15] < val[3]
    # Everything in one folder: checkpoints, resolved config, CSV and TensorBoard logs.
    names = {path.name for path in (log_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in names and len(names) == 4  # last + top 3 by val_loss
    assert not any(name.endswith(".tmp") for name in names)
    assert (log_dir / "config.yaml").read_text().count("num_layers: 2") == 1
    assert list(log_dir.glob("events.out.tfevents.*"))
    row = read_metrics(log_dir)[5]
    assert float(row["tokens_per_sec"]) > 0 and float(row["grad_norm"]) > 0
    assert "mfu" not in row  # no peak FLOP/s figure for a CPU


def test_learning_rate_follows_the_schedule(trained_run):
    cfg = trained_run.module.cfg
    logged = metric_by_step(trained_run.log_dir, "lr")
    for step, lr in logged.items():
        assert lr == pytest.approx(lr_at_step(step, cfg), rel=1e-6)
    # Warm-up (2 steps) to 3e-3, cosine down to 3e-4 at the last step.
    assert logged[0] == pytest.approx(1.5e-3) and logged[1] == pytest.approx(3e-3)
    assert logged[15] == pytest.approx(3e-4 + 2.7e-3 * 0.5 * (1 + math.cos(math.pi * 13 / 14)))


@pytest.mark.parametrize("name", ["CosineAnnealing", "WarmupAnnealing"])
def test_schedule_shapes(name):
    cfg = compose_gpt(["model.data.data_prefix=[x]", "model.tokenizer.model=t", "trainer.max_steps=100",
                       f"model.optim.sched.name={name}", "model.optim.lr=1.0",
                       "model.optim.sched.warmup_steps=10", "model.optim.sched.constant_steps=20",
                       "model.optim.sched.min_lr=0.1"])
    lrs = [lr_at_step(step, cfg) for step in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # never rises after warm-up
    assert lrs[80:] == pytest.approx([0.1] * 20)  # the constant hold at min_lr
    halfway = lrs[45]
    assert halfway == pytest.approx(0.55 if name == "WarmupAnnealing" else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


class StopAfter(pl.Callback):
    """Ends training after `steps` optimizer steps, as a crash or time limit would."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_corpus, tmp_path):
    # Dropout draws random numbers and two micro-batches make a step: resuming must restore
    # the RNG state and the data position, not only the weights and the optimizer.
    extra = {"trainer.max_steps": 8, "trainer.val_check_interval": 4, "model.micro_batch_size": 2,
             "model.hidden_dropout": 0.1, "model.attention_dropout": 0.1}
    whole = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "whole", extra))
    train(whole)
    parts = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "parts", extra))
    train(parts, callbacks=[StopAfter(4)])
    assert metric_by_step(tmp_path / "parts", "train_loss").keys() == set(range(4))
    resumed = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "parts",
                                         {**extra, "exp_manager.resume_if_exists": True}))
    train(resumed)

    for metric in ("train_loss", "val_loss", "lr", "grad_norm", "consumed_samples"):
        expected = metric_by_step(tmp_path / "whole", metric)
        assert metric_by_step(tmp_path / "parts", metric) == expected, metric
    assert len(metric_by_step(tmp_path / "whole", "train_loss")) == 8
    final = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "parts")]
    assert final[0]["global_step"] == final[1]["global_step"] == 8
    assert final[0]["consumed_samples"] == final[1]["consumed_samples"] == 64
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(final[1]["state_dict"][key], value), key


def test_resume_from_checkpoint_path(tiny_corpus, trained_run, tmp_path):
    checkpoint = next((trained_run.log_dir / "checkpoints").glob("*step=8-*.ckpt"))
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "again", {
        # Quoted: checkpoint names hold "=", which Hydra reads as an override otherwise.
        "trainer.max_steps": 16, "exp_manager.resume_from_checkpoint": f"'{checkpoint}'",
    }))
    train(cfg)
    again = metric_by_step(tmp_path / "again", "train_loss")
    assert sorted(again) == list(range(8, 16))
    assert again == {step: loss for step, loss in metric_by_step(trained_run.log_dir, "train_loss").items()
                     if step >= 8}


def test_restore_from_path_loads_the_weights_exactly(trained_run):
    path = trained_run.log_dir / "checkpoints" / "last.ckpt"
    source = trained_run.module.model.eval()
    # Non-structural changes are allowed: dropout, flash attention, lr, batch sizes.
    cfg = compose_gpt(tiny_overrides("/elsewhere/data", trained_run.log_dir.parent / "finetune", {
        "model.hidden_dropout": 0.3, "model.use_flash_attention": True, "model.optim.lr": 1e-4,
        "model.optim.sched.min_lr": 1e-5,
        "model.global_batch_size": 4, "restore_from_path": str(path),
    }))
    from megatron_lite.models import GPTModel  # noqa: PLC0415

    target = GPTModel(cfg.model, source.vocab_size)
    restore_weights(target, path)
    tokens = torch.randint(0, 259, (2, 32))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    with torch.no_grad():
        # The same weights through the flash kernel: equal up to the kernel's rounding.
        torch.testing.assert_close(target.eval()(tokens), source(tokens), rtol=1e-5, atol=1e-5)
        loaded, loaded_cfg = load_model(path)
        torch.testing.assert_close(loaded(tokens), source(tokens), rtol=0, atol=0)
    assert loaded_cfg.model.num_layers == 2


class CaptureStartWeights(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


def test_restore_from_path_starts_a_new_run_from_the_weights(tiny_corpus, trained_run, tmp_path):
    path = trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "finetune", {
        "trainer.max_steps": 4, "model.optim.lr": 1e-4, "model.optim.sched.min_lr": 1e-5,
        "restore_from_path": str(path),
    }))
    capture = CaptureStartWeights()
    train(cfg, callbacks=[capture])
    expected = trained_run.module.model.state_dict()
    for key, value in expected.items():
        assert torch.equal(capture.state[key], value.cpu()), key
    # A new run: its own steps from 0, its own data position.
    assert sorted(metric_by_step(tmp_path / "finetune", "train_loss")) == [0, 1, 2, 3]
    assert read_checkpoint(tmp_path / "finetune" / "checkpoints" / "last.ckpt")["consumed_samples"] == 32


@pytest.mark.parametrize(
    "change, differing",
    [
        ({"model.num_layers": 3}, ["num_layers"]),
        ({"model.hidden_size": 48, "model.ffn_hidden_size": 96}, ["ffn_hidden_size", "hidden_size", "kv_channels"]),
        ({"model.num_query_groups": 2}, ["num_query_groups"]),
        ({"model.position_embedding_type": "rope"}, ["max_position_embeddings", "position_embedding_type",
                                                     "rotary_percentage"]),
        ({"model.make_vocab_size_divisible_by": 128}, ["padded_vocab_size"]),
        ({"model.activation": "swiglu"}, ["activation"]),
    ],
)
def test_restore_from_path_rejects_a_structural_mismatch(trained_run, change, differing):
    path = trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_gpt(tiny_overrides("/d", trained_run.log_dir.parent / "x", change))
    from megatron_lite.models import GPTModel  # noqa: PLC0415
    from megatron_lite.tokenizers import ByteTokenizer  # noqa: PLC0415
    from megatron_lite.training import padded_vocab_size  # noqa: PLC0415

    model = GPTModel(cfg.model, padded_vocab_size(cfg, ByteTokenizer()))
    with pytest.raises(ValueError, match="differs in structure") as error:
        restore_weights(model, path)
    listed = [line.split(":")[0].strip() for line in str(error.value).splitlines()[1:]]
    assert listed == differing


def test_last_checkpoint_is_written_when_training_ends_between_validations(tiny_corpus, tmp_path):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {"trainer.max_steps": 6}))
    module = train(cfg)
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6 and last["consumed_samples"] == 48
    for key, value in module.model.state_dict().items():
        assert torch.equal(last["state_dict"]["model." + key], value), key
