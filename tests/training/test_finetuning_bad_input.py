"""Bad fine-tuning input: one clear error before training, from the library and as one line from
scripts/train.py."""

from __future__ import annotations

import re

import pytest

from megatron_lite.training import train
from tests.gpt_testing import write_gpt2_bpe_files
from tests.training.sft_testing import GPT_SFT_CONFIG, compose_sft, gpt_sft_overrides, qa_records, write_jsonl
from tests.training.test_bad_input import run_script


@pytest.fixture
def files(tmp_path) -> tuple[str, str]:
    return write_jsonl(tmp_path / "train.jsonl", qa_records(2)), write_jsonl(tmp_path / "valid.jsonl", qa_records(2))


def base(run):
    return run.log_dir / "checkpoints" / "last.ckpt"


def test_a_record_without_its_field_is_one_line_from_the_script(trained_run, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", [{"input": "a", "output": "b"}, {"input": "c"}])
    result = run_script(f"--config-name={GPT_SFT_CONFIG}",
                        *gpt_sft_overrides(train_file, train_file, tmp_path / "run", base(trained_run)))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {train_file}:2 has no text field(s) ['output'] that prompt_template "
        "'Q: {input} A: {output}' needs")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("tokenizer, message", [
    # The byte tokenizer with sentinels: 262 tokens, the same 272 embedding rows after padding.
    ({"model.tokenizer.num_sentinel_tokens": 3}, "model.tokenizer.* has 262 tokens, the restored "
                                                 "model's tokenizer 259"),
    # A GPT-2 BPE of as many tokens as the byte tokenizer: the same shapes, other tokens.
    ("bpe", "model.tokenizer.* is not the restored model's tokenizer: token 0 is '<|endoftext|>' here, '<0x00>' there"),
])
def test_a_tokenizer_other_than_the_restored_models_is_refused(trained_run, files, tmp_path, tokenizer, message):
    if tokenizer == "bpe":
        vocab_file, merge_file = write_gpt2_bpe_files(tmp_path / "bpe", vocab_size=259)
        tokenizer = {"model.tokenizer.library": "megatron", "model.tokenizer.type": "GPT2BPETokenizer",
                     "model.tokenizer.vocab_file": vocab_file, "model.tokenizer.merge_file": merge_file}
    cfg = compose_sft(gpt_sft_overrides(*files, tmp_path / "run", base(trained_run), tokenizer))
    with pytest.raises(ValueError, match=re.escape(message)):
        train(cfg)


def test_a_checkpoint_of_the_other_family_is_refused(t5_trained_run, files, tmp_path):
    cfg = compose_sft(gpt_sft_overrides(*files, tmp_path / "run", base(t5_trained_run)))
    with pytest.raises(ValueError, match="the checkpoint holds a t5 model, this config builds a gpt model"):
        train(cfg)


def test_too_few_validation_examples_for_a_global_batch(trained_run, files, tmp_path):
    valid = write_jsonl(tmp_path / "few.jsonl", qa_records(1))  # 6 examples, global batch 8
    cfg = compose_sft(gpt_sft_overrides(files[0], valid, tmp_path / "run", base(trained_run)))
    with pytest.raises(ValueError, match=r"validation_ds holds 6 samples, fewer than one global batch \(model"):
        train(cfg)
    cfg = compose_sft(gpt_sft_overrides(*files, tmp_path / "run", base(trained_run), {"trainer.limit_val_batches": 0.5}))
    with pytest.raises(ValueError, match="limit_val_batches=0.5 of the 12 validation samples is less than one"):
        train(cfg)
