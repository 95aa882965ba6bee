"""Bad input: one clear error naming the problem, a non-zero exit from the script, and nothing
of an earlier run overwritten."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_lite.training import train
from tests.gpt_testing import REPO, compose_gpt, tiny_overrides


def copy_corpus(prefix: str, directory: Path) -> str:
    for suffix in (".bin", ".idx"):
        shutil.copy(prefix + suffix, directory / ("copy" + suffix))
    return str(directory / "copy")


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=cwd,
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def fake_earlier_run(log_dir: Path) -> Path:
    checkpoint = log_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"the only copy of a week of training")
    return checkpoint


@pytest.mark.parametrize(
    "breakage, error, message",
    [
        ("missing", FileNotFoundError, "copy.bin"),
        ("truncated bin", ValueError, "copy.bin"),
        ("corrupt idx", ValueError, "copy.idx"),
    ],
)
def test_missing_or_damaged_data_files(tiny_corpus, tmp_path, breakage, error, message):
    prefix = copy_corpus(tiny_corpus, tmp_path)
    if breakage == "missing":
        os.remove(prefix + ".bin")
    elif breakage == "truncated bin":
        with open(prefix + ".bin", "r+b") as file:
            file.truncate(os.path.getsize(prefix + ".bin") // 2)
    else:
        Path(prefix + ".idx").write_bytes(b"not an index" * 10)
    with pytest.raises(error, match=message):
        train(compose_gpt(tiny_overrides(prefix, tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # nothing written before the inputs were checked


def test_vocab_smaller_than_the_tokenizers(tiny_corpus, tmp_path):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {"model.override_vocab_size": 200}))
    with pytest.raises(ValueError, match=r"model.override_vocab_size=200 is smaller than the tokenizer's vocabulary of 259"):
        train(cfg)


def test_missing_tokenizer_model(tiny_corpus, tmp_path):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {
        "model.tokenizer.library": "sentencepiece", "model.tokenizer.model": str(tmp_path / "nope.model"),
    }))
    with pytest.raises(FileNotFoundError, match="nope.model"):
        train(cfg)


def test_a_new_run_refuses_a_folder_with_checkpoints(tiny_corpus, tmp_path):
    checkpoint = fake_earlier_run(tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints of an earlier run"):
        train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run")))
    assert checkpoint.read_bytes() == b"the only copy of a week of training"
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["checkpoints", "last.ckpt"]


def test_resuming_another_runs_checkpoint_into_a_used_folder_is_refused(tiny_corpus, trained_run, tmp_path):
    fake_earlier_run(tmp_path / "run")
    other = trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {
        "exp_manager.resume_from_checkpoint": str(other)}))
    with pytest.raises(ValueError, match="would overwrite them"):
        train(cfg)


def test_resume_if_exists_without_a_checkpoint(tiny_corpus, tmp_path):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {"exp_manager.resume_if_exists": True}))
    with pytest.raises(ValueError, match="holds no checkpoint"):
        train(cfg)


def test_missing_or_unreadable_checkpoints(tiny_corpus, tmp_path):
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "a", {
        "exp_manager.resume_from_checkpoint": str(tmp_path / "gone.ckpt")}))
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        train(cfg)
    (tmp_path / "half.ckpt").write_bytes(b"PK\x03\x04 half-written")
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "b", {"restore_from_path": str(tmp_path / "half.ckpt")}))
    with pytest.raises(ValueError, match="half.ckpt is not a readable checkpoint"):
        train(cfg)


def test_script_exits_non_zero_with_one_message(tiny_corpus, tmp_path):
    # A user error: "Error: <message>" on stderr, no traceback, exit status 1.
    result = run_script(*tiny_overrides(str(tmp_path / "missing_text_document"), tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "missing_text_document" in result.stderr and "Traceback" not in result.stderr
    # An unknown key: Hydra's own message names it.
    result = run_script(*tiny_overrides(tiny_corpus, tmp_path / "run"), "model.num_layerz=3")
    assert result.returncode == 1 and "num_layerz" in result.stderr
    # A folder holding checkpoints is left as it was.
    checkpoint = fake_earlier_run(tmp_path / "used")
    result = run_script(*tiny_overrides(tiny_corpus, tmp_path / "used"))
    assert result.returncode == 1 and "already holds checkpoints" in result.stderr
    assert checkpoint.read_bytes() == b"the only copy of a week of training"


def test_script_trains_from_a_users_own_config_folder(tiny_corpus, tmp_path):
    user = tmp_path / "my_configs"
    user.mkdir()
    (user / "tiny.yaml").write_text(
        "defaults:\n  - megatron_gpt_schema\n  - _self_\n"
        f"model:\n  data:\n    data_prefix: [{tiny_corpus}]\n"
        "hydra:\n  run:\n    dir: .\n  output_subdir: null\n"
    )
    overrides = [o for o in tiny_overrides(tiny_corpus, tmp_path / "run", {
        "trainer.max_steps": 4, "inference.tokens_to_generate": 8}) if "data_prefix" not in o]
    result = run_script("--config-path", str(user), "--config-name", "tiny", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--- sample (prompt 'The') ---" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "outputs").exists()  # Hydra writes no folder of its own


def test_resuming_with_another_architecture_lists_the_differences(tiny_corpus, trained_run, tmp_path):
    checkpoint = trained_run.log_dir / "checkpoints" / "last.ckpt"
    cfg = compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "run", {
        "trainer.max_steps": 20, "model.num_layers": 3,
        "exp_manager.resume_from_checkpoint": f"'{checkpoint}'"}))
    with pytest.raises(ValueError, match=r"resuming from .*\n  num_layers: 2 in the checkpoint, 3 in this config"):
        train(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_run_folder_is_named_before_training(tiny_corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=f"{locked / 'run'}: the run folder cannot be written"):
            train(compose_gpt(tiny_overrides(tiny_corpus, locked / "run")))
    finally:
        locked.chmod(0o755)


def test_an_error_raised_in_a_loader_worker_is_printed_as_its_own_message():
    # torch re-raises a worker's exception in the main process with the worker's traceback in
    # its text; the script prints the original message alone.
    from megatron_lite.training.errors import user_message  # noqa: PLC0415

    worker_error = ValueError(
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "gpt_dataset.py", line 230, in window\n    raise ValueError(\n'
        "ValueError: /data/x.bin: sample 7 holds the token id 300, outside the tokenizer's vocabulary [0, 259)\n")
    assert user_message(worker_error) == "/data/x.bin: sample 7 holds the token id 300, outside the tokenizer's vocabulary [0, 259)"
    assert user_message(ValueError("model.num_layers must be >= 1")) == "model.num_layers must be >= 1"
