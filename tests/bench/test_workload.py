"""The live workload of bench/suite.py: clones of households, their baskets, stamped with produce time."""

from __future__ import annotations

import doctest
import json
import random
import time
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.suite import applied_unmoved, freshness, lag_summary
from bench.workload import CloneWorkload, Wire, offer, payload
from schemas.events import EventRecord


def household_records(n_households: int = 7, seed: int = 3) -> list[EventRecord]:
    """Events of a few households, several baskets each (events of one timestamp), in time order."""
    rng = random.Random(seed)
    out = []
    for h in range(n_households):
        ts = 1_500_000_000_000 + h
        for b in range(rng.randint(1, 6)):
            ts += rng.randint(1, 10) * 3_600_000
            for k in range(rng.randint(1, 4)):
                item = f"i{rng.randint(0, 30)}"
                out.append(EventRecord(str(100 + h), item, rng.randint(0, 2), ts, f"{h}-{b}-{k}", 1.0, 99 + k, ""))
    out.sort(key=lambda r: r.ts_ms)
    return out


def mix(records) -> list[tuple]:
    return [(r.item_id, r.type_index, r.quantity, r.value_cents) for r in records]


def test_clones_have_distinct_ids_and_each_replays_its_households_events_in_order():
    records = household_records()
    houses = sorted({r.user_id for r in records})
    w = CloneWorkload(records, customers=3 * len(houses) + 2, seed=0)
    per_user = defaultdict(list)
    for user, rec in w.events(rounds=w.rounds):
        per_user[user].append(rec)
    assert len(per_user) == w.customers
    for user, recs in per_user.items():
        house, clone = user[1:].split("~")
        assert house in houses and 0 <= int(clone) <= 3
        assert mix(recs) == mix(r for r in records if r.user_id == house)  # the household's events, in order


def test_every_customer_gets_a_basket_before_anyone_gets_a_second():
    records = household_records()
    w = CloneWorkload(records, customers=20, seed=5)
    first_round = list(w.events(rounds=1))
    assert {u for u, _ in first_round} == {w.name(c) for c in range(20)}
    assert len(first_round) == sum(len(w.baskets[c % len(w.households)][0]) for c in range(20))
    # the round is baskets: a customer's events of the round are consecutive and of one household timestamp
    runs = [u for k, (u, _) in enumerate(first_round) if k == 0 or first_round[k - 1][0] != u]
    assert len(runs) == 20
    assert all(len({r.ts_ms for u2, r in first_round if u2 == u}) == 1 for u in runs)


def test_the_doctests_of_the_workload_and_the_rate_search_pass():
    import bench.suite
    import bench.workload

    assert doctest.testmod(bench.workload).failed == 0
    assert doctest.testmod(bench.suite).failed == 0


@settings(deadline=None)  # the first example may pay for imports and warm-up (took 260 ms once)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["h1~0", "h2~7", 'h"3\\~1', "h\u00e94~2"]),
            st.integers(0, 5),  # which of a few records (a record comes back, as clones share them)
            st.integers(0, 2**45),
            st.integers(0, 10**9),
        ),
        max_size=30,
    ),
    records=st.lists(
        st.builds(
            EventRecord,
            user_id=st.text(max_size=3),
            item_id=st.text(max_size=8),
            type_index=st.integers(0, 2),
            ts_ms=st.integers(0, 2**45),
            event_id=st.text(max_size=3),
            quantity=st.floats(allow_nan=False, allow_infinity=False),
            value_cents=st.integers(-(10**9), 10**9),
            source=st.just(""),
        ),
        min_size=6,
        max_size=6,
    ),
    run=st.text(min_size=1, max_size=6),
)
def test_the_generators_wire_bytes_are_json_dumps_of_each_event(events, records, run):
    wire = Wire(run)
    for user, k, now_ms, n in events:
        assert wire(user, records[k], now_ms, n) == payload(user, records[k], now_ms, f"{run}-{n}")


def test_a_range_of_customers_and_a_seed_choose_who_and_in_which_order():
    records = household_records()
    a = list(CloneWorkload(records, 30, seed=1).events(5, 12, rounds=2))
    assert {u for u, _ in a} == {CloneWorkload(records, 30).name(c) for c in range(5, 12)}
    assert a == list(CloneWorkload(records, 30, seed=1).events(5, 12, rounds=2))  # deterministic
    assert a != list(CloneWorkload(records, 30, seed=2).events(5, 12, rounds=2))  # another order


