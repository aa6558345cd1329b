"""The vectorised batch baseline (bench/batch_features.py) equals the state machine, bit for bit.

The oracle is the single definition of the features: ``CustomerState``, run
by ``offline_train.dataset.replay_features`` and by the stream's own
``stream.apply.apply_events``. Compared row by row (``np.array_equal``) at
several as-of times, on The Complete Journey (skipped when its files are not
under the data directory) and on a synthetic world with views, duplicate
deliveries, out-of-order arrival and events refused as late.
"""

from __future__ import annotations

import doctest
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import bench.batch_features
from bench.batch_features import EventColumns, features_as_of
from offline_train.dataset import replay_features, rows_as_of, to_ms
from propstream import app
from schemas.events import Event, EventRecord
from schemas.features import DAY_MS
from schemas.groups import GroupCatalog
from schemas.settings import Settings
from stream.apply import apply_events
from stream.state import CustomerState, StateConfig
from tests.synthetic import make_world

ROOT = Path(__file__).resolve().parents[2]
CJ_DATES = [
    datetime(2017, 3, 1, tzinfo=UTC),
    datetime(2017, 7, 15, 12, 34, tzinfo=UTC),
    datetime(2017, 12, 1, tzinfo=UTC),
]


def mismatches(batch: dict[str, np.ndarray], oracle: dict[str, np.ndarray]) -> list[str]:
    """Customers whose rows differ (or who are in one side only)."""
    users = set(batch) | set(oracle)
    return sorted(u for u in users if u not in batch or u not in oracle or not np.array_equal(batch[u], oracle[u]))


def test_doctests():
    assert doctest.testmod(bench.batch_features).failed == 0


# -- The Complete Journey --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journey():
    """(records, state config, catalog) of The Complete Journey, from the data directory's files."""
    data_dir = Path(os.environ.get("PROPSTREAM_DATA_DIR", ROOT / "propstream-data"))
    files = data_dir / "completejourney"
    if not (files / "transactions.parquet").is_file() or not (files / "catalog.parquet").is_file():
        pytest.skip(f"The Complete Journey is not under {data_dir} (run `propstream demo` once)")
    from bench.common import households
    from propstream import completejourney

    settings = Settings(
        data_dir=data_dir, catalog_file=files / "catalog.parquet", groups_file=completejourney.GROUPS_FILE
    )
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog, settings.events.types))
    return households(data_dir), cfg, catalog


def test_complete_journey_features_equal_the_state_machine_at_three_dates(journey):
    records, cfg, catalog = journey
    assert len({(r.user_id, r.event_id) for r in records}) == len(records)  # no second delivery: all applied
    cuts = [to_ms(d) for d in CJ_DATES]
    oracle = replay_features(records, cfg, catalog, cuts)
    log = EventColumns.from_records(records)
    for t, when in zip(cuts, CJ_DATES, strict=True):
        batch = features_as_of(log, cfg, catalog, t)
        assert len(batch.users) > 1000, when
        assert mismatches(batch.rows(), oracle[t]) == [], when


