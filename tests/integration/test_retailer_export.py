"""A retailer's own export, mapped by a file only: header-less CSV, pv/buy/cart/fav, epoch seconds, numeric ids.

The layout is that of public e-commerce behaviour exports (user_id, item_id,
category_id, behavior, timestamp). Six weeks of synthetic behaviour hold a
learnable signal for one category (customers who view and cart it buy it
within the week) and none for another (purchases at random), so training
with a 7-day label horizon and weekly cutoffs must promote the first and
refuse the second, with a reason.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.registry import ModelRegistry
from propstream.cli import main
from schemas.settings import Settings
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

START = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp())
DAY = 86_400
MAPPING = """
csv_columns = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
type = "behavior"
timestamp_unit = "s"
drop_types = ["fav"]

[type_values]
pv = "view"
buy = "purchase"
"""
GROUPS = """
[groups.learnable]
categories = [1001]

[groups.noise]
categories = [2002]
"""


def export(path: Path, n_users: int = 400, days: int = 42, seed: int = 3) -> list[list]:
    """Rows as the retailer's system writes them; customers who view and cart category 1001 buy it soon after."""
    rng = random.Random(seed)
    items = {1001: list(range(10, 40)), 2002: list(range(50, 80)), 3003: list(range(90, 120))}
    rows: list[list] = []
    for u in range(1, n_users + 1):
        keen = rng.random() < 0.35  # interested in category 1001 this season
        for day in range(days):
            t0 = START + day * DAY
            if rng.random() < 0.5:
                cat = 1001 if keen and rng.random() < 0.7 else rng.choice([2002, 3003, 1001])
                item = rng.choice(items[cat])
                t = t0 + rng.randrange(DAY - 3600)
                rows.append([u, item, cat, "pv", t])
                if rng.random() < 0.1:
                    rows.append([u, item, cat, "fav", t + 5])
                if cat == 1001 and keen and rng.random() < 0.5:
                    rows.append([u, item, cat, "cart", t + 60])
                    if rng.random() < 0.6:
                        rows.append([u, item, cat, "buy", t + 600])
            if rng.random() < 0.06:  # category 2002 is bought at random, whatever anyone viewed
                item = rng.choice(items[2002])
                rows.append([u, item, 2002, "buy", t0 + rng.randrange(DAY)])
    rows.sort(key=lambda r: r[4])
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)  # no header line
    return rows


def recount(rows: list[list], renamed: dict[str, str]) -> Counter:
    """An independent recount of the export's 365-day counts (the window holds all of it); other types are skipped."""
    expected: Counter = Counter()
    for user, _, cat, behavior, _ in rows:
        if behavior in renamed:
            group = {1001: "learnable", 2002: "noise"}.get(cat)
            for g in ("all", group) if group else ("all",):
                expected[(str(user), f"grp={g}|type={renamed[behavior]}|stat=count|win=365d")] += 1
    return expected


def stored_counts(settings: Settings) -> Counter:
    """The stream's 365-day counts as stored in customer_features (non-zero ones)."""
    stored: Counter = Counter()
    for user, feats in query(settings, "SELECT user_id, features FROM {db}.customer_features FINAL"):
        for name, v in feats.items():
            if name.endswith("|stat=count|win=365d") and v:
                stored[(user, name)] = int(v)
    return stored


