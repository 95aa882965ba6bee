"""Memory per GPU of a GPT training step as a function of the layout, from the model's shapes.

The parameters are counted on a model built on the meta device and split into those tensor
parallel shards (the fused q/k/v, output projection and MLP matrices, the vocabulary-parallel
embedding and output layer) and those every tensor-parallel rank holds whole (norms, position
embeddings, the biases of row-parallel layers). Under trainer.precision=bf16-mixed, with fp32
weights as this framework keeps them:

- weights: 4 bytes per parameter, divided by the FSDP shard count (data x context parallel, or
  a node's ranks under hybrid sharding); plus the bf16 copies the step computes with: FSDP2
  gathers them one layer at a time (two live with prefetching, the root's stay gathered), all of
  them with 'grad' sharding (kept from the forward to the backward), and without FSDP autocast
  keeps a bf16 copy of every weight through the step;
- gradients: 4 bytes per parameter, sharded like the weights under FSDP;
- AdamW: two fp32 moments, 8 bytes per parameter, sharded like the weights;
- activations of one micro-batch: what autograd keeps per token and layer under autocast (the
  residual stream and norm inputs in fp32, matmul inputs and outputs in bf16, dropout masks as
  bytes; flash attention keeps q, k, v, its output and the log-sum-exp, never the scores): the
  tensor-parallel regions' part divided by the tensor-parallel size, the rest too with sequence
  parallel, everything by the context-parallel size (each rank holds 1/cp of every sequence);
  with full activation checkpointing a layer keeps its input only, plus one layer's activations
  while it is recomputed. The loss head adds the final norm's input, the hidden states'
  gradient and the chunked cross-entropy's float32 logits chunk (modules/cross_entropy.py).

The sum is an upper bound of the peak: gradients appear in the backward while activations are
freed. `measure_one_gpu` runs the same step on a GPU and reads torch's allocator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from megatron_lite.config import GPTModelConfig

GIB = 2**30
# Tensor-parallel layers (parameter names end with "<module>.weight" or "<module>.bias"): column
# parallel ones shard weight and bias, row parallel ones the weight only.
COLUMN_PARALLEL = ("linear_qkv", "linear_q", "linear_kv", "linear_fc1", "word_embeddings", "output_layer")
ROW_PARALLEL = ("linear_proj", "linear_fc2")
CHUNK_LOGITS_BYTES = 4 * 2**25  # modules/cross_entropy.py's float32 chunk


@dataclass(frozen=True)
class Layout:
    name: str
    data_parallel: int = 1
    tensor_parallel: int = 1
    context_parallel: int = 1
    sequence_parallel: bool = False
    fsdp: str | None = None  # None, "full", "grad", "hybrid"
    gpus_per_node: int = 8

    @property
    def gpus(self) -> int:
        return self.data_parallel * self.tensor_parallel * self.context_parallel

    @property
    def shards(self) -> int:
        """How many ranks share one copy of the weights, gradients and optimizer state."""
        if self.fsdp is None:
            return 1
        shards = self.data_parallel * self.context_parallel
        if self.fsdp == "hybrid":
            return min(shards, self.gpus_per_node // self.tensor_parallel)
        return shards


@dataclass(frozen=True)
class ParameterCount:
    total: int
    tensor_parallel: int  # of `total`, those tensor parallel shards
    per_layer: int  # one transformer layer's
    root: int  # outside the layers (embeddings, output layer, final norm)

    def per_rank(self, tp: int) -> float:
        """Parameters a tensor-parallel rank holds."""
        return self.tensor_parallel / tp + (self.total - self.tensor_parallel)


def count_parameters(model: nn.Module) -> ParameterCount:
    total = sharded = layer = 0
    for name, param in model.named_parameters():
        module, kind = name.rsplit(".", 2)[-2:]
        total += param.numel()
        if module in COLUMN_PARALLEL or (module in ROW_PARALLEL and kind == "weight"):
            sharded += param.numel()
        if ".layers.0." in name:
            layer += param.numel()
    layers = sum(1 for name, _ in model.named_modules() if name.count(".") == 2 and ".layers." in name)
    return ParameterCount(total, sharded, layer, total - layers * layer)


def meta_model(cfg: GPTModelConfig, vocab_size: int) -> nn.Module:
    from megatron_lite.models import GPTModel  # noqa: PLC0415

    with torch.device("meta"):
        return GPTModel(cfg, vocab_size)


def activation_bytes_per_token(cfg: GPTModelConfig, layout: Layout) -> float:
    """What one layer keeps for the backward per token of the micro-batch, on one rank."""
    h, heads, groups, d, ffn = (cfg.hidden_size, cfg.num_attention_heads, cfg.query_groups, cfg.head_dim,
                                cfg.ffn_hidden_size)
    masks = 2 * h if cfg.hidden_dropout > 0 else 0  # two dropouts' bool masks
    # Outside the tensor-parallel regions: both norms' fp32 inputs, the bf16 casts of their
    # outputs that the first matmuls keep, the dropout masks.
    outside = 4 * h + 2 * h + 4 * h + 2 * h + masks
    # Inside: q, k, v and the attention output (bf16), the lse (fp32, per head), the MLP's
    # first output, what the activation keeps and the second matmul's input.
    attention = 2 * heads * d + 2 * 2 * groups * d + 2 * heads * d + 4 * heads
    mlp = 8 * ffn if cfg.gated_mlp else 4 * ffn
    tp = layout.tensor_parallel
    return (outside / (tp if layout.sequence_parallel else 1) + (attention + mlp) / tp) / layout.context_parallel


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  # bytes, fp32 master weights (the rank's shard)
    compute_weights: float  # bf16 copies alive during the step
    gradients: float
    optimizer: float
    activations: float  # one micro-batch, no recomputation
    activations_recomputed: float  # one micro-batch, full activation checkpointing (1 layer)

    @property
    def states(self) -> float:
        return self.weights + self.compute_weights + self.gradients + self.optimizer

    def row(self) -> dict[str, float]:
        return {key: value / GIB for key, value in (
            ("weights", self.weights + self.compute_weights), ("gradients", self.gradients),
            ("adamw", self.optimizer), ("activations", self.activations),
            ("activations_recomputed", self.activations_recomputed),
            ("total", self.states + self.activations),
            ("total_recomputed", self.states + self.activations_recomputed))}


def estimate(cfg: GPTModelConfig, vocab_size: int, layout: Layout, micro_batch: int, seq_length: int,
             params: ParameterCount | None = None) -> MemoryEstimate:
    params = params or count_parameters(meta_model(cfg, vocab_size))
    tp, shards = layout.tensor_parallel, layout.shards
    per_rank = params.per_rank(tp)
    layer_per_rank = params.per_layer * (1 / tp if tp > 1 else 1)  # nearly all of a layer shards
    if layout.fsdp is None:
        compute = 2 * per_rank  # autocast's bf16 copy of every weight
    elif layout.fsdp == "grad":
        compute = 2 * per_rank  # all gathered between the forward and the backward
    else:
        compute = 2 * (2 * layer_per_rank + params.root / tp)
    tokens = micro_batch * seq_length
    per_token = activation_bytes_per_token(cfg, layout)
    h = cfg.hidden_size
    seq_share = tp if layout.sequence_parallel else 1
    # The loss head: the final norm's fp32 input, the hidden states' fp32 gradient, one logits chunk.
    head = tokens / layout.context_parallel * 8 * h / seq_share + CHUNK_LOGITS_BYTES
    full = cfg.num_layers * tokens * per_token + head
    kept_inputs = cfg.num_layers * tokens / layout.context_parallel * 4 * h / seq_share
    recomputed = kept_inputs + tokens * per_token + head
    return MemoryEstimate(
        weights=4 * per_rank / shards, compute_weights=compute, gradients=4 * per_rank / shards,
        optimizer=8 * per_rank / shards, activations=full, activations_recomputed=recomputed)


def gpt_1_3b() -> tuple[GPTModelConfig, int]:
    """GPT-3 XL's shape (24 x 2048, 16 heads, GELU MLP 8192, learned positions, tied output),
    GPT-2's vocabulary padded to 50304."""
    return GPTModelConfig(num_layers=24, hidden_size=2048, ffn_hidden_size=8192, num_attention_heads=16,
                          encoder_seq_length=2048, max_position_embeddings=2048), 50304


