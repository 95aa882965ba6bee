"""Attention speed and memory on a GPU: our Triton kernel against torch SDPA (flash and cuDNN
backends) and FlexAttention, side by side in one process.

Every implementation gets its own native layout, contiguous: ours [B, S, H, D], the peers
[B, H, S, D]. Times are medians of `triton.testing.do_bench`; TFLOP/s follow the FlashAttention
convention (forward 4*B*H*Sq*Sk*D, halved when causal; backward 2.5x the forward).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from megatron_lite.modules import KerpleBias, SandwichBias
from megatron_lite_kernels import flash_attention
from megatron_lite_kernels.flash_attention import flash_attn_func
from megatron_lite_kernels.module_copy import load_kernel_copy

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
RELATIVE_WINDOW = 128  # T5's relative_attention_max_distance


@dataclasses.dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    seqlen: int
    head_dim: int
    causal: bool

    def flops(self, mode: str) -> float:
        forward = 4 * self.batch * self.heads * self.seqlen**2 * self.head_dim
        forward /= 2 if self.causal else 1
        return forward * (1.0 if mode == "fwd" else 3.5)


def alibi_slopes(heads: int, device) -> torch.Tensor:
    """The geometric ALiBi slopes of Press et al. for a power-of-two head count."""
    return torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)], device=device)


def relative_bias_by_distance(heads: int, device) -> torch.Tensor:
    """A learned bias of the distance j - i, [H, 2W + 1] (what a T5 model hands the kernel)."""
    generator = torch.Generator(device=device).manual_seed(0)
    return torch.randn(heads, 2 * RELATIVE_WINDOW + 1, device=device,
                       generator=generator).requires_grad_()


def kerple_module(shape: Shape, parametric: bool = False) -> KerpleBias:
    """The model's KERPLE (logarithmic) of one layer, its parameters moved off their initial
    values (a = p = 1 would make |d|^p a no-op); parametric: as the flash models build it (a
    ParametricBias while training)."""
    module = KerpleBias(shape.heads, "log", parametric=parametric).cuda()
    with torch.no_grad():
        module.kerple_a.uniform_(0.5, 1.5)
        module.kerple_p.uniform_(0.5, 1.5)
    return module


# Our kernel's inputs for each bias kind: (a function giving flash_attn_func's keywords for one
# call, the learned tensors whose gradients a backward must produce too). KERPLE and Sandwich
# are computed per call as the models do (their values by distance, from the parameters);
# KERPLE as a ParametricBias where the kernel package (`package`: ours, or a candidate copy)
# has it, as its values by distance otherwise (a kernel from before it).


def _bias_inputs(shape: Shape, bias: str | None, package) -> tuple[Callable[[], dict], tuple]:
    if bias is None:
        return dict, ()
    if bias == "alibi":
        slopes = alibi_slopes(shape.heads, "cuda")
        return (lambda: {"alibi_slopes": slopes}), ()
    if bias == "relative":
        relative = relative_bias_by_distance(shape.heads, "cuda")
        return (lambda: {"relative_bias": relative}), (relative,)
    if bias == "sandwich":
        module = SandwichBias(shape.heads, shape.head_dim).cuda()
        return (lambda: module.attention_inputs(shape.seqlen, shape.seqlen)), ()
    parametric = hasattr(package, "ParametricBias")
    module = kerple_module(shape, parametric)

    def kerple_inputs():
        by_distance = module.attention_inputs(shape.seqlen, shape.seqlen)["relative_bias"]
        # the package's own class: a candidate copy's flash_attn_func knows no other
        return {"relative_bias": package.ParametricBias(*by_distance) if parametric
                else by_distance}
    return kerple_inputs, tuple(module.parameters())


# A provider's builder takes (shape, bias kind: None, "alibi", "relative", "kerple" or
# "sandwich") and returns (attention, whether it takes [B, H, S, D], the learned tensors whose
# gradients the backward must produce as well).


def _triton_kernel(package=flash_attention):
    """Builder for the `flash_attn_func` of a kernel package (ours, or a candidate copy)."""
    attention = package.flash_attn_func

    def build(shape: Shape, bias: str | None):
        bias_inputs, learned = _bias_inputs(shape, bias, package)

        def run(q, k, v):
            return attention(q, k, v, causal=shape.causal, **bias_inputs())
        return run, False, learned
    return build


_ours = _triton_kernel()


def _sdpa(backend: SDPBackend):
    def build(shape: Shape, bias: str | None):
        assert bias is None

        def run(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal)
        return run, True, ()
    return build


def _flex_score_mod(shape: Shape, bias: str | None):
    """FlexAttention's score_mod computing the same bias as ours, and its learned tensors."""
    if bias is None:
        return None, ()
    if bias == "alibi":
        slopes = alibi_slopes(shape.heads, "cuda")

        def alibi(score, b, h, q_idx, kv_idx):  # the same symmetric form as ours
            return score - slopes[h] * (q_idx - kv_idx).abs()
        return alibi, ()
    if bias == "relative":
        relative = relative_bias_by_distance(shape.heads, "cuda")

        def relative_mod(score, b, h, q_idx, kv_idx):  # ours: bias[h, clamp(j - i, -W, W) + W]
            distance = (kv_idx - q_idx).clamp(-RELATIVE_WINDOW, RELATIVE_WINDOW)
            return score + relative[h, distance + RELATIVE_WINDOW]
        return relative_mod, (relative,)
    if bias == "kerple":
        module = kerple_module(shape)
        a, b_, p = module.kerple_a, module.kerple_b, module.kerple_p  # learned, as in training

        def kerple(score, b, h, q_idx, kv_idx):  # -b * log(1 + a * |d|^p), element by element
            distance = (kv_idx - q_idx).abs().to(torch.float32)
            return score - b_[h] * torch.log1p(a[h] * distance ** p[h])
        return kerple, (a, b_, p)
    # Sandwich has no parameters: Flex reads its values by distance, as our kernel does.
    table = SandwichBias(shape.heads, shape.head_dim).cuda().values(
        torch.arange(1 - shape.seqlen, shape.seqlen, device="cuda"))  # (H, 2N - 1)

    def sandwich(score, b, h, q_idx, kv_idx):
        return score + table[h, kv_idx - q_idx + shape.seqlen - 1]
    return sandwich, ()


