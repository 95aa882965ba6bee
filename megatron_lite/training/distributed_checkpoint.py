"""Checkpoints as torch.distributed.checkpoint (DCP) folders, and the one format they share with
single-file checkpoints.

A sharded checkpoint (model.fsdp_sharded_checkpoint=True) is a folder named like a checkpoint
file (`last.ckpt/`): DCP's shards (one `.distcp` file per rank) and `.metadata` hold the weights
(`state_dict`) and the optimizer state (`optimizer_0`), both keyed by parameter name; `meta.pt`
holds the rest of Lightning's checkpoint dict (loops, schedulers, callbacks' states, our config,
consumed samples), as Lightning's ModelParallelStrategy writes it.

Complete or invisible: the folder is written under `<name>.tmp/`, `meta.pt` last (the marker:
DCP's `.metadata` is written once every rank's shards are), and renamed to `<name>` only then.
A run killed mid-write leaves a `.tmp` folder, never resumed from and deleted when the run
resumes.

A single-file checkpoint is today's format in every layout: full weights, and the optimizer
state keyed by parameter index as torch's `Optimizer.state_dict()` writes it. The index of a
parameter is its place in the optimizer's param groups, which optim.param_groups builds from the
model's structure alone, so the indices mean the same parameters in every layout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from megatron_lite.training.files import TEMP_SUFFIX, atomic_file

METADATA_NAME = "meta.pt"  # Lightning's name (lightning_fabric.utilities.load._METADATA_FILENAME)
DCP_METADATA_NAME = ".metadata"
MODEL_KEY = "state_dict"
OLD_SUFFIX = ".old" + TEMP_SUFFIX


def optimizer_key(index: int) -> str:
    return f"optimizer_{index}"


def is_distributed_checkpoint(path: Path) -> bool:
    """A complete DCP checkpoint folder (its marker written)."""
    return path.is_dir() and (path / METADATA_NAME).is_file() and (path / DCP_METADATA_NAME).is_file()


def temporary_path(path: Path) -> Path:
    return path.with_name(path.name + TEMP_SUFFIX)


def write_marker(folder: Path, metadata: dict[str, Any]) -> None:
    """meta.pt, written whole (the last file of a checkpoint folder)."""
    with atomic_file(folder / METADATA_NAME) as file:
        torch.save(metadata, file)


def publish(temporary: Path, path: Path) -> None:
    """Rename a complete checkpoint (folder, or file replacing a folder) to its name, replacing
    what had that name.

    Nothing can be renamed onto a non-empty directory, so the old checkpoint is first moved
    aside to `<name>.old.tmp`: a kill between the two renames leaves no `<name>` but the
    complete new one under `<name>.tmp`, both invisible (deleted on resume), and the run
    resumes from its other newest checkpoint."""
    old = path.with_name(path.name + OLD_SUFFIX)
    if path.exists() or path.is_symlink():
        remove_path(old)
        os.replace(path, old)
    os.replace(temporary, path)
    _fsync_directory(path.parent)
    remove_path(old)


def remove_path(path: Path) -> None:
    """Delete a file or a folder if it exists (tolerates another rank deleting it first)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def read_metadata(path: Path) -> dict[str, Any]:
    """A DCP folder's meta.pt: everything but the weights and the optimizer state."""
    return torch.load(path / METADATA_NAME, map_location="cpu", weights_only=True)


def read_distributed_checkpoint(path: Path, *, optimizer: bool = False) -> dict[str, Any]:
    """A DCP folder read whole in this process (no process group needed, any number of ranks
    wrote it) as a single-file checkpoint dict: full weights, and with `optimizer` the optimizer
    states keyed by index."""
    # What torch.distributed.checkpoint.format_utils.dcp_to_torch_save does, for some keys only
    # (the public load() does not fill an empty dict).
    from torch.distributed.checkpoint import FileSystemReader  # noqa: PLC0415
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner  # noqa: PLC0415
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict  # noqa: PLC0415

    metadata = read_metadata(path)
    reader = FileSystemReader(str(path))
    stored = reader.read_metadata().state_dict_metadata
    optimizers = sorted({key.split(".")[0] for key in stored if key.startswith("optimizer_")})
    keys = {MODEL_KEY, *(optimizers if optimizer else ())}
    state: dict[str, Any] = {}
    _load_state_dict(state, storage_reader=reader, planner=_EmptyStateDictLoadPlanner(keys=keys), no_dist=True)
    checkpoint = {**metadata, MODEL_KEY: state[MODEL_KEY]}
    if optimizer:
        checkpoint["optimizer_states"] = [optimizer_state_by_index(state[key]) for key in optimizers]
    return checkpoint


def optimizer_state_by_index(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed.checkpoint.state_dict's
    form) -> keyed by index, as Optimizer.state_dict() writes it: names numbered in the order
    of the param groups."""
    if not state:  # the ranks other than 0 of a full-state gather get nothing
        return state
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": groups}


def optimizer_state_by_name(state: dict[str, Any], names: list[list[str]]) -> dict[str, Any]:
    """The inverse of optimizer_state_by_index, given the parameter names of each param group
    of the optimizer the state is for (in its order)."""
    if len(names) != len(state["param_groups"]):
        raise ValueError(f"the checkpoint's optimizer has {len(state['param_groups'])} parameter "
                         f"groups, this run's {len(names)}")
    name_of: dict[int, str] = {}
    groups = []
    for group, group_names in zip(state["param_groups"], names):
        if len(group["params"]) != len(group_names):
            raise ValueError(f"the checkpoint's optimizer group has {len(group['params'])} "
                             f"parameters, this run's {len(group_names)}")
        name_of.update(zip(group["params"], group_names))
        groups.append({**group, "params": list(group_names)})
    return {"state": {name_of[index]: value for index, value in state["state"].items()},
            "param_groups": groups}


# Lightning's loop counters that count micro-batches (its "batches"), by their path in the
# checkpoint's "loops"; the others count optimizer steps or epochs.
MICRO_BATCH_PROGRESS = (("fit_loop", "epoch_loop.batch_progress"),
                        ("fit_loop", "epoch_loop.val_loop.batch_progress"))


def rescale_micro_batch_progress(checkpoint: dict[str, Any], saved_accumulation: int,
                                 accumulation: int) -> None:
    """A checkpoint resumed with another number of micro-batches per optimizer step (another
    data-parallel size, same global batch): Lightning's micro-batch counters are rescaled in
    place, so that its loop places gradient accumulation, validation and the end of the run at
    the same optimizer steps as the run that wrote it. A checkpoint is written between optimizer
    steps, so the counts are whole multiples of its accumulation."""
    if saved_accumulation == accumulation:
        return
    for loop, key in MICRO_BATCH_PROGRESS:
        progress = checkpoint.get("loops", {}).get(loop, {}).get(key)
        if progress is None:
            continue
        for counters in (progress["total"], progress["current"]):
            for name, count in counters.items():
                counters[name] = count * accumulation // saved_accumulation
