"""Where a training step's time goes: the step `scripts/train.py` runs, under torch.profiler.

`profile_training` runs `megatron_lite.training.train` through `run_timed`, as
`measure_training` does (the same model, data, optimizer, precision and Trainer; nothing written,
no validation until after the last step), with `ProfiledSteps`: the `StepTimer` of the training
benchmark whose timed steps also run under `torch.profiler.profile` (CPU and, on a GPU, CUDA
activity; no shapes, no memory events). The profiler starts after the warm-up steps, with the
device synchronized first, and stops after the profiled ones, once the clock has read them.

On a GPU the report is about the device's work: every kernel, copy and memset of the profiled
steps, put into a class by `CLASS_RULES`. GPU busy time is the union of their intervals (not
the sum: streams may overlap), and the idle fraction 1 - busy / wall time is what launch gaps,
host synchronizations and the CPU's own work (Python, Lightning, the data loader, the
profiler's overhead) leave the GPU waiting. Without a GPU the same report holds the CPU's ATen
ops instead: each op's self time (its time outside the ops nested in it) by the same classes,
busy = time inside some op, idle = the rest (Python between ops).

The rules see a kernel's name and the names of the ops around its launch (the op that launched
it and that op's parents; an op's own parents on the CPU): our chunked cross-entropy launches
only generic kernels (matmuls, reductions, elementwise ops, a gather and an index_put), and is
found by its autograd Function's name.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity

from megatron_lite.benchmarks.training import StepTimer, _synchronize, run_timed
from megatron_lite.config import RunConfig

# The kernels our flash attention launches: the @triton.jit functions of
# kernels/megatron_lite_kernels/flash_attention/ that launchers call (forward.py, backward.py,
# relative_bias.py, relative_bias_grad.py, dropout.py); tests check the list against the source.
OUR_ATTENTION_KERNELS = ("fwd_kernel", "bwd_delta_kernel", "bwd_kv_kernel", "bwd_q_kernel",
                         "band_kernel", "rel_bias_grad_kernel", "dropout_mask_kernel")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A class of kernels: `names` is searched in the kernel's (or CPU op's) name, `scopes` in
    the names of the ops around it; either matching puts it in the class (case-insensitive)."""

    label: str
    names: str
    scopes: str | None = None


