"""Load an edited copy of kernels/flash_attention.py beside the committed module, to compare a
kernel change with the committed kernel in one process (scripts/bench_attention.py
--candidate, scripts/kernel_report.py --kernel-file)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

OP_NAMESPACE = '"megatron_lite::'


def load_kernel_copy(path: str, namespace: str):
    """The module at `path`, its custom ops registered under `namespace` instead of
    megatron_lite (torch refuses a second registration of the same op name)."""
    source = Path(path).read_text()
    if OP_NAMESPACE not in source:
        raise ValueError(f"{path} does not look like a copy of kernels/flash_attention.py")
    copy = Path(tempfile.mkdtemp()) / f"{namespace}.py"
    copy.write_text(source.replace(OP_NAMESPACE, f'"{namespace}::'))
    spec = importlib.util.spec_from_file_location(namespace, copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # Triton reads the kernels' source from `copy`
    return module
