"""Index arrays cached on disk as .npy files, memory-mapped when read back.

The file name carries a hash of every input the arrays depend on, so a change of any of them
builds a new set and a cached set is never stale. Each file is written atomically, and contents
are a deterministic function of the name, so several processes (ranks, DataLoader workers)
may build the same set at once: the last rename wins with identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from megatron_lite.data.files import atomic_output


def parameter_hash(parameters: dict, arrays: Sequence[np.ndarray] = ()) -> str:
    """A short hex digest of JSON-able `parameters` and the bytes of `arrays`."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode())
    for array in arrays:
        digest.update(str(array.dtype).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cache_paths(cache_dir: str, name: str, keys: Sequence[str]) -> dict[str, str]:
    return {key: os.path.join(cache_dir, f"{name}_{key}.npy") for key in keys}


def load_or_build(
    paths: dict[str, str], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays at `paths` ({key: .npy path}), memory-mapped; `build()` and save them first
    unless every file exists."""
    if not all(os.path.isfile(path) for path in paths.values()):
        arrays = build()
        for key, path in paths.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with atomic_output(path) as temporary, open(temporary, "wb") as file:
                np.save(file, arrays[key])
    return load_cached(paths)


def load_cached(paths: dict[str, str]) -> dict[str, np.ndarray]:
    return {key: np.load(path, mmap_mode="r") for key, path in paths.items()}
