"""Input-path expansion and all-or-nothing output files, shared by the data tools."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator, Sequence


def expand_input_paths(patterns: Sequence[str], option: str) -> list[str]:
    """Paths matching each file name or glob, in the order given (each glob's matches sorted).

    `option` names the command-line option or argument in the error for a pattern matching nothing.
    """
    if not patterns:
        raise ValueError(f"{option}: no input files given")
    paths: list[str] = []
    for pattern in patterns:
        # A file named literally wins over a glob reading of its name (brackets are legal in names).
        if os.path.isfile(pattern):
            matches = [pattern]
        else:
            matches = [path for path in sorted(glob.glob(pattern)) if os.path.isfile(path)]
        if not matches:
            raise FileNotFoundError(f"{option}: no input file matches {pattern!r}")
        paths.extend(matches)
    return paths


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path next to `path` and move it onto `path` only if the block succeeds.

    A crashed or interrupted run therefore leaves either the old file or none, never a half-written
    one; concurrent writers of identical content (several ranks building the same cache) are safe.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
