"""T5's relative position buckets on hand-computed tables, the bias vector the kernel reads
against a per-pair lookup (values and the table's gradient), and ALiBi's slopes."""

from __future__ import annotations

import pytest
import torch

from megatron_lite_kernels.attention_reference import relative_bias_matrix
from megatron_lite.modules import RelativePositionBias, alibi_slopes, t5_relative_buckets
from tests.t5_testing import tiny_stack


def buckets(distances, **options) -> list[int]:
    return t5_relative_buckets(torch.tensor(distances), **options).tolist()


# Worked by hand from T5's rule. Per direction with B buckets: distance n < B/2 = max_exact gets
# bucket n; beyond, max_exact + floor(log(n / max_exact) / log(max_distance / max_exact) *
# (B - max_exact)), capped at B - 1. Bidirectional: B = num_buckets / 2 per direction, keys after
# the query (distance > 0) offset by B. Causal: B = num_buckets, distances > 0 are bucket 0.
HAND_TABLES = [
    # 8 buckets, max_distance 8, bidirectional: B = 4, max_exact = 2; n = 2, 3 -> 2 + floor(0,
    # 0.58) = 2; n >= 4 -> 2 + floor(log 2 / log 4 * 2) = 3 (the last).
    (dict(bidirectional=True, num_buckets=8, max_distance=8),
     {-10: 3, -5: 3, -4: 3, -3: 2, -2: 2, -1: 1, 0: 0, 1: 5, 2: 6, 3: 6, 4: 7, 7: 7, 8: 7, 30: 7}),
    # 8 buckets, max_distance 8, causal: max_exact = 4; n = 5, 6, 7 -> 4 + floor(4 log2(n / 4)) =
    # 5, 6, 7; n = 8 -> 8, capped at 7. Keys after the query (never seen) -> 0.
    (dict(bidirectional=False, num_buckets=8, max_distance=8),
     {-10: 7, -8: 7, -7: 7, -6: 6, -5: 5, -4: 4, -3: 3, -1: 1, 0: 0, 1: 0, 9: 0}),
    # T5's defaults, bidirectional: B = 16, max_exact = 8, bucket 8 + floor(2 log2(n / 8)): edges
    # at n = 8 * 2^(k/2): 11.3, 16, 22.6, 32, 45.3, 64, 90.5, 128.
    (dict(bidirectional=True, num_buckets=32, max_distance=128),
     {0: 0, 1: 17, 7: 23, 8: 24, 11: 24, 12: 25, 16: 26, 22: 26, 23: 27, 32: 28, 45: 28, 46: 29,
      64: 30, 90: 30, 91: 31, 127: 31, 128: 31, 500: 31,
      -1: 1, -7: 7, -8: 8, -12: 9, -16: 10, -23: 11, -46: 13, -90: 14, -91: 15, -128: 15, -500: 15}),
    # T5's defaults, causal: max_exact = 16, bucket 16 + floor(16/3 log2(n / 16)).
    (dict(bidirectional=False, num_buckets=32, max_distance=128),
     {0: 0, 5: 0, -1: 1, -15: 15, -16: 16, -20: 17, -32: 21, -64: 26, -100: 30, -127: 31, -128: 31,
      -1000: 31}),
]


@pytest.mark.parametrize("options, expected", HAND_TABLES, ids=["bi-8-8", "causal-8-8", "bi-32-128", "causal-32-128"])
def test_buckets_match_hand_computed_tables(options, expected):
    assert dict(zip(expected, buckets(list(expected), **options))) == expected


def test_buckets_match_hugging_faces_t5_everywhere():
    transformers = pytest.importorskip("transformers")
    reference = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    for bidirectional in (True, False):
        for num_buckets, max_distance in [(32, 128), (8, 20), (16, 64), (6, 5), (64, 200), (5, 9)]:
            distance = torch.arange(-max_distance - 20, max_distance + 20)
            ours = t5_relative_buckets(distance, bidirectional=bidirectional, num_buckets=num_buckets,
                                       max_distance=max_distance)
            theirs = reference(distance, bidirectional=bidirectional, num_buckets=num_buckets,
                               max_distance=max_distance)
            assert torch.equal(ours, theirs), (bidirectional, num_buckets, max_distance)
            # Every distance at or beyond max_distance shares its direction's last bucket: the
            # bias is constant beyond W = max_distance, which the kernel's clamp relies on.
            assert ours[distance <= -max_distance].unique().numel() == 1
            assert ours[distance >= max_distance].unique().numel() == 1


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("seqlen", [4, 6, 20])  # shorter than, equal to, longer than W = 6
def test_bias_vector_equals_a_per_pair_lookup_with_the_same_gradient(bidirectional, seqlen):
    torch.manual_seed(0)
    module = RelativePositionBias(tiny_stack(), bidirectional=bidirectional)  # 8 buckets, W = 6
    table = module.relative_attention_bias.weight  # (8, H)
    positions = torch.arange(seqlen)
    pair_buckets = t5_relative_buckets(positions[None, :] - positions[:, None], bidirectional=bidirectional,
                                       num_buckets=8, max_distance=6)  # (S, S): key - query
    direct = table[pair_buckets].permute(2, 0, 1)  # (H, S, S)
    vector = module()  # (H, 2W + 1)
    assert vector.shape == (4, 13)
    via_vector = relative_bias_matrix(vector, seqlen, seqlen)
    torch.testing.assert_close(via_vector, direct, rtol=0, atol=0)
    weights = torch.randn_like(direct)
    (grad_direct,) = torch.autograd.grad((direct * weights).sum(), table)
    (grad_vector,) = torch.autograd.grad((via_vector * weights).sum(), table)
    torch.testing.assert_close(grad_vector, grad_direct)


@pytest.mark.parametrize("seqlen_q,seqlen_k", [(3, 10), (10, 3), (1, 7), (9, 9)])
def test_bias_matrix_aligns_queries_bottom_right(seqlen_q, seqlen_k):
    vector = torch.randn(2, 9)  # W = 4
    expected = torch.empty(2, seqlen_q, seqlen_k)
    for i in range(seqlen_q):
        for j in range(seqlen_k):  # query i sits at position i + Sk - Sq among the keys
            expected[:, i, j] = vector[:, min(max(j - (i + seqlen_k - seqlen_q), -4), 4) + 4]
    torch.testing.assert_close(relative_bias_matrix(vector, seqlen_q, seqlen_k), expected, rtol=0, atol=0)


def test_alibi_slopes():
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    # 6 heads: the 4-head slopes, then every other slope of the 8-head set.
    assert alibi_slopes(6).tolist() == [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    assert alibi_slopes(1).tolist() == [2.0 ** -8]
