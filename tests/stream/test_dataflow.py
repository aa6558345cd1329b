"""The dataflow of ``stream.dataflow.build_dataflow``, run by Bytewax's testing runtime: no ClickHouse, no Kafka.

The input is a synthetic world's events, keyed to source partitions by
customer (as Kafka keys them), with faults injected whose fate is known when
they are made: bad JSON, non-objects, invalid events, re-deliveries, events
later than the allowed lateness, events too far ahead, and events out of order
but within the lateness. Every raw record thus has an expected fate, set by the
contract and not by running the code. The batches are ``SourceBatch`` items of
a ``TestingSource`` (several partitions through their ``part``/``n_parts``);
shard outputs and dead letters are collected by ``TestingSink``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from bytewax.outputs import DynamicSink
from bytewax.testing import TestingSink, TestingSource, run_main

from models.registry import ModelRegistry
from models.scorer import ProductionModels
from offline_train.dataset import build_examples, replay_features
from offline_train.train import TrainPlan, train_group
from schemas.events import DeadLetter, Event, EventRecord, FeatureRow
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, load_groups
from schemas.mapping import ColumnMapping
from stream.dataflow import FlowConfig, build_dataflow
from stream.parse import EventParser
from stream.shard import ShardOutput, shard_of
from stream.sinks.base import RunStats, table_rows
from stream.sources.base import SourceBatch
from stream.state import StateConfig
from tests.synthetic import DAY_MS, make_world

HOUR_MS = 3_600_000
LATENESS_MS = 6 * HOUR_MS
MAX_AHEAD_MS = 10 * DAY_MS
N_PARTS = 3
APPLIED = "applied"
# Expected fate of an injected fault -> how the dead letter's reason starts.
DEAD_REASONS = {
    "bad_json": "bad JSON",
    "not_object": "not an object",
    "invalid": "invalid event",
    "late": "late:",
    "ahead": "ahead:",
    "duplicate": "duplicate:",
}
SHARD_FOUND = {"duplicate"}  # the rest are found by parse and watermark, before the shards


@dataclass(frozen=True)
class Raw:
    """One raw input record and what must become of it."""

    part: str
    source: str
    payload: str
    fate: str  # APPLIED or a key of DEAD_REASONS


@dataclass
class Flow:
    """What one run of the dataflow sent to its sinks."""

    outputs: list[ShardOutput]
    dead: list[DeadLetter]
    stats: RunStats


@dataclass(frozen=True)
class Setup:
    catalog: GroupCatalog
    cfg: StateConfig
    raws: list[Raw]


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _ts(event: dict) -> int:
    return Event.model_validate(event).ts_ms


def faulty_log(events: list[dict], seed: int = 3) -> list[Raw]:
    """Events in time order, keyed to partitions by customer, with faults injected after some of them.

    The partition's watermark is tracked here from its definition (the latest
    event time accepted so far), so that each injected event's fate is known.
    """
    rng = random.Random(seed)
    out: list[Raw] = []
    count: Counter[str] = Counter()
    watermark: dict[str, int] = {}

    def add(part: str, payload: str, fate: str) -> None:
        count[part] += 1
        out.append(Raw(part, f"{part}:{count[part]}", payload, fate))

    for n, e in enumerate(events):
        part = f"p{zlib.crc32(e['user_id'].encode()) % N_PARTS}"
        ts = _ts(e)
        add(part, json.dumps(e), APPLIED)
        wm = watermark[part] = max(ts, watermark.get(part, ts))
        fault = rng.choices(
            ["none", "duplicate", "late", "ahead", "bad_json", "not_object", "invalid", "in_lateness"],
            weights=[70, 5, 4, 3, 3, 2, 3, 6],
        )[0]
        other = {**e, "event_id": f"{e['event_id']}-{fault}"}
        if fault == "duplicate":  # a re-delivery of the same event
            add(part, json.dumps(e), "duplicate")
        elif fault == "late":
            add(part, json.dumps({**other, "timestamp": _iso(wm - LATENESS_MS - rng.randrange(1, 3 * DAY_MS))}), "late")
        elif fault == "ahead":
            add(part, json.dumps({**other, "timestamp": _iso(wm + MAX_AHEAD_MS + rng.randrange(1, DAY_MS))}), "ahead")
        elif fault == "bad_json":
            add(part, json.dumps(other)[: rng.randrange(1, 30)], "bad_json")
        elif fault == "not_object":
            add(part, json.dumps([other["user_id"], n]), "not_object")
        elif fault == "invalid":
            add(part, json.dumps({k: v for k, v in other.items() if k != "user_id"}), "invalid")
        elif fault == "in_lateness":  # out of order, but within the allowed lateness: applied
            add(part, json.dumps({**other, "timestamp": _iso(wm - rng.randrange(0, LATENESS_MS))}), APPLIED)
    return out


def cut_batches(
    raws: list[Raw], max_batch: int, interleave: str, seed: int = 0, n_parts: int = N_PARTS
) -> list[SourceBatch]:
    """Each partition's records in its own order, cut into batches of 1..max_batch, partitions interleaved.

    ``interleave``: "round_robin", "sequential" (one partition after the other)
    or "random". The last batch of each partition is marked final.
    """
    rng = random.Random(seed)
    by_part: dict[str, list[Raw]] = defaultdict(list)
    for r in raws:
        by_part[r.part].append(r)
    chunks: dict[str, list[SourceBatch]] = {}
    for part, rs in sorted(by_part.items()):
        i, batches = 0, []
        while i < len(rs):
            size = rng.randint(1, max_batch)
            batches.append(SourceBatch([(r.source, r.payload) for r in rs[i : i + size]], None, part, n_parts))
            i += size
        batches[-1].final = True
        chunks[part] = batches
    out: list[SourceBatch] = []
    parts = sorted(chunks)
    if interleave == "sequential":
        for p in parts:
            out += chunks[p]
    else:
        pos = dict.fromkeys(parts, 0)
        turn = 0
        while parts:
            p = rng.choice(parts) if interleave == "random" else parts[turn % len(parts)]
            out.append(chunks[p][pos[p]])
            pos[p] += 1
            if pos[p] == len(chunks[p]):
                parts.remove(p)
            else:
                turn += 1
    return out


def run_flow(
    setup: Setup,
    batches: list[SourceBatch],
    n_shards: int,
    models=None,
    n_dead_sinks: int = 1,
    max_batch_event_ms: int = 0,
) -> Flow:
    outputs: list[ShardOutput] = []
    dead: list[DeadLetter] = []
    # Step ids as production names them (``propstream.app.run_stream``).
    names = ["clickhouse_dead_letters", "dead_letter_topic"][:n_dead_sinks]
    sinks: dict[str, DynamicSink[DeadLetter]] = {name: TestingSink(dead) for name in names}
    stats = RunStats()
    flow = build_dataflow(
        TestingSource(batches),
        EventParser(ColumnMapping()),
        setup.cfg,
        setup.catalog,
        models,
        TestingSink(outputs),
        sinks,
        FlowConfig(n_shards, LATENESS_MS, MAX_AHEAD_MS, recovery=False, max_batch_event_ms=max_batch_event_ms),
        stats,
    )
    run_main(flow)
    return Flow(outputs, dead, stats)


def expected_records(raws: list[Raw]) -> list[EventRecord]:
    return [Event.model_validate_json(r.payload).to_record(r.source) for r in raws if r.fate == APPLIED]


def final_features(outputs: list[ShardOutput]) -> dict[str, FeatureRow]:
    """The last feature row of every customer by version (what ReplacingMergeTree keeps)."""
    last: dict[str, FeatureRow] = {}
    for o in outputs:
        for row in o.features:
            if row.user_id not in last or row.version >= last[row.user_id].version:
                last[row.user_id] = row
    return last


def dense(cfg: StateConfig, features: dict[str, float]) -> np.ndarray:
    """A feature row as a vector (absent counters are 0, as ``customer_features`` stores them)."""
    row = cfg.new_row()
    for name, value in features.items():
        row[cfg.spec.index[name]] = value
    return row


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    world = make_world(tmp_path_factory.mktemp("dataflow-world"), n_users=30, n_events=1200)
    with Path(world.catalog_file).open(newline="") as f:
        catalog = GroupCatalog.build(load_groups(world.groups_file), list(csv.DictReader(f)))
    cfg = StateConfig.build(FeatureSpec(groups=catalog.names))
    return Setup(catalog, cfg, faulty_log(world.events))


@pytest.fixture(scope="module")
def runs(setup: Setup):
    """Runs of the dataflow over the same log, cached by (n_shards, max_batch, interleave)."""
    cache: dict[tuple[int, int, str], Flow] = {}

    def get(n_shards: int, max_batch: int, interleave: str) -> Flow:
        key = (n_shards, max_batch, interleave)
        if key not in cache:
            cache[key] = run_flow(setup, cut_batches(setup.raws, max_batch, interleave), n_shards)
        return cache[key]

    return get


BASE = (3, 40, "round_robin")


def test_the_log_has_every_kind_of_fault(setup: Setup):
    """Guards the other tests: each fate they check occurs, in every partition."""
    fates = Counter((r.part, r.fate) for r in setup.raws)
    for part in (f"p{k}" for k in range(N_PARTS)):
        for fate in [APPLIED, *DEAD_REASONS]:
            assert fates[(part, fate)] > 0, (part, fate)


def test_conservation_every_record_is_applied_or_exactly_one_dead_letter(setup: Setup, runs):
    flow = runs(*BASE)
    applied = Counter(rec.source for o in flow.outputs for rec in o.applied)
    dead = Counter(d.source for d in flow.dead)
    assert flow.stats.events_in == len(setup.raws)
    assert applied + dead == Counter(r.source for r in setup.raws)  # each position once, in one place
    assert set(applied) == {r.source for r in setup.raws if r.fate == APPLIED}


def test_dead_letters_carry_the_reason_of_the_step_that_found_them(setup: Setup, runs):
    flow = runs(*BASE)
    by_source = {d.source: d for d in flow.dead}
    for r in setup.raws:
        if r.fate == APPLIED:
            continue
        letter = by_source[r.source]
        assert letter.reason.startswith(DEAD_REASONS[r.fate]), (r, letter)
        if r.fate in ("bad_json", "not_object", "invalid"):
            assert letter.payload == r.payload  # the raw input, as received
        else:  # a valid event: its payload replays as the same event
            again = Event.model_validate_json(letter.payload).to_record(r.source)
            assert again == Event.model_validate_json(r.payload).to_record(r.source)


def test_dead_letters_leave_by_their_own_stream_to_every_dead_letter_sink(setup: Setup):
    flow = run_flow(setup, cut_batches(setup.raws, 40, "round_robin"), 3, n_dead_sinks=2)
    expected = Counter(r.source for r in setup.raws if r.fate != APPLIED)
    assert Counter(d.source for d in flow.dead) == Counter({s: 2 for s in expected})
    assert flow.stats.events_in == len(setup.raws)


def test_no_dead_letter_reaches_the_shard_output_tables(setup: Setup, runs):
    """Shard outputs are real shards; what they write holds no dead letters and exactly the applied events."""
    flow = runs(*BASE)
    assert flow.outputs and all(0 <= o.shard < BASE[0] for o in flow.outputs)
    fate = {r.source: r.fate for r in setup.raws}
    # A shard's own dead letters (duplicates) may ride along in its output, unwritten; no others do.
    assert {fate[d.source] for o in flow.outputs for d in o.dead_letters} <= SHARD_FOUND
    tables = table_rows(flow.outputs, setup.cfg.type_names)
    assert "dead_letters" not in tables
    assert sorted(tables["events"]["source"]) == sorted(r.source for r in setup.raws if r.fate == APPLIED)


@pytest.mark.parametrize("n_shards", [1, 4])
def test_a_customers_rows_all_come_from_its_shard(setup: Setup, runs, n_shards: int):
    flow = runs(n_shards, 40, "random")
    assert {o.shard for o in flow.outputs} == set(range(n_shards))
    for o in flow.outputs:
        users = {r.user_id for r in o.applied} | {f.user_id for f in o.features} | set(o.scores.user_id)
        users |= {json.loads(d.payload)["user_id"] for d in o.dead_letters}
        assert {shard_of(u, n_shards) for u in users} <= {o.shard}
        assert {row.shard for row in o.item_activity} <= {o.shard}


@pytest.mark.parametrize(
    "variant",
    [(1, 500, "sequential"), (4, 7, "random"), (7, 4, "round_robin"), (2, 90, "sequential")],
    ids=lambda v: f"{v[0]}shards-batch{v[1]}-{v[2]}",
)
def test_results_do_not_depend_on_shard_count_batch_cuts_or_partition_interleaving(runs, variant):
    base, other = runs(*BASE), runs(*variant)
    assert {u: f.features for u, f in final_features(other.outputs).items()} == {
        u: f.features for u, f in final_features(base.outputs).items()
    }
    assert Counter(other.dead) == Counter(base.dead)  # same verdicts, same reasons
    assert sorted(r for o in other.outputs for r in o.applied) == sorted(r for o in base.outputs for r in o.applied)


@pytest.mark.parametrize("variant", [BASE, (1, 500, "sequential"), (5, 3, "random")], ids=str)
def test_final_features_equal_an_offline_replay_of_the_applied_events(setup: Setup, runs, variant):
    """Parity at the end: the stream's last row per customer equals ``replay_features`` at the last event time."""
    flow = runs(*variant)
    records = expected_records(setup.raws)
    end = max(r.ts_ms for r in records)
    offline = replay_features(records, setup.cfg, setup.catalog, [end])[end]
    stream = final_features(flow.outputs)
    assert set(stream) == set(offline)
    assert max(f.as_of for f in stream.values()) == end
    for user, row in offline.items():
        np.testing.assert_array_equal(dense(setup.cfg, stream[user].features), row, err_msg=user)


