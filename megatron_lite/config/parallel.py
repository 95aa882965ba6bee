"""`model.*` keys that choose the parallel layout (NeMo's and Megatron core's names).

The world (trainer.devices x trainer.num_nodes processes) is split into
tensor_model_parallel_size x context_parallel_size x data-parallel size; the data-parallel size
is what is left. Data parallel is plain replication (DDP, or its composable form) unless
model.fsdp shards weights, gradients and optimizer state over it (FSDP2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_lite.config.checks import require_at_least

FSDP_SHARDING_STRATEGIES = ("full", "grad", "hybrid")
# NeMo's spellings of fsdp_grad_reduce_dtype (its YAMLs say 'fp32', later ones 32).
REDUCE_DTYPES = {
    "fp32": torch.float32, "32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "16": torch.float16, "float16": torch.float16,
}

PIPELINE_REFUSAL = (
    "pipeline parallelism is not built in megatron_lite: FSDP2 (model.fsdp=True), tensor "
    "parallelism and activation checkpointing already fit the model sizes this framework targets "
    "(up to ~10B parameters on 8-GPU nodes, docs/parallelism.md), and torch.distributed.pipelining "
    "would need the model cut into stages with a 1F1B schedule driving the micro-batches in place "
    "of Lightning's loop. Use model.fsdp=True and/or model.tensor_model_parallel_size instead"
)


@dataclass
class ParallelKeys:
    """The layout keys of `model.*` (both families)."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    # Layer norms and dropouts on sequence shards between the tensor-parallel regions.
    sequence_parallel: bool = False
    # Megatron core's key: one sequence split over this many ranks (ring attention).
    context_parallel_size: int = 1
    # NeMo's FSDP keys. fsdp: shard weights, gradients and optimizer state over the
    # data-parallel ranks (FSDP2's fully_shard); False: every data-parallel rank holds them all.
    fsdp: bool = False
    # full: parameters resharded after the forward (ZeRO-3); grad: kept gathered from the
    # forward through the backward (ZeRO-2 like: less communication, more memory); hybrid:
    # sharded within a node, replicated across nodes (HSDP).
    fsdp_sharding_strategy: str = "full"
    # The dtype gradients are reduced in (FSDP2's MixedPrecisionPolicy.reduce_dtype).
    fsdp_grad_reduce_dtype: str = "fp32"
    # True: a checkpoint is a torch.distributed.checkpoint folder, one shard per rank; False: one
    # file with the full state, gathered on rank 0.
    fsdp_sharded_checkpoint: bool = False

    def check_parallel(self) -> None:
        require_at_least(self, "model.", 1, "tensor_model_parallel_size",
                         "pipeline_model_parallel_size", "context_parallel_size")
        if self.pipeline_model_parallel_size != 1:
            raise ValueError(
                f"model.pipeline_model_parallel_size={self.pipeline_model_parallel_size} is not "
                f"implemented: {PIPELINE_REFUSAL}"
            )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError(
                "model.sequence_parallel=True needs model.tensor_model_parallel_size > 1: it "
                "splits the activations between the tensor-parallel regions over the "
                "tensor-parallel ranks"
            )
        self.fsdp_grad_reduce_dtype = str(self.fsdp_grad_reduce_dtype)
        if self.fsdp_sharding_strategy not in FSDP_SHARDING_STRATEGIES:
            raise ValueError(
                f"model.fsdp_sharding_strategy={self.fsdp_sharding_strategy!r} is not one of "
                f"{FSDP_SHARDING_STRATEGIES}"
            )
        if self.fsdp_grad_reduce_dtype not in REDUCE_DTYPES:
            raise ValueError(
                f"model.fsdp_grad_reduce_dtype={self.fsdp_grad_reduce_dtype!r} is not one of "
                f"{sorted(REDUCE_DTYPES)}"
            )
        if not self.fsdp:
            defaults = ParallelKeys.__dataclass_fields__
            for key in ("fsdp_sharding_strategy", "fsdp_grad_reduce_dtype"):
                if getattr(self, key) != defaults[key].default:
                    raise ValueError(
                        f"model.{key}={getattr(self, key)!r} applies with model.fsdp=True only"
                    )
        if self.fsdp_sharded_checkpoint and not self.uses_dtensor:
            raise ValueError(
                "model.fsdp_sharded_checkpoint=True needs a sharded layout (model.fsdp=True, "
                "model.tensor_model_parallel_size > 1 or model.context_parallel_size > 1); plain "
                "data parallel writes one file"
            )

    @property
    def model_parallel_size(self) -> int:
        """Ranks that share one data-parallel rank's samples (tensor x context parallel)."""
        return self.tensor_model_parallel_size * self.context_parallel_size

    @property
    def uses_dtensor(self) -> bool:
        """Whether the layout runs through megatron_lite's ModelParallelStrategy (parameters as
        DTensors) rather than Lightning's DDP."""
        return self.fsdp or self.model_parallel_size > 1

    @property
    def grad_reduce_dtype(self) -> torch.dtype:
        return REDUCE_DTYPES[str(self.fsdp_grad_reduce_dtype)]


