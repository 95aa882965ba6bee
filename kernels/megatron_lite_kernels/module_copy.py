"""Load an edited copy of the flash_attention package beside the installed one, to compare a
kernel change with the committed kernel in one process (scripts/bench_attention.py --candidate,
scripts/bench_train.py --kernel-file, scripts/kernel_report.py --kernel-copy).

A copy is a folder (`cp -r kernels/megatron_lite_kernels/flash_attention my_edit`) or a
single-module kernel file, such as the kernel before it became a package: `git show
<commit>:kernels/flash_attention.py > old.py` then times the old kernel beside the new one.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

OP_NAMESPACE = '"megatron_lite::'
KERNEL_PACKAGE = Path(__file__).resolve().parent / "flash_attention"


def load_kernel_copy(path: str | Path, namespace: str):
    """The kernel module or package at `path`, imported under the name `namespace`, its custom
    ops registered under `namespace` instead of megatron_lite (torch refuses a second
    registration of the same op name)."""
    path = Path(path)
    sources = sorted(path.glob("*.py")) if path.is_dir() else [path]
    if not path.exists() or not any(OP_NAMESPACE in source.read_text() for source in sources):
        raise ValueError(f"{path} does not look like a copy of the flash_attention package "
                         f"({KERNEL_PACKAGE}) or of a single-module kernel file: it registers "
                         "no megatron_lite:: custom op")
    # Triton reads each kernel's source from its file, so the renamed copy must lie on disk.
    folder = Path(tempfile.mkdtemp()) / namespace
    folder.mkdir()
    for source in sources:
        renamed = source.read_text().replace(OP_NAMESPACE, f'"{namespace}::')
        (folder / source.name).write_text(renamed)
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            namespace, folder / "__init__.py", submodule_search_locations=[str(folder)])
    else:
        spec = importlib.util.spec_from_file_location(namespace, folder / path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[namespace] = module  # the package's relative imports look it up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[namespace]
        raise
    return module

