"""Positional biases added to the attention scores, each a function of the key - query distance
d = j - i' (i' = i + Sk - Sq: bottom-right aligned when Sq != Sk, as in decoding).

- T5's learned relative bias sorts distances into buckets (per direction: one bucket per distance
  below max_exact, then log-spaced buckets up to max_distance, beyond which everything shares the
  last bucket) and learns one bias per bucket and head. It is constant beyond W = max_distance,
  so the [num_buckets, H] table gathered at the buckets of distances -W..W is the [H, 2W + 1]
  vector the kernel reads; the gather is autograd's, so the kernel's gradient of that vector
  flows back to the table.
- ALiBi (Press et al., 2022) adds -slope_h * |d| with fixed per-head slopes: the kernel computes
  it from the slopes.
- KERPLE (Chi et al., 2022) learns a kernel of |d| per head: logarithmic,
  -b * log(1 + a * |d|^p), or power, -r1 * |d|^r2 (parameters projected into their range).
- Sandwich (Chi et al., 2023): the inner product of the sinusoidal embeddings of i and j, which
  depends on d only, shifted to 0 at d = 0 and scaled per head (NeMo's form).

Each module gives, per attention call, the keywords of dot_product_attention that carry it
(`attention_inputs(seqlen_q, seqlen_k)`). KERPLE and Sandwich go as their formula's values at
every distance the call holds ([H, 2W + 1], W = max(Sq, Sk) - 1): the kernel reads them without
an [Sq, Sk] tensor. With the flash kernel, KERPLE goes as a ParametricBias: the values, its
parameters and the values' derivatives with respect to them by distance (`jacobian`), from
which the kernel reduces the parameters' gradient per head. The PyTorch path expands the
values into the [H, Sq, Sk] bias it adds to its scores and differentiates the formula itself:
the reference for the kernel's gradient.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from megatron_lite.config import T5StackConfig, TransformerConfig
from megatron_lite_kernels.flash_attention import ParametricBias

# KERPLE's parameters are projected into their valid range before every use, as the paper does:
# positive, and the power at most 2 (the kernel stays conditionally positive definite).
KERPLE_MIN = 1e-2
KERPLE_MAX_POWER = 2.0


def local_heads(parameter: torch.Tensor) -> torch.Tensor:
    """A bias parameter's values for the heads held here: under tensor parallelism it is a
    DTensor sharded by head (parallel/tensor_parallel.py), whose local shard holds this rank's
    heads (and receives their gradients); otherwise the parameter itself."""
    return parameter.to_local() if isinstance(parameter, DTensor) else parameter


def t5_relative_buckets(distance: torch.Tensor, *, bidirectional: bool, num_buckets: int,
                        max_distance: int) -> torch.Tensor:
    """T5's bucket (int64, in [0, num_buckets)) of each key - query distance.

    Bidirectional: half of the buckets for keys after the query (distance > 0), half for the
    rest. Causal: only distances <= 0 count (positive ones, never attended, share bucket 0).
    """
    buckets = torch.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        buckets = (distance > 0).long() * num_buckets
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)
    max_exact = num_buckets // 2
    # float32 logs, as T5 computed them: trained tables depend on where the bucket edges fall.
    scaled_log = (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                  * (num_buckets - max_exact))
    # distance 0 gives log(0) = -inf, but it is an exact bucket: where() discards that lane.
    log_bucket = (max_exact + scaled_log.clamp(min=0).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, log_bucket)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """float32 [num_heads]: 2^(-8 h / n) for h = 1..n with n = num_heads a power of two; otherwise
    the slopes of the nearest smaller power of two, then every other slope of the next one."""
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    power = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(power) + geometric(2 * power)[0::2][: num_heads - power]
    return torch.tensor(slopes, dtype=torch.float32)


def distance_window(seqlen_q: int, seqlen_k: int) -> int:
    """W such that every distance j - i' of an Sq x Sk attention lies in [-W, W]."""
    return max(seqlen_q, seqlen_k) - 1


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias of one stack, shared by the self-attention of all its
    layers: a [num_buckets, H] table, and per forward the [H, 2W + 1] bias of distances -W..W."""

    def __init__(self, cfg: T5StackConfig, *, bidirectional: bool) -> None:
        super().__init__()
        window = cfg.relative_attention_max_distance
        self.relative_attention_bias = nn.Embedding(cfg.relative_attention_num_buckets,
                                                    cfg.num_attention_heads)
        distance = torch.arange(-window, window + 1)  # (2W + 1,)
        buckets = t5_relative_buckets(
            distance, bidirectional=bidirectional, num_buckets=cfg.relative_attention_num_buckets,
            max_distance=window,
        )
        # Not persistent: a function of the config, rebuilt with the module.
        self.register_buffer("bucket_of_distance", buckets, persistent=False)

    def forward(self) -> torch.Tensor:
        """[H, 2W + 1]: entry d + W is the bias of key - query distance d."""
        table = local_heads(self.relative_attention_bias.weight)  # (num_buckets, H)
        return table[self.bucket_of_distance].t()

    def attention_inputs(self, seqlen_q: int, seqlen_k: int) -> dict[str, torch.Tensor]:
        return {"relative_bias": self()}  # (H, 2W + 1)


class AlibiBias(nn.Module):
    """ALiBi: fixed slopes, a function of the head count (not saved in checkpoints)."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def attention_inputs(self, seqlen_q: int, seqlen_k: int) -> dict[str, torch.Tensor]:
        return {"alibi_slopes": self.slopes}  # (H,)