def test_endless_events_start_the_rounds_again():
    records = household_records(2)
    w = CloneWorkload(records, 2, seed=0)
    once = list(w.events(rounds=w.rounds))
    it = w.events()
    assert [next(it) for _ in range(2 * len(once))] == once + once


def test_freshness_is_the_first_refresh_at_or_after_each_event():
    produced = {"a": [1000, 2000, 9000], "b": [500]}
    seen = {"a": ([1000, 2500], [1300, 2600]), "b": ([], [])}
    pairs, unseen, last = freshness(produced, seen)
    assert pairs == [(1000, 0.3), (2000, 0.6)] and unseen == 2 and last == 2600
    assert lag_summary(pairs, unseen)["bounded"] is False  # an event whose score never showed


def test_an_event_without_a_score_row_but_with_a_feature_row_after_it_was_applied_not_lost():
    # scores are written when they move: a refresh that moved none leaves only its feature row
    produced = {"a": [1000, 2000, 9000], "b": [500], "c": [700]}
    seen = {"a": ([1000, 2500], [1300, 2600]), "b": ([], []), "c": ([], [])}
    features = {"a": 9000, "b": 400}  # a's last event applied (no score moved); b's not; c never refreshed
    _, unseen, _ = freshness(produced, seen)
    assert unseen == 3 and applied_unmoved(produced, seen, features) == 1


@pytest.mark.integration
@pytest.mark.kafka
def test_offer_sends_every_event_keyed_by_customer_and_stamped_when_produced(bootstrap):
    from confluent_kafka import Consumer

    from bench.common import new_topic

    records = household_records()
    w = CloneWorkload(records, 50, seed=0)
    topic = new_topic(bootstrap, 2, prefix="t-offer")
    t0 = int(time.time() * 1000)
    sent = offer(bootstrap, topic, w.events(), rate=1000, seconds=1.5, run="r1")
    t1 = int(time.time() * 1000)
    assert sent["events"] == 1500 and sum(len(v) for v in sent["produced"].values()) == 1500
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-offer", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < sent["events"] and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got.append((m.key().decode(), json.loads(m.value())))
    consumer.close()
    assert len(got) == 1500
    assert all(key == v["user_id"] for key, v in got)
    assert all(t0 <= v["timestamp"] <= t1 for _, v in got)  # times are the produce time, not the household's
    assert len({v["event_id"] for _, v in got}) == 1500
    stamps = defaultdict(list)
    for _, v in got:
        stamps[v["user_id"]].append(v["timestamp"])
    assert {u: sorted(s) for u, s in stamps.items()} == {u: sorted(s) for u, s in sent["produced"].items()}


def test_the_report_shows_the_events_the_streams_own_counts_leave_unaccounted_for():
    from bench.suite import not_applied
    from bench.suite_report import report

    summaries = [{"applied": 5, "dead_letters": 1}, {"applied": 2, "dead_letters": 0}]
    assert not_applied(10, summaries) == 2  # 8 of 10 applied or dead letters
    assert not_applied(10, [*summaries, {"stopped": True}]) is None  # a stopped stream gave no counts
    load = {
        "processes": 2, "rate": 10, "achieved_rate": 10, "events": 10, "customers": 4, "p50_s": 0.5, "p99_s": 0.9,
        "max_s": 1.0, "never_visible": 0, "applied_no_score_moved": 0, "not_applied": 2, "head_median_s": 0.5,
        "tail_median_s": 0.5, "stream_cpu_per_event_us": 100.0, "generator_cpu_per_event_us": 12.5,
        "broker_cpu_per_event_us": 15.0, "sustained": False,
    }  # fmt: skip
    res = {
        "started": "s", "ended": "e", "load_before": 0.1, "load_after": 0.2, "command": "c", "customers": 4,
        "producer_ceiling": 100, "seconds": 1, "loads": [load], "max_sustained": {2: None},
        "machine": {"cores": 2, "cpu": "x", "mem_gib": 1, "commit": "abc"},
    }  # fmt: skip
    row = next(line for line in report(res).splitlines() if line.startswith("| 2 | 10 |"))
    assert row.split(" | ")[10] == "2"  # the not-applied column
    assert row.split(" | ")[13] == "12.5 / 15.0"  # the CPU beside the streams'
    del load["broker_cpu_per_event_us"]  # a broker elsewhere
    row = next(line for line in report(res).splitlines() if line.startswith("| 2 | 10 |"))
    assert row.split(" | ")[13] == "12.5 / —"