# Ordered, first match wins. Kernel names as CUDA, cuBLAS and Triton give them; the aten::
# names are the CPU ops of a run without a GPU.
CLASS_RULES = (
    # Ours (the Triton kernels and everything the autograd Function launches around them:
    # buffers, the lse's layout) and PyTorch's SDPA backends: flash, memory-efficient (fmha_cutlass),
    # cuDNN (cudnn_..._sdpa_...). The flash switch off runs attention as matmuls and a softmax:
    # those land in matrix multiply and other.
    Rule("flash attention", rf"^({'|'.join(OUR_ATTENTION_KERNELS)})$|flash|fmha|sdpa|attention",
         r"EagerFlashAttention|megatron_lite::flash_attn|scaled_dot_product|_flash_attention|"
         r"_efficient_attention|_cudnn_attention"),
    # cuBLAS (sm90_xmma_gemm, nvjet, ampere_/hopper_..._gemm, splitKreduce), CUTLASS; the output
    # layer's matmuls inside the chunked cross-entropy count here too.
    Rule("matrix multiply", r"gemm|gemv|cutlass|xmma|nvjet|cublas|splitkreduce|"
                            r"^aten::(mm|addmm|bmm|baddbmm|addbmm|_scaled_mm)$"),
    # megatron_lite/modules/cross_entropy.py: logsumexp (amax, sub, exp, sum, log, add), gather,
    # exp, index_put, casts of the chunk's float32 logits, forward and backward; PyTorch's own
    # cross_entropy is log_softmax + nll_loss.
    Rule("cross-entropy (softmax over vocab)", r"log_?softmax|nll_loss|cross_entropy",
         r"_ChunkedLinearCrossEntropy|cross_entropy|nll_loss|log_softmax"),
    Rule("normalisation", r"layer_?norm|rms_?norm|gammabeta", r"layer_?norm|rms_?norm"),
    # Fused AdamW (multi_tensor_apply_kernel<...FusedAdam...>), the foreach ops of gradient
    # clipping and of the logged gradient norm.
    Rule("optimizer (and gradient norm)", r"multi_tensor|fused_adam|_foreach|lpnorm",
         r"_foreach|fused_adam"),
    # Copies and casts: memcpy / memset activities, PyTorch's copy kernels (bfloat16_copy_kernel_cuda,
    # direct_copy_kernel_cuda: autocast's casts), aten::copy_ on the CPU.
    Rule("memory copies and casts", r"^mem(cpy|set)|copy_kernel|^aten::(copy_|_to_copy|clone|contiguous)$"),
    # Inductor's triton_poi_/triton_red_/triton_per_ kernels, PyTorch's elementwise and
    # reduction kernels; on the CPU the pointwise and reduction ops.
    Rule("elementwise / fused", r"^triton_(poi|red|per)_|elementwise|reduce_kernel|"
                                r"^aten::(add|sub|rsub|mul|div|neg|exp|log|pow|sqrt|rsqrt|abs|clamp|gelu|"
                                r"gelu_backward|silu|silu_backward|relu|tanh|sigmoid|where|masked_fill|fill|"
                                r"zero|sum|mean|amax|max|min|native_dropout|bernoulli|lerp|addcmul|addcdiv)_?$"),
)
OTHER = "other"
CLASSES = (*(rule.label for rule in CLASS_RULES), OTHER)
_COMPILED = [(rule.label, re.compile(rule.names, re.I), rule.scopes and re.compile(rule.scopes, re.I))
             for rule in CLASS_RULES]


def classify(name: str, scope: Sequence[str] = ()) -> str:
    """The class of a kernel (or CPU op) `name` launched inside the ops `scope` (innermost
    first): the first rule of CLASS_RULES that matches, else OTHER."""
    for label, names, scopes in _COMPILED:
        if names.search(name) or (scopes and any(scopes.search(op) for op in scope)):
            return label
    return OTHER


@dataclasses.dataclass(frozen=True)
class Record:
    """A kernel or op of the profile, times in microseconds. scope: names of the ops around it,
    innermost first. self_time: a CPU op's time outside its nested ops (None: end - start)."""

    name: str
    start: float
    end: float
    scope: tuple[str, ...] = ()
    self_time: float | None = None

    @property
    def time(self) -> float:
        return self.end - self.start if self.self_time is None else self.self_time