def gpt_7b() -> tuple[GPTModelConfig, int]:
    """Mistral-7B's shape: 32 x 4096, 32 heads in 8 key/value groups (GQA), SwiGLU MLP 14336,
    RMSNorm, rope, no biases, untied output, vocabulary 32000 (7.2B parameters)."""
    return GPTModelConfig(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                          num_query_groups=8, activation="swiglu", normalization="rmsnorm", bias=False,
                          position_embedding_type="rope", share_embeddings_and_output_weights=False,
                          encoder_seq_length=4096, max_position_embeddings=4096), 32000


def measure_one_gpu(cfg: GPTModelConfig, vocab_size: int, micro_batch: int, seq_length: int) -> dict[str, float]:
    """One GPU, trainer.precision=bf16-mixed, flash attention on: the allocator's bytes (GiB)
    for the weights, AdamW's state, the activations at the end of the forward and the peak of
    the second training step (fused AdamW, gradients set to None between steps, as in training)."""
    from dataclasses import replace  # noqa: PLC0415

    from megatron_lite.models import GPTModel  # noqa: PLC0415
    from megatron_lite.modules.cross_entropy import linear_cross_entropy  # noqa: PLC0415
    from megatron_lite.training.optim import param_groups  # noqa: PLC0415

    cfg = replace(cfg, use_flash_attention=True)
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    model = GPTModel(cfg, vocab_size).to(device)
    weights = torch.cuda.memory_allocated()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=True)
    tokens = torch.randint(0, vocab_size, (micro_batch, seq_length + 1), device=device)
    batch = (tokens[:, :-1], tokens[:, 1:], torch.ones(micro_batch, seq_length, device=device))
    result = {}
    for step in range(2):
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden = model.hidden_states(batch[0])
            loss = linear_cross_entropy(hidden, model.output_weight(), batch[1], batch[2])
        forward = torch.cuda.memory_allocated() - before
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result = {"weights": weights / GIB, "adamw": (before - weights) / GIB if step else 0.0,
                  "forward": forward / GIB, "peak": torch.cuda.max_memory_allocated() / GIB}
    return result
