"""Megatron's pretraining sampler: global order split over ranks, and resumption by count."""

from __future__ import annotations

import pytest

from megatron_lite.training import MegatronPretrainingSampler


def batches(total, consumed, micro, rank, world):
    return list(MegatronPretrainingSampler(total, consumed, micro, rank, world))


def test_ranks_split_each_global_order_slice():
    per_rank = [batches(40, 0, 2, rank, 4) for rank in range(4)]
    assert all(len(b) == 5 for b in per_rank)
    # Step s of all ranks together reads samples [8s, 8s + 8) in order, rank r the r-th pair.
    for step in range(5):
        together = [i for rank in range(4) for i in per_rank[rank][step]]
        assert together == list(range(8 * step, 8 * step + 8))


def test_a_sampler_started_at_consumed_samples_continues_the_same_sequence():
    whole = batches(48, 0, 3, 1, 2)
    assert batches(48, 18, 3, 1, 2) == whole[3:]
    assert len(MegatronPretrainingSampler(48, 18, 3, 1, 2)) == len(whole) - 3


def test_the_same_global_order_whatever_the_number_of_ranks():
    one = [i for batch in batches(32, 0, 4, 0, 1) for i in batch]
    two = batches(32, 0, 2, 0, 2), batches(32, 0, 2, 1, 2)
    interleaved = [i for step in zip(*two) for batch in step for i in batch]
    assert interleaved == one


def test_an_incomplete_last_global_batch_is_dropped():
    assert batches(10, 0, 4, 0, 1) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batches(10, 8, 4, 0, 1) == []


@pytest.mark.parametrize("args", [(10, 0, 2, 2, 2), (10, -1, 2, 0, 1)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        MegatronPretrainingSampler(*args)
