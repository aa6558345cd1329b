"""`propstream trending` on a chDB store: rows written by the sink, read as of any past window, three formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from propstream.cli import main
from stream.sinks.base import trending_rows
from stream.sinks.clickhouse import ClickHouseWriter, migrate, open_client
from stream.trending import HOUR_MS, TrendRow

pytestmark = pytest.mark.integration
T0 = 1_483_228_800_000  # 2017-01-01T00:00Z


def rows_at(end: int, hot: str) -> list[TrendRow]:
    """Item rows of one 1h window: a popular item, and ``hot`` surging."""
    return [
        TrendRow(end, "1h", "item", "popular", "view", 40, 40.0, 0.0, 1, 0),
        TrendRow(end, "1h", "item", hot, "view", 12, 1.0, 8.5, 2, 1),
        TrendRow(end, "1h", "group", "coffee", "view", 30, 9.0, 5.0, 1, 1),
        TrendRow(end, "1h", "category", "COFFEE", "view", 25, 20.0, 0.0, 1, 0),
    ]


def test_trending_reads_the_last_window_at_or_before_a_time(tmp_path, chdb_dsn, capsys, monkeypatch):
    db = "trending_cli"
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", db)
    client = open_client(chdb_dsn)
    migrate(client, db)
    writer = ClickHouseWriter(client, db)
    rows = rows_at(T0 + HOUR_MS, "a") + rows_at(T0 + 2 * HOUR_MS, "b")
    for table, columns in trending_rows(rows + rows).items():  # written twice, as after a replay: read once
        writer.insert(table, columns)
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn]

    assert main(["trending", *common, "--format", "json"]) == 0
    latest = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["surge_rank"], r["window_end"]) for r in latest] == [("b", 1, "2017-01-01T02:00:00Z")]
    assert main(["trending", *common, "--at", "2017-01-01T01:30", "--by", "count", "--format", "csv"]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["key"], r["rank"], r["count"]) for r in got] == [("popular", "1", "40"), ("a", "2", "12")]
    assert main(["trending", *common, "--scope", "group", "--type", "view", "--top", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["window_end", "type", "key"] and "coffee" in table[1]
    assert main(["trending", *common, "--scope", "category", "--by", "count", "--format", "json"]) == 0
    assert [(r["key"], r["rank"]) for r in json.loads(capsys.readouterr().out)] == [("COFFEE", 1)]
    assert main(["trending", *common, "--window", "7d"]) == 1
    held = "held: 1h category view, 1h group view, 1h item view"
    assert f"no trending rows for window 7d, scope item, type any; {held}" in capsys.readouterr().err
