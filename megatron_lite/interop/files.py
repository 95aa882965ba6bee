"""Hugging Face model folders on disk: config.json, the weights (safetensors or pytorch_model.bin,
whole or sharded), written whole or not at all. Local files only: nothing is downloaded.

safetensors comes with the `hf` extra (transformers depends on it); it is imported where a file
is read or written, so the core install imports this package without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from megatron_lite.extras import import_optional

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
# Where a folder may keep its weights, in the order they are looked for: (single file, index of
# shards). The index's "weight_map" names the shard of every tensor.
WEIGHT_FILES = (
    (SAFETENSORS_FILE, "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


def _safetensors_torch() -> Any:
    return import_optional("safetensors.torch", extra="hf", needed_for="Hugging Face checkpoints")


def is_hf_folder(path: str | Path) -> bool:
    """A folder holding a config.json: what save_pretrained writes."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def read_hf_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: it has no {CONFIG_FILE}")
    return read_json(path)


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return _safetensors_torch().load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable weight file ({error})") from None


def read_hf_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weights, on the CPU, in their stored dtype."""
    for single, index in WEIGHT_FILES:
        if (folder / single).is_file():
            return _load_weight_file(folder / single)
        if (folder / index).is_file():
            weight_map = read_json(folder / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{folder / index} has no 'weight_map' object naming the shards")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(_load_weight_file(folder / shard))
            return state
    names = ", ".join(name for pair in WEIGHT_FILES for name in pair)
    raise FileNotFoundError(f"{folder} holds no weights: none of {names}")


def write_safetensors(state: Mapping[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    """One safetensors file of `state` in `dtype`. Each tensor gets storage of its own:
    safetensors refuses tensors that share memory (views of one fused projection, tied tables)."""
    tensors = {key: tensor.detach().to(dtype).clone(memory_format=torch.contiguous_format)
               for key, tensor in state.items()}
    _safetensors_torch().save_file(tensors, str(path), metadata={"format": "pt"})


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextlib.contextmanager
def new_folder(path: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill, renamed to `path` when the block ends normally and
    deleted when it raises, so `path` is never left half-written. An existing non-empty `path`
    is refused rather than overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} already exists and is not an empty folder; choose another output")
    temporary = path.with_name(path.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)  # left by an interrupted earlier attempt
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if path.exists():
        path.rmdir()  # empty (checked above)
    os.replace(temporary, path)
