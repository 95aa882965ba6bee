"""The Hydra configs and the typed schema: composition, key/type errors, cross-field checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from megatron_lite.config import GPTConfig, config_from_dict, config_to_dict
from tests.gpt_testing import CONF_DIR, compose_gpt, compose_raw

DATA = ["model.data.data_prefix=[/data/x_text_document]", "model.tokenizer.model=/data/tok.model"]


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_primary_yaml_composes_and_validates(path: Path):
    cfg = compose_raw(config_name=path.stem)
    # Only user-supplied paths may be left open ('???'); fill them and build the dataclasses.
    for key in OmegaConf.missing_keys(cfg):
        assert key.endswith(("data_prefix", "file_names", "tokenizer.model")), key
        OmegaConf.update(cfg, key, "/data/tok.model" if key.endswith("tokenizer.model") else ["/data/x"])
    if "train_ds" in cfg.get("model", {}).get("data", {}):  # fine-tuning starts from a checkpoint
        cfg.restore_from_path = "/runs/base.ckpt"
    obj = OmegaConf.to_object(cfg)
    assert dataclasses.is_dataclass(obj)


GPT_PRESETS = [*(CONF_DIR / "preset").glob("*.yaml"), *(CONF_DIR / "preset" / "gpt").glob("*.yaml")]


@pytest.mark.parametrize("preset", sorted(GPT_PRESETS), ids=lambda p: str(p.relative_to(CONF_DIR / "preset")))
def test_every_preset_composes_and_validates(preset: Path):
    cfg = compose_gpt([f"+preset={preset.relative_to(CONF_DIR / 'preset').with_suffix('').as_posix()}"])
    assert isinstance(cfg, GPTConfig)


def test_cpu_default_preset_is_small_and_points_at_the_default_corpus():
    cfg = compose_gpt(["+preset=cpu_default"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_steps <= 500
    assert cfg.model.num_layers <= 6 and cfg.model.hidden_size <= 256
    assert cfg.model.data.data_prefix[0].endswith("pydoc/pydoc_text_document")
    assert cfg.model.tokenizer.model.endswith("pydoc/tokenizer.model")


def test_missing_data_prefix_names_the_key():
    with pytest.raises(MissingMandatoryValue, match="model.data.data_prefix"):
        compose_gpt(["model.tokenizer.model=/data/tok.model"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.num_layerz=3", "num_layerz"),
        ("trainer.max_stepz=3", "max_stepz"),
        ("model.optim.sched.warmup_stepz=3", "warmup_stepz"),
    ],
)
def test_misspelled_key_on_the_command_line_fails_naming_it(override, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_gpt([*DATA, override])
    assert key in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("override", ["+model.megatron_amp_O3=true", "+trainer.foo=1", "+bar=2",
                                      "+model.optim.sched.decay_style=cosine"])
def test_keys_added_with_plus_are_rejected_not_ignored(override):
    key = override[1:].split("=")[0]
    with pytest.raises(ValueError, match=f"{key} is not a key of megatron_lite's config"):
        compose_gpt([*DATA, override])


@pytest.mark.parametrize("override, key", [("model.num_layers=two", "num_layers"),
                                           ("trainer.gradient_clip_val=abc", "gradient_clip_val"),
                                           ("model.bias=maybe", "bias")])
def test_wrong_type_fails_naming_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_gpt([*DATA, override])
    assert key in str(error.value) + str(error.value.__cause__)


def test_misspelled_key_in_a_users_yaml_fails_naming_it(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - megatron_gpt_schema\n  - _self_\nmodel:\n  hiden_size: 64\n"
    )
    with pytest.raises(ConfigCompositionException) as error:
        compose_raw(config_name="mine", config_dir=tmp_path)
    assert "hiden_size" in str(error.value) + str(error.value.__cause__)


def test_a_users_own_config_folder_works(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - megatron_gpt_schema\n  - _self_\n"
        "model:\n  num_layers: 3\n  data:\n    data_prefix: [/d/x]\n  tokenizer:\n    model: /d/t.model\n"
    )
    cfg = compose_gpt(config_name="mine", config_dir=tmp_path)
    assert cfg.model.num_layers == 3
    assert cfg.model.hidden_size == 768  # the schema's default


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hidden_size=100", "model.num_attention_heads=3"], "model.hidden_size=100 is not divisible"),
        (["model.num_query_groups=5"], "model.num_query_groups=5"),
        (["model.global_batch_size=10", "model.micro_batch_size=4"], "model.global_batch_size=10"),
        (["trainer.devices=3", "model.global_batch_size=8", "model.micro_batch_size=4"], "data-parallel size 3"),
        (["model.encoder_seq_length=1024", "model.max_position_embeddings=512"], "model.max_position_embeddings=512"),
        (["model.position_embedding_type=alibi", "model.rotary_percentage=0.5"],
         "applies to position_embedding_type rope only"),
        (["model.position_embedding_type=nope"], "model.position_embedding_type='nope'"),
        (["trainer.precision=fp8"], "trainer.precision='fp8'"),
        (["model.tensor_model_parallel_size=2"], "model.tensor_model_parallel_size=2 x model.context_parallel_size=1"),
        (["model.sequence_parallel=true"], "model.sequence_parallel=True needs model.tensor_model_parallel_size > 1"),
        (["model.pipeline_model_parallel_size=2"], "pipeline parallelism is not built"),
        (["model.optim.name=sgd"], "model.optim.name='sgd' is not implemented"),
        (["model.optim.sched.name=InverseSquareRootAnnealing"], "model.optim.sched.name"),
        (["model.activations_checkpoint_granularity=partial"], "granularity='partial' is not one of"),
        (["model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
          "model.activations_checkpoint_num_layers=13"], "activations_checkpoint_num_layers"),
        (["model.position_embedding_type=rope", "model.rotary_percentage=0.3"], "rotary_percentage"),
        (["model.seq_len_interpolation_factor=2"], "seq_len_interpolation_factor"),
        (["model.data.seq_length=256"], "model.data.seq_length=256"),
        (["model.data.dataloader_type=cyclic"], "not implemented"),
        (["trainer.val_check_interval=200", "trainer.max_steps=100"], "trainer.val_check_interval=200"),
        (["trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches"),
        (["trainer.max_epochs=3"], "not implemented"),
        (["trainer.logger=true"], "exp_manager creates the loggers"),
        (["exp_manager.create_wandb_logger=true"], "not implemented"),
        (["exp_manager.checkpoint_callback_params.always_save_nemo=true"], "not implemented"),
        (["model.hidden_dropout=1.5"], "model.hidden_dropout"),
        (["model.optim.sched.min_lr=1.0"], "model.optim.sched.min_lr"),
        (["model.optim.sched.warmup_steps=90000", "model.optim.sched.constant_steps=20000"], "constant_steps"),
    ],
)
def test_impossible_values_raise_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compose_gpt([*DATA, *overrides])


@pytest.mark.parametrize(
    "spelling, lightning",
    [("16", "16-mixed"), ("bf16", "bf16-mixed"), ("32", "32-true"), ("16-mixed", "16-mixed"),
     ("bf16-mixed", "bf16-mixed"), ("32-true", "32-true"), ("bf16-true", "bf16-true")],
)
def test_precision_spellings(spelling, lightning):
    assert compose_gpt([*DATA, f"trainer.precision={spelling}"]).trainer.lightning_precision == lightning


def test_derived_values():
    cfg = compose_gpt([*DATA, "trainer.devices=2", "model.micro_batch_size=2", "model.global_batch_size=16",
                       "model.num_query_groups=4", "trainer.max_steps=1000",
                       "model.optim.sched.warmup_ratio=0.1", "model.optim.sched.warmup_steps=null"])
    assert cfg.accumulate_grad_batches == 4
    assert cfg.model.head_dim == 64 and cfg.model.query_groups == 4
    assert cfg.warmup_steps == 100 and cfg.schedule_steps == 1000
    # Interpolations resolve: max_position_embeddings and data.seq_length follow encoder_seq_length.
    cfg = compose_gpt([*DATA, "model.encoder_seq_length=64"])
    assert cfg.model.max_position_embeddings == 64 and cfg.model.data.seq_length == 64


def test_config_round_trips_through_a_checkpoint_dict():
    cfg = compose_gpt([*DATA, "model.num_layers=3", "model.optim.sched=null"])
    values = config_to_dict(cfg)
    assert config_from_dict(values) == cfg
    assert OmegaConf.create(values)  # plain containers only