def busy_time(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals: overlapping ones count once."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > covered_to:
            total += end - max(start, covered_to)
            covered_to = end
    return total


@dataclasses.dataclass
class StepProfile:
    """Per-step averages over the profiled steps (milliseconds)."""

    source: str  # "cuda kernels" or "cpu ops" (no GPU: CPU op self time)
    steps: int
    step_ms: float  # wall clock, under the profiler
    busy_ms: float  # union of the records' intervals
    idle_fraction: float  # 1 - busy / wall
    record_ms: float  # the records' summed time (more than busy where streams overlap)
    records_per_step: float
    classes: list[dict]  # class, ms, percent_of_busy, count (per step), in CLASSES order
    top: list[dict]  # the records' names (one row per name and class) by time: name, class, ms, count, percent_of_busy
    peak_memory_gib: float | None  # torch.cuda.max_memory_allocated over the profiled steps
    losses: list[float] = dataclasses.field(default_factory=list)


def summarize(records: Sequence[Record], *, wall_s: float, steps: int, source: str,
              peak_memory_gib: float | None = None, losses: Sequence[float] = (),
              top: int = 15) -> StepProfile:
    """The class table, busy time, idle fraction and top names of `records` (the kernels, or
    CPU ops, of `steps` steps that took `wall_s` seconds)."""
    per_step = 1e-3 / steps  # microseconds in total -> milliseconds per step
    busy = busy_time((record.start, record.end) for record in records) * per_step
    time_of, count_of = defaultdict(float), defaultdict(int)
    by_name: dict[tuple[str, str], list] = defaultdict(lambda: [0.0, 0])  # (name, class): time, count
    for record in records:
        label = classify(record.name, record.scope)
        time_of[label] += record.time
        count_of[label] += 1
        by_name[record.name, label][0] += record.time
        by_name[record.name, label][1] += 1

    def percent(ms: float) -> float:
        return 100 * ms / busy if busy > 0 else 0.0

    classes = [{"class": label, "ms": time_of[label] * per_step, "percent_of_busy": percent(time_of[label] * per_step),
                "count": count_of[label] / steps} for label in CLASSES]
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    wall_ms = 1e3 * wall_s / steps
    return StepProfile(
        source=source, steps=steps, step_ms=wall_ms, busy_ms=busy, idle_fraction=1 - busy / wall_ms,
        record_ms=sum(time_of.values()) * per_step, records_per_step=len(records) / steps, classes=classes,
        top=[{"name": name, "class": label, "ms": total * per_step, "count": count / steps,
              "percent_of_busy": percent(total * per_step)} for (name, label), (total, count) in ranked],
        peak_memory_gib=peak_memory_gib, losses=list(losses))


# CUDA runtime / driver calls on the CPU side (cudaLaunchKernel, cuLaunchKernelEx, ...): not ops.
_RUNTIME_CALL = re.compile(r"^cu(da)?[A-Z]")


@dataclasses.dataclass
class _Op:
    name: str
    start: float
    end: float
    parent: _Op | None = None
    nested: float = 0.0  # time of its direct children

    def scope(self) -> tuple[str, ...]:
        names, op = [], self.parent
        while op is not None:
            names.append(op.name)
            op = op.parent
        return tuple(names)


def _nest(ops: list[_Op]) -> None:
    """Give the ops of one thread their parents (the innermost op around each) and the time of
    their direct children."""
    stack: list[_Op] = []
    for op in sorted(ops, key=lambda op: (op.start, -op.end)):
        while stack and stack[-1].end <= op.start:
            stack.pop()
        if stack:  # op starts inside the op on top of the stack: its child
            # The profiler's timestamps are rounded, so a child may seem to end a little after
            # its parent: clip it, so its time is not counted twice.
            op.end = min(op.end, stack[-1].end)
            op.parent = stack[-1]
            op.parent.nested += op.end - op.start
        stack.append(op)


def _is_framework_op(name: str) -> bool:
    """ATen (or another library's) op, not a scope such as Lightning's record_function ranges,
    autograd's evaluate_function or the profiler's own."""
    return (re.match(r"^\w+::\w", name) is not None and "autograd::" not in name  # AccumulateGrad too
            and not name.startswith("profiler::"))


def profiled_records(prof: torch.profiler.profile) -> tuple[list[Record], list[Record]]:
    """(device records, CPU op records) of a stopped profiler. Device records are the kernels,
    memcpys and memsets, each with the ops around its launch as scope; CPU op records are the
    framework ops with their self time and their parents as scope."""
    ops_by_thread: dict[int, list[_Op]] = defaultdict(list)
    op_by_id: dict[int, _Op] = {}
    device_events = []
    for event in prof.profiler.kineto_results.events():
        if getattr(event, "is_hidden_event", lambda: False)() or getattr(event, "is_user_annotation", lambda: False)():
            continue  # also the GPU-side ranges of record_function, which are no kernels
        start = event.start_ns() / 1e3
        end = start + event.duration_ns() / 1e3
        if event.device_type() == DeviceType.CUDA:
            device_events.append((event.name(), start, end, event.linked_correlation_id()))
        elif (event.device_type() == DeviceType.CPU and event.linked_correlation_id() == 0
              and not event.is_async() and event.start_thread_id() == event.end_thread_id()
              and not _RUNTIME_CALL.match(event.name())):
            op = _Op(event.name(), start, end)
            ops_by_thread[event.start_thread_id()].append(op)
            op_by_id[event.correlation_id()] = op
    for ops in ops_by_thread.values():
        _nest(ops)

    def launch_scope(link: int) -> tuple[str, ...]:
        op = op_by_id.get(link)
        return () if op is None else (op.name, *op.scope())

    device = [Record(name, start, end, launch_scope(link)) for name, start, end, link in device_events]
    cpu = [Record(op.name, op.start, op.end, op.scope(), self_time=op.end - op.start - op.nested)
           for ops in ops_by_thread.values() for op in ops if _is_framework_op(op.name)]
    return device, cpu


class ProfiledSteps(StepTimer):
    """The training benchmark's StepTimer with its timed steps under torch.profiler: started
    after the warm-up (the device synchronized first, so no warm-up kernel is in it, and before
    the clock starts) and stopped after the clock has read the last profiled step."""

    def __init__(self, warmup: int, steps: int) -> None:
        super().__init__(warmup, steps)
        self.profiler: torch.profiler.profile | None = None

    def _start_if_due(self, trainer) -> None:
        if self._started is None and trainer.global_step == self.warmup:
            _synchronize(self.device)
            activities = [ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities, record_shapes=False, profile_memory=False)
            self.profiler.start()
        super()._start_if_due(trainer)

    def _stop(self) -> None:
        super()._stop()
        self.profiler.stop()


def profile_training(cfg: RunConfig, *, steps: int, warmup: int, trace: str = "") -> StepProfile:
    """Profile `steps` optimizer steps of `train(cfg)` after `warmup` unprofiled ones, on the
    device the config's trainer.accelerator picks; `trace`: also write the Chrome trace there."""
    callback = ProfiledSteps(warmup, steps)
    run_timed(cfg, callback)
    if trace:
        callback.profiler.export_chrome_trace(trace)
    device_records, cpu_records = profiled_records(callback.profiler)
    on_gpu = callback.device.type == "cuda"
    return summarize(device_records if on_gpu else cpu_records, wall_s=callback.elapsed, steps=steps,
                     source="cuda kernels" if on_gpu else "cpu ops", peak_memory_gib=callback.peak_memory_gib,
                     losses=callback.losses)


def format_report(profile: StepProfile, header: str = "") -> str:
    """Markdown: a summary line, the class table, the top names."""
    busy = "GPU busy" if profile.source == "cuda kernels" else "CPU busy in ATen ops"
    unit = "kernels" if profile.source == "cuda kernels" else "ops"
    memory = "n/a" if profile.peak_memory_gib is None else f"{profile.peak_memory_gib:.1f} GiB"
    lines = [header] if header else []
    if profile.source != "cuda kernels":
        lines.append("No GPU kernels (no CUDA device): the classes hold the self time of the CPU's ATen ops.")
    lines += [
        f"step {profile.step_ms:.1f} ms (wall, under the profiler), {busy} {profile.busy_ms:.1f} ms, "
        f"idle {100 * profile.idle_fraction:.1f}%; {profile.records_per_step:.0f} {unit}/step summing to "
        f"{profile.record_ms:.1f} ms; peak memory {memory}",
        "",
        f"| class | ms/step | % of busy | {unit}/step |",
        "|---|---|---|---|",
        *(f"| {row['class']} | {row['ms']:.2f} | {row['percent_of_busy']:.1f} | {row['count']:.0f} |"
          for row in profile.classes),
        "",
        f"| top {unit} | class | ms/step | calls/step | % of busy |",
        "|---|---|---|---|---|",
        *(f"| `{_short(row['name'])}` | {row['class']} | {row['ms']:.2f} | {row['count']:.0f} | "
          f"{row['percent_of_busy']:.1f} |" for row in profile.top),
    ]
    return "\n".join(lines) + "\n"


def _short(name: str, width: int = 90) -> str:
    """A kernel's name for a table cell: C++ template names run to hundreds of characters."""
    name = name.replace("|", "/")
    return name if len(name) <= width else name[:width - 3] + "..."