class DistanceFunctionBias(nn.Module):
    """A bias given as a formula of the distance (`values`), for every distance of a call."""

    def values(self, distance: torch.Tensor) -> torch.Tensor:
        """float32 [H, N] for the int64 distances j - i' [N]."""
        raise NotImplementedError

    def call_distances(self, seqlen_q: int, seqlen_k: int) -> torch.Tensor:
        """int64 [2W + 1]: every distance j - i' of an Sq x Sk call, -W..W, on this module's
        device."""
        window = distance_window(seqlen_q, seqlen_k)
        device = next(itertools.chain(self.parameters(), self.buffers())).device
        return torch.arange(-window, window + 1, device=device)

    def attention_inputs(self, seqlen_q: int, seqlen_k: int) -> dict[str, torch.Tensor]:
        distance = self.call_distances(seqlen_q, seqlen_k)  # (2W + 1,)
        return {"relative_bias": self.values(distance)}  # (H, 2W + 1)


class KerpleBias(DistanceFunctionBias):
    """KERPLE's learned kernels of |d|, per head. log: -b * log(1 + a * |d|^p), b initialised
    to the ALiBi slopes and a = p = 1 (NeMo's initialisation); power: -r1 * |d|^r2, r1
    initialised to the ALiBi slopes and r2 = 1, so that it starts as ALiBi. Names follow NeMo
    (kerple_a, kerple_b, kerple_p).

    parametric (the flash kernel's form): while gradients are recorded, attention_inputs gives
    a ParametricBias (values, parameters, jacobian) instead of differentiable values."""

    def __init__(self, num_heads: int, kind: str, *, parametric: bool = False) -> None:
        super().__init__()
        if kind not in ("log", "power"):
            raise ValueError(f"KERPLE's kind is 'log' or 'power', got {kind!r}")
        self.kind = kind
        self.parametric = parametric
        slopes = alibi_slopes(num_heads)
        if kind == "log":
            self.kerple_a = nn.Parameter(torch.ones(num_heads))
            self.kerple_b = nn.Parameter(slopes.clone())
            self.kerple_p = nn.Parameter(torch.ones(num_heads))
        else:
            self.kerple_r1 = nn.Parameter(slopes.clone())
            self.kerple_r2 = nn.Parameter(torch.ones(num_heads))

    def values(self, distance: torch.Tensor) -> torch.Tensor:
        self._project()
        magnitude = distance.abs().to(torch.float32)[None, :]  # (1, N)
        if self.kind == "log":
            a, b, p = self.parameter_rows()[:, :, None]  # (H, 1) each
            return -b * torch.log1p(a * magnitude.pow(p))  # (H, N)
        r1, r2 = self.parameter_rows()[:, :, None]  # (H, 1) each
        return -r1 * magnitude.pow(r2)  # (H, N)

    def parameter_rows(self) -> torch.Tensor:
        """[K, H]: the parameters of the heads held here, one row each in the formula's order
        (a, b, p or r1, r2)."""
        return torch.stack([local_heads(parameter) for parameter in self.parameters()])

    def jacobian(self, distance: torch.Tensor) -> torch.Tensor:
        """float32 [K, H, N]: d values[h, n] / d parameter_rows()[k, h] at the int64
        distances [N], by hand (the ParametricBias the kernel reduces; tests check it against
        autograd)."""
        magnitude = distance.abs().to(torch.float32)[None, :]  # (1, N)
        # ln |d|, 0 at d = 0: every term holding it also holds |d|^p = 0 there
        log_magnitude = torch.log(magnitude.clamp(min=1.0))  # (1, N)
        if self.kind == "log":
            a, b, p = self.parameter_rows()[:, :, None]  # (H, 1) each
            powered = magnitude.pow(p)  # (H, N)
            ratio = powered / (1.0 + a * powered)  # (H, N)
            return torch.stack([-b * ratio, -torch.log1p(a * powered),
                                -b * a * ratio * log_magnitude])  # (3, H, N)
        r1, r2 = self.parameter_rows()[:, :, None]
        powered = magnitude.pow(r2)  # (H, N)
        return torch.stack([-powered, -r1 * powered * log_magnitude])  # (2, H, N)

    def attention_inputs(self, seqlen_q: int, seqlen_k: int) -> dict:
        if not (self.parametric and torch.is_grad_enabled()):
            return super().attention_inputs(seqlen_q, seqlen_k)
        distance = self.call_distances(seqlen_q, seqlen_k)  # (2W + 1,)
        with torch.no_grad():
            values = self.values(distance)  # (H, 2W + 1)
            jacobian = self.jacobian(distance)  # (K, H, 2W + 1)
        return {"relative_bias": ParametricBias(values, self.parameter_rows(), jacobian)}

    @torch.no_grad()
    def _project(self) -> None:
        """Every parameter into its range, in place. Unlike clamping in the formula, a parameter
        an update pushed past a bound keeps its gradient there and can move back."""
        for name, parameter in self.named_parameters():
            upper = KERPLE_MAX_POWER if name in ("kerple_p", "kerple_r2") else None
            local_heads(parameter).clamp_(min=KERPLE_MIN, max=upper)