def test_the_batch_at_a_measured_rate_reads_a_horizon_of_that_traffic_and_the_report_says_so():
    """Section 3's ratios: the batch's refresh over one feature horizon of the measured traffic (its fit), and the
    archive length at which the batch at 1-hour freshness costs 20x the stream."""
    from bench.suite import HORIZON_DAYS, cost_ratios
    from bench.suite_report import _alternatives

    assert HORIZON_DAYS == 365
    batch = {
        "impl": "vectorised", "customers": 10, "events": 1000, "cpu_s_per_refresh": 0.5, "wall_s_per_refresh": 0.5,
        "cpu_us_per_customer": 50_000, "fit_us_per_event": 0.1, "fit_us_per_customer": 200.0,
        "scaling": [{"events": 1000, "customers": 10, "cpu_s": 0.5}],
    }  # fmt: skip
    load = {"processes": 1, "events": 60_000, "achieved_rate": 1_000, "stream_cpu_s": 1.0, "p99_s": 0.5}
    load["stream_cpu_per_event_us"] = 1.0 / 60_000 * 1e6
    (row,) = cost_ratios(batch, [load], customers=100_000)
    stream_day = 1.0 / 60 * 86400  # 1,440 CPU-s
    refresh = (0.1 * 1_000 * 86400 * 365 + 200.0 * 100_000) / 1e6  # 3,173.6 CPU-s
    assert row["batch_cpu_s_per_refresh"] == pytest.approx(refresh)
    assert row["1 h"] == pytest.approx(24 * refresh / stream_day)
    days = row["archive_days_20x"]
    assert 0 < days < 365
    assert 24 * (0.1 * 1_000 * 86400 * days + 200.0 * 100_000) / 1e6 == pytest.approx(20 * stream_day)
    load["stream_cpu_s"] = 6.0  # a stream 6x dearer: 20x is out of reach within the horizon
    (dear,) = cost_ratios(batch, [load], customers=100_000)
    assert dear["archive_days_20x"] is None
    text = "\n".join(_alternatives({"batch": batch, "naive": {"groups": 25, "events_per_cpu_s": 100}, "ratios": [row]}))
    assert "0.1 CPU-µs per event read + 200.0 per customer" in text
    assert "| 1,000 events/s, 100,000 customers | 1,440 | 31,536,000,000 | 3,173.6 |" in text


def test_a_phase_with_a_freshness_setting_is_its_own_row_and_counts_only_at_the_freshness_it_met():
    from bench.suite import cost_ratios, max_sustained
    from bench.suite_report import _alternatives

    batch = {"impl": "vectorised", "customers": 10, "events": 1000, "cpu_s_per_refresh": 0.5}
    batch |= {"wall_s_per_refresh": 0.5, "cpu_us_per_customer": 50_000}
    base = {"processes": 1, "rate": 1_000, "events": 60_000, "achieved_rate": 1_000, "sustained": True}
    default = base | {"stream_cpu_s": 6.0, "stream_cpu_per_event_us": 100.0, "p99_s": 0.5, "idle_cpu_s_per_s": 0.005}
    minute = base | {"stream_cpu_s": 2.0, "stream_cpu_per_event_us": 33.3, "p99_s": 25.0, "freshness_setting": 60.0}
    late = minute | {"rate": 2_000, "achieved_rate": 2_000, "events": 120_000, "p99_s": 90.0, "idle_cpu_s_per_s": 0.001}
    rows = {r["traffic"]: r for r in cost_ratios(batch, [default, minute, late], customers=10)}
    a, b = rows["1,000 events/s, 10 customers"], rows["1,000 events/s, 10 customers, freshness_seconds 60"]
    assert b["1 min"] == pytest.approx(3 * a["1 min"])  # a third of the CPU: three times the ratio
    over = rows["2,000 events/s, 10 customers, freshness_seconds 60"]
    assert over["1 min"] is None and over["1 h"] is not None  # its p99 (90 s) missed a minute
    cj = {t: r for t, r in rows.items() if t.startswith("The Complete Journey")}
    assert set(cj) == {
        "The Complete Journey (4,025 events/day)",
        "The Complete Journey (4,025 events/day), freshness_seconds 60",
    }
    setting = cj["The Complete Journey (4,025 events/day), freshness_seconds 60"]
    assert setting["stream_cpu_s_day"] == pytest.approx(0.001 * 86400 + 4025 * 33.3e-6)  # its own idle and events
    assert setting["1 min"] is None  # the setting's worst p99 (90 s) missed a minute
    assert max_sustained([default, minute | {"rate": 5_000}]) == {1: 1_000}  # a setting's phases do not count
    text = "\n".join(
        _alternatives({"batch": batch, "naive": {"groups": 25, "events_per_cpu_s": 100}, "ratios": [over]})
    )
    assert "| 2,000 events/s, 10 customers, freshness_seconds 60 |" in text and "| — |" in text


