"""Product groups added and deactivated without a full replay (issue #14), against a real broker and chDB.

- A stream stops; a group is added (catalog written, model trained on the
  archive and promoted); the stream resumes from its recovery store with the
  new catalog: its snapshot is migrated (no SnapshotMismatchError, no replay),
  and features and scores equal a from-scratch run whose catalog had the group
  all along.
- A stream runs; a group is deactivated by command: within the poll interval
  the stream stops writing its scores; its rows stay.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest

from models.registry import ModelRegistry
from propstream import app, groups
from schemas.groups import ProductGroup, load_groups
from schemas.tables import VERSION_SHIFT
from tests.integration.conftest import make_settings
from tests.integration.helpers import assert_scores_current, stored_features, stored_scores
from tests.integration.kafka_helpers import (
    ROOT,
    dump_db,
    kafka_settings,
    new_topic,
    produce_events,
    run_kafka,
    stream_cmd,
    stream_env,
)
from tests.synthetic import GROUPS_TOML

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

BREAKFAST = ProductGroup(name="breakfast", categories=["COFFEE", "CEREAL"])  # as the synthetic world has it


def test_a_group_added_between_runs_is_backfilled_on_resume_and_equals_a_run_that_had_it(
    world, trained_dir, bootstrap, tmp_path, chdb_dsn
):
    without = GROUPS_TOML.replace('[groups.breakfast]\ncategories = ["COFFEE", "CEREAL"]\n', "")
    assert "breakfast" not in without
    groups_file = tmp_path / "groups.toml"
    groups_file.write_text(without)
    shutil.copytree(trained_dir / "models", tmp_path / "models", ignore=shutil.ignore_patterns("breakfast"))
    topic = new_topic(bootstrap, 2)
    cut = len(world.events) * 2 // 3
    produce_events(bootstrap, topic, world.events[:cut], tmp_path / "a.jsonl")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic)
    # two thirds of the events span 100 days: a plan with two-week cutoffs and label windows fits them
    short = settings.train.model_copy(update={"label_horizon_days": 14, "cutoff_every_days": 14, "history_days": 14})
    settings = settings.model_copy(update={"groups_file": groups_file, "train": short})
    fresh = app.Execution(recovery_dir=tmp_path / "recovery", snapshot_seconds=0.2, fresh=True)
    run_kafka(settings, execution=fresh)

    added = groups.add(settings, BREAKFAST, progress=lambda _: None)  # trained on the archive, promoted
    assert added.production_version == ModelRegistry(settings.models_dir).production_version("breakfast") == 1
    assert [g.name for g in load_groups(groups_file)] == ["coffee", "snacks", "private_label", "breakfast"]

    produce_events(bootstrap, topic, world.events[cut:], tmp_path / "b.jsonl")
    run_kafka(settings, execution=app.Execution(recovery_dir=tmp_path / "recovery", snapshot_seconds=0.2))

    clean_dir = tmp_path / "clean"
    shutil.copytree(tmp_path / "models", clean_dir / "models")
    clean = kafka_settings(make_settings(clean_dir, world, chdb_dsn), bootstrap, topic)
    clean = clean.model_copy(update={"groups_file": groups_file})
    run_kafka(clean)

    got, want = stored_features(settings), stored_features(clean)
    assert got.keys() == want.keys()
    for user in want:
        np.testing.assert_array_equal(got[user], want[user], err_msg=user)
    spec = app.feature_spec(app.load_catalog(settings))
    assert any(got[u][spec.index["grp=breakfast|type=purchase|stat=count|win=365d"]] for u in got)  # backfilled
    score = stored_scores(settings)
    assert score == stored_scores(clean)
    assert {v for (_, g), (_, v) in score.items() if g == "breakfast"} == {1}
    assert_scores_current(settings)


@pytest.fixture
def live_events(world):
    """The last 3,000 events, moved so that the newest is an hour old: a live stream keeps them all."""
    tail = world.events[-3000:]
    last = datetime.fromisoformat(tail[-1]["timestamp"]).timestamp()
    shift = time.time() - 3600 - last
    return [{**e, "timestamp": int((datetime.fromisoformat(e["timestamp"]).timestamp() + shift) * 1000)} for e in tail]


def test_deactivate_while_a_stream_runs(world, trained_dir, tmp_path, bootstrap, live_events):
    """Deactivate coffee mid-run: no coffee score is written for events after it; coffee's rows stay."""
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    groups_file = tmp_path / "groups.toml"
    groups_file.write_text(GROUPS_TOML)
    topic = new_topic(bootstrap, 2)
    first, second = live_events[:1500], live_events[1500:]
    produce_events(bootstrap, topic, first, tmp_path / "a.jsonl")
    dsn = f"chdb://{tmp_path / 'stream-chdb'}"
    cmd = stream_cmd(tmp_path, dsn, topic, bootstrap, world, ["--clock", "wall", "--exit-when-idle", "60"])
    env = stream_env(
        world,
        PROPSTREAM_GROUPS_FILE=str(groups_file),
        PROPSTREAM_STREAM__MODEL_POLL_SECONDS="1",
        PROPSTREAM_STREAM__PROGRESS_SECONDS="0.5",
    )
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lines = iter(proc.stderr)  # type: ignore[arg-type]

        def wait_applied(n: int) -> None:
            seen = []
            for line in lines:
                seen.append(line.decode())
                if f"{n:,} applied" in seen[-1]:
                    return
            pytest.fail(f"the stream ended before applying {n:,} events:\n" + "".join(seen[-20:]))

        wait_applied(len(first))
        off = subprocess.run(
            [
                *(sys.executable, "-m", "propstream", "groups", "deactivate", "coffee"),
                *("--groups", str(groups_file), "--data-dir", str(tmp_path), "--clickhouse", dsn, "--json"),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert off.returncode == 0, off.stderr[-2000:]
        assert json.loads(off.stdout) == {"group": "coffee", "active": False, "changed": True}
        time.sleep(3)  # the poll interval (1 s) and a batch
        after_ms = int(time.time() * 1000)
        produce_events(bootstrap, topic, second, tmp_path / "b.jsonl")
        wait_applied(len(live_events))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    db = dump_db(dsn)
    coffee_users = {e["user_id"] for e in second} & {k.split("|")[0] for k in db["scores"] if k.endswith("|coffee")}

    def as_of(version: int) -> int:
        return version >> VERSION_SHIFT

    history = db["score_history"]  # the last row per customer and group
    coffee = {k: v for k, v in history.items() if k.endswith("|coffee")}
    assert coffee and coffee.keys() == {k for k in db["scores"] if k.endswith("|coffee")}  # history kept
    assert max(as_of(v) for v, _, _ in coffee.values()) < after_ms  # nothing written after the deactivation
    snacks = [as_of(v) for k, (v, _, _) in history.items() if k.endswith("|snacks")]
    assert max(snacks) >= after_ms  # the other groups were scored all along
    assert coffee_users  # customers of the second part had coffee scores, and those were left as they were


def test_a_running_stream_picks_up_an_added_group_and_equals_a_run_that_had_it(
    world, trained_dir, tmp_path, bootstrap, chdb_dsn
):
    """`stream.reload_groups`: the stream holds its embedded store; `groups add` writes the file only.

    The stream ends its dataflow where it stands, trains the new group from
    the archive (it has no model), resumes from its snapshot with the group
    backfilled, and reads on. Event time, so a clean run is comparable.
    """
    without = GROUPS_TOML.replace('[groups.breakfast]\ncategories = ["COFFEE", "CEREAL"]\n', "")
    groups_file = tmp_path / "groups.toml"
    groups_file.write_text(without)
    shutil.copytree(trained_dir / "models", tmp_path / "models", ignore=shutil.ignore_patterns("breakfast"))
    topic = new_topic(bootstrap, 2)
    cut = len(world.events) * 2 // 3
    produce_events(bootstrap, topic, world.events[:cut], tmp_path / "a.jsonl")
    dsn = f"chdb://{tmp_path / 'stream-chdb'}"
    extra = ["--recovery-dir", str(tmp_path / "rec"), "--fresh", "--snapshot-seconds", "1", "--exit-when-idle", "40"]
    cmd = stream_cmd(tmp_path, dsn, topic, bootstrap, world, extra)
    env = stream_env(
        world,
        PROPSTREAM_GROUPS_FILE=str(groups_file),
        PROPSTREAM_STREAM__RELOAD_GROUPS="true",
        PROPSTREAM_STREAM__MODEL_POLL_SECONDS="1",
        PROPSTREAM_STREAM__PROGRESS_SECONDS="0.5",
        PROPSTREAM_STREAM__N_SHARDS="3",
        PROPSTREAM_TRAIN__MIN_AUC="0",
        PROPSTREAM_TRAIN__MIN_DISTINCT_PREDICTIONS="1",
        PROPSTREAM_TRAIN__LABEL_HORIZON_DAYS="14",
        PROPSTREAM_TRAIN__CUTOFF_EVERY_DAYS="14",
        PROPSTREAM_TRAIN__HISTORY_DAYS="14",
    )
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:
        lines = iter(proc.stderr)  # type: ignore[arg-type]

        def wait_for(text: str) -> None:
            for line in lines:
                seen.append(line.decode())
                if text in seen[-1]:
                    return
            pytest.fail(f"the stream ended before {text!r}:\n" + "".join(seen[-30:]))

        wait_for(f"{cut:,} applied")
        add = subprocess.run(
            [
                *(sys.executable, "-m", "propstream", "groups", "add", "breakfast", "--category", "COFFEE"),
                *("--category", "CEREAL", "--groups", str(groups_file), "--data-dir", str(tmp_path)),
                *("--clickhouse", dsn, "--json"),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert add.returncode == 0, add.stderr[-2000:]
        assert json.loads(add.stdout) == {"group": "breakfast", "production_version": None}
        assert "the store cannot be opened" in add.stderr
        wait_for("product groups changed (added or redefined: breakfast): resuming with them")
        produce_events(bootstrap, topic, world.events[cut:], tmp_path / "b.jsonl")
        _, err = proc.communicate(timeout=600)
        seen.append(err.decode())
        assert proc.returncode == 0, "".join(seen)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ModelRegistry(tmp_path / "models").production_version("breakfast") == 1  # trained by the stream

    clean_dir = tmp_path / "clean"
    shutil.copytree(tmp_path / "models", clean_dir / "models")
    clean = kafka_settings(make_settings(clean_dir, world, chdb_dsn), bootstrap, topic, idle_seconds=1.0)
    clean = clean.model_copy(update={"groups_file": groups_file})
    run_kafka(clean)

    db = dump_db(dsn)
    spec = app.feature_spec(app.load_catalog(clean))
    want = stored_features(clean)
    assert db["features"].keys() == want.keys()
    for user, (_, feats) in db["features"].items():
        row = np.zeros(len(spec.names))
        row[:] = want[user]  # absent counters are 0 in both
        got = np.array([feats.get(n, 0.0) for n in spec.names])
        np.testing.assert_array_equal(got, row, err_msg=user)
    assert any(f.get("grp=breakfast|type=purchase|stat=count|win=365d") for _, f in db["features"].values())
    scores = {tuple(k.split("|")): (s, m) for k, (_, s, m) in db["scores"].items()}
    assert scores == stored_scores(clean)
    assert {m for (_, g), (_, m) in scores.items() if g == "breakfast"} == {1}