# -- a synthetic world with views, duplicates and late events --------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(deliveries in arrival order as two stream batches, state config, catalog) of a synthetic world."""
    w = make_world(tmp_path_factory.mktemp("vecbatch"), n_users=80, n_events=8000, days=400, seed=17)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), catalog_file=w.catalog_file, groups_file=w.groups_file
    )
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog, settings.events.types))
    records = [Event.model_validate(e).to_record("x") for e in w.events]
    rng = random.Random(5)
    # Arrival order: time order with neighbours swapped (late within the allowed lateness), and 10 % of the
    # events delivered a second time a little later (same event_id: the stream refuses the second delivery).
    arrival = sorted(records, key=lambda r: r.ts_ms + rng.randrange(2 * DAY_MS))
    for r in rng.sample(records, len(records) // 10):
        arrival.insert(min(len(arrival), arrival.index(r) + rng.randrange(1, 50)), r)
    half = len(arrival) // 2
    first, second = arrival[:half], arrival[half:]
    # The second batch also re-sends old events (new ids) from before its shard's retention horizon: refused.
    horizon = max(r.ts_ms for r in first) - 30 * DAY_MS
    stale = [r._replace(event_id=f"stale-{r.event_id}") for r in rng.sample(first, 200) if r.ts_ms < horizon]
    return (first, second + stale, horizon), cfg, catalog


def stream_apply(
    cfg: StateConfig, catalog: GroupCatalog, batches: tuple
) -> tuple[dict[str, CustomerState], list[EventRecord], int]:
    """The stream's apply step over the two batches: customer states, the applied events, and refused ones."""
    first, second, horizon = batches
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    a = apply_events(cfg, catalog, customers, items, first, horizon=None)
    b = apply_events(cfg, catalog, customers, items, second, horizon=horizon)
    return customers, a.applied + b.applied, len(a.dead_letters) + len(b.dead_letters)


def test_synthetic_world_features_equal_the_state_machine_on_the_applied_events(world):
    batches, cfg, catalog = world
    _, applied, refused = stream_apply(cfg, catalog, batches)
    assert refused > 800  # duplicates and late events were offered, and the stream refused them
    types = {r.type_index for r in applied}
    assert cfg.spec.vocabulary.index["view"] in types  # views count (value 0) like any type
    start, end = min(r.ts_ms for r in applied), max(r.ts_ms for r in applied)
    cuts = [start + 40 * DAY_MS + 5 * 3_600_000 + 1, start + 200 * DAY_MS - 1, end, end + 100 * DAY_MS]
    oracle = replay_features(applied, cfg, catalog, cuts)
    log = EventColumns.from_records(applied[::-1])  # the batch does not depend on the log's order
    for t in cuts:
        assert mismatches(features_as_of(log, cfg, catalog, t).rows(), oracle[t]) == [], t


def test_synthetic_world_features_equal_the_streams_own_state(world):
    """The stream's states after arrival out of order, duplicates and refusals, as of the end: the batch on the
    events it applied equals them; on every delivery (duplicates and refused events counted) it would not."""
    batches, cfg, catalog = world
    customers, applied, _ = stream_apply(cfg, catalog, batches)
    end = max(r.ts_ms for r in applied) + 3 * DAY_MS
    stream = rows_as_of(customers, cfg, end)
    assert mismatches(features_as_of(EventColumns.from_records(applied), cfg, catalog, end).rows(), stream) == []
    every = EventColumns.from_records(batches[0] + batches[1])
    assert len(mismatches(features_as_of(every, cfg, catalog, end).rows(), stream)) > 10


def test_a_time_before_every_event_gives_no_customers(world):
    batches, cfg, catalog = world
    log = EventColumns.from_records(batches[0])
    f = features_as_of(log, cfg, catalog, int(log.ts.min()) - 1)
    assert f.users.tolist() == [] and f.x.shape == (0, cfg.n_features)


def test_a_scaled_log_is_the_log_of_its_events_written_out(world):
    """``EventColumns.scaled`` (the suite's larger logs) gives the features of the same events listed one by one:
    each event ``repeats`` times with ids of its own, each customer ``clones`` times as ``<id>~<k>``."""
    batches, cfg, catalog = world
    _, applied, _ = stream_apply(cfg, catalog, batches)
    end = max(r.ts_ms for r in applied)
    written_out = [
        r._replace(user_id=f"{r.user_id}~{k}", event_id=f"{r.event_id}#{j}")
        for k in range(3)
        for r in applied
        for j in range(2)
    ]
    scaled = EventColumns.from_records(applied).scaled(repeats=2, clones=3)
    assert len(scaled) == len(written_out) == 6 * len(applied)
    got = features_as_of(scaled, cfg, catalog, end)
    assert got.users.tolist() == sorted({r.user_id for r in written_out})
    listed = features_as_of(EventColumns.from_records(written_out), cfg, catalog, end)
    assert mismatches(got.rows(), listed.rows()) == []
    once = features_as_of(EventColumns.from_records(applied), cfg, catalog, end).rows()
    assert mismatches({u.rpartition("~")[0]: x for u, x in got.rows().items() if u.endswith("~1")}, once) != []
