"""Property tests of CustomerState against a brute-force oracle.

The oracle computes every feature straight from its definition (see
schemas/features.py): for an as-of time T, window w covers the buckets
``T//res - n + 1 .. T//res`` with ``res = bucket_seconds * 1000``.
"""

from __future__ import annotations

import copy
import pickle
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.features import DAY_MS, STATS, FeatureSpec, feature_name
from stream.state import CustomerState, StateConfig, advance_all, next_changes, next_edges, write_rows

HOUR_MS = 3_600_000
SPEC = FeatureSpec(groups=("a", "b"))
CFG = StateConfig.build(SPEC)
N_GROUPS = len(SPEC.all_groups)  # a, b, all
N_TYPES = len(SPEC.types)
BASE = 1_483_228_800_000  # 2017-01-01T00:00:00Z, a day (and hour) boundary
MAX_SPAN = 420 * DAY_MS  # beyond the longest window (365d), so every window expires buckets
GROUP_OF_INDEX = [SPEC.all_groups.index(SPEC.group_of_feature(n)) for n in SPEC.names]

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- oracle


def oracle(events: list[tuple[int, int, tuple[int, ...], int]], T: int) -> np.ndarray:
    """Every feature as of T, computed directly from its definition."""
    assert all(ts <= T for ts, *_ in events)
    row = np.full(len(SPEC.names), np.nan)
    for w in SPEC.windows:
        res = w.bucket_seconds * 1000
        hi = T // res
        lo = hi - w.n_buckets + 1
        for gi, g in enumerate(SPEC.all_groups):
            for ti, t in enumerate(SPEC.types):
                sel = [(ts, c) for ts, typ, gs, c in events if typ == ti and gi in gs and lo <= ts // res <= hi]
                row[SPEC.index[feature_name(g, t, "count", w.name)]] = len(sel)
                row[SPEC.index[feature_name(g, t, "value", w.name)]] = sum(c for _, c in sel) / 100
                row[SPEC.index[feature_name(g, t, "active", w.name)]] = len({ts // res for ts, _ in sel})
    edges = SPEC.recency_edges_days
    cap = edges[-1]
    for gi, g in enumerate(SPEC.all_groups):
        lasts = [ts for ts, _, gs, _ in events if gi in gs]
        if not lasts:
            rec = cap
        else:
            days = (T - max(lasts)) // DAY_MS
            rec = max(e for e in edges if e <= days) if days < cap else cap
        row[SPEC.index[SPEC.recency_name(g)]] = rec
    longest = max(SPEC.windows, key=lambda w: w.span_ms)
    res = longest.bucket_seconds * 1000
    live = [ts // res for ts, *_ in events if T // res - longest.n_buckets + 1 <= ts // res]
    days = (T - min(live) * res) // DAY_MS if live else 0
    row[SPEC.index[SPEC.history_name]] = max(e for e in edges if e <= days) if days < cap else cap
    assert not np.isnan(row).any()  # every feature was defined exactly once
    return row


def vec(s: CustomerState) -> np.ndarray:
    row = CFG.new_row()
    s.write_features(CFG, row)
    return row


def groups_changed(before: np.ndarray, after: np.ndarray) -> set[int]:
    return {GROUP_OF_INDEX[i] for i in np.flatnonzero(before != after)}


# --------------------------------------------------------------------------- strategies

group_sets = st.sets(st.integers(0, N_GROUPS - 1), min_size=1).map(lambda s: tuple(sorted(s)))
cents = st.one_of(st.integers(-100_000, 100_000), st.sampled_from([0, 1, -1, 499, 10**11]))


@st.composite
def offsets(draw, span: int) -> int:
    """Offsets within span; half of the time exactly on / next to an hour edge."""
    if draw(st.booleans()):
        return draw(st.integers(0, span))
    hour = draw(st.integers(0, span // HOUR_MS))
    return min(span, hour * HOUR_MS + draw(st.sampled_from([0, 1, HOUR_MS - 1])))


@st.composite
def event_lists(draw, max_size: int = 25):
    span = draw(st.sampled_from([2 * DAY_MS, 10 * DAY_MS, 40 * DAY_MS, MAX_SPAN]))
    n = draw(st.integers(0, max_size))
    return [
        (
            BASE + draw(offsets(span)),
            draw(st.integers(0, N_TYPES - 1)),
            draw(group_sets),
            draw(cents),
        )
        for _ in range(n)
    ]


@st.composite
def as_of(draw, events) -> int:
    """An as-of time T >= every event, often exactly on an expiry edge."""
    last = max((ts for ts, *_ in events), default=BASE)
    kind = draw(st.sampled_from(["same", "any", "edge"]))
    if kind == "same" or not events:
        return last + (draw(st.integers(0, 2 * DAY_MS)) if kind != "same" else 0)
    if kind == "any":
        return last + draw(st.integers(0, 100 * DAY_MS))
    ts = draw(st.sampled_from([ts for ts, *_ in events]))
    w = draw(st.sampled_from(SPEC.windows))
    res = w.bucket_seconds * 1000
    edge = (ts // res + w.n_buckets) * res + draw(st.sampled_from([-1, 0, 1]))
    return max(last, edge)


@st.composite
def scenario(draw, max_size: int = 25):
    events = draw(event_lists(max_size))
    T = draw(as_of(events))
    return events, T


def build(cfg, ops) -> CustomerState:
    s = CustomerState()
    for op in ops:
        run(s, cfg, op)
    return s


def run(s: CustomerState, cfg, op) -> frozenset[int]:
    if op[0] == "apply":
        _, (ts, ti, gs, c), eid = op
        return s.apply(cfg, ts, ti, gs, c, event_id=eid)
    return s.advance(cfg, op[1])


@st.composite
def shuffled_ops(draw, events, T, with_ids: bool = False):
    """The events in any order, with random clock advances (<= T) in between: late events."""
    perm = draw(st.permutations(events))
    ops = []
    for k, ev in enumerate(perm):
        if draw(st.integers(0, 3)) == 0:
            ops.append(("advance", draw(st.integers(min(ev[0], T), T))))
        ops.append(("apply", ev, f"e{k}" if with_ids else None))
    ops.append(("advance", T))
    return ops


# --------------------------------------------------------------------------- (a) oracle


@SETTINGS
@given(scenario())
def test_sorted_apply_then_advance_matches_oracle(sc):
    events, T = sc
    s = CustomerState()
    for ts, ti, gs, c in sorted(events, key=lambda e: e[0]):
        s.apply(CFG, ts, ti, gs, c)
    s.advance(CFG, T)
    expected = oracle(events, T)
    got = vec(s)
    assert np.array_equal(got, expected), _diff(got, expected)


def _diff(got, expected) -> str:
    idx = np.flatnonzero(got != expected)
    return "; ".join(f"{SPEC.names[i]}: got {got[i]} want {expected[i]}" for i in idx[:10])


def test_oracle_agrees_with_module_doctest_example():
    s = CustomerState()
    ts = 1_000 * 3600 * 24 * 17_000
    assert s.apply(CFG, ts, type_index=2, groups=(0, 2), value_cents=499) == frozenset({0, 2})
    row = vec(s)
    assert row[SPEC.index["grp=a|type=purchase|stat=value|win=7d"]] == 4.99
    assert row[SPEC.index["grp=b|type=purchase|stat=value|win=7d"]] == 0
    assert np.array_equal(row, oracle([(ts, 2, (0, 2), 499)], ts))


def test_hourly_window_expires_exactly_at_bucket_edge():
    ts = BASE + 5 * HOUR_MS + 123
    s = CustomerState()
    s.apply(CFG, ts, 0, (2,), 100)
    i = SPEC.index[feature_name("all", "view", "count", "1d")]
    j = SPEC.index[feature_name("all", "view", "count", "7d")]
    expire = (ts // HOUR_MS + 24) * HOUR_MS
    s.advance(CFG, expire - 1)
    assert vec(s)[i] == 1
    s.advance(CFG, expire)
    assert vec(s)[i] == 0
    assert vec(s)[j] == 1


# --------------------------------------------------------------------------- (b) order invariance


@SETTINGS
@given(st.data())
def test_any_arrival_order_gives_same_features(data):
    events, T = data.draw(scenario())
    s_sorted = CustomerState()
    for ts, ti, gs, c in sorted(events, key=lambda e: e[0]):
        s_sorted.apply(CFG, ts, ti, gs, c)
    s_sorted.advance(CFG, T)

    ops = data.draw(shuffled_ops(events, T))
    s = build(CFG, ops)
    assert s.clock == s_sorted.clock or not events
    got, want = vec(s), vec(s_sorted)
    assert np.array_equal(got, want), _diff(got, want)
    assert np.array_equal(got, oracle(events, T)), _diff(got, oracle(events, T))


@SETTINGS
@given(st.data())
def test_a_run_applied_at_once_equals_its_events_one_by_one(data):
    """apply_run (a basket's lines: one time, one type) == apply per event: features, changes, seq."""
    events, T = data.draw(scenario(max_size=8))
    ts = data.draw(st.integers(BASE, T))
    ti = data.draw(st.integers(0, N_TYPES - 1))
    lines = data.draw(st.lists(st.tuples(group_sets, cents), min_size=1, max_size=6))
    now = data.draw(st.integers(BASE, T))  # the clock before the run: ts may be late or ahead of it
    one_by_one, at_once = CustomerState(), CustomerState()
    for s in (one_by_one, at_once):
        for e_ts, e_ti, gs, c in sorted(events, key=lambda e: e[0]):
            s.apply(CFG, e_ts, e_ti, gs, c)
        s.advance(CFG, now)
    changed_each: set[int] = set()
    for gs, c in lines:
        changed_each |= one_by_one.apply(CFG, ts, ti, gs, c)
    counts: dict[int, list[int]] = {}
    for gs, c in lines:
        for g in gs:
            counts.setdefault(g, [0, 0])
            counts[g][0] += 1
            counts[g][1] += c
    changed_run = at_once.apply_run(CFG, ts, ti, counts, len(lines))
    assert np.array_equal(vec(at_once), vec(one_by_one)), _diff(vec(at_once), vec(one_by_one))
    assert set(changed_run) == changed_each
    assert at_once.seq == one_by_one.seq
    assert at_once.next_change(CFG) == one_by_one.next_change(CFG)


def test_late_event_outside_short_window_counts_only_in_long_ones():
    s = CustomerState()
    s.apply(CFG, BASE + 20 * DAY_MS, 0, (2,), 100)
    late = BASE + 10 * DAY_MS  # 10 days late: outside 1d and 7d, inside 30d and 90d
    s.apply(CFG, late, 0, (2,), 250)
    row = vec(s)
    assert row[SPEC.index[feature_name("all", "view", "count", "7d")]] == 1
    assert row[SPEC.index[feature_name("all", "view", "count", "30d")]] == 2
    assert row[SPEC.index[feature_name("all", "view", "value", "30d")]] == 3.5
    assert row[SPEC.index[feature_name("all", "view", "active", "30d")]] == 2
    assert row[SPEC.index[SPEC.recency_name("all")]] == 0


# --------------------------------------------------------------------------- (c) stepwise advance


@SETTINGS
@given(st.data())
def test_advancing_in_steps_equals_advancing_at_once(data):
    events, T = data.draw(scenario())
    s = CustomerState()
    for ts, ti, gs, c in events:
        s.apply(CFG, ts, ti, gs, c)
    end = T + data.draw(st.integers(0, 120 * DAY_MS))
    stepped = copy.deepcopy(s)
    start = s.clock if s.clock is not None else BASE
    steps = sorted(data.draw(st.lists(st.integers(start, end), max_size=8)))
    for t in steps:
        stepped.advance(CFG, t)
    stepped.advance(CFG, end)
    s.advance(CFG, end)
    assert stepped.clock == s.clock
    assert np.array_equal(vec(stepped), vec(s)), _diff(vec(stepped), vec(s))
    if events:
        assert np.array_equal(vec(s), oracle(events, end))


# --------------------------------------------------------------------------- (d) changed groups


@SETTINGS
@given(st.data())
def test_reported_changed_groups_cover_actual_changes(data):
    events, T = data.draw(scenario())
    ops = data.draw(shuffled_ops(events, T))
    ops += [("advance", T + data.draw(st.integers(0, 120 * DAY_MS)))]
    s = CustomerState()
    for op in ops:
        before = vec(s)
        changed = run(s, CFG, op)
        actual = groups_changed(before, vec(s))
        assert actual <= set(changed), (op, actual, changed)
        assert all(0 <= g < N_GROUPS for g in changed)


def test_a_late_event_into_an_empty_history_changes_history_days():
    s = CustomerState()
    s.apply(CFG, BASE, 0, (0,), 100)
    s.advance(CFG, BASE + 400 * DAY_MS)  # every bucket expired: no history
    assert vec(s)[CFG.history_index] == 0
    changed = s.apply(CFG, BASE + 398 * DAY_MS, 0, (0,), 100)  # two days late, group a only
    assert vec(s)[CFG.history_index] == 2
    assert CFG.all_index in changed  # history_days belongs to ``all``, though the event is not in it


def test_advance_backwards_or_before_start_is_a_no_op():
    s = CustomerState()
    assert s.advance(CFG, BASE) == frozenset()
    assert s.clock is None
    s.apply(CFG, BASE + DAY_MS, 1, (0, 2), 10)
    before = vec(s)
    assert s.advance(CFG, BASE) == frozenset()
    assert s.clock == BASE + DAY_MS
    assert np.array_equal(vec(s), before)


# --------------------------------------------------------------------------- (e) next_change


@FEW
@given(st.data())
def test_features_constant_until_next_change(data):
    events, T = data.draw(scenario(max_size=12))
    s = build(CFG, data.draw(shuffled_ops(events, T)))
    if not events:
        assert s.next_change(CFG) is None
        return
    walked = 0
    while True:
        clock, nc = s.clock, s.next_change(CFG)
        here = vec(s)
        horizon = nc if nc is not None else clock + 800 * DAY_MS + 1
        assert horizon > clock
        probes = {
            clock + 1,
            horizon - 1,
            data.draw(st.integers(clock + 1, max(clock + 1, horizon - 1))),
        }
        for t in probes:
            if clock < t < horizon:
                c = copy.deepcopy(s)
                c.advance(CFG, t)
                assert np.array_equal(vec(c), here), (clock, t, nc, _diff(vec(c), here))
        if nc is None:
            break
        s.advance(CFG, nc)
        # something must change exactly at next_change
        assert not np.array_equal(vec(s), here), (clock, nc)
        walked += 1
        assert walked < 1000
    # no more changes pending: the customer looks like one without history
    assert np.array_equal(vec(s), CFG.new_row())


# --------------------------------------------------------------------------- (f) forgetting


@FEW
@given(st.data())
def test_long_inactivity_empties_state(data):
    events, T = data.draw(scenario())
    if not events:
        events = [(BASE, 0, (2,), 1)]
    ops = data.draw(shuffled_ops(events, T, with_ids=True))
    s = build(CFG, ops)
    assert not s.is_empty()
    assert all(f"e{k}" in s.seen for k in range(len(events)))
    last = max(ts for ts, *_ in events)
    s.advance(CFG, max(s.clock, last + 400 * DAY_MS))
    assert not s.is_empty()  # the dedupe ids are still kept
    s.forget_seen_before(s.clock)
    assert s.is_empty()
    assert "e0" not in s.seen
    assert np.array_equal(vec(s), CFG.new_row())
    assert s.next_change(CFG) is None


@SETTINGS
@given(st.data())
def test_memory_is_bounded_by_the_longest_window(data):
    """After every step, no bucket is older than the longest window of its resolution."""
    events, T = data.draw(scenario())
    ops = data.draw(shuffled_ops(events, T))
    ops += [("advance", T + k * data.draw(st.sampled_from([HOUR_MS, DAY_MS, 7 * DAY_MS]))) for k in range(1, 6)]
    longest = {}
    for w in SPEC.windows:
        res = w.bucket_seconds * 1000
        longest[res] = max(longest.get(res, 0), w.n_buckets)
    s = CustomerState()
    for op in ops:
        run(s, CFG, op)
        if s.clock is None:
            continue  # no event yet: nothing kept
        for res, buckets in zip(CFG.resolutions_ms, s.buckets, strict=True):
            oldest = s.clock // res - longest[res] + 1
            assert all(b >= oldest for b in buckets), (res, sorted(buckets)[:3], oldest)
            assert list(buckets) == sorted(buckets)  # ascending: the oldest first (history_days, next_change)


def test_new_state_is_empty_and_writes_new_row():
    s = CustomerState()
    assert s.is_empty()
    assert s.next_change(CFG) is None
    assert np.array_equal(vec(s), CFG.new_row())
    row = CFG.new_row()
    assert (row[: CFG.recency_offset] == 0).all()
    assert (row[CFG.recency_offset : CFG.history_index] == SPEC.recency_cap_days).all()
    assert row[CFG.history_index] == 0  # no history yet


def test_forget_seen_before_keeps_recent_ids():
    s = CustomerState()
    s.apply(CFG, BASE, 0, (2,), 0, event_id="old")
    s.apply(CFG, BASE + DAY_MS, 0, (2,), 0, event_id="new")
    s.forget_seen_before(BASE + 1)
    assert "old" not in s.seen
    assert "new" in s.seen


# --------------------------------------------------------------------------- (f2) many customers at once


@FEW
@given(st.data())
def test_many_customers_at_once_equal_each_alone(data):
    """A shard's batch steps (``advance_all``, ``next_changes``, ``write_rows``) are one customer's, per customer.

    Customers of different histories and clocks (some never seen, some at the
    time already, some ahead of it: their events ran ahead of the shard's
    clock; some packed, as a restored snapshot leaves them) move to one time
    together; each must end as if moved alone (``CustomerState.advance``,
    group by group): the same changed groups, sequence, clock, bytes, feature
    row and next change, and the oracle's features.
    """
    customers = data.draw(st.lists(scenario(max_size=10), min_size=1, max_size=6))
    latest = [max((ts for ts, *_ in events), default=BASE) for events, _ in customers]
    if data.draw(st.booleans()):  # the time of one customer's last event: those with later events are ahead
        now = data.draw(st.sampled_from(latest))
    else:
        now = max(T for _, T in customers) + data.draw(st.sampled_from([0, 1, DAY_MS, 3 * DAY_MS + 7, 40 * DAY_MS]))
    together, alone = [], []
    for events, _ in customers:
        s = CustomerState()
        for ts, ti, gs, c in events:
            s.apply(CFG, ts, ti, gs, c)
        alone.append(copy.deepcopy(s))
        if data.draw(st.booleans()):
            s.pack()
        together.append(s)
    moved = advance_all(CFG, together, now)
    for s, a, changed in zip(together, alone, moved, strict=True):
        assert set(changed) == set(a.advance(CFG, now))
        assert (s.clock, s.seq) == (a.clock, a.seq)
        assert pickle.dumps(s) == pickle.dumps(a)
    assert next_changes(CFG, together) == [a.next_change(CFG) for a in alone]
    rows = np.tile(CFG.new_row(), (len(together) + 1, 1))
    write_rows(CFG, [None, *together], rows)  # a row without a customer among them
    assert np.array_equal(rows[0], CFG.new_row())
    for i, ((events, _), a) in enumerate(zip(customers, alone, strict=True), start=1):
        assert np.array_equal(rows[i], vec(a))
        if events:
            assert np.array_equal(rows[i], oracle(events, max(now, a.clock)))  # one ahead stays at its own time


# --------------------------------------------------------------------------- (g) pickling


@FEW
@given(st.data())
def test_pickle_round_trip_preserves_state_and_behaviour(data):
    events, T = data.draw(scenario())
    split = data.draw(st.integers(0, len(events)))
    s = CustomerState()
    for k, (ts, ti, gs, c) in enumerate(events[:split]):
        s.apply(CFG, ts, ti, gs, c, event_id=f"e{k}")
    r = pickle.loads(pickle.dumps(s))
    assert r.clock == s.clock and r.seq == s.seq
    assert np.array_equal(vec(r), vec(s))
    assert r.next_change(CFG) == s.next_change(CFG)
    assert r.is_empty() == s.is_empty()
    assert all(f"e{k}" in r.seen for k in range(split))
    for ts, ti, gs, c in events[split:]:
        assert r.apply(CFG, ts, ti, gs, c) == s.apply(CFG, ts, ti, gs, c)
    assert r.advance(CFG, T) == s.advance(CFG, T)
    assert r.seq == s.seq
    assert r.next_change(CFG) == s.next_change(CFG)
    assert np.array_equal(vec(r), vec(s))
    if events:
        assert np.array_equal(vec(r), oracle(events, T))


@FEW
@given(st.data())
def test_packing_between_any_operations_changes_nothing(data):
    """A packed state (an idle customer's memory, issue #15) behaves and pickles as if it had never been packed."""
    events, T = data.draw(scenario())
    ops = data.draw(shuffled_ops(events, T, with_ids=True))
    plain, packed = CustomerState(), CustomerState()
    for op in ops:
        if data.draw(st.booleans()):
            packed.pack()
            assert packed.packed
            if data.draw(st.booleans()):  # a snapshot of a packed customer: the same bytes, still packed
                assert pickle.dumps(packed) == pickle.dumps(plain)
                assert packed.packed
        assert run(packed, CFG, op) == run(plain, CFG, op)
        assert packed.seq == plain.seq and packed.clock == plain.clock
    packed.pack()
    restored = pickle.loads(pickle.dumps(packed))
    assert restored.packed  # restored packed: unpacked on the first read
    for s in (packed, restored):
        assert s.next_change(CFG) == plain.next_change(CFG)
        assert np.array_equal(vec(s), vec(plain))
        assert sorted(s.seen) == sorted(plain.seen)
        assert not s.packed
    assert np.array_equal(vec(plain), oracle(events, T))


@FEW
@given(st.data())
def test_a_customer_pickled_in_the_zlib_form_of_older_snapshots_restores_the_same(data):
    """Side stores written before 2026-12-03 hold (clock, seq, lengths, zlib bytes): they must resume exactly."""
    events, T = data.draw(scenario())
    s = CustomerState()
    for k, (ts, ti, gs, c) in enumerate(events):
        s.apply(CFG, ts, ti, gs, c, event_id=f"e{k}")
    arrays = (s._band_tags, s._band_sums, s._last, s._ids, *s._cells)  # the layout those snapshots wrote
    old = (s.clock, s.seq, tuple(len(a) for a in arrays), zlib.compress(b"".join(a.tobytes() for a in arrays), 1))
    r = CustomerState.__new__(CustomerState)
    r.__setstate__(old)
    assert r.packed and pickle.dumps(r) == pickle.dumps(s)  # re-packed: written back in today's form
    assert r.clock == s.clock and r.seq == s.seq
    assert r.next_change(CFG) == s.next_change(CFG)
    assert np.array_equal(vec(r), vec(s)) and sorted(r.seen) == sorted(s.seen)
    r.advance(CFG, T)
    s.advance(CFG, T)
    assert np.array_equal(vec(r), vec(s))


# --------------------------------------------------------------------------- config


def test_state_config_layout_matches_feature_names():
    assert CFG.n_features == len(SPEC.names)
    assert CFG.resolutions_ms == (HOUR_MS, DAY_MS)
    assert CFG.window_n == tuple(w.n_buckets for w in SPEC.windows)
    for wi, w in enumerate(SPEC.windows):
        for key in range(CFG.n_keys):
            g, t = divmod(key, CFG.n_types)
            i = CFG.bases[wi][key]
            for k, stat in enumerate(STATS):
                assert SPEC.names[i + k] == feature_name(SPEC.all_groups[g], SPEC.types[t], stat, w.name)
    for g, name in enumerate(SPEC.all_groups):
        assert SPEC.names[CFG.recency_offset + g] == SPEC.recency_name(name)
    assert CFG.history_index == CFG.recency_offset + len(SPEC.all_groups) == len(SPEC.names) - 1
    assert SPEC.names[CFG.history_index] == SPEC.history_name


def test_recency_bin_rounds_down_and_caps():
    edges = SPEC.recency_edges_days
    assert CFG.recency_bin(0) == 0
    assert CFG.recency_bin(4) == 3
    assert CFG.recency_bin(89) == 60
    assert CFG.recency_bin(90) == 90
    assert CFG.recency_bin(10_000) == edges[-1]
    for d in range(0, 120):
        assert CFG.recency_bin(d) == max(e for e in edges if e <= d)


def test_next_change_table_of_recency_edges_agrees_with_next_edge_time():
    """next_change looks recency edges up in a table (``next_edges``); it must give ``next_edge_time``'s answer."""
    cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    following = next_edges(cfg.recency_edges)
    since = 1_500_000_000_000
    for days in range(cfg.recency_edges[-1] + 5):
        at = since + days * DAY_MS + 7
        expected = cfg.next_edge_time(since, at)
        got = since + following[days] * DAY_MS if days < len(following) else None
        assert got == expected, days