_compiled_flex = None


def _flex(shape: Shape, bias: str | None):
    global _compiled_flex
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if _compiled_flex is None:
        torch._dynamo.config.cache_size_limit = 1024
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if shape.causal:
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None,
                                       shape.seqlen, shape.seqlen, device="cuda")
    score_mod, learned = _flex_score_mod(shape, bias)

    def run_with(kernel_options):
        return lambda q, k, v: _compiled_flex(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                              kernel_options=kernel_options)
    if score_mod is None:
        return run_with(None), True, learned
    # A bias (its tensors read in the score_mod, a learned one's gradient) makes Inductor's
    # default FlexAttention tiles overflow shared memory on some shapes ("No valid triton
    # configs"): take the first stage count that compiles, forward and backward, rather than
    # report the peer as failed.
    q, k, v = _inputs(shape, True, torch.bfloat16)
    for kernel_options in (None, {"num_stages": 2}, {"num_stages": 1}):
        try:
            torch.autograd.grad(run_with(kernel_options)(q, k, v).sum(), (q, k, v, *learned))
            print(f"  flex with the {bias} bias: kernel_options={kernel_options}")
            return run_with(kernel_options), True, learned
        except Exception:  # noqa: BLE001  (Inductor raises several types for this)
            torch._dynamo.reset()
    raise RuntimeError(f"FlexAttention with the {bias} bias compiled with no tried num_stages")


PROVIDERS = {  # name: (builder, bias kind)
    "ours": (_ours, None),
    "ours_alibi": (_ours, "alibi"),
    "ours_relbias": (_ours, "relative"),
    "ours_kerple": (_ours, "kerple"),
    "ours_sandwich": (_ours, "sandwich"),
    "sdpa_flash": (_sdpa(SDPBackend.FLASH_ATTENTION), None),
    "sdpa_cudnn": (_sdpa(SDPBackend.CUDNN_ATTENTION), None),
    "flex": (_flex, None),
    "flex_alibi": (_flex, "alibi"),
    "flex_relbias": (_flex, "relative"),
    "flex_kerple": (_flex, "kerple"),
    "flex_sandwich": (_flex, "sandwich"),
}


def load_candidate_kernel(path: str):
    """Add providers cand, cand_alibi, cand_relbias, cand_kerple and cand_sandwich:
    `flash_attn_func` of an edited copy of the kernel (kernels/megatron_lite_kernels/
    flash_attention/) at `path`, loaded by `load_kernel_copy`, to time a kernel change beside
    the committed kernel in one run. Returns the loaded module."""
    module = load_kernel_copy(path, "megatron_lite_candidate")
    for name, bias in (("cand", None), ("cand_alibi", "alibi"), ("cand_relbias", "relative"),
                       ("cand_kerple", "kerple"), ("cand_sandwich", "sandwich")):
        PROVIDERS[name] = (_triton_kernel(module), bias)
    return module


