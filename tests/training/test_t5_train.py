"""T5 training end to end: it learns on the bundled corpus, writes one run folder, resumes
exactly, restores weights exactly and refuses a structural mismatch, and fails cleanly on bad
input (one message, exit status 1)."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_lite.data import prepare_default_corpus
from megatron_lite.models import T5Model
from megatron_lite.tokenizers import ByteTokenizer, build_tokenizer
from megatron_lite.training import load_model, padded_vocab_size, restore_weights, train
from megatron_lite.training.checkpointing import read_checkpoint
from tests.gpt_testing import compose_gpt, metric_by_step, read_metrics, tiny_overrides
from tests.t5_testing import compose_t5, tiny_t5_overrides
from tests.training.test_bad_input import run_script
from tests.training.test_train import StopAfter


@pytest.fixture(scope="module")
def pydoc_corpus(tmp_path_factory) -> tuple[str, str]:
    return prepare_default_corpus(str(tmp_path_factory.mktemp("pydoc")))


def test_t5_learns_on_the_bundled_corpus(pydoc_corpus, tmp_path):
    data_prefix, tokenizer_model = pydoc_corpus
    cfg = compose_t5(tiny_t5_overrides(data_prefix, tmp_path / "run", {
        "model.tokenizer.library": "sentencepiece", "model.tokenizer.model": tokenizer_model,
        "model.tokenizer.num_sentinel_tokens": 100, "model.make_vocab_size_divisible_by": 128,
        "model.seq_length": 64, "model.data.seq_length_dec": 16,
        "model.data.splits_string": "'900,50,50'", "trainer.max_steps": 40,
        "trainer.val_check_interval": 10, "model.optim.lr": 5e-3,
    }))
    module = train(cfg)
    # 4096 pieces + 100 sentinels, padded to a multiple of 128: every sentinel has a row.
    tokenizer = build_tokenizer("sentencepiece", tokenizer_model, num_sentinel_tokens=100)
    assert tokenizer.vocab_size == 4196 and module.model.vocab_size == 4224
    assert max(tokenizer.sentinel_ids) < module.model.vocab_size
    val = metric_by_step(tmp_path / "run", "val_loss")
    assert sorted(val) == [9, 19, 29, 39]
    assert val[9] > val[19] > val[39] and val[39] < math.log(4196) - 1.5
    losses = metric_by_step(tmp_path / "run", "train_loss")
    assert losses[0] > math.log(4196) - 1.0  # starts near uniform over the vocabulary


def test_run_folder_and_throughput_count_both_sides(t5_trained_run):
    log_dir = t5_trained_run.log_dir
    names = {path.name for path in (log_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in names and len(names) == 4  # last + top 3 by val_loss
    assert all(name.startswith("megatron_t5--") for name in names - {"last.ckpt"})
    config = (log_dir / "config.yaml").read_text()
    assert "encoder:" in config and "seq_length_dec: 16" in config
    row = read_metrics(log_dir)[5]
    assert float(row["tokens_per_sec"]) > 0 and float(row["grad_norm"]) > 0
    losses = metric_by_step(log_dir, "train_loss")
    assert sum(list(losses.values())[-4:]) / 4 < losses[0] - 0.5
    checkpoint = read_checkpoint(log_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["model_family"] == "t5" and checkpoint["padded_vocab_size"] == 288  # 259 + 16 -> x16


def test_tokens_per_step_counts_encoder_and_decoder_positions(t5_trained_run):
    from megatron_lite.training import family_of  # noqa: PLC0415

    cfg = t5_trained_run.module.cfg
    family = family_of(cfg)
    assert family.tokens_per_sample(cfg) == 48 + 16
    # FLOPs: 6 x weights x positions they apply to, plus attention, as spelled out by hand.
    model = t5_trained_run.module.model
    hidden, ffn, layers, vocab = 32, 64, 2, 288
    attention_weights = 4 * hidden * hidden  # qkv + proj (self) or q + kv + proj (cross)
    mlp_weights = 2 * hidden * ffn
    encoder = layers * (attention_weights + mlp_weights) * 48
    cross_kv = layers * 2 * hidden * hidden * 48
    decoder = (layers * (2 * attention_weights - 2 * hidden * hidden + mlp_weights) + vocab * hidden) * 16
    attention = 12 * layers * hidden * (48 * 48 + 16 * (16 + 48))
    assert family.flops_per_sample(model, cfg) == 6 * (encoder + cross_kv + decoder) + attention


def test_sample_is_printed_at_the_end(tiny_corpus, tmp_path, capsys):
    cfg = compose_t5(tiny_t5_overrides(tiny_corpus, tmp_path / "run", {
        "trainer.max_steps": 2, "trainer.val_check_interval": 2, "inference.tokens_to_generate": 6,
    }))
    train(cfg)
    out = capsys.readouterr().out
    assert "--- sample (prompt 'The <extra_id_0> statement is used to <extra_id_1> a loop.') ---" in out
    assert "output:    " in out and "filled in: The" in out


def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_corpus, tmp_path):
    # Dropout everywhere and two micro-batches a step: RNG state and data position must resume.
    extra = {"trainer.max_steps": 8, "trainer.val_check_interval": 4, "model.micro_batch_size": 2,
             "model.embedding_dropout": 0.1}
    for stack in ("encoder", "decoder"):
        extra.update({f"model.{stack}.hidden_dropout": 0.1, f"model.{stack}.attention_dropout": 0.1})
    train(compose_t5(tiny_t5_overrides(tiny_corpus, tmp_path / "whole", extra)))
    train(compose_t5(tiny_t5_overrides(tiny_corpus, tmp_path / "parts", extra)), callbacks=[StopAfter(4)])
    assert metric_by_step(tmp_path / "parts", "train_loss").keys() == set(range(4))
    train(compose_t5(tiny_t5_overrides(tiny_corpus, tmp_path / "parts",
                                       {**extra, "exp_manager.resume_if_exists": True})))
    for metric in ("train_loss", "val_loss", "lr", "grad_norm", "consumed_samples"):
        expected = metric_by_step(tmp_path / "whole", metric)
        assert metric_by_step(tmp_path / "parts", metric) == expected, metric
    final = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "parts")]
    assert final[0]["global_step"] == final[1]["global_step"] == 8
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(final[1]["state_dict"][key], value), key


def test_restore_from_path_loads_the_weights_exactly(t5_trained_run, tmp_path):
    path = t5_trained_run.log_dir / "checkpoints" / "last.ckpt"
    source = t5_trained_run.module.model.eval()
    # Non-structural changes are allowed: dropout, both flash switches, lengths, lr.
    cfg = compose_t5(tiny_t5_overrides("/elsewhere/data", tmp_path / "finetune", {
        "model.encoder.hidden_dropout": 0.3, "model.encoder.use_flash_attention": True,
        "model.decoder.use_flash_attention": True, "model.seq_length": 64,
        "model.data.seq_length_dec": 24, "model.optim.lr": 1e-4, "model.optim.sched.min_lr": 1e-5,
        "restore_from_path": str(path),
    }))
    target = T5Model(cfg.model, source.vocab_size)
    restore_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    text_enc, text_dec = torch.randint(0, 275, (2, 30)), torch.randint(0, 275, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(text_enc, text_dec), source(text_enc, text_dec),
                                   rtol=1e-5, atol=1e-5)
        loaded, loaded_cfg = load_model(path)
        torch.testing.assert_close(loaded(text_enc, text_dec), source(text_enc, text_dec), rtol=0, atol=0)
    assert loaded_cfg.model.decoder.num_layers == 2


@pytest.mark.parametrize(
    "change, differing",
    [
        ({"model.encoder.num_layers": 3}, ["encoder.num_layers"]),
        ({"model.decoder.relative_attention_num_buckets": 8}, ["decoder.relative_attention_num_buckets"]),
        ({"model.decoder.position_embedding_type": "alibi"},
         ["decoder.position_embedding_type", "decoder.relative_attention_max_distance",
          "decoder.relative_attention_num_buckets"]),
        ({"model.share_decoder_tokens_head_embeddings": False}, ["share_decoder_tokens_head_embeddings"]),
        ({"model.decoder.normalize_attention_scores": False}, ["decoder.normalize_attention_scores"]),
        ({"model.tokenizer.num_sentinel_tokens": 32}, ["padded_vocab_size"]),
    ],
)
def test_restore_from_path_rejects_a_structural_mismatch(t5_trained_run, change, differing):
    path = t5_trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_t5(tiny_t5_overrides("/d", t5_trained_run.log_dir.parent / "x", change))
    model = T5Model(cfg.model, padded_vocab_size(cfg, ByteTokenizer(cfg.model.tokenizer.num_sentinel_tokens)))
    with pytest.raises(ValueError, match="differs in structure") as error:
        restore_weights(model, path)
    listed = [line.split(":")[0].strip() for line in str(error.value).splitlines()[1:]]
    assert listed == differing


def test_a_checkpoint_of_the_other_family_is_refused(t5_trained_run, trained_run, tiny_corpus, tmp_path):
    gpt_checkpoint = trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_t5(tiny_t5_overrides(tiny_corpus, tmp_path / "run", {"restore_from_path": str(gpt_checkpoint)}))
    with pytest.raises(ValueError, match="the checkpoint holds a gpt model, this config builds a t5 model"):
        train(cfg)
    t5_checkpoint = t5_trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "gpt", {"restore_from_path": str(t5_checkpoint)}))
    with pytest.raises(ValueError, match="the checkpoint holds a t5 model, this config builds a gpt model"):
        train(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "gpt").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        # The data side measures the targets: 48-token inputs make 12-token targets.
        ({"model.data.seq_length_dec": 8}, "data.seq_length_dec=8 is too short"),
        # 48-token inputs have 3 masked spans, each needing its own sentinel.
        ({"model.tokenizer.num_sentinel_tokens": 2}, "tokenizer.num_sentinel_tokens=2 is too few"),
        ({"model.tokenizer.num_sentinel_tokens": 0}, "model.tokenizer.num_sentinel_tokens=0"),
        ({"model.encoder.relative_attention_num_buckets": 200},
         "model.encoder.relative_attention_num_buckets=200 is larger than"),
        ({"model.decoder.position_embedding_type": "rope"}, "model.decoder.position_embedding_type='rope'"),
        ({"model.decoder.hidden_size": 64}, "model.encoder.hidden_size=32 and model.decoder.hidden_size=64 differ"),
    ],
)
def test_bad_input_ends_the_script_with_one_message(tiny_corpus, tmp_path, change, message):
    result = run_script("--config-name=megatron_t5_config", *tiny_t5_overrides(tiny_corpus, tmp_path / "run", change))
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the inputs were checked
