"""The compiled walks of the cells (``stream._cells``) against the Python they replaced.

``python_advance`` is ``CustomerState._advance`` (its cells' walk,
``python_walk``; ``history_days``; the recency of each group) and
``python_counts`` the counting of ``CustomerState.apply_run``, as they were in
Python (up to 2026-12-05): states built from any events, moved to any later
time or given any run of events (late ones too), must end with the same
arrays, element for element, and report the same groups. The feature tests of ``test_state.py`` (an oracle from the
definitions) run through the compiled walk as well.
"""

from __future__ import annotations

import copy
import pickle
from array import array
from bisect import bisect_left

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.features import DAY_MS, FeatureSpec, Window
from stream._cells import CellLayout, advance_cells, advance_state, apply_counts, count_run
from stream.state import KEY_BITS, KEY_MASK, CustomerState, StateConfig, next_changes, write_rows

SPEC = FeatureSpec(groups=("a", "b", "c"))
CFG = StateConfig.build(SPEC)
# windows shorter than the recency bins: an event older than every window still moves its group's recency
SHORT = StateConfig.build(
    FeatureSpec(
        groups=SPEC.groups,
        windows=(
            Window(name="1d", bucket_seconds=3600, n_buckets=24),
            Window(name="30d", bucket_seconds=86400, n_buckets=30),
        ),
    )
)
CONFIGS = st.sampled_from([CFG, SHORT])
BASE = 1_483_228_800_000  # 2017-01-01T00:00:00Z
HOUR_MS = 3_600_000


