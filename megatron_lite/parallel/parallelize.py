"""`parallelize(model, mesh, cfg)`: the layout applied to a built model, in torchtitan's order.

1. tensor (and sequence) parallel over mesh["tensor_parallel"], when model.tensor_model_parallel_size > 1;
2. context parallel over mesh["context_parallel"], when model.context_parallel_size > 1;
3. activation checkpointing: nothing to apply, the stack does it in its forward
   (modules/transformer.py, model.activations_checkpoint_*), so it wraps whatever 1 and 2 made;
4. data parallel over data_parallel x context_parallel (strategy.data_parallel_mesh): FSDP2's
   fully_shard per transformer layer and at the root (model.fsdp=True), or the same with
   `replicate` (DDP's composable form on FSDP2's machinery) otherwise.

The root's parameters (embeddings, output layer, final norm, position biases) are gathered by
the root's hooks. Those run around forward() only, and the families' losses call other methods
of the model (GPT's hidden_states, T5's encode and decoder_hidden_states, then the output
weight): those are registered as forward methods too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from megatron_lite.config import RunConfig
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules.transformer import TransformerLayer
from megatron_lite.parallel.strategy import data_parallel_mesh

# The model methods a family's loss calls directly (see the module's docstring).
FORWARD_METHODS: dict[type[nn.Module], tuple[str, ...]] = {
    GPTModel: ("hidden_states",),
    T5Model: ("encode", "decoder_hidden_states"),
}
HALF_TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16}


def parallelize(model: nn.Module, mesh: DeviceMesh, cfg: RunConfig) -> nn.Module:
    """Apply cfg's layout to `model` in place (returned for convenience)."""
    layout = cfg.model
    if layout.tensor_model_parallel_size > 1:
        from megatron_lite.parallel.tensor_parallel import apply_tensor_parallel  # noqa: PLC0415

        apply_tensor_parallel(model, mesh["tensor_parallel"], sequence_parallel=layout.sequence_parallel)
    if layout.context_parallel_size > 1:
        from megatron_lite.parallel.context_parallel import apply_context_parallel  # noqa: PLC0415

        apply_context_parallel(model, mesh["context_parallel"])
    hybrid = layout.fsdp and layout.fsdp_sharding_strategy == "hybrid"
    replicas = cfg.trainer.num_nodes if hybrid else 1
    apply_data_parallel(model, data_parallel_mesh(mesh, replicas), cfg)
    return model


def mixed_precision_policy(cfg: RunConfig):
    """FSDP2's MixedPrecisionPolicy for trainer.precision: bf16-mixed gathers bf16 weights for
    the forward and backward (Lightning's autocast still picks each op's dtype) and reduces
    gradients in model.fsdp_grad_reduce_dtype (fp32 by default); 16-mixed leaves the weights to
    autocast; true precisions have their dtype already."""
    from torch.distributed.fsdp import MixedPrecisionPolicy  # noqa: PLC0415

    precision = cfg.trainer.lightning_precision
    reduce_dtype = cfg.model.grad_reduce_dtype if cfg.model.fsdp else None
    if precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce_dtype or torch.float32)
    return MixedPrecisionPolicy(reduce_dtype=reduce_dtype)


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, TransformerLayer)]


def apply_data_parallel(model: nn.Module, mesh: DeviceMesh, cfg: RunConfig) -> None:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method  # noqa: PLC0415

    if type(model) not in FORWARD_METHODS:
        raise TypeError(f"parallelize does not know the forward methods of {type(model).__name__}")
    forward_methods = FORWARD_METHODS[type(model)]  # before FSDP2 changes the model's class
    half = HALF_TRUE.get(cfg.trainer.lightning_precision)
    if half is not None:  # before sharding: FSDP2 keeps its shards in the parameters' dtype
        model.to(half)
    policy = mixed_precision_policy(cfg)
    if cfg.model.fsdp:
        # 'grad': parameters stay gathered from the forward until their gradients are reduced.
        reshard = cfg.model.fsdp_sharding_strategy != "grad"
        for layer in transformer_layers(model):
            fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, mp_policy=policy)  # the root keeps its parameters gathered
    else:
        from torch.distributed._composable.replicate_with_fsdp import replicate  # noqa: PLC0415

        for layer in transformer_layers(model):
            replicate(layer, mesh=mesh, mp_policy=policy)
        replicate(model, mesh=mesh, mp_policy=policy)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
