"""The fine-tuning configs (conf/megatron_gpt_sft_config.yaml, megatron_t5_finetuning_config.yaml):
NeMo's SFT and PEFT keys typed and checked, restore_from_path required in either place, every
refused value named."""

from __future__ import annotations

import os

import pytest
from omegaconf.errors import MissingMandatoryValue

from megatron_lite.config import GPTSFTConfig, T5SFTConfig, schema_of
from megatron_lite.config.peft import LORA_INIT_METHODS, LORA_TARGET_MODULES
from megatron_lite.modules.lora import INIT_METHODS, LORA_TARGETS
from tests.training.sft_testing import compose_sft

FILES = ["model.data.train_ds.file_names=[/data/train.jsonl]",
         "model.data.validation_ds.file_names=[/data/valid.jsonl]", "model.tokenizer.model=/data/tok.model"]
RESTORE = "restore_from_path=/runs/base/last.ckpt"


def sft(*overrides: str, t5: bool = False):
    return compose_sft([*FILES, *overrides], t5=t5)


def test_the_yaml_files_load_with_nemo_defaults():
    cfg = sft(RESTORE)
    assert isinstance(cfg, GPTSFTConfig) and cfg.model.restore_from_path == cfg.restore_from_path
    split = cfg.model.data.train_ds
    assert (split.max_seq_length, split.global_batch_size, split.micro_batch_size) == (2048, 128, 4)
    assert cfg.model.data.validation_ds.prompt_template == "{input} {output}"
    assert cfg.model.peft.lora is None  # peft_scheme none: every weight trains
    lora = sft(RESTORE, "model.peft.peft_scheme=lora").model.peft.lora
    assert lora.target_modules == ["attention_qkv"] and lora.scale_alpha == lora.adapter_dim == 32
    t5 = sft(RESTORE, t5=True)
    assert isinstance(t5, T5SFTConfig) and t5.model.data.train_ds.target_length == 512
    assert t5.model.seq_length == 512 and t5.model.encoder.position_embedding_type == "relative"


def test_restore_from_path_is_required_in_either_place():
    with pytest.raises(ValueError, match="restore_from_path is not set: fine-tuning starts from"):
        sft()
    cfg = sft("model.restore_from_path=base.ckpt")  # NeMo's place, made absolute
    assert cfg.restore_from_path == os.path.abspath("base.ckpt") == cfg.model.restore_from_path
    with pytest.raises(ValueError, match="restore_from_path=/a.ckpt and model.restore_from_path=/b.ckpt differ"):
        sft("restore_from_path=/a.ckpt", "model.restore_from_path=/b.ckpt")
    with pytest.raises(MissingMandatoryValue):
        compose_sft([RESTORE, "model.tokenizer.model=/t.model", "model.data.validation_ds.file_names=[/v]"])


@pytest.mark.parametrize("override, message", [
    ("model.peft.peft_scheme=adapter", "model.peft.peft_scheme='adapter' is not implemented: use lora"),
    ("model.peft.peft_scheme=ptuning", "model.peft.peft_scheme='ptuning' is not implemented"),
    ("model.peft.peft_scheme=loha", r"model.peft.peft_scheme='loha' is not one of \('none', 'lora'\)"),
    ("model.data.train_ds.add_sep=true", "model.data.train_ds.add_sep=True is not implemented: no separator"),
    ("model.data.train_ds.global_batch_size=16", "model.data.train_ds.global_batch_size=16 differs from "
                                                 "model.global_batch_size=128"),
    ("model.data.train_ds.truncation_field='input,context'", "names several fields"),
    ("model.data.train_ds.prompt_template='{output}: {input}'", "must end with the label field {output}"),
    ("model.data.validation_ds.truncation_field=output", "is not a context field"),
    ("model.data.train_ds.truncation_method=middle", "truncation_method='middle' is not one of"),
    ("model.data.train_ds.max_seq_length=4096", "model.data.train_ds.max_seq_length=4096 exceeds "
                                               "model.max_position_embeddings=2048"),
    ("model.data.train_ds.min_seq_length=4000", "min_seq_length=4000 exceeds"),
    ("model.data.train_ds.concat_sampling_probabilities=[0.5,0.5]", "is not implemented: the files"),
    ("model.peft.lora_tuning.weight_tying=true", "weight_tying=True is not implemented"),
])
def test_refused_values_name_their_key(override, message):
    with pytest.raises(ValueError, match=message):
        sft(RESTORE, override)


@pytest.mark.parametrize("override, message", [
    ("model.peft.lora_tuning.adapter_dim=0", "model.peft.lora_tuning.adapter_dim must be >= 1"),
    ("model.peft.lora_tuning.target_modules=[attention_kqv]", "target_modules=\\['attention_kqv'\\]: name"),
    ("model.peft.lora_tuning.layer_selection=[0,2]", "layer_selection counts layers from 1"),
    ("model.peft.lora_tuning.column_init_method=kaiming", "column_init_method='kaiming' is not one of"),
    ("model.peft.lora_tuning.column_init_method=zero", "both 'zero'"),
])
def test_lora_settings_are_checked_when_lora_is_on(override, message):
    sft(RESTORE, override)  # peft_scheme none: the section is not read
    with pytest.raises(ValueError, match=message):
        sft(RESTORE, "model.peft.peft_scheme=lora", override)


def test_t5_lengths_and_packing():
    with pytest.raises(ValueError, match="max_tgt_seq_length must be >= 1"):
        sft(RESTORE, "model.data.train_ds.max_tgt_seq_length=0", t5=True)
    with pytest.raises(ValueError, match="packed_sequence=True is not implemented: T5 samples hold one"):
        sft(RESTORE, "model.data.train_ds.packed_sequence=true", t5=True)
    learned = ["model.decoder.position_embedding_type=learned_absolute", "model.data.train_ds.max_tgt_seq_length=600"]
    with pytest.raises(ValueError, match="model.data.train_ds.max_tgt_seq_length=600 exceeds model.max_position"):
        sft(RESTORE, *learned, t5=True)


def test_nemo_keys_without_an_effect_are_listed_at_start_up():
    cfg = sft(RESTORE, "+model.data.train_ds.memmap_workers=2", "+model.data.train_ds.pin_memory=true")
    listed = [key for keys in cfg.ignored_keys().values() for key in keys]
    assert listed == ["model.data.train_ds.memmap_workers", "model.data.train_ds.pin_memory"]


def test_the_sft_schema_is_found_from_the_keys_and_the_lora_names_agree():
    data = {"data": {"train_ds": {}}}
    assert schema_of({"model": data}) is GPTSFTConfig
    assert schema_of({"model": {**data, "encoder": {}}}) is T5SFTConfig
    assert set(LORA_TARGET_MODULES) == set(LORA_TARGETS) and set(LORA_INIT_METHODS) == set(INIT_METHODS)


@pytest.mark.parametrize("t5", [False, True])
def test_the_cpu_presets_fine_tune_the_default_models(t5):
    preset = "+preset=sft/t5_cpu_default" if t5 else "+preset=sft/cpu_default"
    cfg = compose_sft([preset, RESTORE], t5=t5)
    assert cfg.trainer.accelerator == "cpu" and cfg.model.tokenizer.model.endswith("pydoc/tokenizer.model")
    assert cfg.model.data.train_ds.file_names[0].endswith("pydoc_sft/train.jsonl")
    stack = cfg.model.encoder if t5 else cfg.model
    assert (stack.num_layers, stack.hidden_size) == ((3, 128) if t5 else (4, 128))