class SandwichBias(DistanceFunctionBias):
    """Sandwich: sum_k cos(|d| w_k) over the head dim's D/2 sinusoid frequencies
    w_k = 10000^(-2k / D), k = 1..D/2, minus D/2 (0 at d = 0), divided by 8 h / H for head
    h = 1..H (NeMo's scaling). Fixed: no parameters."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        k = torch.arange(1, head_dim // 2 + 1, dtype=torch.float64)
        self.register_buffer("frequencies", 10000.0 ** (-2.0 * k / head_dim), persistent=False)
        heads = torch.arange(1, num_heads + 1, dtype=torch.float64)
        self.register_buffer("head_scales", heads * 8.0 / num_heads, persistent=False)

    def values(self, distance: torch.Tensor) -> torch.Tensor:
        # In float64: the cosines of large |d| w_k lose digits in float32.
        angles = distance.abs().to(torch.float64)[:, None] * self.frequencies  # (N, D / 2)
        inner = torch.cos(angles).sum(-1) - self.frequencies.numel()  # (N,)
        return (inner[None, :] / self.head_scales[:, None]).to(torch.float32)  # (H, N)


def build_position_bias(cfg: TransformerConfig, *, bidirectional: bool) -> nn.Module | None:
    """The bias module of a stack's self-attention for its position_embedding_type, or None
    (learned absolute positions, rope and xpos act on the embeddings or on q and k)."""
    position = cfg.position_embedding_type
    heads = cfg.num_attention_heads
    if position == "relative":
        return RelativePositionBias(cfg, bidirectional=bidirectional)
    if position == "alibi":
        return AlibiBias(heads)
    if position == "kerple":
        return KerpleBias(heads, "log", parametric=cfg.use_flash_attention)
    if position == "kerple_power":
        return KerpleBias(heads, "power", parametric=cfg.use_flash_attention)
    if position == "sandwich":
        return SandwichBias(heads, cfg.head_dim)
    return None


def bias_inputs(bias: nn.Module | None, seqlen_q: int, seqlen_k: int) -> dict[str, torch.Tensor]:
    """The attention keywords that carry `bias` (from build_position_bias) for one call."""
    return {} if bias is None else bias.attention_inputs(seqlen_q, seqlen_k)
