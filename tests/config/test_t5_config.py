"""T5's Hydra configs and schema: composition (both stacks from the one base file), misspelled
and unimplemented keys, type errors, and every cross-field check with the field it names."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from megatron_lite.config import T5Config, T5StackConfig, config_from_dict, config_to_dict
from tests.gpt_testing import CONF_DIR, compose_raw
from tests.t5_testing import compose_t5

DATA = ["model.data.data_prefix=[/data/x_text_document]", "model.tokenizer.model=/data/tok.model"]


def test_both_stacks_come_from_the_base_config_and_override_separately():
    cfg = compose_t5([*DATA, "model.encoder.num_layers=6", "model.decoder.use_flash_attention=true"])
    assert isinstance(cfg, T5Config)
    assert isinstance(cfg.model.encoder, T5StackConfig) and isinstance(cfg.model.decoder, T5StackConfig)
    assert (cfg.model.encoder.num_layers, cfg.model.decoder.num_layers) == (6, 12)
    assert (cfg.model.encoder.use_flash_attention, cfg.model.decoder.use_flash_attention) == (False, True)
    # NeMo's base values, T5's relative positions, and the interpolations.
    assert cfg.model.encoder.ffn_hidden_size == 3072 and cfg.model.encoder.position_embedding_type == "relative"
    assert cfg.model.tokenizer.num_sentinel_tokens == 100
    cfg = compose_t5([*DATA, "model.seq_length=1024"])
    assert cfg.model.max_position_embeddings == 1024 and cfg.model.data.seq_length == 1024


def test_the_base_config_alone_is_one_typed_stack():
    assert isinstance(OmegaConf.to_object(compose_raw(config_name="megatron_model_base_config")), T5StackConfig)


@pytest.mark.parametrize("preset", sorted((CONF_DIR / "preset" / "t5").glob("*.yaml")), ids=lambda p: p.name)
def test_every_t5_preset_composes_and_validates(preset):
    assert isinstance(compose_t5([f"+preset=t5/{preset.stem}"]), T5Config)


def test_cpu_preset_is_small_and_points_at_the_default_corpus():
    cfg = compose_t5(["+preset=t5/cpu_default"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_steps <= 500
    for stack in (cfg.model.encoder, cfg.model.decoder):
        assert stack.num_layers <= 4 and stack.hidden_size <= 256
        assert stack.position_embedding_type == "relative"
    assert cfg.model.data.data_prefix[0].endswith("pydoc/pydoc_text_document")
    assert cfg.inference.prompt.count("<extra_id_") == 7


def test_the_documented_launch_line_composes():
    cfg = compose_t5([*DATA, "model.encoder.use_flash_attention=True", "model.decoder.use_flash_attention=True"])
    assert cfg.model.encoder.use_flash_attention and cfg.model.decoder.use_flash_attention


@pytest.mark.parametrize("override, key", [
    ("model.encoder.num_layerz=3", "num_layerz"),
    ("model.decoder.relative_attention_num_bucket=8", "relative_attention_num_bucket"),
    ("model.data.seq_length_decoder=64", "seq_length_decoder"),
    ("model.encoder.hidden_size=big", "hidden_size"),
    ("model.data.masked_lm_prob=high", "masked_lm_prob"),
])
def test_misspelled_key_or_wrong_type_fails_naming_it(override, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_t5([*DATA, override])
    assert key in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("override", ["model.encoder.apply_query_key_layer_scaling=true",
                                      "model.data.geometric_dist=true"])
def test_nemo_implementation_knobs_are_accepted_and_listed_as_ignored(override):
    cfg = compose_t5([*DATA, override])
    assert override.split("=")[0] in sum(cfg.ignored_keys().values(), [])


@pytest.mark.parametrize("override, message", [
    ("model.pipeline_model_parallel_split_rank=2", "model.pipeline_model_parallel_split_rank=2 is not implemented"),
    ("model.decoder.openai_gelu=true model.decoder.activation=relu",
     "model.decoder.openai_gelu=True chooses the tanh GELU, but model.decoder.activation='relu'"),
    ("model.encoder.arch=perceiver", "model.encoder.arch='perceiver' is not implemented"),
])
def test_nemo_features_we_lack_are_refused_naming_the_value(override, message):
    with pytest.raises(ValueError, match=message):
        compose_t5([*DATA, *override.split()])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.decoder.hidden_size=512", "model.decoder.num_attention_heads=8"],
         "model.encoder.hidden_size=768 and model.decoder.hidden_size=512 differ"),
        # Bidirectional (encoder): 4 buckets per 4 exact distances -> 64 buckets need max_distance > 16.
        (["model.encoder.relative_attention_num_buckets=64", "model.encoder.relative_attention_max_distance=16"],
         "model.encoder.relative_attention_num_buckets=64 is larger than model.encoder.relative_attention_max_distance=16"),
        # Causal (decoder): half the buckets are exact, so 40 buckets need max_distance > 20.
        (["model.decoder.relative_attention_num_buckets=40", "model.decoder.relative_attention_max_distance=20"],
         "use fewer than 40 buckets"),
        (["model.encoder.relative_attention_num_buckets=3"], "too few: bidirectional (encoder) buckets need at least 4"),
        (["model.decoder.position_embedding_type=rope"], "model.decoder.position_embedding_type='rope' is not implemented for T5"),
        (["model.encoder.position_embedding_type=nope"], "model.encoder.position_embedding_type='nope'"),
        (["model.encoder.relative_position_bias_self_attention_only=false"], "not implemented"),
        (["model.tokenizer.num_sentinel_tokens=0"], "model.tokenizer.num_sentinel_tokens=0"),
        (["model.encoder.position_embedding_type=learned_absolute", "model.max_position_embeddings=256"],
         "model.seq_length=512 exceeds model.max_position_embeddings=256"),
        (["model.decoder.position_embedding_type=learned_absolute", "model.max_position_embeddings=100"],
         "model.data.seq_length_dec=128 exceeds model.max_position_embeddings=100"),
        (["model.data.seq_length=256"], "model.data.seq_length=256 differs from model.seq_length=512"),
        (["model.data.masked_lm_prob=1.5"], "model.data.masked_lm_prob"),
        (["model.data.mean_ngram_size=0.5"], "model.data.mean_ngram_size"),
        (["model.encoder.hidden_size=100"], "model.encoder.hidden_size=100 is not divisible"),
        (["model.decoder.num_query_groups=5"], "model.decoder.num_query_groups=5"),
        (["model.decoder.attention_dropout=1.0"], "model.decoder.attention_dropout"),
        (["model.encoder.activations_checkpoint_granularity=full", "model.encoder.activations_checkpoint_method=block",
          "model.encoder.activations_checkpoint_num_layers=13"], "model.encoder.activations_checkpoint_num_layers"),
        (["model.embedding_dropout=2"], "model.embedding_dropout"),
        (["model.global_batch_size=10", "model.micro_batch_size=4"], "model.global_batch_size=10"),
        (["inference.top_p=1.5"], "inference.top_p"),
    ],
)
def test_impossible_values_raise_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_t5([*DATA, *overrides])


def test_config_round_trips_through_a_checkpoint_dict():
    cfg = compose_t5([*DATA, "model.encoder.num_layers=3", "model.decoder.position_embedding_type=alibi"])
    assert config_from_dict(config_to_dict(cfg), T5Config) == cfg
