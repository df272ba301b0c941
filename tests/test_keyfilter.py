"""KeyFilter: a superset of the keys a table holds, so "absent" is always true."""

from __future__ import annotations

import duckdb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.keyfilter import KeyFilter

keys = st.lists(st.tuples(st.text(max_size=6), st.integers(0, 3)), max_size=40, unique=True)


@settings(max_examples=60, deadline=None)
@given(stored=keys, added=keys, probe=keys)
def test_a_key_the_table_or_the_adds_hold_is_never_reported_absent(
    stored: list[tuple[str, int]], added: list[tuple[str, int]], probe: list[tuple[str, int]]
) -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE t (a VARCHAR, b INTEGER, PRIMARY KEY (a, b))")
    if stored:
        con.executemany("INSERT INTO t VALUES (?, ?)", stored)
    f = KeyFilter(("a", "b"))
    f.load(con, "t")
    half = len(added) // 2
    for part in (added[:half], added[half:], added[:1]):  # adds in parts, one of them twice
        f.add(f.hashes(con, part))
    held = set(stored) | set(added)
    maybe = f.maybe(f.hashes(con, probe)).tolist()
    for key, m in zip(probe, maybe, strict=True):
        if key in held:
            assert m, key
        else:
            # 64-bit hashes of a few dozen keys: a collision here would be a bug, not luck
            assert not m, key


def test_hashes_agree_with_the_table_and_survive_a_merge_into_the_sorted_array() -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY)")
    f = KeyFilter(("k",))
    f.load(con, "t")
    assert len(f) == 0
    # enough additions to cross the merge threshold (recent set folded into the array)
    many = np.arange(1, 70_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    f.add(many)
    assert len(f) == 70_000
    named = f.hashes(con, [("x",), ("y",)])
    f.add(named[:1])
    assert f.maybe(many).all()
    assert f.maybe(named).tolist() == [True, False]
    # what DuckDB stores is what the filter computes
    con.execute("INSERT INTO t VALUES ('y')")
    g = KeyFilter(("k",))
    g.load(con, "t")
    assert g.maybe(named).tolist() == [False, True]


def test_reset_forgets_and_the_next_load_reads_the_table_again() -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY)")
    f = KeyFilter(("k",))
    f.load(con, "t")
    probe = f.hashes(con, [("a",)])
    f.add(probe)
    f.reset()
    assert not f.loaded and len(f) == 0
    con.execute("INSERT INTO t VALUES ('a')")
    f.load(con, "t")
    assert f.maybe(probe).tolist() == [True]


@settings(max_examples=30, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.integers(0, 2**64 - 1), max_size=3000).map(
            lambda xs: np.array(xs, dtype=np.uint64)
        ),
        max_size=8,
    )
)
def test_every_added_hash_passes_the_bitmap_as_it_grows(chunks: list[np.ndarray]) -> None:
    f = KeyFilter(("k",))
    seen: list[np.ndarray] = []
    for chunk in chunks:
        f.add(chunk)
        seen.append(chunk)
        everything = np.concatenate(seen)
        assert f.maybe(everything).all()


def test_the_bitmap_lets_few_new_keys_through_to_the_search() -> None:
    rng = np.random.default_rng(3)
    f = KeyFilter(("k",))
    for _ in range(10):  # grown by adds, not sized at a load
        f.add(rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64))
    fresh = rng.integers(0, 2**64 - 1, 100_000, dtype=np.uint64)
    passed = f._bits.test(fresh).mean()
    assert passed < 0.1, passed  # ~1/16 with 16 slots per key
    assert not f.maybe(fresh).any()