def check_layout(model: ParallelKeys, devices: int, num_nodes: int, precision: str, strategy: str) -> None:
    """The checks of the layout that need trainer.* too."""
    world = devices * num_nodes
    if world % model.model_parallel_size:
        raise ValueError(
            f"trainer.devices x trainer.num_nodes = {devices} x {num_nodes} = {world} processes "
            f"cannot be split into model.tensor_model_parallel_size={model.tensor_model_parallel_size}"
            f" x model.context_parallel_size={model.context_parallel_size} ranks per data-parallel "
            "rank: the world size must be a multiple of their product"
        )
    if model.fsdp and model.fsdp_sharding_strategy == "hybrid" and devices % model.model_parallel_size:
        raise ValueError(
            f"model.fsdp_sharding_strategy='hybrid' shards within a node, but a node's "
            f"trainer.devices={devices} is not a multiple of tensor x context parallel size "
            f"{model.model_parallel_size}"
        )
    if not model.uses_dtensor:
        return
    if strategy != "auto":
        raise ValueError(
            f"trainer.strategy={strategy!r} with model.fsdp, tensor or context parallel: these "
            "layouts run under megatron_lite's own strategy; leave trainer.strategy=auto"
        )
    if precision == "16-mixed" and (model.fsdp or model.tensor_model_parallel_size > 1):
        raise ValueError(
            "trainer.precision=16 with model.fsdp=True or tensor parallel: fp16's loss scaler "
            "checks only this rank's shard of the gradients for overflow, so ranks could disagree "
            "on skipping a step; use trainer.precision=bf16"
        )


# Positions applied to q and k before attention (from each token's global position id) work on
# a share of the sequence; biases computed inside the kernel from a step's local indices would not.
CONTEXT_PARALLEL_POSITIONS = ("learned_absolute", "rope", "xpos")


def check_context_parallel(position_embedding_type: str, context_parallel_size: int,
                           lengths: dict[str, int]) -> None:
    """A GPT's context-parallel errors; lengths: the sequence lengths by their config keys."""
    if context_parallel_size == 1:
        return
    if position_embedding_type not in CONTEXT_PARALLEL_POSITIONS:
        raise ValueError(
            f"model.position_embedding_type={position_embedding_type!r} with model.context_parallel_size="
            f"{context_parallel_size}: context parallelism supports {CONTEXT_PARALLEL_POSITIONS} (applied "
            "before attention at each token's position); biases computed inside the kernel are not "
            "offset to a rank's share of the sequence")
    for key, length in lengths.items():
        if length % (2 * context_parallel_size):
            raise ValueError(
                f"{key}={length} is not divisible by 2 x model.context_parallel_size = "
                f"{2 * context_parallel_size}: every rank holds two equal chunks of each sequence")
