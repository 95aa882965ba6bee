"""Positional biases added to the attention scores: T5's learned relative bias, and ALiBi.

Both are functions of the distance j - i between a key j and a query i, which is how the
attention seam takes them (never as an [Sq, Sk] matrix):

- T5 sorts distances into buckets (per direction: one bucket per distance below max_exact, then
  log-spaced buckets up to max_distance, beyond which everything shares the last bucket) and
  learns one bias per bucket and head. Every distance >= max_distance is in the last bucket, so
  the bias is constant beyond W = max_distance, and the [num_buckets, H] table gathered at the
  buckets of distances -W..W is the [H, 2W + 1] vector the kernel reads. The gather is autograd's,
  so the kernel's gradient of that vector flows back to the table.
- ALiBi adds -slope_h * |i - j| with fixed per-head slopes (Press et al., 2022).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from megatron_lite.config import T5StackConfig


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
        return self.relative_attention_bias.weight[self.bucket_of_distance].t()


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """float32 [num_heads]: 2^(-8 h / n) for h = 1..n with n = num_heads a power of two; otherwise
    the slopes of the nearest smaller power of two, then every other slope of the next one."""
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    power = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(power) + geometric(2 * power)[0::2][: num_heads - power]
    return torch.tensor(slopes, dtype=torch.float32)
