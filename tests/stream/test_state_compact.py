"""The compact representation of CustomerState (issue #15): its own rules, beyond the features' oracle.

test_state.py checks every feature against a brute-force oracle; here: event
ids kept as digests, window sums kept as bands, the size of a customer in
memory and pickled, and a pickle read back by another process.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tracemalloc

import numpy as np

from schemas.features import DAY_MS, FeatureSpec
from stream.state import CustomerState, StateConfig, event_digest, write_rows

BASE = 1_483_228_800_000  # 2017-01-01T00:00:00Z
CFG = StateConfig.build(FeatureSpec(groups=("a", "b")))
CFG25 = StateConfig.build(FeatureSpec(groups=tuple(f"g{i:02d}" for i in range(25))))
PURCHASE = 2


def basket(cfg: StateConfig, state: CustomerState, ts: int, groups: list[int], prefix: str) -> None:
    """One basket: an event per group (and ``all``) at ``ts``, ids ``prefix0``, ``prefix1``, ..."""
    for k, g in enumerate(groups):
        assert state.see(f"{prefix}{k}", ts)
        state.apply_run(cfg, ts, PURCHASE, {g: [1, 100 + k], cfg.all_index: [1, 100 + k]}, 1)


def test_a_second_delivery_is_refused_by_its_digest_and_forgetting_frees_it():
    s = CustomerState()
    assert s.see("e1", BASE)
    assert not s.see("e1", BASE + 5)  # the same id again: a duplicate
    assert s.see("e2", BASE + DAY_MS)
    assert "e1" in s.seen and "e2" in s.seen and "e3" not in s.seen and len(s.seen) == 2
    s.forget_seen_before(BASE + 1)
    assert "e1" not in s.seen and "e2" in s.seen
    assert s.see("e1", BASE + 2 * DAY_MS)  # past retention it is no longer known


def test_any_event_id_has_a_digest_even_a_lone_surrogate():
    ids = ["\ud800", "\udfff", "é", "e" * 10_000, ""]
    digests = {event_digest(i) for i in ids}
    assert len(digests) == len(ids)
    assert all(-(2**63) <= d < 2**63 for d in digests)


def test_digests_of_many_ids_do_not_collide():
    n = 200_000
    assert len({event_digest(f"{k}-{k * 7919}") for k in range(n)}) == n


def test_a_pickled_customer_knows_its_ids_in_another_process():
    """Digests are not Python's salted hash(): a restored snapshot still refuses a duplicate."""
    s = CustomerState()
    basket(CFG, s, BASE, [0, 1], "order-")
    code = (
        "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read());"
        "print(int(s.see('order-1', 0)), int(s.see('order-9', 0)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(s),
        capture_output=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
    )
    assert out.stdout.split() == [b"0", b"1"]


def test_one_basket_keeps_one_band_per_resolution_and_moves_to_the_next_window_as_it_ages():
    s = CustomerState()
    basket(CFG, s, BASE + 3_600_000, [0, 1], "e")
    keys = {g * CFG.n_types + PURCHASE for g in (0, 1, CFG.all_index)}
    shortest = {res_bands[0][1] for res_bands in CFG.bands}  # 1d (hourly) and 7d (daily)
    assert {(t >> 16, t & 0xFFFF) for t in s._band_tags} == {(w, k) for w in shortest for k in keys}
    before = np.tile(CFG.new_row(), (1, 1))
    write_rows(CFG, [s], before)
    s.advance(CFG, BASE + 10 * DAY_MS)  # out of 1d and 7d, still in 30d and longer
    win30 = CFG.spec.windows.index(next(w for w in CFG.spec.windows if w.name == "30d"))
    assert {t >> 16 for t in s._band_tags} == {win30}
    row = CFG.new_row()
    s.write_features(CFG, row)
    for name in ("30d", "365d"):
        feature = f"grp=all|type=purchase|stat=value|win={name}"
        assert row[CFG.spec.index[feature]] == before[0, CFG.spec.index[feature]] == 2.01
    assert row[CFG.spec.index["grp=all|type=purchase|stat=count|win=7d"]] == 0


def test_cells_grow_in_order_with_late_events_and_shrink_as_buckets_expire():
    s = CustomerState()
    for day in (5, 1, 3, 2, 4):  # late events land before newer buckets
        basket(CFG, s, BASE + day * DAY_MS, [0], f"d{day}-")
    for a in s._cells:  # per resolution: its m tags ascending, then their (n, cents)
        tags = a[: len(a) // 3]
        assert list(tags) == sorted(tags)
    assert s.buckets[1] == [(BASE + d * DAY_MS) // DAY_MS for d in range(1, 6)]
    s.advance(CFG, BASE + 367 * DAY_MS)  # the 365d window now starts at day 3: days 1 and 2 leave it
    assert s.buckets[1] == [(BASE + d * DAY_MS) // DAY_MS for d in range(3, 6)]
    assert s.buckets[0] == []  # the hourly cells left the 1d window long ago


def test_one_basket_customer_at_25_groups_is_small_in_memory_and_pickled():
    """The budget of issue #15 (<= 2 KB of RSS per live customer): the state's own share of it."""
    n = 2_000
    rows, again = np.tile(CFG25.new_row(), (n, 1)), np.tile(CFG25.new_row(), (n, 1))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    states = [CustomerState() for _ in range(n)]
    for u, s in enumerate(states):
        basket(CFG25, s, BASE + u * 1000, [u % 25, (u + 7) % 25, (u + 13) % 25], f"u{u}-")
    heap = (tracemalloc.get_traced_memory()[0] - before) / n
    write_rows(CFG25, states, rows)
    for s in states:
        s.pack()  # as the shard leaves them once refreshed
    packed_heap = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert heap < 1_400, heap
    assert packed_heap < 500, packed_heap  # ~1,350 open, ~350 packed
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states) / n
    assert pickled < 700, pickled
    assert all(s.packed for s in states)  # a snapshot does not unpack them
    write_rows(CFG25, states, again)
    assert np.array_equal(rows, again)
