"""A real run whose store the dashboard tests read: the synthetic world, a steady popular item, one known surge.

``run_with_dashboard`` (the session fixture ``dashboard_run`` of conftest) replays
through ``propstream.app.run_stream`` with trending on and production models,
serving the web dashboard from the stream's own process while it runs
(``dashboard.in_run``), as ``propstream run --dashboard`` does. From the first
progress line on, another thread reads ``GET /`` again and again until the run ends
(its queries and the stream's inserts share one chDB client); what the page
answered is kept in ``DashboardRun.during``.

- item ``i1`` (CHIPS: group snacks) gets a view every 2 minutes from day 140 to day 149: popular, steady;
- item ``i5`` (COFFEE: groups coffee, breakfast) gets 60 extra views in the hour ``SURGE_START`` (day 146, 14:00);
- a few lines break the contract: dead letters with their reasons.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2

from models.registry import ModelRegistry
from propstream import app
from schemas.mapping import ColumnMapping
from schemas.settings import Settings, TrendingSettings
from stream.sinks import RunStats
from tests.integration.conftest import make_settings, write_events
from tests.synthetic import DAY_MS, START_MS, World

HOUR_MS = 3_600_000
STEADY_ITEM, SURGE_ITEM = "i1", "i5"
SURGE_START = START_MS + 146 * DAY_MS + 14 * HOUR_MS
SURGE_END = datetime.fromtimestamp((SURGE_START + HOUR_MS) / 1000, tz=UTC)  # the 1h window that holds the surge
BAD_LINES = [
    "{not json",
    '"just a string"',
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view"}),  # no timestamp
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "yesterday-ish"}),
]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def dashboard_events(world: World) -> list:
    """The world's events, the steady item, the surge and the bad lines, in event-time order (bad lines spread)."""
    rng = random.Random(3)
    extra = [(START_MS + 140 * DAY_MS + k * 120_000, STEADY_ITEM) for k in range(9 * 24 * 30)]
    extra += [(SURGE_START + rng.randrange(HOUR_MS), SURGE_ITEM) for _ in range(60)]
    rows: list = list(world.events) + [
        {
            "user_id": f"u{rng.randrange(60)}",
            "item_id": item,
            "type": "view",
            "event_id": f"x{n}",
            "timestamp": _iso(ts),
        }
        for n, (ts, item) in enumerate(extra)
    ]
    rows.sort(key=lambda e: e["timestamp"])
    for bad in BAD_LINES:
        rows.insert(rng.randrange(len(rows)), bad)
    return rows


@dataclass
class DashboardRun:
    """The run's settings and what its in-run dashboard answered while the stream wrote."""

    settings: Settings
    during: list[tuple[int, str, int]] = field(default_factory=list)  # GET / mid-run: status, body, applied by then
    url: str = ""
    stats: RunStats = field(default_factory=RunStats)


def run_with_dashboard(world: World, trained_dir: Path, data_dir: Path, dsn: str) -> DashboardRun:
    shutil.copytree(trained_dir / "models", data_dir / "models")
    settings = make_settings(data_dir, world, dsn, progress_seconds=0.2)
    settings = settings.model_copy(
        update={
            "trending": TrendingSettings(enabled=True, windows=("1h/15m", "24h/1h")),
            "dashboard": settings.dashboard.model_copy(update={"in_run": True, "port": 0}),
        }
    )
    registry = ModelRegistry(settings.models_dir)  # mirror the registry into this database's models table
    groups = sorted(p.name for p in settings.models_dir.iterdir() if p.is_dir())
    cards = [registry.card(g, v) for g in groups for v in registry.versions(g)]
    app.write_cards(settings, registry, cards)
    out = DashboardRun(settings)

    browsing: list[threading.Thread] = []
    applied = [0]  # events applied, as the last progress line said

    def browse() -> None:  # a reader in another thread, while the stream keeps writing over the same client
        while True:
            try:
                r = httpx2.get(out.url + "/", timeout=60)
            except httpx2.TransportError:  # the run ended and took its dashboard with it
                return
            out.during.append((r.status_code, r.text, applied[-1]))

    def progress(line: str) -> None:
        if app.STARTED in line:
            out.url = line.rsplit("dashboard on ", 1)[1]
        else:
            applied.append(int(line.split(" applied")[0].replace(",", "")))
            if not browsing:  # the stream is writing
                browsing.append(threading.Thread(target=browse, daemon=True))
                browsing[0].start()

    path = write_events(data_dir / "events.jsonl", dashboard_events(world))
    out.stats = app.run_stream(settings, app.build_source(settings, [path]), ColumnMapping(), progress=progress)
    for t in browsing:
        t.join(timeout=120)
    return out


def query(settings: Settings, sql: str, **params) -> list[tuple]:
    client = app.client_for(settings)
    return list(client.query(sql.replace("{db}", settings.clickhouse.database), parameters=params or None).result_rows)