def test_a_header_less_export_maps_trains_streams_and_refuses_what_cannot_learn(
    tmp_path, chdb_dsn, capsys, monkeypatch
):
    rows = export(tmp_path / "export.csv")
    (tmp_path / "mapping.toml").write_text(MAPPING)
    (tmp_path / "groups.toml").write_text(GROUPS)
    with (tmp_path / "catalog.csv").open("w", newline="") as f:  # numeric ids, read as integers
        w = csv.writer(f)
        w.writerow(["item_id", "product_category"])
        w.writerows([i, c] for c, lo in ((1001, 10), (2002, 50), (3003, 90)) for i in range(lo, lo + 30))
    db = "retailer_" + tmp_path.name[-8:].replace("-", "_")
    env = {
        "PROPSTREAM_GROUPS_FILE": str(tmp_path / "groups.toml"),
        "PROPSTREAM_CLICKHOUSE__DATABASE": db,
        "PROPSTREAM_TRAIN__LABEL_HORIZON_DAYS": "7",
        "PROPSTREAM_TRAIN__CUTOFF_EVERY_DAYS": "7",
        "PROPSTREAM_TRAIN__HISTORY_DAYS": "7",
        "PROPSTREAM_STREAM__BATCH_SIZE": "2000",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--catalog", str(tmp_path / "catalog.csv")]
    files = ["--input", str(tmp_path / "export.csv"), "--mapping", str(tmp_path / "mapping.toml")]

    # Before anything is written: what the mapping makes of the export, and what reading it as-is would do.
    assert main(["check", *files, "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    fav = sum(r[3] == "fav" for r in rows)
    assert (check["read"], check["dropped"], check["valid"]) == (len(rows), fav, len(rows) - fav)
    assert check["preview"][0]["type"] in {"view", "cart", "purchase"} and check["reasons"] == {}
    assert main(["check", "--input", str(tmp_path / "export.csv")]) == 1  # no mapping: the header is data
    assert "name its columns in csv_columns" in capsys.readouterr().err

    assert main(["groups", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"learnable": 30, "noise": 30}

    assert main(["train", *common, *files]) == 0
    out = capsys.readouterr().out
    learnable = next(line for line in out.splitlines() if line.split()[:1] == ["learnable"])
    noise = next(line for line in out.splitlines() if line.split()[:1] == ["noise"])
    assert "promoted (the first model of the group)" in learnable, out
    assert "not promoted, the group has no scores" in noise and "below the floor" in noise, out
    registry = ModelRegistry(tmp_path / "models")
    assert registry.production_version("noise") is None
    assert registry.card("learnable", registry.production_version("learnable")).metrics["roc_auc"] > 0.6

    assert main(["run", *common, *files, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    kinds = Counter(r[3] for r in rows)
    assert summary["events_in"] == len(rows)
    assert summary["dropped"] == kinds["fav"]  # dropped by the mapping, counted, not dead letters
    assert summary["applied"] + summary["dead_letters"] + summary["dropped"] == len(rows)  # conservation
    assert summary["dead_letters"] == 0  # the mapping reads every row

    settings = Settings(data_dir=tmp_path, clickhouse_dsn=chdb_dsn, clickhouse={"database": db})
    renamed = {"pv": "view", "buy": "purchase", "cart": "cart"}
    expected = recount(rows, renamed)
    stored = stored_counts(settings)
    assert stored == expected

    scores = query(settings, "SELECT group_id, count() FROM {db}.scores FINAL GROUP BY group_id")
    customers = query(settings, "SELECT count() FROM {db}.customer_features FINAL")[0][0]
    assert dict(scores) == {"learnable": customers}  # the refused group has no scores at all


WISHLIST_MAPPING = """
csv_columns = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
type = "behavior"
timestamp_unit = "s"

[type_values]
pv = "view"
buy = "purchase"
fav = "wishlist"
"""


def test_a_configured_vocabulary_keeps_the_wishlist_as_its_own_features(tmp_path, chdb_dsn, capsys, monkeypatch):
    """The same export with `events.types` holding `wishlist`: `fav` is mapped, applied and counted, not dropped."""
    rows = export(tmp_path / "export.csv", n_users=150, days=21, seed=5)
    (tmp_path / "mapping.toml").write_text(WISHLIST_MAPPING)
    (tmp_path / "groups.toml").write_text(GROUPS)
    with (tmp_path / "catalog.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "product_category"])
        w.writerows([i, c] for c, lo in ((1001, 10), (2002, 50), (3003, 90)) for i in range(lo, lo + 30))
    db = "vocab_" + tmp_path.name[-8:].replace("-", "_")
    monkeypatch.setenv("PROPSTREAM_GROUPS_FILE", str(tmp_path / "groups.toml"))
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", db)
    monkeypatch.setenv("PROPSTREAM_STREAM__BATCH_SIZE", "1000")
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--catalog", str(tmp_path / "catalog.csv")]
    files = ["--input", str(tmp_path / "export.csv"), "--mapping", str(tmp_path / "mapping.toml")]
    fav = sum(r[3] == "fav" for r in rows)
    assert fav > 50

    # The default vocabulary has no wishlist: the mapping is refused in one line, before anything is read.
    assert main(["check", *files]) == 2
    err = capsys.readouterr().err
    assert "map to ['wishlist'], which are not event types" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setenv("PROPSTREAM_EVENTS__TYPES", json.dumps(["view", "cart", "purchase", "wishlist"]))
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$defs"]["EventType"]["enum"] == ["view", "cart", "purchase", "wishlist"]
    assert main(["check", *files, "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert (check["read"], check["dropped"], check["valid"], check["reasons"]) == (len(rows), 0, len(rows), {})

    assert main(["run", *common, *files, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["events_in"], summary["applied"], summary["dropped"], summary["dead_letters"]) == (
        len(rows),
        len(rows),
        0,
        0,
    )

    settings = Settings(data_dir=tmp_path, clickhouse_dsn=chdb_dsn, clickhouse={"database": db})
    renamed = {"pv": "view", "buy": "purchase", "cart": "cart", "fav": "wishlist"}
    expected = recount(rows, renamed)
    stored = stored_counts(settings)
    wishlist = {k: n for k, n in stored.items() if "|type=wishlist|" in k[1]}
    assert wishlist and wishlist == {k: n for k, n in expected.items() if "|type=wishlist|" in k[1]}
    assert stored == expected
    assert dict(query(settings, "SELECT type, count() FROM {db}.events GROUP BY type")) == {
        t: n for t, n in Counter(renamed[r[3]] for r in rows).items()
    }
    assert query(settings, "SELECT sum(events) FROM {db}.item_activity FINAL WHERE type = 'wishlist'")[0][0] == fav
