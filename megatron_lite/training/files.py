"""Files a run writes whole or not at all: a kill at any moment leaves the previous version (or
none) and at most a `<name>.tmp`, never a half-written file under the real name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path`'s new content into: `path.tmp`, flushed to disk and renamed onto
    `path` when the block ends normally, deleted when it raises."""
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with open(temporary, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)  # atomic: readers see the old file or the new one
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as file:
        file.write(data)
