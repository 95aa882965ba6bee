"""What every Hugging Face architecture module provides (one `HFArchitecture` record each, like
training's ModelFamily), and the steps they share: checking and mapping the weights, deciding
whether the output layer is tied, and refusing what one side cannot express."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from megatron_lite.interop.mapping import (
    TensorRule,
    check_tensors,
    hf_shapes,
    model_shapes,
    to_hf,
    to_ours,
)

State = dict[str, torch.Tensor]

# HF activation names <-> ours: plain MLPs, and the nonlinearity of a gated MLP's gate.
# ("gelu" is the exact erf GELU in both; HF's tanh approximations are our gelu / geglu with
# model.openai_gelu=True.)
PLAIN_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "relu2": "squared-relu"}
GATED_ACTIVATIONS = {"silu": "swiglu", "gelu": "geglu", "relu": "reglu"}
# Their other names in HF configs, read on import.
ACTIVATION_ALIASES = {"swish": "silu", "gelu_python": "gelu"}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
TANH_GELU = "gelu_new"  # the name written on export


@dataclass(frozen=True)
class HFArchitecture:
    model_type: str  # config.json's model_type
    hf_class: str  # the transformers class that loads the folder (config.json's architectures)
    family: str  # our ModelFamily's name: "gpt" or "t5"
    # (config.json, the folder's state dict, source for messages) -> (our model config, our state).
    import_model: Callable[[dict[str, Any], State, str], tuple[Any, State]]
    # (our model config, padded vocab size, our state) -> (config.json's model keys, HF state).
    export_model: Callable[[Any, int, State], tuple[dict[str, Any], State]]


def our_activation(hf_name: str, *, gated: bool, key: str, source: str) -> tuple[str, bool]:
    """(our activation, openai_gelu) for HF's `hf_name` (config key `key`); ValueError if we
    have none."""
    name = ACTIVATION_ALIASES.get(hf_name, hf_name)
    table = GATED_ACTIVATIONS if gated else PLAIN_ACTIVATIONS
    if name in TANH_GELUS:
        return table["gelu"], True
    if name in table:
        return table[name], False
    kind = "gated" if gated else "plain"
    raise ValueError(
        f"{source}: config.json's {key}={hf_name!r} is not an activation of ours; for a "
        f"{kind} MLP we implement {sorted(table) + list(TANH_GELUS)}"
    )


def hf_activation(activation: str, openai_gelu: bool) -> tuple[str, bool]:
    """(HF's name, gated) of our activation (every activation of ours has one)."""
    for gated, table in ((False, PLAIN_ACTIVATIONS), (True, GATED_ACTIVATIONS)):
        for hf_name, ours in table.items():
            if ours == activation:
                return (TANH_GELU if openai_gelu else hf_name), gated
    raise AssertionError(f"no HF name for activation {activation!r}")


def refuse(problems: list[str], target: str) -> None:
    """ValueError listing everything of ours that `target` (a HF class) cannot express."""
    if problems:
        raise ValueError(f"cannot write a {target}: it has no equivalent of\n  " + "\n  ".join(problems))


def with_prefix(state: State, prefix: str, *, unprefixed: tuple[str, ...] = ()) -> State:
    """Keys of a bare base model (GPT2Model, LlamaModel checkpoints) get the prefix the causal LM
    class gives them; keys in `unprefixed` (the output layer) never have one."""
    return {key if key.startswith(prefix) or key in unprefixed else prefix + key: tensor
            for key, tensor in state.items()}


def output_layer_tied(state: State, *, embedding: str, output: str, config_tied: bool) -> bool:
    """Whether the output layer is the embedding table, removing a stored copy of it.

    As transformers does: tied when config.json says so, unless the folder stores an output
    layer with other values (then it stays separate); untied when the config says so.
    """
    stored = state.get(output)
    differs = (stored is not None and embedding in state
               and not torch.equal(stored, state[embedding]))
    tied = config_tied and not differs
    if tied:
        state.pop(output, None)
    return tied


def import_weights(rules: list[TensorRule], model_type: type[nn.Module], model_cfg: Any,
                   vocab_size: int, hf_state: State, source: str) -> State:
    """Our state dict, after checking the HF tensors against those the config implies."""
    expected = hf_shapes(model_shapes(model_type, model_cfg, vocab_size), rules)
    check_tensors(hf_state, expected, source=source, expected_from="config.json")
    return to_ours(hf_state, rules)


def export_weights(rules: list[TensorRule], model_type: type[nn.Module], model_cfg: Any,
                   vocab_size: int, state: State) -> State:
    """The HF state dict, after checking our tensors against those our config implies."""
    check_tensors(state, model_shapes(model_type, model_cfg, vocab_size),
                  source="the checkpoint", expected_from="its config")
    return to_hf(state, rules)


def required(config: Mapping[str, Any], key: str, source: str) -> Any:
    if config.get(key) is None:
        raise ValueError(f"{source}: config.json has no {key!r}")
    return config[key]
