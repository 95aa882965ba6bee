"""docs/bad_input.md, checked: every bad input listed there is tried here, and the table shows the
one-line error it gets, as the code words it today. Every error is one a user can act on
(a ValueError, FileNotFoundError, ... naming the key, file or value), never one from deep
inside (IndexError, KeyError, struct.error, a RuntimeError of torch).

After changing a message, rewrite the table with
    MEGATRON_LITE_WRITE_BAD_INPUT_TABLE=1 python -m pytest tests/training/test_bad_input_table.py
and read the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from megatron_lite.data import IndexedDatasetWriter
from megatron_lite.tokenizers import build_tokenizer
from megatron_lite.training import train
from megatron_lite.training.errors import USER_ERRORS
from tests.gpt_testing import REPO, compose_gpt, tiny_overrides, write_gpt2_bpe_files, write_tiny_corpus
from tests.t5_testing import compose_t5, tiny_t5_overrides

DOC = REPO / "docs" / "bad_input.md"
TABLE_START = "<!-- The tables below are checked by tests/training/test_bad_input_table.py. -->"
# What a user can act on from the message alone; Hydra's own errors name the key too.
CLEAN_ERRORS = (*USER_ERRORS, ConfigCompositionException)
PLACEHOLDER_DATA = ["model.data.data_prefix=[/data/corpus_text_document]", "model.tokenizer.model=/data/tok.model"]


class Inputs:
    """The files the cases damage or point at, under one folder shown as /data and /runs."""

    def __init__(self, root: Path, tiny_corpus: str, trained: Path, t5_trained: Path) -> None:
        self.root = root
        self.data, self.runs = root / "data", root / "runs"
        self.data.mkdir()
        self.runs.mkdir()
        self.corpus = self.copy_corpus(tiny_corpus, "corpus")
        self.trained, self.t5_trained = trained, t5_trained
        self._count = 0

    def numbered(self, name: str) -> str:
        """`name` with a number no other case has used (normalize() hides it again)."""
        self._count += 1
        return f"{name}{self._count}"

    def copy_corpus(self, prefix: str, name: str) -> str:
        for suffix in (".bin", ".idx"):
            shutil.copy(prefix + suffix, self.data / f"{name}_text_document{suffix}")
        return str(self.data / f"{name}_text_document")

    def run_dir(self) -> Path:
        return self.runs / self.numbered("run")

    def train(self, extra: dict | None = None, *, corpus: str | None = None, t5: bool = False) -> None:
        compose, overrides = (compose_t5, tiny_t5_overrides) if t5 else (compose_gpt, tiny_overrides)
        train(compose(overrides(corpus or self.corpus, self.run_dir(), extra)))

    def normalize(self, text: str) -> str:
        for path, shown in ((self.trained, "/runs/trained"), (self.t5_trained, "/runs/t5_trained"),
                            (self.data, "/data"), (self.runs, "/runs"), (REPO, "<repo>")):
            text = text.replace(str(path), shown)
        # The cases' own copies and folders are numbered; the table shows them unnumbered.
        return re.sub(r"(/runs/run|/data/damaged)\d+", r"\1", text)


@dataclass(frozen=True)
class Case:
    area: str
    input: str  # as the table shows it
    attempt: Callable[[Inputs], object]  # does what the user would do; must raise


def config(*overrides: str) -> Callable[[Inputs], object]:
    return lambda inputs: compose_gpt([*PLACEHOLDER_DATA, *overrides])


def data_prefix(value: str) -> Callable[[Inputs], object]:
    return lambda inputs: compose_gpt([*PLACEHOLDER_DATA[1:], f"model.data.data_prefix={value}"])


def t5_config(*overrides: str) -> Callable[[Inputs], object]:
    return lambda inputs: compose_t5([*PLACEHOLDER_DATA, *overrides])


def nemo_config(*overrides: str) -> Callable[[Inputs], object]:
    nemo_dir = REPO / "tests" / "config" / "nemo_1_23"
    return lambda inputs: compose_gpt([*PLACEHOLDER_DATA[:1], *overrides], config_name="megatron_gpt_config",
                                      config_dir=nemo_dir)


def training(extra: dict, t5: bool = False) -> Callable[[Inputs], object]:
    return lambda inputs: inputs.train(extra, t5=t5)


def damaged(damage: Callable[[str], None]) -> Callable[[Inputs], object]:
    """Train on a copy of the corpus that `damage(prefix)` has broken."""
    def attempt(inputs: Inputs) -> None:
        prefix = inputs.copy_corpus(inputs.corpus, inputs.numbered("damaged"))
        damage(prefix)
        inputs.train(corpus=prefix)
    return attempt


def truncate(suffix: str, keep: int | None = None) -> Callable[[str], None]:
    def damage(prefix: str) -> None:
        path = prefix + suffix
        size = os.path.getsize(path)
        with open(path, "r+b") as file:
            file.truncate(size // 2 if keep is None else keep)
    return damage


def overwrite(suffix: str, offset: int, data: bytes) -> Callable[[str], None]:
    def damage(prefix: str) -> None:
        with open(prefix + suffix, "r+b") as file:
            file.seek(offset)
            file.write(data)
    return damage


def rewritten(documents: list[list[int]], dtype) -> Callable[[str], None]:
    def damage(prefix: str) -> None:
        with IndexedDatasetWriter(prefix, np.dtype(dtype)) as writer:
            for document in documents:
                writer.add_document(document)
    return damage


def remove(suffix: str) -> Callable[[str], None]:
    return lambda prefix: os.remove(prefix + suffix)


def with_tokenizer(**keys: str) -> Callable[[Inputs], object]:
    def attempt(inputs: Inputs) -> None:
        vocab_file, merge_file = write_gpt2_bpe_files(inputs.data / "gpt2")
        files = {"VOCAB": vocab_file, "MERGES": merge_file, "MISSING": str(inputs.data / "missing.model")}
        extra = {f"model.tokenizer.{key}": files.get(value, value) for key, value in keys.items()}
        inputs.train({"model.tokenizer.library": "megatron", **extra} if "type" in keys else extra)
    return attempt


def checkpoint(key: str, which: str = "trained", **extra) -> Callable[[Inputs], object]:
    def attempt(inputs: Inputs) -> None:
        path = {"trained": inputs.trained, "t5_trained": inputs.t5_trained}[which] / "checkpoints" / "last.ckpt"
        inputs.train({key: f"'{path}'", "trainer.max_steps": 20, **extra})
    return attempt


def fake_checkpoint_file(name: str, content: bytes, key: str) -> Callable[[Inputs], object]:
    def attempt(inputs: Inputs) -> None:
        path = inputs.data / name
        path.write_bytes(content)
        inputs.train({key: str(path)})
    return attempt


def folder_with_checkpoints(extra: dict) -> Callable[[Inputs], object]:
    def attempt(inputs: Inputs) -> None:
        log_dir = inputs.runs / "used"
        (log_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copy(inputs.trained / "checkpoints" / "last.ckpt", log_dir / "checkpoints" / "last.ckpt")
        train(compose_gpt(tiny_overrides(inputs.corpus, log_dir, extra)))
    return attempt


def run_folder_under_a_file(inputs: Inputs) -> None:
    (inputs.runs / "a_file").write_text("")
    train(compose_gpt(tiny_overrides(inputs.corpus, inputs.runs / "a_file" / "run")))


def little_free_disk(inputs: Inputs) -> None:
    usage = SimpleNamespace(total=2**30, used=2**30 - 2**18, free=2**18)  # 256 KiB free
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: usage)
        inputs.train()


def data_of_a_larger_vocabulary(inputs: Inputs) -> None:
    """A corpus tokenized with a 300-token GPT-2 BPE, trained with the 259-token byte tokenizer."""
    vocab_file, merge_file = write_gpt2_bpe_files(inputs.data / "gpt2")
    gpt2 = build_tokenizer("megatron", type="GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    inputs.train(corpus=write_tiny_corpus(inputs.data / "gpt2_text_document", tokenizer=gpt2))


def kernel_call(**changes) -> Callable[[Inputs], object]:
    def attempt(inputs: Inputs) -> None:
        from megatron_lite_kernels.flash_attention import flash_attn_func  # noqa: PLC0415

        tensors = {name: torch.randn(1, 16, 2, 16) for name in ("q", "k", "v")}
        options = {}
        for name, value in changes.items():
            (tensors if name in tensors else options)[name] = value
        flash_attn_func(tensors["q"], tensors["k"], tensors["v"], **options)
    return attempt


def script(*arguments: str) -> Callable[[Inputs], object]:
    """scripts/train.py as a user runs it: its last line on stderr becomes the error."""
    def attempt(inputs: Inputs) -> None:
        arguments_here = [argument.replace("CORPUS", inputs.corpus) for argument in arguments]
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *arguments_here],
                                cwd=inputs.root, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        raise ScriptError(result.stderr.strip())
    return attempt


class ScriptError(Exception):
    """What scripts/train.py printed on stderr before exiting with status 1."""


NEMO_DIR_ARGS = (f"--config-path={REPO / 'tests' / 'config' / 'nemo_1_23'}", "--config-name=megatron_gpt_config")

CASES = [
    # Config: cross-field rules.
    Case("config: cross-field rules", "`model.hidden_size=100 model.num_attention_heads=3`",
         config("model.hidden_size=100", "model.num_attention_heads=3")),
    Case("config: cross-field rules", "`model.num_query_groups=5` (12 heads)", config("model.num_query_groups=5")),
    Case("config: cross-field rules", "`model.global_batch_size=10 model.micro_batch_size=4`",
         config("model.global_batch_size=10", "model.micro_batch_size=4")),
    Case("config: cross-field rules", "`trainer.devices=3` with global batch 8, micro-batch 4",
         config("trainer.devices=3")),
    Case("config: cross-field rules", "`model.encoder_seq_length=1024 model.max_position_embeddings=512`",
         config("model.encoder_seq_length=1024", "model.max_position_embeddings=512")),
    Case("config: cross-field rules", "`model.position_embedding_type=alibi model.rotary_percentage=0.5`",
         config("model.position_embedding_type=alibi", "model.rotary_percentage=0.5")),
    Case("config: cross-field rules", "`model.position_embedding_type=rope model.rotary_percentage=0.3`",
         config("model.position_embedding_type=rope", "model.rotary_percentage=0.3")),
    Case("config: cross-field rules", "`model.data.seq_length=256` (encoder_seq_length 512)",
         config("model.data.seq_length=256")),
    Case("config: cross-field rules", "`trainer.val_check_interval=200 trainer.max_steps=100`",
         config("trainer.val_check_interval=200", "trainer.max_steps=100")),
    Case("config: cross-field rules", "`model.optim.sched.warmup_steps=90000 model.optim.sched.constant_steps=20000`",
         config("model.optim.sched.warmup_steps=90000", "model.optim.sched.constant_steps=20000")),
    Case("config: cross-field rules", "`model.optim.sched.min_lr=1.0` (lr 2e-4)", config("model.optim.sched.min_lr=1.0")),
    Case("config: cross-field rules", "`model.optim.sched.max_steps=10` (trainer.max_steps 100000)",
         config("model.optim.sched.max_steps=10")),
    Case("config: cross-field rules", "`model.optim.sched.warmup_ratio=0.1` beside warmup_steps",
         config("model.optim.sched.warmup_ratio=0.1")),
    Case("config: cross-field rules", "`model.activations_checkpoint_granularity=full model.activations_checkpoint_method=uniform "
         "model.activations_checkpoint_num_layers=13`",
         config("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
                "model.activations_checkpoint_num_layers=13")),
    Case("config: cross-field rules", "T5 `model.decoder.hidden_size=512 model.decoder.num_attention_heads=8`",
         t5_config("model.decoder.hidden_size=512", "model.decoder.num_attention_heads=8")),
    Case("config: cross-field rules", "T5 `model.encoder.relative_attention_num_buckets=64 "
         "model.encoder.relative_attention_max_distance=16`",
         t5_config("model.encoder.relative_attention_num_buckets=64", "model.encoder.relative_attention_max_distance=16")),
    Case("config: cross-field rules", "T5 `model.tokenizer.num_sentinel_tokens=0`", t5_config("model.tokenizer.num_sentinel_tokens=0")),
    Case("config: cross-field rules", "T5 `model.embedding_init_method_std=0.01` (encoder's 0.02)",
         t5_config("model.embedding_init_method_std=0.01")),
    Case("config: cross-field rules", "T5 `model.data.seq_length_dec=4` (targets of 8 tokens)",
         training({"model.data.seq_length_dec": 4}, t5=True)),
    Case("config: cross-field rules", "`exp_manager.resume_from_checkpoint=/a.ckpt model.resume_from_checkpoint=/b.ckpt`",
         training({"exp_manager.resume_from_checkpoint": "/a.ckpt", "model.resume_from_checkpoint": "/b.ckpt"})),
    Case("config: cross-field rules", "`model.megatron_amp_O2=True trainer.precision=bf16-true`",
         config("model.megatron_amp_O2=True", "trainer.precision=bf16-true")),
    Case("config: cross-field rules", "`trainer.limit_val_batches=0.01` (a fraction of a batch)",
         training({"trainer.limit_val_batches": 0.01})),
    # Config: wrong types and values.
    Case("config: wrong types and values", "`model.num_layers=two`", config("model.num_layers=two")),
    Case("config: wrong types and values", "`trainer.val_check_interval=often`", config("trainer.val_check_interval=often")),
    Case("config: wrong types and values", "`model.bias=maybe`", config("model.bias=maybe")),
    Case("config: wrong types and values", "`model.hidden_dropout=1.5`", config("model.hidden_dropout=1.5")),
    Case("config: wrong types and values", "`trainer.val_check_interval=1.5`", config("trainer.val_check_interval=1.5")),
    Case("config: wrong types and values", "`trainer.precision=fp8`", config("trainer.precision=fp8")),
    Case("config: wrong types and values", "`model.position_embedding_type=nope`", config("model.position_embedding_type=nope")),
    Case("config: wrong types and values", "`model.optim.name=sgd`", config("model.optim.name=sgd")),
    Case("config: wrong types and values", "`model.non_finite_action=ignore`", config("model.non_finite_action=ignore")),
    Case("config: wrong types and values", "`model.data.data_prefix={train:[x],valid:[y]}`",
         data_prefix("{train:[x],valid:[y]}")),
    Case("config: wrong types and values", "`model.data.data_prefix={train:[x]}`", data_prefix("{train:[x]}")),
    Case("config: wrong types and values", "`model.data.data_prefix=[]`", data_prefix("[]")),
    Case("config: wrong types and values", "`model.data.data_prefix=[0.5,a_text_document,b_text_document]`",
         training({"model.data.data_prefix": "[0.5,a_text_document,b_text_document]"})),
    Case("config: wrong types and values", "`model.data.splits_string=\"'1000,0,0'\"` (no validation split)",
         training({"model.data.splits_string": "'1000,0,0'"})),
    # Config: unknown keys and CLI typos.
    Case("config: unknown keys, CLI typos", "`model.num_layerz=3`", config("model.num_layerz=3")),
    Case("config: unknown keys, CLI typos", "`+model.bias_activaton_fusion=True`", config("+model.bias_activaton_fusion=True")),
    Case("config: unknown keys, CLI typos", "`+model.megatron_amp_O2=True` (a key NeMo's YAML has: no `+`)",
         config("+model.megatron_amp_O2=True")),
    Case("config: unknown keys, CLI typos", "`model.masked_softmax_fusoin=False` on NeMo's GPT YAML",
         nemo_config("model.masked_softmax_fusoin=False")),
    Case("config: unknown keys, CLI typos", "script: `model.num_layerz=3`",
         script("--config-name=megatron_gpt_config", "model.data.data_prefix=[CORPUS]", "model.num_layerz=3")),
    Case("config: unknown keys, CLI typos", "script: NeMo's GPT YAML without `model.data.data_prefix`",
         script(*NEMO_DIR_ARGS)),
    # NeMo values megatron_lite cannot honour.
    Case("NeMo values refused", "`model.fp8=True`", nemo_config("model.fp8=True")),
    Case("NeMo values refused", "`model.pipeline_model_parallel_size=2`", nemo_config("model.pipeline_model_parallel_size=2")),
    Case("NeMo values refused", "`model.tensor_model_parallel_size=2` on one device", nemo_config("model.tensor_model_parallel_size=2")),
    Case("NeMo values refused", "`model.sequence_parallel=True` without tensor parallel", nemo_config("model.sequence_parallel=True")),
    Case("NeMo values refused", "`model.fsdp=True` with NeMo's `trainer.precision=16`", nemo_config("model.fsdp=True")),
    Case("NeMo values refused", "`model.rampup_batch_size=[4,4,1000]`", nemo_config("model.rampup_batch_size=[4,4,1000]")),
    Case("NeMo values refused", "`model.data.mock_dataset=True`", nemo_config("model.data.mock_dataset=True")),
    Case("NeMo values refused", "`model.data.dataloader_type=cyclic`", nemo_config("model.data.dataloader_type=cyclic")),
    Case("NeMo values refused", "`model.activations_checkpoint_granularity=partial`",
         nemo_config("model.activations_checkpoint_granularity=partial")),
    Case("NeMo values refused", "`exp_manager.create_wandb_logger=True`", nemo_config("exp_manager.create_wandb_logger=True")),
    Case("NeMo values refused", "`exp_manager.checkpoint_callback_params.always_save_nemo=True`",
         nemo_config("exp_manager.checkpoint_callback_params.always_save_nemo=True")),
    Case("NeMo values refused", "T5 `model.encoder.arch=perceiver`", t5_config("model.encoder.arch=perceiver")),
    # Data files.
    Case("data", "`.bin` missing", damaged(remove(".bin"))),
    Case("data", "`.idx` missing", damaged(remove(".idx"))),
    Case("data", "empty `.bin` and `.idx` (no documents)", damaged(rewritten([], np.uint16))),
    Case("data", "`.idx` truncated to 10 bytes", damaged(truncate(".idx", keep=10))),
    Case("data", "`.idx` truncated to half", damaged(truncate(".idx"))),
    Case("data", "`.bin` truncated to half", damaged(truncate(".bin"))),
    Case("data", "`.idx` magic overwritten", damaged(overwrite(".idx", 0, b"NOTANIDX\x00"))),
    Case("data", "`.idx` index version 2", damaged(overwrite(".idx", 9, (2).to_bytes(8, "little")))),
    Case("data", "`.idx` dtype code 6 (float64)", damaged(overwrite(".idx", 17, bytes([6])))),
    Case("data", "`.idx` sequence pointers corrupted", damaged(overwrite(".idx", 34 + 4 * 160 + 8, b"\xff" * 8))),
    Case("data", "token ids beyond the vocabulary (300 in a 259-token tokenizer's data)",
         damaged(rewritten([[1, 2, 300, 3]] * 200, np.uint16))),
    Case("data", "negative token ids (int16 data)", damaged(rewritten([[1, 2, -5, 3]] * 200, np.int16))),
    # Tokenizers that do not fit.
    Case("tokenizer", "`model.tokenizer.library=sentencepiece model.tokenizer.model=/data/missing.model`",
         with_tokenizer(library="sentencepiece", model="MISSING")),
    Case("tokenizer", "`model.tokenizer.library=tabular`", with_tokenizer(library="tabular")),
    Case("tokenizer", "NeMo's `GPT2BPETokenizer` without `vocab_file` (NeMo would download it)",
         with_tokenizer(type="GPT2BPETokenizer", model="null")),
    Case("tokenizer", "`merge_file` pointing at a vocab.json",
         with_tokenizer(type="GPT2BPETokenizer", model="null", vocab_file="VOCAB", merge_file="VOCAB")),
    Case("tokenizer", "data tokenized with a 300-token GPT-2 BPE, trained with the byte tokenizer (259)",
         data_of_a_larger_vocabulary),
    Case("tokenizer", "`model.override_vocab_size=200` (tokenizer of 259)", training({"model.override_vocab_size": 200})),
    Case("tokenizer", "T5 with a tokenizer without a pad token (GPT-2 BPE)", lambda inputs: inputs.train({
        "model.tokenizer.library": "megatron", "model.tokenizer.type": "GPT2BPETokenizer",
        "model.tokenizer.vocab_file": write_gpt2_bpe_files(inputs.data / "gpt2")[0],
        "model.tokenizer.merge_file": str(inputs.data / "gpt2" / "merges.txt")}, t5=True)),
    # Checkpoints.
    Case("checkpoints", "resuming a 2-layer checkpoint with `model.num_layers=3`",
         checkpoint("exp_manager.resume_from_checkpoint", **{"model.num_layers": 3})),
    Case("checkpoints", "`restore_from_path` of a T5 checkpoint into a GPT", checkpoint("restore_from_path", "t5_trained")),
    Case("checkpoints", "`restore_from_path` with another vocabulary (`model.make_vocab_size_divisible_by=128`)",
         checkpoint("restore_from_path", **{"model.make_vocab_size_divisible_by": 128})),
    Case("checkpoints", "`restore_from_path` of a half-written file",
         fake_checkpoint_file("half.ckpt", b"PK\x03\x04 half-written", "restore_from_path")),
    Case("checkpoints", "`exp_manager.resume_from_checkpoint` of a missing file",
         lambda inputs: inputs.train({"exp_manager.resume_from_checkpoint": str(inputs.data / "gone.ckpt")})),
    Case("checkpoints", "a new run in a folder holding checkpoints", folder_with_checkpoints({})),
    Case("checkpoints", "`exp_manager.resume_if_exists=True` in a folder without checkpoints",
         training({"exp_manager.resume_if_exists": True})),
    # The run folder.
    Case("run folder", "`exp_manager.explicit_log_dir` under a file", run_folder_under_a_file),
    Case("run folder", "256 KiB free on the run folder's disk", little_free_disk),
    # Kernel arguments.
    Case("kernel arguments", "`flash_attn_func` with a 3-D q", kernel_call(q=torch.randn(16, 2, 16))),
    Case("kernel arguments", "q float32, k float16", kernel_call(k=torch.randn(1, 16, 2, 16).half())),
    Case("kernel arguments", "k and v of different lengths", kernel_call(v=torch.randn(1, 8, 2, 16))),
    Case("kernel arguments", "3 query heads over 2 key/value heads", kernel_call(q=torch.randn(1, 16, 3, 16))),
    Case("kernel arguments", "head dim 512", kernel_call(**{name: torch.randn(1, 4, 1, 512) for name in "qkv"})),
    Case("kernel arguments", "`dropout_p=1.0`", kernel_call(dropout_p=1.0)),
    Case("kernel arguments", "integer tensors", kernel_call(**{name: torch.ones(1, 16, 2, 16, dtype=torch.int32) for name in "qkv"})),
]


def one_line(error: BaseException) -> str:
    """The error as one line: its type, its message and (for Hydra's) its cause."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += f": {error.__cause__}"
    name = "scripts/train.py" if isinstance(error, ScriptError) else type(error).__name__
    return f"{name}: {' '.join(text.split())}"


def table(inputs: Inputs) -> str:
    """The tables of docs/bad_input.md, each case tried now."""
    lines, area = [], None
    for case in CASES:
        if case.area != area:
            area = case.area
            lines += ["", f"### {area}", "", "| input | error |", "|---|---|"]
        with pytest.raises(Exception) as caught:  # noqa: PT011 - every kind is checked below
            case.attempt(inputs)
        error = caught.value
        assert isinstance(error, (*CLEAN_ERRORS, ScriptError)), (case.input, repr(error))
        message = inputs.normalize(one_line(error)).replace("|", "\\|")
        lines.append(f"| {case.input} | {message} |")
    return "\n".join(lines[1:]) + "\n"


def test_the_table_lists_every_bad_input_with_its_error(tiny_corpus, trained_run, t5_trained_run, tmp_path):
    assert len(CASES) >= 40 and len({case.input for case in CASES}) == len(CASES)
    inputs = Inputs(tmp_path, tiny_corpus, trained_run.log_dir, t5_trained_run.log_dir)
    expected = table(inputs)
    head, marker, _ = DOC.read_text().partition(TABLE_START)
    assert marker, f"{DOC} has lost its marker line {TABLE_START!r}"
    if os.environ.get("MEGATRON_LITE_WRITE_BAD_INPUT_TABLE") == "1":
        DOC.write_text(f"{head}{TABLE_START}\n\n{expected}")
    assert DOC.read_text().partition(TABLE_START)[2].strip() == expected.strip()
    assert "Traceback" not in expected and not re.search(r"\b(IndexError|KeyError|struct\.error)\b", expected)
