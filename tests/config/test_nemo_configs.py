"""NeMo 1.23's own YAML files (rebuilt key for key in nemo_1_23/) load unchanged: every key is
known, the implementation knobs are listed once as ignored, features we lack are refused when
on, NeMo's resolvers resolve; and each file trains two steps through scripts/train.py with
--config-path, given only data and tokenizer paths and a tiny CPU model on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from megatron_lite.config import GPTConfig, T5Config, T5StackConfig, register_nemo_resolvers, run_config
from megatron_lite.tokenizers import build_tokenizer
from tests.gpt_testing import (
    REPO,
    compose_gpt,
    read_metrics,
    write_gpt2_bpe_files,
    write_tiny_corpus,
    write_wordpiece_vocab,
)

NEMO_DIR = Path(__file__).resolve().parent / "nemo_1_23"
DATA = ["model.data.data_prefix=[/data/x_text_document]"]


def compose_nemo(name: str, overrides=()):
    return compose_gpt([*DATA, *overrides], config_name=name, config_dir=NEMO_DIR)


def test_the_gpt_file_loads_with_nemo_values_and_resolvers():
    cfg = compose_nemo("megatron_gpt_config")
    assert isinstance(cfg, GPTConfig)
    model = cfg.model
    assert (model.num_layers, model.hidden_size, model.encoder_seq_length) == (12, 768, 512)
    assert model.max_position_embeddings == model.data.seq_length == 512  # ${...} interpolations
    assert model.cpu_offloading_num_layers == 11  # ${sum:${.num_layers},-1}
    assert cfg.exp_manager.checkpoint_callback_params.model_parallel_size == 1  # ${multiply:...}
    assert (model.tokenizer.library, model.tokenizer.type) == ("megatron", "GPT2BPETokenizer")
    assert (cfg.trainer.precision, cfg.exp_manager.resume_if_exists) == ("16", True)
    ignored = sum(cfg.ignored_keys().values(), [])
    for key in ("model.mcore_gpt", "model.bias_activation_fusion", "model.masked_softmax_fusion",
                "model.apply_query_key_layer_scaling", "model.nsys_profile", "model.fp8_hybrid",
                "model.sharp", "model.data.skip_warmup", "trainer.limit_test_batches"):
        assert key in ignored, key
    assert "model.fp8" not in ignored and "model.megatron_amp_O2" not in ignored  # not knobs


def test_the_t5_file_loads_both_stacks_from_the_base_file():
    cfg = compose_nemo("megatron_t5_config")
    assert isinstance(cfg, T5Config)
    assert cfg.model.encoder.num_layers == cfg.model.decoder.num_layers == 12
    assert cfg.model.encoder.position_embedding_type == "learned_absolute"  # NeMo's base default
    assert (cfg.model.tokenizer.type, cfg.model.data.mean_ngram_size) == ("BertWordPieceCase", None)
    assert cfg.model.data.mean_span_length == 3.0
    ignored = sum(cfg.ignored_keys().values(), [])
    assert "model.encoder.bias_dropout_add_fusion" in ignored and "model.data.geometric_dist" in ignored
    assert any("mean_ngram_size=null" in note for note in cfg.startup_notes())


def test_the_base_file_alone_is_a_t5_stack_with_every_key_known():
    register_nemo_resolvers()
    values = OmegaConf.load(NEMO_DIR / "megatron_model_base_config.yaml")
    stack = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(T5StackConfig), values))
    assert isinstance(stack, T5StackConfig)
    assert (stack.arch, stack.num_moe_experts, stack.activations_checkpoint_num_layers) == ("transformer", 1, 1)


@pytest.mark.parametrize("override, message", [
    ("model.fp8=True", "model.fp8=True is not implemented: no fp8 training"),
    ("model.pipeline_model_parallel_size=2", "model.pipeline_model_parallel_size=2 is not implemented"),
    ("model.virtual_pipeline_model_parallel_size=2", "model.virtual_pipeline_model_parallel_size=2 is not implemented"),
    ("model.fsdp_sharding_strategy=zero3", "model.fsdp_sharding_strategy='zero3' is not one of"),
    ("model.rampup_batch_size=[4,4,1000]", r"model.rampup_batch_size=\[4, 4, 1000\] is not implemented"),
    ("model.cpu_offloading=True", "model.cpu_offloading=True is not implemented"),
    ("model.data.mock_dataset=True", "model.data.mock_dataset=True is not implemented"),
    ("exp_manager.create_neptune_logger=True", "exp_manager.create_neptune_logger=True is not implemented"),
    ("model.megatron_amp_O2=True trainer.precision=bf16-true", "model.megatron_amp_O2=True with trainer.precision=bf16-true"),
])
def test_nemo_values_we_cannot_honour_are_refused_naming_key_and_value(override, message):
    with pytest.raises(ValueError, match=message):
        compose_nemo("megatron_gpt_config", override.split())


def test_a_misspelled_key_still_fails_by_name():
    with pytest.raises(ValueError, match="model.bias_activaton_fusion is not a key of megatron_lite's config"):
        compose_nemo("megatron_gpt_config", ["+model.bias_activaton_fusion=True"])


def test_megatron_amp_O2_runs_as_mixed_precision_with_a_note():
    cfg = compose_nemo("megatron_gpt_config", ["model.megatron_amp_O2=True", "trainer.precision=bf16"])
    assert cfg.trainer.lightning_precision == "bf16-mixed"
    assert cfg.startup_notes() == [
        "model.megatron_amp_O2=True runs as trainer.precision=bf16-mixed: fp32 weights and optimizer "
        "state under autocast (NeMo's O2 keeps half-precision weights with fp32 master copies in the "
        "optimizer: close numerics, less memory)"]


@pytest.mark.parametrize("value, steps", [("100", 100), ("0.25", 250), ("1.0", 1000)])
def test_val_check_interval_counts_steps_or_is_a_fraction_of_the_run(value, steps):
    cfg = compose_nemo("megatron_gpt_config", ["trainer.max_steps=1000", f"trainer.val_check_interval={value}"])
    assert cfg.trainer.val_check_steps == steps


@pytest.mark.parametrize("data_prefix", [
    "/d/a_text_document",
    "[0.3,/d/a_text_document,0.7,/d/b_text_document]",
    "{train:[1.0,/d/a_text_document],validation:/d/b_text_document,test:[/d/c_text_document]}",
])
def test_data_prefix_takes_nemos_three_forms(data_prefix):
    cfg = compose_gpt([f"model.data.data_prefix={data_prefix}"], config_name="megatron_gpt_config",
                      config_dir=NEMO_DIR)
    assert cfg.model.data.data_prefix


def test_resolvers_register_once_and_keep_an_existing_one():
    register_nemo_resolvers()
    register_nemo_resolvers()  # a second call (scripts, tests, NeMo itself) is no error
    assert OmegaConf.create({"a": 3, "b": "${multiply:${a},2}", "c": "${sum:${a},-1}"}) == {"a": 3, "b": 6, "c": 2}


def test_run_config_takes_a_plain_dict_as_scripts_hand_it_over():
    values = OmegaConf.to_container(OmegaConf.load(NEMO_DIR / "megatron_gpt_config.yaml"), resolve=False)
    values.pop("defaults")
    values["model"]["data"]["data_prefix"] = "/d/x"
    assert isinstance(run_config(values), GPTConfig)


# Test-size overrides a NeMo user would give for a two-step CPU smoke run of each file.
RUN = ["trainer.accelerator=cpu", "trainer.precision=32", "trainer.max_steps=2", "trainer.val_check_interval=2",
       "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "model.micro_batch_size=2",
       "model.global_batch_size=4", "model.data.num_workers=0", "+trainer.enable_progress_bar=False"]
STACK = ["num_layers=2", "hidden_size=32", "ffn_hidden_size=64", "num_attention_heads=4"]
GPT_SIZE = [*(f"model.{key}" for key in STACK), "model.encoder_seq_length=32", "model.optim.sched.warmup_steps=1"]
T5_SIZE = [*(f"model.{stack}.{key}" for stack in ("encoder", "decoder") for key in STACK),
           "model.seq_length=48", "model.data.seq_length_dec=16"]


def start_script(name: str, overrides: list[str], output: Path) -> subprocess.Popen:
    with open(output, "w") as file:
        return subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "train.py"), f"--config-path={NEMO_DIR}",
             f"--config-name={name}", *overrides],
            cwd=output.parent, stdout=file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )


def test_each_nemo_file_trains_two_steps_through_the_script(tmp_path):
    vocab_file, merge_file = write_gpt2_bpe_files(tmp_path / "gpt2")
    gpt2 = build_tokenizer("megatron", type="GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    wordpiece_vocab = write_wordpiece_vocab(tmp_path / "bert")
    bert = build_tokenizer("megatron", type="BertWordPieceCase", vocab_file=wordpiece_vocab)
    runs = {
        "megatron_gpt_config": [
            f"model.data.data_prefix=[{write_tiny_corpus(tmp_path / 'gpt2_text_document', tokenizer=gpt2)}]",
            f"model.tokenizer.vocab_file={vocab_file}", f"model.tokenizer.merge_file={merge_file}", *GPT_SIZE],
        "megatron_t5_config": [
            f"model.data.data_prefix=[{write_tiny_corpus(tmp_path / 'bert_text_document', tokenizer=bert)}]",
            f"model.tokenizer.vocab_file={wordpiece_vocab}", *T5_SIZE],
    }
    processes = {name: start_script(name, [*RUN, *overrides, f"exp_manager.explicit_log_dir={tmp_path / name}"],
                                    tmp_path / f"{name}.out")
                 for name, overrides in runs.items()}
    for name, process in processes.items():
        process.wait()
        output = (tmp_path / f"{name}.out").read_text()
        assert process.returncode == 0, output[-3000:]
        assert "NeMo keys accepted and ignored" in output and "bias_activation_fusion" in output
        rows = read_metrics(tmp_path / name)
        assert [row["step"] for row in rows if row.get("train_loss")] == ["0", "1"], name
        assert any(row.get("val_loss") for row in rows), name
        assert (tmp_path / name / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "outputs").exists()  # Hydra writes no folder of its own, as in NeMo
