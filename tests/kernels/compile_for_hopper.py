"""Compile the attention kernels for an H100/H200 (sm_90) on a machine without a GPU.

The Triton interpreter runs kernels as Python and accepts code that the compiler refuses (types
that change across loop iterations, unsupported constructs); compiling ahead of time through
Triton's front end, MLIR passes and ptxas catches that in CI. Run as a module, in a process
without TRITON_INTERPRET:  python -m tests.kernels.compile_for_hopper
"""

from __future__ import annotations

import os
import sys

from megatron_lite_kernels.sm90_compile import FEATURES, compile_for_sm90, jit_function

# Each feature on at least once, and the plain causal and non-causal kernels.
FEATURE_SETS = [(), ("CAUSAL",), ("CAUSAL", "HAS_ALIBI", "HAS_SEGMENTS"),
                ("HAS_REL_BIAS", "HAS_KEY_MASK"), ("CAUSAL", "HAS_REL_BIAS", "HAS_DROPOUT")]
# HAS_SEGMENTS = 2: the queries' and the keys' segment ids apart (one row of Sq + Sk ids).
SEGMENT_PAIRS = ("CAUSAL", "HAS_KEY_MASK", "HAS_SEGMENTS")


def main() -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"
    from megatron_lite_kernels.flash_attention.backward import (
        bwd_delta_kernel,
        bwd_kv_kernel,
        bwd_q_kernel,
    )
    from megatron_lite_kernels.flash_attention.dropout import dropout_mask_kernel
    from megatron_lite_kernels.flash_attention.forward import fwd_kernel
    from megatron_lite_kernels.flash_attention.relative_bias import band_kernel
    from megatron_lite_kernels.flash_attention.relative_bias_grad import rel_bias_grad_kernel

    tiles = dict(HEAD_DIM=96, BLOCK_D=128, DOT_PRECISION="tf32", BLOCK_M=64, BLOCK_N=64)
    failures = []
    for features, segment_layout in [(f, 1) for f in FEATURE_SETS] + [(SEGMENT_PAIRS, 2)]:
        flags = {name: name in features for name in FEATURES}
        flags["HAS_SEGMENTS"] = segment_layout if flags["HAS_SEGMENTS"] else 0
        # The dk/dv kernel's tiles are wider in keys, as in its tuning table; the relative
        # bias's gradient kernel walks the same tiles without a causal mask (and rotates one),
        # square ones of its own with one.
        kernels = [(fwd_kernel, {"EVEN_M": False}), (bwd_kv_kernel, {"BLOCK_N": 128}),
                   (bwd_q_kernel, {"NUM_JACOBIAN": 0})]
        if flags["HAS_REL_BIAS"]:  # the dq kernel as KERPLE takes it: a ParametricBias of 3
            kernels.append((bwd_q_kernel, {"NUM_JACOBIAN": 3}))
        if flags["HAS_REL_BIAS"]:
            kernels.append((rel_bias_grad_kernel, {} if flags["CAUSAL"] else {"BLOCK_N": 128}))
        for kernel, extra in kernels:
            try:
                compile_for_sm90(kernel, {**tiles, **flags, **extra})
            except Exception as error:  # report every failing variant, not just the first
                failures.append(f"{jit_function(kernel).__name__} {flags}: {error}")
    for kernel, constexprs in ((bwd_delta_kernel, dict(HAS_DLSE=True, HEAD_DIM=96, BLOCK_D=128,
                                                       BLOCK_M=64)),
                               (dropout_mask_kernel, dict(BLOCK_M=32, BLOCK_N=32)),
                               (band_kernel, dict(MIRRORED=True, CAUSAL=True, BLOCK_C=256))):
        try:
            compile_for_sm90(kernel, constexprs)
        except Exception as error:
            failures.append(f"{jit_function(kernel).__name__}: {error}")
    print("\n".join(failures) or "all kernels compiled for sm_90")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
