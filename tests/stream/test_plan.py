"""passkit.stream.plan: the epoch plan is a pure function with equal, disjoint rank shares."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit.stream.plan import buffer_shuffle, epoch_order, rank_plan, rng_for

shard_counts = st.lists(st.integers(0, 9), min_size=1, max_size=8).filter(lambda c: sum(c) > 0)


def plans(counts, world, **kw):
    return [rank_plan(counts, rank=r, world_size=world, **kw) for r in range(world)]


@settings(max_examples=150, deadline=None)
@given(counts=shard_counts, world=st.integers(1, 5), batch=st.integers(1, 4), drop_last=st.booleans(),
       seed=st.integers(0, 3), epoch=st.integers(0, 3), buffer=st.integers(0, 12))
def test_pad_gives_every_rank_the_same_batches_and_covers_everything(counts, world, batch, drop_last, seed,
                                                                     epoch, buffer):
    n = sum(counts)
    ps = plans(counts, world, batch_size=batch, drop_last=drop_last, seed=seed, epoch=epoch, shuffle=True,
               buffer_size=buffer, balance="pad")
    per = math.ceil(n / world)
    assert {len(p) for p in ps} == {per // batch if drop_last else math.ceil(per / batch)}
    assert {p.samples for p in ps} == {per}
    if not drop_last:
        ids = np.concatenate([b for p in ps for b in p.batches])
        assert set(ids.tolist()) == set(range(n))  # every sample is read
        assert len(ids) == per * world and ps[0].padded == per * world - n
        for p in ps:  # a rank never sees a sample twice while there are enough samples
            mine = np.concatenate(p.batches).tolist()
            assert max(Counter(mine).values()) <= math.ceil(per / n)


@settings(max_examples=100, deadline=None)
@given(counts=shard_counts, world=st.integers(1, 4), batch=st.integers(1, 4), seed=st.integers(0, 3))
def test_drop_gives_disjoint_equal_shares(counts, world, batch, seed):
    n = sum(counts)
    if n < world:
        with pytest.raises(ValueError, match="balance='pad'"):
            rank_plan(counts, rank=0, world_size=world, batch_size=batch, balance="drop")
        return
    ps = plans(counts, world, batch_size=batch, seed=seed, shuffle=True, balance="drop")
    shares = [np.concatenate(p.batches).tolist() for p in ps]
    assert {len(s) for s in shares} == {n // world}
    flat = [i for s in shares for i in s]
    assert len(set(flat)) == len(flat) == world * (n // world)


def test_plan_is_a_pure_function_of_seed_and_epoch():
    counts = [7, 3, 9, 1]
    a = rank_plan(counts, rank=1, world_size=2, batch_size=2, seed=3, epoch=1, shuffle=True)
    b = rank_plan(counts, rank=1, world_size=2, batch_size=2, seed=3, epoch=1, shuffle=True)
    c = rank_plan(counts, rank=1, world_size=2, batch_size=2, seed=3, epoch=2, shuffle=True)
    d = rank_plan(counts, rank=1, world_size=2, batch_size=2, seed=4, epoch=1, shuffle=True)
    same = [x.tolist() for x in a.batches]
    assert same == [x.tolist() for x in b.batches]
    assert same != [x.tolist() for x in c.batches] and same != [x.tolist() for x in d.batches]


def test_unshuffled_order_is_release_order():
    assert epoch_order([2, 0, 3], seed=0, epoch=5, shuffle=False, buffer_size=9).tolist() == [0, 1, 2, 3, 4]
    p = rank_plan([2, 3], rank=1, world_size=2, batch_size=2)
    assert [b.tolist() for b in p.batches] == [[3, 4], [0]]  # padded with the first sample
    p = rank_plan([2, 3], rank=0, world_size=2, batch_size=2)
    assert [b.tolist() for b in p.batches] == [[0, 1], [2]]
    p = rank_plan([2, 3], rank=1, world_size=2, batch_size=2, balance="drop")
    assert [b.tolist() for b in p.batches] == [[2, 3]] and p.dropped == 1


def test_shuffle_mixes_across_shards_but_keeps_locality():
    counts = [100] * 20
    order = epoch_order(counts, seed=0, epoch=0, shuffle=True, buffer_size=50)
    assert sorted(order.tolist()) == list(range(2000))
    shards_in_window = {int(i) // 100 for i in order[:100]}
    assert 1 < len(shards_in_window) <= 4  # a window spans the buffer's few shards, not all 20
    assert order.tolist() != epoch_order(counts, seed=0, epoch=1, shuffle=True, buffer_size=50).tolist()


def test_buffer_shuffle_is_a_permutation_with_bounded_displacement():
    seq = np.arange(1000)
    out = buffer_shuffle(seq, 10, rng_for("t"))
    assert sorted(out.tolist()) == seq.tolist() and out.tolist() != seq.tolist()
    pos = np.empty(1000, int)
    pos[out] = np.arange(1000)
    assert (pos[seq] - seq).max() < 10 * 20  # items come out soon after they go in
    assert np.array_equal(buffer_shuffle(seq, 10, rng_for("t")), out)
    full = buffer_shuffle(seq, 5000, rng_for("t"))
    assert sorted(full.tolist()) == seq.tolist()
    assert np.array_equal(buffer_shuffle(seq, 1, rng_for("t")), seq)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="rank 2"):
        rank_plan([3], rank=2, world_size=2, batch_size=1)
    with pytest.raises(ValueError, match="'pad'"):
        rank_plan([3], rank=0, world_size=1, batch_size=1, balance="even")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no samples"):
        rank_plan([0, 0], rank=0, world_size=1, batch_size=1)