def python_walk(cfg: StateConfig, s: CustomerState, clock: int, now: int) -> set[int]:
    """The Python the compiled walk replaced, line for line."""
    changed: set[int] = set()
    cells, band_tags, band_sums = s._cells, s._band_tags, s._band_sums
    for ri, res in enumerate(cfg.resolutions_ms):
        hi_before, hi_after = clock // res, now // res
        a = cells[ri]
        if hi_before == hi_after:
            continue
        for n_buckets, wi in cfg.bands[ri]:
            new_lo = hi_after - n_buckets + 1
            if not a or a[0] >> KEY_BITS >= new_lo:
                break
            m = len(a) // 3
            i0 = bisect_left(a, (hi_before - n_buckets + 1) << KEY_BITS, 0, m)
            i1 = bisect_left(a, new_lo << KEY_BITS, i0, m)
            if i0 >= i1:
                continue
            into = cfg.next_band[wi]
            band_base, into_base = wi << KEY_BITS, into << KEY_BITS
            for i in range(i0, i1):
                key = a[i] & KEY_MASK
                n, cents = a[m + 2 * i], a[m + 2 * i + 1]
                j = band_tags.index(band_base | key)
                if band_sums[3 * j] == n:
                    del band_tags[j]
                    del band_sums[3 * j : 3 * j + 3]
                else:
                    band_sums[3 * j] -= n
                    band_sums[3 * j + 1] -= cents
                    band_sums[3 * j + 2] -= 1
                changed.add(key // cfg.n_types)
                if into >= 0:
                    btag = into_base | key
                    if btag in band_tags:
                        j = 3 * band_tags.index(btag)
                        band_sums[j] += n
                        band_sums[j + 1] += cents
                        band_sums[j + 2] += 1
                    else:
                        band_tags.append(btag)
                        band_sums.extend((n, cents, 1))
            if into < 0:
                del a[m + 2 * i0 : m + 2 * i1]
                del a[i0:i1]
    return changed


def python_advance(cfg: StateConfig, s: CustomerState, clock: int, now: int) -> set[int]:
    """``CustomerState._advance`` as it was in Python, but for the clock and sequence."""
    start = s.history_start(cfg)
    changed = python_walk(cfg, s, clock, now)
    if start is not None:
        after = s.history_start(cfg)
        if after != start or cfg.recency_bin((clock - start) // DAY_MS) != cfg.recency_bin((now - start) // DAY_MS):
            changed.add(cfg.all_index)
    table = cfg.recency_table
    cap = table[-1]
    last = s._last
    k = len(last) >> 1
    capped = []
    for j in range(k):
        since = last[k + j]
        d0, d1 = (clock - since) // DAY_MS, (now - since) // DAY_MS
        if d0 == d1:
            continue
        after_bin = table[d1] if d1 < cap else cap
        if (table[d0] if d0 < cap else cap) != after_bin:
            changed.add(last[j])
        if after_bin == cap:
            capped.append(last[j])
    if capped:
        keep = [j for j in range(k) if last[j] not in capped]
        s._last = array("q", [last[j] for j in keep] + [last[k + j] for j in keep])
    return changed


def python_counts(cfg: StateConfig, s: CustomerState, ts: int, type_index: int, counts: dict) -> set[int]:
    """``CustomerState.apply_run`` as it was in Python, after its clock move, line for line."""
    clock = s.clock
    n_types = cfg.n_types
    cells, band_tags, band_sums = s._cells, s._band_tags, s._band_sums
    changed: set[int] = set()
    band_at: dict[int, int] | None = None
    in_window = False
    for ri, res in enumerate(cfg.resolutions_ms):
        b = ts // res
        age = clock // res - b
        band = -1
        for n_buckets, wi in cfg.bands[ri]:  # the shortest window of this resolution that holds bucket b
            if age < n_buckets:
                band = wi
                break
        if band < 0:
            continue  # older than every window of this resolution: nothing to keep
        in_window = True
        a = cells[ri]
        m = len(a) // 3  # cells: a[:m] tags, a[m:] their (n, cents)
        if ri == cfg.history_res and age > 0 and (not m or b < a[0] >> KEY_BITS):
            changed.add(cfg.all_index)  # history_days now reaches further back
        base = b << KEY_BITS
        band_base = band << KEY_BITS
        for g, (n, cents) in counts.items():
            key = g * n_types + type_index
            tag = base | key
            i = bisect_left(a, tag, 0, m)
            if i < m and a[i] == tag:
                v = m + 2 * i
                a[v] += n
                a[v + 1] += cents
                new_cell = 0
            else:
                a.insert(i, tag)
                m += 1
                v = m + 2 * i
                a.insert(v, cents)
                a.insert(v, n)
                new_cell = 1
            btag = band_base | key
            if band_at is None:  # tag -> its record: one dict per call, not a scan of the array per key
                band_at = dict(zip(band_tags.tolist(), range(len(band_tags)), strict=True))
            j = band_at.get(btag, -1)
            if j >= 0:
                j *= 3
                band_sums[j] += n
                band_sums[j + 1] += cents
                band_sums[j + 2] += new_cell
            else:
                band_at[btag] = len(band_tags)
                band_tags.append(btag)
                band_sums.extend((n, cents, 1))
    if in_window:
        changed.update(counts)
    last = s._last
    k = len(last) >> 1
    group_at = dict(zip(last[:k].tolist(), range(k), strict=True))  # group -> its place in the first half
    for g in counts:
        j = group_at.get(g, -1)
        if j >= 0:
            j += k  # its last event time, in the second half
            prev: int | None = last[j]
        else:
            prev = None
        if prev is None or ts > prev:
            if not in_window and (
                prev is None or cfg.recency_bin((clock - ts) // DAY_MS) != cfg.recency_bin((clock - prev) // DAY_MS)
            ):
                changed.add(g)
            if j < 0:
                last.insert(k, g)
                last.append(ts)
                group_at[g] = k
                k += 1
            else:
                last[j] = ts
    return changed


def arrays(s: CustomerState) -> tuple:
    return (s._band_tags.tolist(), s._band_sums.tolist(), [a.tolist() for a in s._cells])


def times(days: int) -> st.SearchStrategy[int]:
    """Up to ``days`` whole days, hours and ms: integers spread over the range (not only its ends)."""
    return st.builds(
        lambda d, h, ms: d * DAY_MS + h * HOUR_MS + ms,
        st.integers(0, days),
        st.integers(0, 23),
        st.sampled_from([0, 1, HOUR_MS - 1]),
    )


@st.composite
def histories(draw):
    """Events within 2 to 420 days (the longest window is 365), of few counter keys: cells share bands."""
    days = draw(st.sampled_from([2, 10, 40, 420]))
    return draw(
        st.lists(
            st.tuples(
                times(days),
                st.integers(0, 1),
                st.sets(st.integers(0, len(SPEC.all_groups) - 1), min_size=1).map(tuple),
                st.integers(-(10**6), 10**6),
            ),
            max_size=40,
        )
    )


moves = st.lists(st.sampled_from([1, 8, 40, 400]).flatmap(times), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS, histories(), moves, st.integers(-20_000, 20_000))
def test_the_compiled_clock_move_leaves_the_arrays_and_groups_the_python_one_left(cfg, evs, steps, epoch_days):
    base = BASE + epoch_days * DAY_MS  # clocks before 1970 too: buckets and tags negative
    s = CustomerState()
    for at, ti, gs, c in sorted(evs):
        s.apply_run(cfg, base + at, ti, {g: [1, c] for g in gs}, 1)
    if s.clock is None:
        return
    for step in steps:
        now = s.clock + step
        reference = copy.deepcopy(s)
        want = python_advance(cfg, reference, s.clock, now)
        got = advance_state(cfg.cell_layout, s._cells, s._band_tags, s._band_sums, s._last, s.clock, now)
        assert got == want
        assert arrays(s) == arrays(reference) and s._last.tolist() == reference._last.tolist()
        s.clock = reference.clock = now


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS, histories(), histories(), st.integers(-20_000, 20_000))
def test_the_compiled_count_leaves_the_arrays_and_groups_the_python_count_left(cfg, evs, runs, epoch_days):
    base = BASE + epoch_days * DAY_MS
    s = CustomerState()
    for at, ti, gs, c in sorted(evs):
        s.apply_run(cfg, base + at, ti, {g: [1, c] for g in gs}, 1)
    for at, ti, gs, c in runs:  # any order: late runs, runs into a window's past, into a new group
        counts = {g: [1 + g, c * (g + 1)] for g in gs}  # several events per group: a basket's lines
        ts = base + at
        if s.clock is None or ts > s.clock:
            s.advance(cfg, ts) if s.clock is not None else s._start(cfg, ts)
        reference = copy.deepcopy(s)
        want = python_counts(cfg, reference, ts, ti, counts)
        got: set[int] = set()
        apply_counts(cfg.cell_layout, s._cells, s._band_tags, s._band_sums, s._last, s.clock, ts, ti, counts, got)
        assert got == want
        assert arrays(s) == arrays(reference) and s._last.tolist() == reference._last.tolist()


def python_count_run(groups: list[tuple[int, ...]], cents: list[int]) -> dict[int, list[int]]:
    """The counting ``stream.apply.apply_events`` did per event, in Python (up to 2026-12-05)."""
    counts: dict[int, list[int]] = {}
    for gs, c in zip(groups, cents, strict=True):
        for g in gs:
            run = counts.get(g)
            if run is None:
                counts[g] = [1, c]
            else:
                run[0] += 1
                run[1] += c
    return counts


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple), st.integers(0, 10**11)),
        max_size=40,
    )
)
def test_a_runs_counts_are_the_python_counts_in_the_order_their_groups_were_met(events):
    groups, cents = [gs for gs, _ in events], [c for _, c in events]
    got, want = count_run(groups, cents, 7), python_count_run(groups, cents)
    assert got == want and list(got) == list(want)  # the order matters: records are added in it


