"""The command line: the contract producers and marketing use."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from propstream.cli import main
from tests.integration.conftest import make_settings, write_events
from tests.integration.helpers import query, stored_scores

pytestmark = pytest.mark.integration


def test_schema_prints_the_event_contract(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) == {"user_id", "item_id", "type", "timestamp"}
    assert schema["$defs"]["EventType"]["enum"] == ["view", "cart", "purchase"]


def test_run_then_segment_by_threshold_and_top(world, trained_dir, tmp_path, chdb_dsn, capsys, monkeypatch):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", settings.clickhouse.database)
    monkeypatch.setenv("PROPSTREAM_GROUPS_FILE", str(world.groups_file))
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn]
    assert main(["init", *common]) == 0
    assert main(["init", *common]) == 0  # idempotent
    capsys.readouterr()
    events = write_events(tmp_path / "ev.jsonl", world.events[:3000])
    assert main(["run", *common, "--input", str(events), "--catalog", str(world.catalog_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is one JSON document
    assert summary["events_in"] == 3000
    pauses = summary["gc_pauses"]  # the timed garbage collections (stream.gc_seconds), however few this short run had
    assert pauses["collections"] >= 0 and 0 <= pauses["max_s"] <= pauses["total_s"]
    scores = {u: s for (u, g), (s, _) in stored_scores(settings).items() if g == "coffee"}
    threshold = sorted(scores.values())[len(scores) // 2]
    assert main(["segment", *common, "--group", "coffee", "--min-score", str(threshold)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["user_id"] for r in rows} == {u for u, s in scores.items() if s >= threshold}
    assert main(["segment", *common, "--group", "coffee", "--top", "5", "--format", "json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [t["score"] for t in top] == sorted(scores.values(), reverse=True)[:5]
    for typo in ("cofee", "coffee' OR 1=1 --"):  # a typo is not an empty segment; a quote is not SQL
        assert main(["segment", *common, "--group", typo, "--top", "5"]) == 1
        err = capsys.readouterr().err
        assert f"no scores for group {typo!r}; groups with scores: breakfast, coffee, private_label, snacks" in err
    # A known group with nobody that high is an empty segment.
    assert main(["segment", *common, "--group", "coffee", "--min-score", "1.01"]) == 0
    assert capsys.readouterr().out.strip() == "user_id,score,model_version,as_of"
    assert query(settings, "SELECT count() FROM {db}.events FINAL")[0][0] == 3000
    assert main(["segment", *common, "--group", "coffee", "--top", "2", "--json"]) == 0  # --json means JSON
    assert json.loads(capsys.readouterr().out) == top[:2]

    # `propstream sql`: the store without Python, in three formats.
    db = settings.clickhouse.database
    sql = f"SELECT type, count() AS n FROM {db}.events FINAL GROUP BY type ORDER BY type"
    expected = query(settings, sql)
    assert main(["sql", *common, sql, "--format", "json"]) == 0
    assert [(r["type"], r["n"]) for r in json.loads(capsys.readouterr().out)] == expected
    assert main(["sql", *common, sql, "--format", "csv"]) == 0
    rows = [[t, str(n)] for t, n in expected]
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [["type", "n"], *rows]
    assert main(["sql", *common, sql]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["type", "n"] and [line.split() for line in table[1:]] == rows
    assert main(["sql", *common, "SELEKT 1"]) == 1
    assert capsys.readouterr().err.count("\n") == 1  # a bad query is one line


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["run", "--data-dir", str(tmp_path), "--input", str(tmp_path / "missing.csv")]) == 1  # failed
    assert "missing.csv does not exist" in capsys.readouterr().err
    assert main(["segment", "--data-dir", str(tmp_path), "--group", "g"]) == 2  # usage
    assert "exactly one of --min-score or --top" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["segment", "--no-such-flag"])
    assert done.value.code == 2
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("propstream 0.")


def test_resuming_with_changed_groups_migrates_and_with_other_shards_is_refused(
    world, tmp_path, chdb_dsn, capsys, monkeypatch
):
    """Recovery snapshots hold counters per group and shard.

    Other groups are migrated (issue #14: renamed = one removed, one added and
    backfilled from the archive); read with another shard count they would be
    wrong, silently, so that is refused.
    """
    settings = make_settings(tmp_path, world, chdb_dsn)
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", settings.clickhouse.database)
    groups = tmp_path / "groups.toml"
    shutil.copy(world.groups_file, groups)
    monkeypatch.setenv("PROPSTREAM_GROUPS_FILE", str(groups))
    events = write_events(tmp_path / "ev.jsonl", world.events[:1000])
    run = ["run", "--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--input", str(events)]
    run += ["--catalog", str(world.catalog_file), "--recovery-dir", str(tmp_path / "rec")]
    assert main([*run, "--fresh"]) == 0
    assert main(run) == 0  # the same groups resume
    groups.write_text(groups.read_text().replace("[groups.", "[groups.x_", 1))  # one group renamed
    assert main(run) == 0
    monkeypatch.setenv("PROPSTREAM_STREAM__N_SHARDS", "5")
    capsys.readouterr()
    assert main(run) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("propstream run:")]  # progress notes share stderr
    assert "recovery snapshot was made for other product groups" in line and "Traceback" not in err


def test_a_chdb_path_in_use_by_another_process_is_a_clear_error(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, clickhouse_connect; c = clickhouse_connect.get_client(dsn=sys.argv[1]); "
            "c.command('SELECT 1'); print('open', flush=True); sys.stdin.read()",
            f"chdb://{tmp_path / 'chdb'}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        cmd = [
            sys.executable,
            "-m",
            "propstream.cli",
            "segment",
            "--data-dir",
            str(tmp_path),
            "--group",
            "g",
            "--top",
            "1",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        holder.communicate("", timeout=60)
    assert done.returncode == 1
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("propstream segment:")]
    assert f"cannot open embedded ClickHouse at {tmp_path / 'chdb'}" in line
    assert "Traceback" not in done.stderr
