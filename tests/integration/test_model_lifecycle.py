"""Model lifecycle by command: promote, rollback, who/why/when, and what a promotion does to thresholds."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from models.registry import ModelRegistry
from offline_train.dataset import build_examples
from propstream import app
from propstream.cli import main
from schemas.events import Event
from schemas.tables import SCORE_TABLES, row_version
from stream.state import StateConfig
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, make_settings, write_events
from tests.integration.helpers import assert_scores_current, query, run, stored_features

pytestmark = pytest.mark.integration

ROW = re.compile(r">= (\d\.\d)  size (\S+) -> (\d+)  expected (\S+) -> (\S+)  observed (\S+) -> (\S+)")


def _recount(settings, group: str, old: int, new: int) -> dict[float, tuple]:
    """Segment size, mean score and observed rate at each threshold on the test slice, by brute force."""
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    records = app.read_archive(settings)
    ex = build_examples(records, StateConfig.build(spec), catalog, [PLAN.test], 30, ("purchase",))
    registry = ModelRegistry(settings.models_dir)
    y = ex.labels[:, spec.groups.index(group)].astype(float)
    probs = {}
    for v in (old, new):
        art = registry.load(group, v)
        probs[v] = art.predict(ex.x[:, art.input_positions(spec.index)])
    out = {}
    for k in range(1, 10):
        t = k / 10
        row = []
        for v in (old, new):
            sel = probs[v] >= round(t, 1)
            n = int(sel.sum())
            row += [n, float(probs[v][sel].mean()) if n else float("nan"), float(y[sel].mean()) if n else float("nan")]
        out[round(t, 1)] = tuple(row)
    return out


def _printed(lines: list[str], group: str) -> dict[float, tuple]:
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{group}: v"))
    out = {}
    for line in lines[start + 1 : start + 14]:
        m = ROW.search(line)
        if m:
            t, sb, sa, eb, ea, ob, oa = m.groups()
            out[float(t)] = (int(sb), float(eb), float(ob), int(sa), float(ea), float(oa))
    return out


def _same(printed: dict, recount: dict) -> None:
    assert printed.keys() == recount.keys() == {round(k / 10, 1) for k in range(1, 10)}
    for t, got in printed.items():
        want = recount[t]
        assert got[0] == want[0] and got[3] == want[3], t  # segment sizes, exactly
        for a, b in zip((got[1], got[2], got[4], got[5]), (want[1], want[2], want[4], want[5]), strict=True):
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 5e-5, (t, got, want)  # printed to 4 places


def test_promotion_prints_thresholds_and_a_cli_rollback_is_recorded_and_rescored(
    world, trained_dir, tmp_path, chdb_dsn, capsys
):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    run(settings, [write_events(tmp_path / "ev.jsonl", world.events)])
    assert assert_scores_current(settings)["coffee"] == 1

    # Training promotes coffee v2 (forced) and prints what it does to each threshold: equal to a recount.
    lines: list[str] = []
    records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lines.append, params=SMALL_DATA_PARAMS, force=True
    )
    assert assert_scores_current(settings)["coffee"] == 2
    assert any("reliability before" in line for line in lines) and any("reliability after" in line for line in lines)
    _same(_printed(lines, "coffee"), _recount(settings, "coffee", 1, 2))

    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--catalog", str(world.catalog_file), "--json"]
    env = {
        "PROPSTREAM_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "PROPSTREAM_GROUPS_FILE": str(world.groups_file),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        capsys.readouterr()
        assert main(["models", "rollback", "coffee", "--by", "ann", "--reason", "v2 over-selects", *common]) == 0
        out, err = capsys.readouterr()
        done = json.loads(out)
        assert (done["version"], done["previous"], done["by"], done["reason"]) == (1, 2, "ann", "v2 over-selects")
        assert done["store"] == "synced" and done["rescored_customers"] == len({e["user_id"] for e in world.events})
        # The rollback's own report (v2 -> v1 on v1's test slice) is printed and equals a recount too.
        _same(_printed(err.splitlines(), "coffee"), _recount(settings, "coffee", 2, 1))
        assert assert_scores_current(settings)["coffee"] == 1  # bulk rescore: every score is v1's again

        assert main(["models", "list", *common]) == 0
        listed = {(r["group_id"], r["version"]): r for r in json.loads(capsys.readouterr().out)}
        assert listed[("coffee", 1)]["stage"] == "production" and listed[("coffee", 2)]["stage"] == "archived"
        assert listed[("coffee", 2)]["changed_by"] == "ann"
        assert main(["models", "promote", "coffee", "7", *common]) == 1  # not registered: one line, failure
        assert "not registered" in capsys.readouterr().err
    rows = query(
        settings,
        "SELECT version, stage, changed_by, change_reason, changed_at IS NOT NULL FROM {db}.models FINAL "
        "WHERE group_id = 'coffee' ORDER BY version",
    )
    assert rows == [
        (1, "production", "ann", "v2 over-selects", True),
        (2, "archived", "ann", "v2 over-selects", True),
    ]


@pytest.mark.kafka
def test_a_cli_rollback_while_a_stream_runs_rescores_every_customer_of_the_group(
    world, trained_dir, tmp_path, chdb_dsn, bootstrap
):
    """The stream holds its embedded store: the command moves the pointer and logs it; the stream rescores.

    The stream runs live (wall clock, ticks every second, models polled every
    second) and stops once idle for 20 s; the rollback comes once it has
    applied every event, so the rescore happens inside that idle time, and the
    scores read with FINAL after it stopped show it.
    """
    import subprocess
    import sys
    import time
    from datetime import datetime

    from tests.integration.kafka_helpers import ROOT, dump_db, new_topic, produce_events, stream_cmd, stream_env

    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS, force=True
    )
    registry = ModelRegistry(settings.models_dir)
    assert registry.production_version("coffee") == 2

    # The last 3,000 events, moved so that the newest is an hour old: a live stream keeps them all.
    tail = world.events[-3000:]
    last = datetime.fromisoformat(tail[-1]["timestamp"]).timestamp()
    shift = time.time() - 3600 - last
    live = [{**e, "timestamp": int((datetime.fromisoformat(e["timestamp"]).timestamp() + shift) * 1000)} for e in tail]
    topic = new_topic(bootstrap, 2)
    produce_events(bootstrap, topic, live, tmp_path / "live.jsonl")
    dsn = f"chdb://{tmp_path / 'stream-chdb'}"
    cmd = stream_cmd(tmp_path, dsn, topic, bootstrap, world, ["--clock", "wall", "--exit-when-idle", "20"])
    env = stream_env(world, PROPSTREAM_STREAM__MODEL_POLL_SECONDS="1", PROPSTREAM_STREAM__PROGRESS_SECONDS="0.5")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = []
        for line in proc.stderr:  # progress lines: wait until every event is applied (and scored with v2)
            seen.append(line.decode())
            if f"{len(live):,} applied" in seen[-1]:
                break
        else:
            pytest.fail("the stream ended before applying every event:\n" + "".join(seen[-20:]))
        rollback = subprocess.run(
            [
                sys.executable,
                "-m",
                "propstream",
                "models",
                "rollback",
                "coffee",
                "--by",
                "oncall",
                "--reason",
                "v2 misfires",
                "--data-dir",
                str(tmp_path),
                "--clickhouse",
                dsn,
                "--json",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rollback.returncode == 0, rollback.stderr[-2000:]
        done = json.loads(rollback.stdout)
        assert (done["version"], done["previous"], done["store"]) == (1, 2, "held")
        assert "running stream rescores every customer of coffee" in rollback.stderr
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    db = dump_db(dsn)
    coffee = {k.split("|")[0]: (s, m) for k, (_, s, m) in db["scores"].items() if k.endswith("|coffee")}
    assert coffee and {m for _, m in coffee.values()} == {1}  # every score of the group is the previous version's
    assert {m for k, (_, _, m) in db["scores"].items() if not k.endswith("|coffee")} == {1}
    # ... and equals v1 applied to the customer's stored features (no stale score).
    cfg = StateConfig.build(app.feature_spec(app.load_catalog(settings)))
    users = sorted(coffee)
    rows = np.vstack([cfg.new_row() for _ in users])
    for i, u in enumerate(users):
        for name, value in db["features"][u][1].items():
            rows[i, cfg.spec.index[name]] = value
    v1 = registry.load("coffee", 1)
    expected = v1.predict(rows[:, v1.input_positions(cfg.spec.index)])
    np.testing.assert_array_equal(np.array([coffee[u][0] for u in users]), expected)

    # The stream that held the store recorded the rollback in the models table when it swapped the model
    # (`propstream sql` only reads: it syncs nothing).
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "propstream",
            "sql",
            "--data-dir",
            str(tmp_path),
            "--clickhouse",
            dsn,
            "--format",
            "csv",
            "SELECT version, stage, changed_by, change_reason FROM propstream.models FINAL WHERE group_id = 'coffee' "
            "ORDER BY version",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.stdout.splitlines()[1:] == ["1,production,oncall,v2 misfires", "2,archived,oncall,v2 misfires"]


def test_a_bulk_rescore_replaces_scores_newer_than_the_newest_stored_features(world, trained_dir, tmp_path, chdb_dsn):
    """A live run without a recovery store killed -9 loses up to 2 s of ``customer_features`` (written every
    ``stream.sink_archive_flush_seconds``) while the score rows of that time are written: a rescore still wins."""
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    run(settings, [write_events(tmp_path / "ev.jsonl", world.events)])
    assert assert_scores_current(settings)["coffee"] == 1
    # What the kill leaves: coffee scores of v1, a second after the newest features row of any customer.
    ((clock,),) = query(settings, "SELECT toUnixTimestamp64Milli(max(as_of)) FROM {db}.customer_features")
    users = sorted(stored_features(settings))[:5]
    later = clock + 1_000
    cols = {
        "user_id": users,
        "group_id": ["coffee"] * len(users),
        "score": [0.5] * len(users),
        "model_version": [1] * len(users),
        "as_of": [later] * len(users),
        "version": [row_version(later, 0)] * len(users),
    }
    client = app.client_for(settings)
    for table in SCORE_TABLES:
        names = list(table.inserted)
        client.insert(
            table.at(settings.clickhouse.database), [cols[c] for c in names], column_names=names, column_oriented=True
        )

    records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS, force=True
    )
    assert assert_scores_current(settings)["coffee"] == 2  # every customer's, the five with newer scores too