def _inputs(shape: Shape, heads_first: bool, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    dims = ((shape.batch, shape.heads, shape.seqlen, shape.head_dim) if heads_first
            else (shape.batch, shape.seqlen, shape.heads, shape.head_dim))
    return [torch.randn(dims, device="cuda", dtype=dtype, generator=generator).requires_grad_()
            for _ in range(3)]


def time_attention(name: str, shape: Shape, mode: str, dtype=torch.bfloat16) -> float:
    """Median milliseconds of one forward ("fwd") or forward + backward ("fwd_bwd")."""
    from triton.testing import do_bench

    builder, bias = PROVIDERS[name]
    run, heads_first, learned = builder(shape, bias)
    q, k, v = _inputs(shape, heads_first, dtype)
    if mode == "fwd":
        with torch.no_grad():
            return do_bench(lambda: run(q, k, v), warmup=25, rep=100, return_mode="median")
    grad = torch.randn_like(run(q, k, v))
    wrt = (q, k, v, *learned)  # a learned bias gets its gradient too, as in training
    return do_bench(lambda: torch.autograd.grad(run(q, k, v), wrt, grad),
                    warmup=25, rep=100, return_mode="median")


def agreement_with_sdpa(shape: Shape, dtype=torch.bfloat16) -> float:
    """Max |ours - SDPA math in float32| over the output, a sanity check beside the timings."""
    q, k, v = _inputs(shape, heads_first=False, dtype=dtype)
    with torch.no_grad():
        ours = flash_attn_func(q, k, v, causal=shape.causal)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            peer = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)),
                                                  is_causal=shape.causal).transpose(1, 2)
    return float((ours.float() - peer.float()).abs().max())


def peak_memory_gib(name: str, shape: Shape, dtype=torch.bfloat16) -> float:
    """Peak GPU memory of one forward + backward beyond q, k, v, their gradients and dout."""
    builder, bias = PROVIDERS[name]
    run, heads_first, _ = builder(shape, bias)
    q, k, v = _inputs(shape, heads_first, dtype)
    grad = torch.randn_like(q)
    grads = [torch.empty_like(x) for x in (q, k, v)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = run(q, k, v)
    for buffer, computed in zip(grads, torch.autograd.grad(out, (q, k, v), grad)):
        buffer.copy_(computed)
    del out
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def matmul_tflops(size: int = 8192) -> float:
    from triton.testing import do_bench

    x, y = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ms = do_bench(lambda: x @ y, warmup=25, rep=100, return_mode="median")
    return 2 * size**3 / ms / 1e9


def shapes_at_fixed_tokens(tokens: int, hidden: int, seqlens, head_dims, causals):
    for seqlen in seqlens:
        for head_dim in head_dims:
            for causal in causals:
                yield Shape(max(1, tokens // seqlen), hidden // head_dim, seqlen, head_dim, causal)


def tflops(shape: Shape, mode: str, ms: float) -> float:
    return shape.flops(mode) / ms / 1e9


def format_ratio(numerator: float, denominator: float) -> str:
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def kernel_breakdown(shape: Shape, bias: str | None = None, dtype=torch.bfloat16, steps: int = 20):
    """GPU time per kernel of our forward + backward (from the profiler), and the wall time per
    step, to tell kernel time from launch overhead. Returns ({kernel: ms per step}, wall ms)."""
    import time
    from torch.profiler import ProfilerActivity, profile

    run, _, learned = _ours(shape, bias)
    q, k, v = _inputs(shape, heads_first=False, dtype=dtype)
    grad = torch.randn_like(q)
    for _ in range(3):
        torch.autograd.grad(run(q, k, v), (q, k, v, *learned), grad)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            torch.autograd.grad(run(q, k, v), (q, k, v, *learned), grad)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1e3 / steps
    per_kernel = {}
    for event in prof.key_averages():
        if event.device_type.name == "CUDA" and event.self_device_time_total > 0:
            per_kernel[event.key] = event.self_device_time_total / 1e3 / steps
    return per_kernel, wall_ms


def launch_overhead_us(steps: int = 300) -> dict[str, float]:
    """Wall microseconds per forward + backward at a size where the GPU work is negligible
    (B=1, H=1, N=128, D=64): what the CPU spends launching each implementation."""
    import time

    from megatron_lite_kernels.flash_attention import flash_attn_forward_op

    shape = Shape(1, 1, 128, 64, True)
    ours_op = lambda q, k, v: flash_attn_forward_op(  # noqa: E731  (the custom op, undispatched)
        q, k, v, None, None, None, None, None, None, True, 0.125, 0.0, None)[0]
    candidates = {"ours": (_ours(shape, None)[0], False), "ours_custom_op": (ours_op, False),
                  "sdpa_flash": (_sdpa(SDPBackend.FLASH_ATTENTION)(shape, None)[0], True)}
    overhead = {}
    for name, (run, heads_first) in candidates.items():
        q, k, v = _inputs(shape, heads_first, torch.bfloat16)
        grad = torch.randn_like(q)
        for _ in range(20):
            torch.autograd.grad(run(q, k, v), (q, k, v), grad)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            torch.autograd.grad(run(q, k, v), (q, k, v), grad)
        torch.cuda.synchronize()
        overhead[name] = (time.perf_counter() - started) * 1e6 / steps
    return overhead