def test_a_run_with_a_group_beyond_the_layout_is_a_one_line_error():
    with pytest.raises(ValueError, match="group 7 of an event is beyond the layout's 7 groups"):
        count_run([(1, 7)], [100], 7)
    with pytest.raises(ValueError, match="groups but"):
        count_run([(1,)], [], 7)


def test_a_missing_band_record_is_a_one_line_error_not_a_crash():
    s = CustomerState()
    s.apply_run(CFG, BASE, 0, {0: [1, 100]}, 1)
    del s._band_tags[:]
    del s._band_sums[:]
    with pytest.raises(ValueError, match=r"no band record of window .* the state is damaged"):
        advance_cells(CFG.cell_layout, s._cells, s._band_tags, s._band_sums, BASE, BASE + 2 * DAY_MS)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s._band_sums.pop(),  # a band record's sums cut short
        lambda s: s._cells[0].pop(),  # a cell without its pair
        lambda s: s._cells.pop(),  # a bucket size without its cells
        lambda s: s._last.pop(),  # a group without its time
    ],
)
def test_arrays_that_do_not_fit_the_layout_are_a_one_line_error_in_every_walk(damage):
    """A damaged state is refused before the compiled walks read past its arrays (they do not check bounds)."""
    for walk in (
        lambda s: s.advance(CFG, BASE + 40 * DAY_MS),
        lambda s: s.apply_run(CFG, BASE, 1, {0: [1, 5]}, 1),
        lambda s: write_rows(CFG, [s], CFG.new_row().reshape(1, -1)),
        lambda s: next_changes(CFG, [s]),
    ):
        s = CustomerState()
        s.apply_run(CFG, BASE, 0, {0: [1, 100], 3: [1, 100]}, 1)
        damage(s)
        with pytest.raises(ValueError, match="the state is damaged"):
            walk(s)


def test_a_key_or_group_beyond_the_layout_is_refused_where_a_row_is_written():
    s = CustomerState()
    s.apply_run(CFG, BASE, 0, {0: [1, 100]}, 1)
    s._band_tags[0] |= KEY_MASK  # a counter key past the layout's
    with pytest.raises(ValueError, match=r"counter key 65535 of .*: the state is damaged"):
        write_rows(CFG, [s], CFG.new_row().reshape(1, -1))
    s = CustomerState()
    s.apply_run(CFG, BASE, 0, {0: [1, 100]}, 1)
    s._last[0] = 99  # a group past the layout's
    with pytest.raises(ValueError, match="group 99 of 4: the state is damaged"):
        write_rows(CFG, [s], CFG.new_row().reshape(1, -1))


def test_the_layout_pickles_with_its_config_and_refuses_more_windows_than_it_holds():
    assert pickle.loads(pickle.dumps(CFG)).cell_layout.args == CFG.cell_layout.args
    with pytest.raises(ValueError, match="exceed the compiled layout"):
        CellLayout(tuple(range(1, 10)), ((),) * 9, (), 4, 0, 0, (0,), (), (), 0, 0)
