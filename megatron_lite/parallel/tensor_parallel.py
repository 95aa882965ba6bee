"""Megatron's tensor and sequence parallelism for GPT and T5, through DTensor.

`apply_tensor_parallel(model, tp_mesh, sequence_parallel=...)` shards a model built whole (the
same weights on every rank of tp_mesh, a 1-D mesh) in place, as torchtitan's parallelize does:
plans of torch.distributed.tensor.parallel styles applied to the modules, the model's code left
as it is. With P ranks, rank r holds:

- attention: linear_qkv's rows of query groups r G/P .. (r + 1) G/P - 1 (the rows are grouped by
  query group, modules/fused_layout.py, so these are whole groups: their q heads, k and v;
  column-parallel), cross-attention's linear_q (its heads) and linear_kv (its groups) alike;
  linear_proj's columns of the same heads (row-parallel: the output is a sum over ranks). The
  attention modules count their local heads, and the flash kernel runs on them.
- MLP: linear_fc1's rows of features r F/P .. (r + 1) F/P - 1 (gated: gate and up of those
  features, interleaved row by row), linear_fc2's columns of the same features.
- per-head position biases: T5's relative-bias table, KERPLE's parameters (sharded by head, so
  each rank's gradient is that of its heads), ALiBi's slopes and Sandwich's scales (sliced).
- the word embeddings' rows r V/P .. (r + 1) V/P - 1 (a vocabulary-parallel lookup: each rank
  looks up its rows, the sum over ranks is the embedding), and the output layer's (tied to the
  embeddings or not; T5's output bias alike). The loss (modules/cross_entropy.py) runs on these
  rows, all-reducing the softmax's max and sums: no rank holds any token's full logits.
- norms and other 1-D parameters: whole, replicated.

Between blocks the activations are replicated, or with sequence parallelism sharded by sequence
(dim 1): norms (SequenceParallel) and dropouts then run on each rank's S/P positions, each
column-parallel layer gathers its input's sequence (all-gather; reduce-scatter of the gradient)
and each row-parallel layer reduce-scatters its output instead of all-reducing it. The gather
sits on the column-parallel layers themselves (their input layout), not on the attention or MLP
module as torchtitan's PrepareModuleInput does: selective activation checkpointing calls the
attention's projection without the module, and one fused projection per input means one gather
either way. The final hidden states are DTensors (sharded by sequence or replicated) for the
loss; T5's encoder output is gathered once and read replicated by every cross-attention.

Dropout masks come from each rank's own generator. Every rank of the tensor-parallel group must be
seeded alike (Lightning's seed_everything does): replicated activations then draw the same masks
on every rank, as they must; sharded ones (attention heads, MLP features, and under sequence
parallelism the hidden and embedding dropouts) draw from a stream of each rank's own
(parallel/random.py), as Megatron's RNG tracker forks for its tensor-parallel regions.

Not here: LoRA adapters (refused), generation with a key/value cache (its buffers are sized
for all heads): generate on one process from the checkpoint.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules import (
    AlibiBias,
    KerpleBias,
    RelativePositionBias,
    SandwichBias,
    TransformerBlock,
)
from megatron_lite.modules.attention import _Attention
from megatron_lite.modules.lora import LoraLinear
from megatron_lite.modules.mlp import MLP
from megatron_lite.parallel.random import RankSeededDropout

TP_KEY = "model.tensor_model_parallel_size"


def apply_tensor_parallel(model: nn.Module, tp_mesh: DeviceMesh, *, sequence_parallel: bool) -> None:
    """Shard a GPTModel or T5Model over tp_mesh (1-D) in place; see the module's docstring.
    ValueError when the tensor-parallel size does not divide what it must (naming the key)."""
    if tp_mesh.ndim != 1:
        raise ValueError(f"tensor parallelism takes a 1-D device mesh, got {tp_mesh.ndim} dimensions")
    if any(isinstance(module, LoraLinear) for module in model.modules()):
        raise ValueError("LoRA adapters (model.peft.peft_scheme=lora) are not implemented with "
                         f"tensor parallelism ({TP_KEY} > 1)")
    check_tensor_parallel_sizes(model, tp_mesh.size())
    _seed_sharded_dropout(model, tp_mesh.get_local_rank(), sequence_parallel)
    if isinstance(model, GPTModel):
        _parallelize_gpt(model, tp_mesh, sequence_parallel)
    else:
        _parallelize_t5(model, tp_mesh, sequence_parallel)


def check_tensor_parallel_sizes(model: nn.Module, tp: int) -> None:
    """ValueError naming every key whose size `tp` ranks cannot share: each rank holds whole
    heads, whole query groups, an equal share of the MLP's features and of the vocabulary."""
    if isinstance(model, GPTModel):
        stacks = {"model.": model.cfg}
    elif isinstance(model, T5Model):
        stacks = {"model.encoder.": model.cfg.encoder, "model.decoder.": model.cfg.decoder}
    else:
        raise ValueError(f"tensor parallelism knows GPTModel and T5Model, not {type(model).__name__}")
    problems = []
    for prefix, stack in stacks.items():
        gqa = stack.query_groups != stack.num_attention_heads  # else the heads' check says it
        for key, value, why in (
            ("num_attention_heads", stack.num_attention_heads, "each rank holds whole heads"),
            ("num_query_groups", stack.query_groups if gqa else 0,
             "each rank holds whole query groups, their key/value heads with their query heads"),
            ("ffn_hidden_size", stack.ffn_hidden_size, "each rank holds an equal share of the MLP"),
        ):
            if value % tp:
                problems.append(f"{prefix}{key}={value} is not divisible by {TP_KEY}={tp} ({why})")
    if model.vocab_size % tp:
        problems.append(
            f"the padded vocabulary (padded_vocab_size={model.vocab_size}) is not divisible by {TP_KEY}={tp} "
            "(each rank holds an equal share of the embedding and output rows): "
            "model.make_vocab_size_divisible_by, which the padding multiplies by the "
            "tensor-parallel size, pads it so; model.override_vocab_size must be a multiple")
    if problems:
        raise ValueError("tensor parallelism: " + "; ".join(problems))


