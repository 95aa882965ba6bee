"""Compile the attention kernels for an H100/H200 (sm_90) on a machine without a GPU.

Triton's front end, MLIR passes and ptxas run as for the JIT, so this catches code that the
interpreter accepts but the compiler refuses, and shows what the compiler made of a kernel
(shared memory, registers and spills, layout conversions, how loads were pipelined) before any
GPU time is spent. Run without TRITON_INTERPRET.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

FEATURES = ("CAUSAL", "HAS_ALIBI", "HAS_REL_BIAS", "HAS_KEY_MASK", "HAS_SEGMENTS", "HAS_DROPOUT")
POINTER_TYPES = {"KeyMask": "*u8", "SegIds": "*i32", "Slopes": "*fp32", "RelBias": "*fp16",
                 "JacBand": "*fp16", "DParams": "*fp32",
                 "DRelBias": "*fp32", "Lse": "*fp32", "Delta": "*fp32", "DLse": "*fp32",
                 "Mask": "*i1", "Bias": "*fp32", "Band": "*fp16", "Seed": "*i64"}


def jit_function(kernel) -> triton.runtime.jit.JITFunction:
    """The JITFunction under autotuner and heuristics wrappers."""
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def compile_for_sm90(kernel, constexprs: dict, *, dtype: str = "bf16", num_warps: int = 8,
                     num_stages: int = 3, max_registers: int | None = None, aligned: bool = False):
    """triton.compile of `kernel` for sm_90. The kernels name their pointers in CamelCase (the
    tensors in `dtype` unless POINTER_TYPES says otherwise); every other argument not in
    `constexprs` is an int32 (qk_scale and dropout_p fp32). aligned: pointers,
    strides and the relative-bias band's geometry divisible by 16, as the JIT specializes them
    for real tensors (vector loads). RelBias is the band, fp16 for 16-bit inputs. max_registers:
    ptxas's cap per thread (triton.Config's maxnreg)."""
    fn = jit_function(kernel)
    # a feature flag the kernel does not take (the relative-bias gradient kernel has no
    # HAS_REL_BIAS: it implies it; a kernel copy from before ParametricBias no NUM_JACOBIAN) is
    # left out; any other unknown name still fails below
    optional = (*FEATURES, "NUM_JACOBIAN")
    constexprs = {k: v for k, v in constexprs.items() if k in fn.arg_names or k not in optional}
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name[0].isupper():
            signature[name] = POINTER_TYPES.get(name, f"*{dtype}")
        elif name in ("qk_scale", "dropout_p"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
        if aligned and (name[0].isupper() or name.startswith("stride_") or name.startswith("band_")):
            attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, attrs=attrs,
                       constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages,
                                   "maxnreg": max_registers})


def resource_report(compiled) -> dict:
    """What the compiler made of a kernel: shared memory (bytes), registers and spill bytes per
    thread (ptxas -v), layout conversions in the TTGIR (each one a trip through shared memory
    or shuffles), asynchronous copies by width (16 bytes: vectorised; 4: element by element)
    and plain global loads."""
    ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
    copies = re.findall(r"cp\.async\.c[ag]\.shared\.global \[[^\]]*\], \[[^\]]*\], (0x[0-9a-f]+)", ptx)
    registers, spill_bytes = _ptxas_usage(ptx)
    return {
        "shared_bytes": compiled.metadata.shared,
        "registers": registers,
        "spill_bytes": spill_bytes,
        "layout_conversions": ttgir.count("ttg.convert_layout"),
        "async_copies_16B": sum(size == "0x10" for size in copies),
        "async_copies_4B": sum(size == "0x4" for size in copies),
        "global_loads": len(re.findall(r"\bld\.global\.", ptx)),
    }


def _ptxas_usage(ptx: str) -> tuple[int | None, int | None]:
    """(registers, spill store bytes) from `ptxas -v`; (None, None) if no ptxas here takes this
    PTX version (the wheel ships an older ptxas beside a newer ptxas-blackwell)."""
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as file:
        file.write(ptx)
    try:
        for name in ("ptxas-blackwell", "ptxas"):
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                continue
            result = subprocess.run([path, "-arch=sm_90a", "-v", file.name, "-o", os.devnull],
                                    capture_output=True, text=True)
            registers = re.search(r"Used (\d+) registers", result.stderr)
            spills = re.search(r"(\d+) bytes spill stores", result.stderr)
            if result.returncode == 0 and registers:
                return int(registers.group(1)), int(spills.group(1)) if spills else 0
        return None, None
    finally:
        os.unlink(file.name)