def test_item_activity_counts_every_applied_event_once(setup: Setup, runs):
    """Cells are cumulative per shard: the last count of each (hour, item, type), summed over shards."""
    flow = runs(4, 11, "random")
    last: dict[tuple, tuple[int, float]] = {}
    for o in flow.outputs:
        for row in o.item_activity:
            key = (row.hour, row.item_id, row.type, row.shard)
            if key not in last or row.events >= last[key][0]:
                last[key] = (row.events, row.value)
    got: Counter[tuple] = Counter()
    for (hour, item, type_, _), (n, _) in last.items():
        got[(hour, item, type_)] += n
    want = Counter(
        (r.ts_ms - r.ts_ms % HOUR_MS, r.item_id, ("view", "cart", "purchase")[r.type_index])
        for r in expected_records(setup.raws)
    )
    assert got == want


# A small model per group: trained on the synthetic world's first months, a few trees.
PLAN = TrainPlan(
    train=(datetime(2017, 2, 1, tzinfo=UTC), datetime(2017, 2, 15, tzinfo=UTC), datetime(2017, 3, 1, tzinfo=UTC)),
    calibrate=(datetime(2017, 4, 1, tzinfo=UTC),),
    test=None,
)


@pytest.fixture(scope="module")
def registry(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = ModelRegistry(tmp_path_factory.mktemp("dataflow-models"))
    ex = build_examples(expected_records(setup.raws), setup.cfg, setup.catalog, PLAN.all_cutoffs())
    for group in setup.cfg.spec.groups:
        params = {"min_child_weight": 1, "max_depth": 3, "nthread": 1}
        art = train_group(setup.cfg.spec, group, ex, PLAN, reg.next_version(group), params, rounds=15)
        reg.register(art)
        reg.promote(group, art.card.version)
    return reg


def final_scores(outputs: list[ShardOutput]) -> dict[tuple[str, str], tuple[int, float, int]]:
    """(user, group) -> (version, score, model version) of the last score row by version."""
    last: dict[tuple[str, str], tuple[int, float, int]] = {}
    for o in outputs:
        sc = o.scores
        for u, g, s, mv, v in zip(sc.user_id, sc.group_id, sc.score, sc.model_version, sc.version, strict=True):
            if (u, g) not in last or v >= last[(u, g)][0]:
                last[(u, g)] = (v, s, mv)
    return last


@pytest.mark.parametrize("n_shards", [1, 3])
def test_scores_are_the_production_model_on_the_final_features(setup: Setup, registry: ModelRegistry, n_shards):
    models = ProductionModels(setup.cfg.spec, registry, poll_seconds=3600)
    flow = run_flow(setup, cut_batches(setup.raws, 25, "random"), n_shards, models)
    for o in flow.outputs:  # no model changed during the run: only customers whose features changed are scored
        assert set(o.scores.user_id) <= {f.user_id for f in o.features}
    features = final_features(flow.outputs)
    scores = final_scores(flow.outputs)
    users = sorted(features)
    rows = np.vstack([dense(setup.cfg, features[u].features) for u in users])
    groups = setup.cfg.spec.groups
    assert set(scores) == {(u, g) for u in users for g in groups}
    for group in groups:
        version = registry.production_version(group)
        art = registry.load(group, version)
        expected = art.predict(np.ascontiguousarray(rows[:, art.input_positions(setup.cfg.spec.index)]))
        np.testing.assert_array_equal([scores[(u, group)][1] for u in users], expected, err_msg=group)
        assert {scores[(u, group)][2] for u in users} == {version}


def score_history(outputs: list[ShardOutput]) -> list[tuple]:
    """Every score row written (what ``score_history`` keeps), as (user, group, as_of, version, score, model)."""
    rows = []
    for o in outputs:
        sc = o.scores
        for u, g, s, mv, v in zip(sc.user_id, sc.group_id, sc.score, sc.model_version, sc.version, strict=True):
            rows.append((u, g, sc.as_of, v, s, mv))
    return sorted(rows)


@pytest.fixture(scope="module")
def day_cut_runs(setup: Setup, registry: ModelRegistry):
    """Runs with scoring and one-day event-time cuts, one partition after the other, cached by (batch, cut_ms)."""
    models = ProductionModels(setup.cfg.spec, registry, poll_seconds=3600)
    cache: dict[tuple[int, int], Flow] = {}

    def get(max_batch: int, cut_ms: int = DAY_MS, one_partition: bool = False) -> Flow:
        key = (max_batch, cut_ms, one_partition)
        if key not in cache:
            if one_partition:  # every record from one partition, in the log's order (as a file replay)
                raws = [dataclasses.replace(r, part="p0") for r in setup.raws]
                batches = cut_batches(raws, max_batch, "sequential", n_parts=1)
            else:
                batches = cut_batches(setup.raws, max_batch, "sequential")
            cache[key] = run_flow(setup, batches, 2, models, max_batch_event_ms=cut_ms)
        return cache[key]

    return get


def test_event_time_cuts_make_score_history_independent_of_the_batch_size(day_cut_runs):
    small, large = day_cut_runs(3), day_cut_runs(400)
    assert score_history(small.outputs)  # scored at all
    assert score_history(small.outputs) == score_history(large.outputs)


def test_without_event_time_cuts_score_history_follows_the_batch_size(day_cut_runs):
    """The control of the test above: cut by size only, the same two runs refresh at other times."""
    assert score_history(day_cut_runs(3, 0).outputs) != score_history(day_cut_runs(400, 0).outputs)


def test_an_event_time_cut_batch_spans_at_most_one_day_plus_the_lateness(day_cut_runs):
    """A batch ends when its partition's watermark enters a new day; older events are only those within lateness.

    One partition (a file replay): each shard step is one cut batch. With
    several, a shard step applies what its clock reached (see the as-of test below).
    """
    flow = day_cut_runs(400, one_partition=True)
    n_refreshes = 0
    for o in flow.outputs:
        if o.applied:
            times = [r.ts_ms for r in o.applied]
            day_start = max(times) // DAY_MS * DAY_MS
            assert min(times) >= day_start - LATENESS_MS
        n_refreshes += len(o.scores) > 0
    days = {r.ts_ms // DAY_MS for r in expected_records_of(flow)}
    assert n_refreshes >= len(days)  # at least one refresh per day with events


def expected_records_of(flow: Flow) -> list[EventRecord]:
    return [r for o in flow.outputs for r in o.applied]


def test_event_time_cuts_keep_conservation_and_final_scores(setup: Setup, day_cut_runs):
    cut, uncut = day_cut_runs(400), day_cut_runs(400, 0)
    assert sorted(r for o in cut.outputs for r in o.applied) == sorted(expected_records(setup.raws))
    assert Counter(cut.dead) == Counter(uncut.dead)
    # Versions come from the refresh times, which the cuts move; the final scores themselves do not change.
    assert {k: v[1:] for k, v in final_scores(cut.outputs).items()} == {
        k: v[1:] for k, v in final_scores(uncut.outputs).items()
    }


@pytest.mark.parametrize("interleave", ["round_robin", "random", "sequential"])
def test_a_row_as_of_t_holds_no_event_after_t_whatever_the_partitions_interleaving(setup: Setup, interleave: str):
    """Every customer refreshed by a shard step reflects only events at or before that step's as-of time.

    With several partitions, a shard's clock is the slowest one's watermark:
    the events of a partition ahead wait in the shard until the clock reaches
    them (before, 803-871 of ~1,270 events applied in a refresh lay after its
    as-of time, up to 46 days, in the interleavings that mix partitions).
    """
    flow = run_flow(setup, cut_batches(setup.raws, 25, interleave), 2, max_batch_event_ms=DAY_MS)
    applied_in_rows = after = 0
    clock: dict[int, int] = {}  # shard -> as-of time of its last refresh
    for o in flow.outputs:
        refreshed = set(o.features.user_id)
        for r in o.applied:
            if r.user_id in refreshed:
                applied_in_rows += 1
                after += r.ts_ms > o.features.as_of
            if o.shard in clock:  # no older than the last refresh, but for events within the lateness
                assert r.ts_ms >= clock[o.shard] - LATENESS_MS
        if refreshed:
            clock[o.shard] = o.features.as_of
    assert applied_in_rows  # the runs refresh customers whose events they apply
    assert after == 0, f"{after} of {applied_in_rows} events applied in a refresh lie after its as-of time"