def _seed_sharded_dropout(model: nn.Module, rank: int, sequence_parallel: bool) -> None:
    """Dropout on what this rank holds alone draws from a stream of its own (parallel/random.py):
    the attention's (its heads), the MLP's (its features), and under sequence parallelism every
    hidden and embedding dropout (they run on sequence shards; without it on replicated
    activations, the same mask on every rank). Before any plan hooks the dropout modules."""
    for parent in list(model.modules()):
        if isinstance(parent, _Attention):
            parent.dropout_rank = rank
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and (sequence_parallel or isinstance(parent, MLP)):
                setattr(parent, name, RankSeededDropout(child.p, rank))


def _activation_layout(sequence_parallel: bool) -> Shard | Replicate:
    """Activations between the parallel regions: sharded by sequence or replicated."""
    return Shard(1) if sequence_parallel else Replicate()


def _parallelize_gpt(model: GPTModel, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    between = _activation_layout(sequence_parallel)
    embedding = model.embedding
    # Learned positions are added whole; the sum is then split by sequence before its dropout.
    # Without them the lookup's sum over ranks is reduce-scattered straight into shards.
    learned = embedding.position_embeddings is not None
    _vocab_parallel_embedding(embedding.word_embeddings, mesh,
                              Replicate() if learned else between, sequence_parallel)
    if sequence_parallel and learned:
        _split_sequence_before(embedding.dropout, mesh)
    if model.output_layer is not None:
        # Read as a weight by the loss and forward (F.linear): only its rows are sharded.
        parallelize_module(model.output_layer, mesh, ColwiseParallel())
    _shard_position_bias(model.relative_position_bias, mesh)
    _parallelize_block(model.decoder, mesh, sequence_parallel)
    _output_as_dtensor(model.decoder, mesh, between, between)


def _parallelize_t5(model: T5Model, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    between = _activation_layout(sequence_parallel)
    # One table may serve both stacks and the output layer: replicated output, split by
    # sequence in each stack after its positions are added.
    for table in (model.word_embeddings, model.decoder_word_embeddings):
        if table is not None:
            _vocab_parallel_embedding(table, mesh, Replicate(), sequence_parallel)
    if model.output_layer is not None:
        parallelize_module(model.output_layer, mesh, ColwiseParallel())
    if model.output_bias is not None:
        model.output_bias = nn.Parameter(distribute_tensor(model.output_bias.data, mesh, [Shard(0)]))
    for stack in (model.encoder, model.decoder):
        if sequence_parallel:
            _split_sequence_before(stack.dropout, mesh)
        _shard_position_bias(stack.relative_position_bias, mesh)
        _parallelize_block(stack.block, mesh, sequence_parallel)
    # The encoder's output is gathered once; every decoder layer's cross-attention reads it.
    _output_as_dtensor(model.encoder, mesh, between, Replicate())
    _output_as_dtensor(model.decoder, mesh, between, between)


def _vocab_parallel_embedding(table: nn.Embedding, mesh: DeviceMesh, output: Shard | Replicate,
                              sequence_parallel: bool) -> None:
    """Rows sharded by vocabulary; each rank looks up its rows (zeros for the others' tokens)
    and the sum over ranks is all-reduced (Replicate) or reduce-scattered by sequence. Under
    sequence parallelism the tokens' sequences must split into equal shards."""
    parallelize_module(table, mesh, RowwiseParallel(input_layouts=Replicate(), output_layouts=output))
    if sequence_parallel:
        table.register_forward_pre_hook(functools.partial(_check_sequence_splits, tp=mesh.size()))


def _check_sequence_splits(module: nn.Module, inputs: tuple, *, tp: int) -> None:
    length = inputs[0].shape[1]  # tokens (B, S)
    if length % tp:
        raise ValueError(
            f"model.sequence_parallel=True splits every sequence into {TP_KEY}={tp} equal shards: "
            f"a sequence of {length} tokens does not split (use lengths that are multiples of {tp}, "
            "or generate on one process)")


def _split_sequence_before(module: nn.Module, mesh: DeviceMesh) -> None:
    """`module`'s input, replicated, is cut to this rank's sequence shard (no communication;
    the gradient is all-gathered)."""
    parallelize_module(module, mesh, PrepareModuleInput(
        input_layouts=Replicate(), desired_input_layouts=Shard(1), use_local_output=True))


def _output_as_dtensor(module: nn.Module, mesh: DeviceMesh, layout, desired) -> None:
    """`module`'s output (local, of `layout`) as a DTensor of the `desired` layout."""
    parallelize_module(module, mesh, PrepareModuleOutput(
        output_layouts=layout, desired_output_layouts=desired, use_local_output=False))


def _parallelize_block(block: TransformerBlock, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    between = _activation_layout(sequence_parallel)
    tp = mesh.size()
    for layer in block.layers:
        plan = {
            "attention.linear_qkv": ColwiseParallel(input_layouts=between),
            "attention.linear_proj": RowwiseParallel(output_layouts=between),
            "mlp.linear_fc1": ColwiseParallel(input_layouts=between),
            "mlp.linear_fc2": RowwiseParallel(output_layouts=between),
        }
        norms = ["attention_norm", "mlp_norm"]
        if layer.cross_attention is not None:
            plan.update({
                "cross_attention.linear_q": ColwiseParallel(input_layouts=between),
                # The encoder's output comes as a replicated DTensor (_parallelize_t5).
                "cross_attention.linear_kv": ColwiseParallel(),
                "cross_attention.linear_proj": RowwiseParallel(output_layouts=between),
            })
            norms.append("cross_attention_norm")
        if sequence_parallel:
            plan.update({name: SequenceParallel(use_local_output=True) for name in norms})
        parallelize_module(layer, mesh, plan)
        for attention in (layer.attention, layer.cross_attention):
            if attention is not None:
                attention.num_heads //= tp
                attention.num_groups //= tp
    if sequence_parallel and block.final_norm is not None:
        parallelize_module(block.final_norm, mesh, SequenceParallel(use_local_output=True))


def _shard_position_bias(bias: nn.Module | None, mesh: DeviceMesh) -> None:
    """Each rank's heads of a per-head position bias: learned parameters as DTensors sharded by
    head (positions.local_heads reads the local shard, whose gradient is exactly its heads'),
    fixed per-head buffers cut to the local heads."""
    rank, tp = mesh.get_local_rank(), mesh.size()
    if isinstance(bias, RelativePositionBias):
        table = bias.relative_attention_bias  # weight (num_buckets, H)
        table.weight = nn.Parameter(distribute_tensor(table.weight.data, mesh, [Shard(1)]))
    elif isinstance(bias, KerpleBias):
        for name, parameter in list(bias.named_parameters()):  # (H,) each
            setattr(bias, name, nn.Parameter(distribute_tensor(parameter.data, mesh, [Shard(0)])))
    elif isinstance(bias, (AlibiBias, SandwichBias)):
        name = "slopes" if isinstance(bias, AlibiBias) else "head_scales"
        heads = getattr(bias, name).chunk(tp)[rank]  # (H / tp,)
        bias.register_buffer(name, heads.clone(), persistent=False)
    else:
        assert bias is None, type(bias)

