"""The Lightning strategy of every layout beyond plain data parallel: FSDP2, tensor and context
parallel, through Lightning's ModelParallelStrategy (DTensor parameters, one process per device).

The device mesh has three named dimensions, outermost first:
  data_parallel     ranks that read different samples (the Megatron sampler's ranks)
  context_parallel  ranks that read different parts of the same sequences
  tensor_parallel   ranks that hold different parts of the same layers (innermost: one node)
so a rank's data-parallel rank is its place along `data_parallel` alone; the context- and
tensor-parallel ranks of one data-parallel rank read the same samples (Lightning's
distributed_sampler_kwargs, which the data module reads). FSDP2 (or its replicating form)
works over data_parallel x context_parallel flattened, as torchtitan does: context-parallel ranks
see different tokens of the same samples, so their gradients are reduced together with the
data-parallel ones. Hybrid sharding (HSDP) splits that into (data_replicate: one per node,
data_shard_context_parallel: a node's ranks), sharding within a node and replicating across.

Checkpoints: a sharded one is a torch.distributed.checkpoint folder written under a temporary
name and renamed when complete; a full one is today's single file, gathered on rank 0 and
written by AtomicCheckpointIO, its optimizer state keyed by index as a DDP run writes it
(training/distributed_checkpoint.py). Either loads into any layout.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.optim import Optimizer

from megatron_lite.training.distributed_checkpoint import (
    MODEL_KEY,
    is_distributed_checkpoint,
    optimizer_key,
    optimizer_state_by_index,
    optimizer_state_by_name,
    publish,
    read_metadata,
    remove_path,
    temporary_path,
    write_marker,
)

MESH_DIMS = ("data_parallel", "context_parallel", "tensor_parallel")
DATA_CONTEXT = "data_context_parallel"  # data_parallel x context_parallel, flattened
HYBRID_DIMS = ("data_replicate", "data_shard_context_parallel")


def build_device_mesh(device_type: str, world_size: int, tensor_parallel: int,
                      context_parallel: int) -> DeviceMesh:
    """The mesh of MESH_DIMS over the world."""
    data_parallel = world_size // (tensor_parallel * context_parallel)
    assert data_parallel * tensor_parallel * context_parallel == world_size, "checked by the config"
    return init_device_mesh(device_type, (data_parallel, context_parallel, tensor_parallel),
                            mesh_dim_names=MESH_DIMS)


def data_parallel_mesh(mesh: DeviceMesh, replicas: int = 1) -> DeviceMesh:
    """What FSDP2 (or replicate) works over: data_parallel x context_parallel flattened (1-D);
    with hybrid sharding over `replicas` nodes, that split into (data_replicate, the ranks of one
    node), 2-D. Ranks are numbered node by node, so a node's ranks are one replica."""
    flat = mesh["data_parallel", "context_parallel"]._flatten(DATA_CONTEXT)
    if replicas == 1:
        return flat
    return flat._unflatten(0, (replicas, flat.size() // replicas), HYBRID_DIMS)


class MegatronStrategy(ModelParallelStrategy):
    """ModelParallelStrategy over megatron_lite's mesh, with checkpoints that load into any
    layout. The LightningModule parallelizes its model in configure_model()."""

    def __init__(self, *, tensor_parallel_size: int, context_parallel_size: int, sharded_checkpoint: bool,
                 block_gradient_sync: bool, **kwargs: Any) -> None:
        super().__init__(save_distributed_checkpoint=sharded_checkpoint, **kwargs)
        self.tensor_parallel_size = tensor_parallel_size
        self.context_parallel_size = context_parallel_size
        # Skip gradient reduction on micro-batches that accumulate (replication only: FSDP2 would
        # have to keep whole unsharded gradients until the last micro-batch).
        self.block_gradient_sync = block_gradient_sync
        self._file_loaded = False  # the checkpoint being restored is a file (not a DCP folder)

    def setup_environment(self) -> None:
        self._setup_distributed()  # Lightning's: process group, ranks, the accelerator's device
        self._device_mesh = build_device_mesh(self.root_device.type, self.world_size, self.tensor_parallel_size,
                                              self.context_parallel_size)
        assert self.lightning_module is not None
        self.lightning_module._device_mesh = self._device_mesh

    @contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        """Lightning calls this around micro-batches that accumulate gradients."""
        from torch.distributed.fsdp import FSDPModule  # noqa: PLC0415

        modules = [m for m in self.model.modules() if isinstance(m, FSDPModule)] if self.block_gradient_sync else []
        for module in modules:
            module.set_requires_gradient_sync(False, recurse=False)
        try:
            yield None
        finally:
            for module in modules:
                module.set_requires_gradient_sync(True, recurse=False)

    # Checkpoints: saving.

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict  # noqa: PLC0415

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        full = not self._save_distributed_checkpoint
        state = get_optimizer_state_dict(self.model, optimizer,
                                         options=StateDictOptions(full_state_dict=full, cpu_offload=True))
        return optimizer_state_by_index(state) if full else state

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(self.broadcast(str(filepath)))
        if not self._save_distributed_checkpoint:  # one file, rank 0 (AtomicCheckpointIO)
            if self.is_global_zero:
                self.checkpoint_io.save_checkpoint(checkpoint, path)
            return
        from torch.distributed.checkpoint import save  # noqa: PLC0415

        temporary = temporary_path(path)
        if self.is_global_zero:
            remove_path(temporary)
            temporary.mkdir(parents=True)
        self.barrier()
        shards = {MODEL_KEY: checkpoint.pop(MODEL_KEY)}
        for index, state in enumerate(checkpoint.pop("optimizer_states", [])):
            shards[optimizer_key(index)] = state
        save(shards, checkpoint_id=str(temporary))
        self.barrier()  # every rank's shards are written
        if self.is_global_zero:
            write_marker(temporary, checkpoint)
            publish(temporary, path)
        self.barrier()

    # Checkpoints: loading (after configure_model and the optimizers' set-up).

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """A sharded checkpoint: each rank reads its own shards, resharded to this layout by
        torch.distributed.checkpoint, into the model and optimizers now; the rest (meta.pt) is
        returned. A file: returned whole (memory-mapped on every rank), for Lightning to hand to
        on_load_checkpoint (which may convert it) and then to load_model_state_dict and
        load_optimizer_state_dict below, as it does under DDP."""
        from torch.distributed.checkpoint import load  # noqa: PLC0415
        from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415
            get_model_state_dict,
            get_optimizer_state_dict,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        path = Path(self.broadcast(str(checkpoint_path)))
        self._file_loaded = not is_distributed_checkpoint(path)
        if self._file_loaded:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        module = self.model
        assert module is not None
        model_state = get_model_state_dict(module)
        load({MODEL_KEY: model_state}, checkpoint_id=str(path))
        set_model_state_dict(module, model_state)
        for index, optimizer in enumerate(self._plain_optimizers()):
            state = {optimizer_key(index): get_optimizer_state_dict(module, optimizer)}
            load(state, checkpoint_id=str(path))
            set_optimizer_state_dict(module, optimizer, state[optimizer_key(index)])
        return read_metadata(path)

    @property
    def lightning_restore_optimizer(self) -> bool:
        """Whether Lightning is to call load_optimizer_state_dict (a file was read)."""
        return self._file_loaded

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict  # noqa: PLC0415

        if self._file_loaded:  # full tensors on every rank, each keeping its own shards
            set_model_state_dict(self.model, checkpoint[MODEL_KEY],
                                 options=StateDictOptions(full_state_dict=True, strict=strict))

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # noqa: PLC0415

        names = parameter_names(self.model)
        for optimizer, state in zip(self._plain_optimizers(), checkpoint["optimizer_states"]):
            groups = [[names[param] for param in group["params"]] for group in optimizer.param_groups]
            set_optimizer_state_dict(self.model, optimizer, optimizer_state_by_name(state, groups),
                                     options=StateDictOptions(full_state_dict=True))

    def _plain_optimizers(self) -> list[Optimizer]:
        return [opt._optimizer if isinstance(opt, LightningOptimizer) else opt for opt in self.optimizers]


def parameter_names(module: torch.nn.Module) -> dict[torch.nn.Parameter, str]:
    """Each parameter's name as torch.distributed.checkpoint.state_dict names it (the module's
    own name: FSDP2 and DTensor keep parameter names)."""
    return {param: name for name, param in module.named_parameters()}
