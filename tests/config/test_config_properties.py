"""Random overrides of every config key, with values of every type: the config is built, or the
error is one a user can act on (a ValueError, or Hydra's error while composing) and names the
key or its value. Never an AttributeError, TypeError or KeyError from inside."""

from __future__ import annotations

import dataclasses
import typing

from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import MissingMandatoryValue

from megatron_lite.config import GPTConfig, RunConfig, T5Config
from tests.gpt_testing import compose_gpt

DATA = ["model.data.data_prefix=[/data/x_text_document]", "model.tokenizer.model=/data/tok.model"]


def leaf_keys(schema: type, prefix: str = "") -> list[str]:
    """Every key that holds a value (not a section) in `schema`, dotted."""
    hints = typing.get_type_hints(schema)
    keys = []
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        section = next((arg for arg in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(arg)), None)
        if section is None:
            keys.append(prefix + field.name)
        else:
            keys.extend(leaf_keys(section, f"{prefix}{field.name}."))
    return keys


# What a command line can say: numbers of every size and sign, fractions, words, booleans, null,
# lists and dicts.
values = st.one_of(
    st.integers(-3, 3), st.integers(-(2**40), 2**40), st.floats(-10, 10, allow_nan=False),
    st.sampled_from(["true", "false", "null", "abc", "''", "1e-3", "0.5", "[]", "[1,2]", "[0.5,x,0.5,y]",
                     "{train:[x],validation:[y]}", "{a:1}", "nan", "inf", "-1", "0", "1"]),
)
GPT_KEYS = leaf_keys(GPTConfig)
T5_KEYS = leaf_keys(T5Config)


def try_override(config_name: str, key: str, value: object) -> RunConfig | None:
    override = f"{key}={value}"
    try:
        return compose_gpt([*DATA, override], config_name=config_name)
    except (ValueError, ConfigCompositionException, MissingMandatoryValue) as error:
        text = f"{error} {error.__cause__}"
        assert key.split(".")[-1] in text or str(value) in text, (override, text)
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(GPT_KEYS), value=values)
def test_any_override_of_a_gpt_key_builds_or_names_it(key, value):
    try_override("megatron_gpt_config", key, value)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(T5_KEYS), value=values)
def test_any_override_of_a_t5_key_builds_or_names_it(key, value):
    try_override("megatron_t5_config", key, value)


def test_every_key_is_covered():
    assert "model.data.data_prefix" in GPT_KEYS and "model.encoder.relative_attention_num_buckets" in T5_KEYS
    assert len(GPT_KEYS) > 150 and len(T5_KEYS) > 150
