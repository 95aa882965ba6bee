"""Optional dependencies, imported in one place that says which extra installs them.

Library code that needs Hugging Face `transformers` (benchmark peers, interop) calls
`import_transformers()` where it needs it, never at module top, so the core install (and the GPU
machine, which has no transformers) imports the library without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, *, extra: str, needed_for: str) -> ModuleType:
    """`module`, or an ImportError that names the extra to install when it is missing.

    Only the module's own absence is translated: an ImportError raised from inside an installed
    module (a broken or shadowed dependency of it) propagates unchanged, since installing the
    extra would not fix it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise
        raise ImportError(
            f"{needed_for} needs {module!r}, which is not installed. It comes with megatron_lite's "
            f"'{extra}' extra: pip install -e '.[{extra}]'"
        ) from error


def import_transformers(needed_for: str = "Hugging Face interop") -> ModuleType:
    """Hugging Face `transformers` (the `hf` extra)."""
    return import_optional("transformers", extra="hf", needed_for=needed_for)
