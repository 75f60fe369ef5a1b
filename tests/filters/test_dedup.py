"""Near-duplicate search (multi-index hashing) against brute force, and the greedy keep rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit.filters.dedup import (
    HashIndex,
    HashListError,
    choose_blocks,
    hamming,
    near_duplicates,
    nearest_matches,
    read_hash_list,
    to_uint64,
)


def brute_pairs(h: np.ndarray, t: int) -> set[tuple[int, int]]:
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= t, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def planted(n: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=n, dtype=np.uint64)
    for _ in range(n // 5):
        v = int(h[rng.integers(0, n)])
        for b in rng.choice(64, size=int(rng.integers(0, t + 3)), replace=False).tolist():
            v ^= 1 << b
        h[rng.integers(0, n)] = v
    return h


@pytest.mark.parametrize("t", [0, 3, 6, 8, 10])
@pytest.mark.parametrize("blocks", [None, 3, 4, 5])
def test_multi_index_finds_exactly_the_brute_force_pairs(t: int, blocks: int | None) -> None:
    h = planted(1500, t, seed=t)
    pairs = HashIndex(h, t, blocks=blocks).self_pairs()
    got = set(zip(pairs.query.tolist(), pairs.base.tolist(), strict=True))
    assert got == brute_pairs(h, t)
    d = np.bitwise_count(h[pairs.query] ^ h[pairs.base])
    assert (d == pairs.distance).all() and (d <= t).all()


def test_query_against_another_set_matches_brute_force() -> None:
    a, b = planted(800, 8, seed=1), planted(900, 8, seed=2)
    b[:50] = a[:50] ^ np.uint64(0b1011)  # 3 bits off
    for blocks in (None, 3, 4):
        p = HashIndex(b, 8, blocks=blocks).query(a)
        d = np.bitwise_count(a[:, None] ^ b[None, :])
        qi, bi = np.nonzero(d <= 8)
        assert set(zip(p.query.tolist(), p.base.tolist(), strict=True)) == set(zip(qi.tolist(), bi.tolist(),
                                                                                 strict=True))


def test_a_large_input_uses_the_index_and_stays_exact() -> None:
    h = planted(60_000, 8, seed=3)
    assert choose_blocks(len(h), len(h), 8) == 3
    pairs = HashIndex(h, 8).self_pairs()
    got = set(zip(pairs.query.tolist(), pairs.base.tolist(), strict=True))
    sub = np.arange(0, 60_000, 37)  # brute force for a slice of rows
    d = np.bitwise_count(h[sub][:, None] ^ h[None, :])
    qi, bi = np.nonzero(d <= 8)
    truth = {(min(int(sub[a]), int(b)), max(int(sub[a]), int(b))) for a, b in zip(qi, bi, strict=True) if sub[a] != b}
    assert truth and truth <= got
    assert {p for p in got if p[0] in set(sub.tolist()) or p[1] in set(sub.tolist())} == truth


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=60), st.integers(0, 12))
def test_greedy_rule_matches_a_sequential_scan(values: list[int], t: int) -> None:
    # make some of them close to each other
    vals = values + [v ^ (1 << (i % 64)) for i, v in enumerate(values[:10])]
    got = {(d.index, d.kept, d.distance) for d in near_duplicates(to_uint64(vals), t)}
    kept: list[int] = []
    want = set()
    for j, v in enumerate(vals):
        near = [(hamming(v, vals[i]), i) for i in kept if hamming(v, vals[i]) <= t]
        if near:
            d, i = min(near)
            want.add((j, i, d))
        else:
            kept.append(j)
    assert got == want


def test_first_in_order_stays_and_chains_do_not_cascade() -> None:
    # a - b - c: b is 2 bits from a and from c, c is 4 bits from a. With t=2, b goes (near a) and c
    # stays: c is only near b, which was dropped.
    a, b, c = 0, 0b11, 0b1111
    out = near_duplicates(to_uint64([a, b, c]), 2)
    assert [(x.index, x.kept, x.distance) for x in out] == [(1, 0, 2)]


def test_nearest_matches_names_the_closest_reference() -> None:
    ref = to_uint64(["00000000000000ff", "000000000000000f"])
    hits = nearest_matches(to_uint64(["0000000000000007", "ffff000000000000"]), ref, 8)
    assert hits == {0: (1, 1)}


def test_hash_list(tmp_path) -> None:
    p = tmp_path / "h.txt"
    p.write_text("# comment\n\n00000000000000ff  imagenet/val_1\nFFFFFFFFFFFFFFFF,x\n")
    hashes, names = read_hash_list(p)
    assert hashes == [255, 2**64 - 1] and names == ["h.txt:3", "h.txt:4"]
    p.write_text("123456789abcdef01\n")
    with pytest.raises(HashListError, match="longer than 64 bits"):
        read_hash_list(p)


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="outside 0..63"):
        HashIndex(to_uint64([1]), 64)
