"""A small, deterministic retail world for integration tests: catalog, groups, events."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

GROUPS_TOML = """
[groups.coffee]
categories = ["COFFEE"]

[groups.snacks]
categories = ["CHIPS", "CANDY"]

[groups.breakfast]
categories = ["COFFEE", "CEREAL"]

[groups.private_label]
departments = ["GROCERY"]
brand = "Private"
"""
CATEGORIES = ["COFFEE", "CHIPS", "CANDY", "CEREAL", "SOAP"]
START = datetime(2017, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
DAY_MS = 86_400_000


@dataclass
class World:
    """Files of one synthetic world."""

    groups_file: Path
    catalog_file: Path
    events: list[dict]


def make_world(root: Path, n_users: int = 60, n_events: int = 6000, days: int = 150, seed: int = 7) -> World:
    """Users with category preferences buying/viewing over ``days`` days, time-ordered."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    groups_file = root / "groups.toml"
    groups_file.write_text(GROUPS_TOML)
    items = []
    for i in range(40):
        cat = CATEGORIES[i % len(CATEGORIES)]
        items.append(
            {
                "item_id": f"i{i}",
                "department": "GROCERY" if cat != "SOAP" else "HOME",
                "product_category": cat,
                "product_type": f"{cat}-T",
                "brand": rng.choice(["National", "Private"]),
            }
        )
    catalog_file = root / "catalog.csv"
    with catalog_file.open("w") as f:
        f.write("item_id,department,product_category,product_type,brand\n")
        for it in items:
            f.write(
                ",".join(it[k] for k in ("item_id", "department", "product_category", "product_type", "brand")) + "\n"
            )
    prefs = {f"u{u}": rng.sample(range(40), 6) for u in range(n_users)}
    active = {u: rng.uniform(0.2, 1.0) for u in prefs}
    events = []
    for n in range(n_events):
        user = rng.choices(list(prefs), weights=[active[u] for u in prefs])[0]
        item = f"i{rng.choice(prefs[user]) if rng.random() < 0.8 else rng.randrange(40)}"
        ts = START_MS + rng.randrange(days * DAY_MS)
        kind = rng.choices(["view", "cart", "purchase"], weights=[5, 2, 3])[0]
        value = round(rng.uniform(0.5, 20.0), 2) if kind != "view" else 0.0
        events.append(
            {
                "user_id": user,
                "item_id": item,
                "type": kind,
                "event_id": f"e{n}",
                "timestamp": datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat(timespec="milliseconds"),
                "value": value,
                "quantity": 1,
            }
        )
    events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    return World(groups_file, catalog_file, events)


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON value (or raw text line for str) per line."""
    with path.open("w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path
