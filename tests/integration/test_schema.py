"""Schema migrations: a fresh store and a store made before schema versions both end as ``schemas.tables`` declares.

``data/chdb-store-schema-v1.tgz`` is an embedded ClickHouse store written by
propstream before schema versions existed (commit 62ed5c0: ``propstream run``
over four lines, one of them bad JSON and one a duplicate, plus two score rows
written by that commit's sink), so the test starts from what users have on
disk, not from a reconstruction.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from schemas.tables import CONTINUOUSLY_WRITTEN, MIGRATIONS, SCHEMA_MIGRATIONS, SCHEMA_VERSION, TABLES, WIDE_MERGES
from stream.sinks.clickhouse import migrate, open_client, schema_version
from tests.integration.dump import schema

pytestmark = pytest.mark.integration
V1_STORE = Path(__file__).parent / "data" / "chdb-store-schema-v1.tgz"


def declared() -> dict:
    """What ``schemas.tables`` says every table is."""
    return {
        t.name: {
            "engine": t.engine,
            "sorting_key": ", ".join(t.order_by),
            "columns": [[c.name, c.type, c.default] for c in t.columns],
            "wide_merges": t.name in CONTINUOUSLY_WRITTEN,  # migration 7: the tables the stream writes all the time
        }
        for t in (*TABLES.values(), SCHEMA_MIGRATIONS)
    }


def as_stored(store: dict) -> dict:
    return {
        name: {
            "engine": t["engine_full"].split(" ORDER BY ")[0],
            "sorting_key": t["sorting_key"],
            "columns": t["columns"],
            "wide_merges": WIDE_MERGES in t["engine_full"],
        }
        for name, t in store["tables"].items()
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "propstream", *args], capture_output=True, text=True, timeout=120)


def test_migrations_build_a_fresh_store_as_declared_and_apply_once(chdb_dsn):
    client = open_client(chdb_dsn)
    db = "schema_fresh"
    applied = migrate(client, db)
    assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
    assert applied[0].version == 1 and applied[-1].version == SCHEMA_VERSION
    store = schema(client, db)
    assert store["version"] == SCHEMA_VERSION
    assert as_stored(store) == declared()
    assert migrate(client, db) == []  # up to date: nothing to apply
    assert schema_version(client, db) == SCHEMA_VERSION


def test_init_brings_a_store_made_before_schema_versions_up_to_date_and_keeps_its_rows(tmp_path):
    with tarfile.open(V1_STORE) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    dsn = f"chdb://{tmp_path / 'data' / 'chdb'}"

    def dump(*flag: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "tests.integration.dump", *flag, dsn], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)

    before = dump()
    assert len(before["events"]) == 2 and len(before["dead_letters"]) == 2 and len(before["scores"]) == 2

    done = cli("init", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    later = [m for m in MIGRATIONS if m.version > 1]
    for m in later:  # migration 1 created nothing new here, and says nothing about it
        assert f"ClickHouse schema migration {m.version}: {m.description}" in done.stdout
    assert f"schema version {SCHEMA_VERSION} ready" in done.stdout

    assert dump() == before  # every row kept, values and versions alike
    store = dump("--schema")
    assert store["version"] == SCHEMA_VERSION
    assert as_stored(store) == declared()

    again = cli("init", "--data-dir", str(tmp_path / "data"))
    assert again.returncode == 0 and "schema migration" not in again.stdout

    data = str(tmp_path / "data")
    segment = cli("segment", "--data-dir", data, "--group", "coffee_tea", "--top", "1", "--format", "json")
    assert segment.returncode == 0, segment.stderr
    assert [row["user_id"] for row in json.loads(segment.stdout)] == ["u2"]  # 0.5 beats 0.25


def test_a_store_migrated_by_a_newer_propstream_is_refused_in_one_line(chdb_dsn):
    client = open_client(chdb_dsn)
    db = "schema_newer"
    migrate(client, db)
    client.insert(
        SCHEMA_MIGRATIONS.at(db),
        [[SCHEMA_VERSION + 1, "from the future", 0]],
        column_names=list(SCHEMA_MIGRATIONS.names),
    )
    with pytest.raises(Exception, match=f"schema version {SCHEMA_VERSION + 1}, this propstream knows up to") as err:
        migrate(client, db)
    assert type(err.value).__name__ == "SchemaTooNewError" and "\n" not in str(err.value)