def test_the_state_section_shows_every_rss_reading_and_the_slope_through_them():
    from bench.suite_report import report

    res = {
        "started": "s", "ended": "e", "load_before": 0.1, "load_after": 0.2, "command": "c", "customers": 4,
        "producer_ceiling": 100, "seconds": 1, "loads": [], "max_sustained": {},
        "machine": {"cores": 2, "cpu": "x", "mem_gib": 1, "commit": "abc"},
        "state": {
            "snapshot_seconds": 10.0, "customers": [20_000, 60_000, 100_000], "rss_mb": [600.0, 680.5, 760.0],
            "bytes_per_customer": 2_000, "snapshot_bytes_per_epoch": {"0": 68, "1000": 1_000_000},
        },
    }  # fmt: skip
    line = next(x for x in report(res).splitlines() if x.startswith("- Memory per live customer"))
    assert "600.0 MB at 20,000, 680.5 MB at 60,000, 760.0 MB at 100,000 customers" in line
    assert "**2,000 bytes per customer** (the least-squares slope)" in line
    assert "100,000 customers in state" in report(res)


def test_a_phase_served_with_customers_preloaded_says_how_many_and_what_they_cost():
    from bench.suite_report import report

    load = {
        "processes": 1, "rate": 10, "achieved_rate": 10, "events": 10, "customers": 4, "p50_s": 0.5, "p99_s": 0.9,
        "max_s": 1.0, "never_visible": 0, "not_applied": 0, "stream_cpu_per_event_us": 100.0, "sustained": True,
        "preload": {
            "customers": 1_000_000, "events": 12_700_000, "seconds": 400.0, "events_per_s": 31_750,
            "settle_s": 35.0, "rss_mb_before": 600.0, "rss_mb_after": 2_300.0, "bytes_per_customer": 1_783,
            "bytes_per_customer_overall": 1_990,
        },
    }  # fmt: skip
    res = {
        "started": "s", "ended": "e", "load_before": 0.1, "load_after": 0.2, "command": "c", "customers": 4,
        "producer_ceiling": 100, "seconds": 1, "loads": [load, {**load, "preload": None}], "max_sustained": {1: 10},
        "machine": {"cores": 2, "cpu": "x", "mem_gib": 1, "commit": "abc"},
    }  # fmt: skip
    lines = report(res).splitlines()
    assert sum(x.startswith("| 1, 1,000,000 customers in state | 10 |") for x in lines) == 1
    assert sum(x.startswith("| 1 | 10 |") for x in lines) == 1  # a phase without preload is named as before
    held = [x for x in lines if x.startswith("- 1, 1,000,000 customers in state at 10 events/s")]
    assert held == [
        "- 1, 1,000,000 customers in state at 10 events/s: 12,700,000 events applied in 400.0 s (31,750 events/s), "
        "settled in 35.0 s; RSS 600.0 → 2,300.0 MB, **1,783 bytes per customer** (slope), 1,990 overall"
    ]
