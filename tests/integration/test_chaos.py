"""Chaos suite: the stream under faults ends exactly where an uninterrupted run does.

Each test reproduces a way the stream was found to lose or corrupt data
(issue #9): a clean stop and resume, messages that crashed the flow, a
backlog after downtime, a skewed producer clock, rescaling with recovery, a
damaged recovery store, secrets in output, missing topics. Results are read
back from every table (``tests.integration.dump``: customer_features, scores,
the last score of score_history, events, dead_letters, item_activity) and
compared whole with a clean run over the same topic.

Run alone with ``pytest -m chaos``.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from propstream import app
from propstream.cli import main
from schemas.mapping import ColumnMapping
from stream.recovery import MARKER
from stream.snapshots import side_files
from stream.sources.kafka import KafkaSource
from tests.integration.conftest import make_settings, write_events
from tests.integration.dump import merge, values
from tests.integration.helpers import stored_features, stored_scores
from tests.integration.kafka_helpers import (
    ROOT,
    dump_db,
    free_addresses,
    kafka_settings,
    new_topic,
    produce_events,
    run_kafka,
    stream_cmd,
    stream_env,
    topic_with,
    wait_started,
)
from tests.synthetic import make_world

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.chaos]
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def chaos_world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("chaos"), n_users=300, n_events=20_000, days=200, seed=13)


@pytest.fixture(scope="module")
def chaos_topic(chaos_world, bootstrap, tmp_path_factory):
    return topic_with(chaos_world.events, bootstrap, tmp_path_factory.mktemp("ct"))


def clean_run(world, topic: str, bootstrap: str, models: Path, work: Path) -> dict:
    """One process, no recovery, from the start of the topic to its end: the reference."""
    shutil.copytree(models, work / "models")
    dsn = f"chdb://{work / 'chdb'}"
    done = subprocess.run(
        stream_cmd(work, dsn, topic, bootstrap, world, []),
        env=stream_env(world),
        cwd=ROOT,
        timeout=600,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = values(dump_db(dsn))
    assert result["features"] and result["scores"] and result["item_activity"]
    return result


@pytest.fixture(scope="module")
def clean(chaos_world, chaos_topic, bootstrap, trained_dir, tmp_path_factory):
    result = clean_run(chaos_world, chaos_topic, bootstrap, trained_dir / "models", tmp_path_factory.mktemp("clean"))
    assert len(result["events"]) == len(chaos_world.events) and not result["dead_letters"]
    return result


def start(cmd: list[str], world) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=stream_env(world), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]


def kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()


def test_kill_9_at_20_random_moments_with_1_second_snapshots_equals_a_clean_run(
    chaos_world, chaos_topic, bootstrap, trained_dir, tmp_path, clean
):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    dsn = f"chdb://{tmp_path / 'chdb'}"
    recovery = ["--recovery-dir", str(tmp_path / "recovery"), "--snapshot-seconds", "1"]
    cmd = stream_cmd(tmp_path, dsn, chaos_topic, bootstrap, chaos_world, recovery)
    rng = random.Random(9)
    kills = 0
    while kills < 20:
        fresh = [] if (tmp_path / "recovery" / MARKER).exists() else ["--fresh"]  # until the store exists
        proc = start(cmd + fresh, chaos_world)
        started = wait_started(proc)
        time.sleep(rng.uniform(0.5, 5.0))
        if not started or proc.poll() is not None:  # finished before the kill: the run is over
            break
        kill([proc])
        kills += 1
    finish(start(cmd, chaos_world))  # once more to the end (a no-op if a run finished already)
    assert kills >= 15
    assert values(dump_db(dsn)) == clean


def test_a_clean_stop_then_more_events_resumes_to_the_state_of_one_run(chaos_world, bootstrap, trained_dir, tmp_path):
    """Finding 1: partitions that ended stayed "ended" in the snapshot, and the resumed clock ran ahead."""
    topic = new_topic(bootstrap, 4)
    half = len(chaos_world.events) // 2
    produce_events(bootstrap, topic, chaos_world.events[:half], tmp_path / "a.jsonl")
    run = tmp_path / "run"
    shutil.copytree(trained_dir / "models", run / "models")
    dsn = f"chdb://{run / 'chdb'}"
    cmd = stream_cmd(run, dsn, topic, bootstrap, chaos_world, ["--recovery-dir", str(run / "recovery")])
    finish(start([*cmd, "--fresh"], chaos_world))  # a clean stop: every partition idle and ended
    produce_events(bootstrap, topic, chaos_world.events[half:], tmp_path / "b.jsonl")
    finish(start(cmd, chaos_world))
    resumed = values(dump_db(dsn))
    assert not resumed["dead_letters"]
    assert resumed == clean_run(chaos_world, topic, bootstrap, trained_dir / "models", tmp_path / "clean")


def test_messages_that_crash_looped_the_flow_are_dead_letters(world, trained_dir, bootstrap, tmp_path, chdb_dsn):
    """Finding 2: deep nesting (RecursionError) and a 401-digit timestamp (OverflowError)."""
    topic = new_topic(bootstrap, 2)
    good = world.events[:500]
    deep = b"[" * 1500 + b"]" * 1500
    digits = json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 10**400}).encode()
    p = Producer({"bootstrap.servers": bootstrap})
    for i, e in enumerate(good):
        if i in (100, 300):
            p.produce(topic, deep if i == 100 else digits, key=b"u1")
        p.produce(topic, json.dumps(e).encode(), key=e["user_id"].encode())
    assert p.flush(30) == 0
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic)
    stats = run_kafka(settings, dead_letters_to_kafka=True)
    assert (stats.events_in, stats.applied, stats.dead_letters) == (502, 500, 2)


def _offset_clock(at_ms: int):
    """A wall clock that reads ``at_ms`` now and runs on from there (the source also times idleness with it)."""
    t0 = time.time()
    return lambda: at_ms / 1000 + (time.time() - t0)


def test_a_backlog_older_than_the_lateness_is_applied_after_downtime_whatever_the_batch_size(
    trained_dir, bootstrap, tmp_path, chdb_dsn
):
    """Finding 3: after a 30 h outage, live mode judged the backlog against the wall clock."""
    world = make_world(tmp_path / "w", n_users=300, n_events=6_000, days=3, seed=5)
    split = world.events[0]["timestamp"]
    split_ms = int(datetime.fromisoformat(split).timestamp() * 1000) + 36 * HOUR_MS
    stamp = [int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1000) for e in world.events]
    before = [e for e, t in zip(world.events, stamp, strict=True) if t < split_ms]
    backlog = [e for e, t in zip(world.events, stamp, strict=True) if split_ms <= t < split_ms + 30 * HOUR_MS]
    assert len(backlog) > 2_000
    topic = new_topic(bootstrap, 4)
    produce_events(bootstrap, topic, before, tmp_path / "a.jsonl")
    back_up_at = (split_ms + 30 * HOUR_MS) // HOUR_MS * HOUR_MS + HOUR_MS + 10 * 60_000  # 10 min into an hour

    def live(settings, batch_size: int, clock_at: int, execution: app.Execution | None = None):
        k = settings.kafka
        source = KafkaSource(
            k.bootstrap_servers, topic, batch_size=batch_size, exit_when_idle=4, clock=_offset_clock(clock_at)
        )
        return app.run_stream(settings, source, ColumnMapping(), progress=None, execution=execution or app.Execution())

    def fresh_settings(name: str):
        d = tmp_path / name
        shutil.copytree(trained_dir / "models", d / "models")
        return kafka_settings(make_settings(d, world, chdb_dsn), bootstrap, topic, clock="wall"), d

    # Up until the split, then down for 30 h while the backlog piles up, then back: 100-message batches.
    interrupted, d = fresh_settings("interrupted")
    store = d / "recovery"
    live(interrupted, 100, split_ms, app.Execution(recovery_dir=store, snapshot_seconds=0.5, fresh=True))
    produce_events(bootstrap, topic, backlog, tmp_path / "b.jsonl")
    stats = live(interrupted, 100, back_up_at, app.Execution(recovery_dir=store, snapshot_seconds=0.5))
    assert (stats.applied, stats.dead_letters) == (len(backlog), 0)

    # The same input read in one go at the same wall-clock hour, with 10,000-message batches.
    one_go, _ = fresh_settings("one_go")
    live(one_go, 10_000, back_up_at)
    a, b = stored_features(interrupted), stored_features(one_go)
    assert a.keys() == b.keys() and all((a[u] == b[u]).all() for u in a)
    assert stored_scores(interrupted) == stored_scores(one_go)


@pytest.mark.parametrize("partitions", [1, 4])
def test_one_skewed_timestamp_is_a_dead_letter_and_changes_nothing_else(
    partitions, world, trained_dir, bootstrap, tmp_path, chdb_dsn
):
    """Finding 4: an event stamped with today's date in a 2017 replay moved the clock for everyone."""
    now_ms = int(time.time() * 1000)
    skewed = {"user_id": "u1", "item_id": "i1", "type": "view", "event_id": "skewed", "timestamp": now_ms}
    middle = len(world.events) // 2
    topic = new_topic(bootstrap, partitions)
    produce_events(bootstrap, topic, [*world.events[:middle], skewed, *world.events[middle:]], tmp_path / "e.jsonl")
    shutil.copytree(trained_dir / "models", tmp_path / "k" / "models")
    settings = kafka_settings(make_settings(tmp_path / "k", world, chdb_dsn), bootstrap, topic)
    stats = run_kafka(settings)
    assert (stats.applied, stats.dead_letters) == (len(world.events), 1)
    shutil.copytree(trained_dir / "models", tmp_path / "f" / "models")
    replay = make_settings(tmp_path / "f", world, chdb_dsn)
    app.run_stream(
        replay, app.build_source(replay, [write_events(tmp_path / "f.jsonl", world.events)]), ColumnMapping(), None
    )
    a, b = stored_features(settings), stored_features(replay)
    assert a.keys() == b.keys() and all((a[u] == b[u]).all() for u in a)
    assert stored_scores(settings) == stored_scores(replay)
    (reason,) = [
        r
        for (r,) in app.client_for(settings)
        .query(f"SELECT reason FROM {settings.clickhouse.database}.dead_letters FINAL")
        .result_rows
    ]
    assert reason.startswith("ahead: event time is") and "partition's watermark" in reason


def test_rescale_2_to_1_to_4_processes_with_kills_equals_a_clean_run(
    chaos_world, chaos_topic, bootstrap, trained_dir, tmp_path, clean
):
    """Finding 5: one recovery store shared by every process; its partitions go to whatever workers there are."""
    settings = make_settings(tmp_path, chaos_world, "chdb:///unused")
    store = tmp_path / "recovery"
    assert "created" in app.init_recovery(settings, store)  # the explicit start of a store, before any process
    rng = random.Random(5)
    dsns = []

    def phase(n: int, name: str) -> list[subprocess.Popen]:
        addresses = free_addresses(n)
        procs = []
        for i in range(n):
            d = tmp_path / f"{name}-{i}"
            shutil.copytree(trained_dir / "models", d / "models")
            dsns.append(f"chdb://{d / 'chdb'}")  # one chDB per process here; merged below as one server would
            extra = ["--recovery-dir", str(store), "--snapshot-seconds", "1"]
            if n > 1:
                extra += ["--process-id", str(i), "--addresses", addresses]
            procs.append(start(stream_cmd(d, dsns[-1], chaos_topic, bootstrap, chaos_world, extra), chaos_world))
        return procs

    procs = phase(2, "two")
    assert all(wait_started(p) for p in procs)
    time.sleep(rng.uniform(2.0, 5.0))
    kill(procs)
    procs = phase(1, "one")
    assert wait_started(procs[0])
    time.sleep(rng.uniform(1.0, 4.0))
    kill(procs)
    for p in phase(4, "four"):
        finish(p)
    assert values(merge([dump_db(d) for d in dsns])) == clean


def _cli_run(store: Path, topic: str, bootstrap: str, world, data_dir: Path, dsn: str, capsys) -> tuple[int, str]:
    env = {"PROPSTREAM_GROUPS_FILE": str(world.groups_file), "PROPSTREAM_KAFKA__CLOCK": "event"}
    args = ["run", "--data-dir", str(data_dir), "--clickhouse", dsn, "--input", f"kafka://{bootstrap}/{topic}"]
    args += ["--catalog", str(world.catalog_file), "--recovery-dir", str(store), "--exit-when-idle", "3"]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        code = main(args)
    return code, capsys.readouterr().err


def _garbage(store: Path) -> str:
    (store / "part-0.sqlite3").write_bytes(random.Random(1).randbytes(20_000))
    return "damaged"


def _truncated(store: Path) -> str:
    path = store / "part-1.sqlite3"
    path.write_bytes(path.read_bytes()[:1000])
    return "damaged"


def _partition_missing(store: Path) -> str:
    (store / "part-2.sqlite3").unlink()
    return "incomplete"


def _store_deleted(store: Path) -> str:
    shutil.rmtree(store)
    return "no recovery store"


def _files_deleted(store: Path) -> str:
    for f in store.glob("part-*"):
        f.unlink()
    return "lost its partition files"


def _side_store(store: Path) -> Path:
    """A customer shard's side store (incremental snapshots), without its -wal and -shm files."""
    path = side_files(store)[0]
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    return path


def _side_garbage(store: Path) -> str:
    path = _side_store(store)
    path.write_bytes(random.Random(2).randbytes(20_000))
    return str(path)


def _side_truncated(store: Path) -> str:
    path = _side_store(store)
    path.write_bytes(path.read_bytes()[:3000])
    return str(path)


def _another_flow(store: Path) -> str:
    con = sqlite3.connect(store / "part-0.sqlite3")
    con.execute(
        "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES ('wordcount.count', 'a', 1, x'')"
    )
    con.commit()
    con.close()
    return "another dataflow"


def _a_run_with_a_store(world, trained_dir, bootstrap: str, tmp_path: Path, dsn: str):
    """300 events on a fresh 2-partition topic, read to their end by a run that made a fresh store."""
    topic = new_topic(bootstrap, 2)
    produce_events(bootstrap, topic, world.events[:300], tmp_path / "a.jsonl")
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    store = tmp_path / "recovery"
    settings = kafka_settings(make_settings(tmp_path, world, dsn), bootstrap, topic)
    run_kafka(settings, execution=app.Execution(recovery_dir=store, snapshot_seconds=0.2, fresh=True))
    return topic, store, settings


@pytest.mark.parametrize(
    "damage",
    [
        _garbage,
        _truncated,
        _partition_missing,
        _store_deleted,
        _files_deleted,
        _another_flow,
        _side_garbage,
        _side_truncated,
    ],
)
def test_a_damaged_or_missing_recovery_store_is_a_one_line_error(
    damage, world, trained_dir, bootstrap, tmp_path, chdb_dsn, capsys
):
    """Finding 6: a damaged store was silently ignored, and the stream re-read the topic from offset 0."""
    topic, store, _ = _a_run_with_a_store(world, trained_dir, bootstrap, tmp_path, chdb_dsn)
    words = damage(store)
    code, err = _cli_run(store, topic, bootstrap, world, tmp_path, chdb_dsn, capsys)
    assert code == 1
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err


def test_an_older_copy_of_the_store_is_refused(world, trained_dir, bootstrap, tmp_path, chdb_dsn, capsys):
    """A backup of part-*.sqlite3 taken a run ago (or one that lost its -wal files) holds less than was seen."""
    topic, store, settings = _a_run_with_a_store(world, trained_dir, bootstrap, tmp_path, chdb_dsn)
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in store.glob("part-*.sqlite3"):
        shutil.copy(f, backup / f.name)
    produce_events(bootstrap, topic, world.events[300:600], tmp_path / "b.jsonl")
    run_kafka(settings, execution=app.Execution(recovery_dir=store, snapshot_seconds=0.2))
    assert json.loads((store / MARKER).read_text())["executions"] == 2
    for f in backup.iterdir():
        shutil.copy(f, store / f.name)
    code, err = _cli_run(store, topic, bootstrap, world, tmp_path, chdb_dsn, capsys)
    assert code == 1 and "lost progress" in err, err


def test_fresh_refuses_an_existing_store_and_run_refuses_a_missing_one(world, bootstrap, tmp_path, chdb_dsn, capsys):
    topic = new_topic(bootstrap, 1)
    store = tmp_path / "recovery"
    code, err = _cli_run(store, topic, bootstrap, world, tmp_path, chdb_dsn, capsys)
    assert code == 1 and "--fresh" in err
    app.init_recovery(make_settings(tmp_path, world, chdb_dsn), store)
    with pytest.raises(Exception, match="already holds a recovery store"):
        run_kafka(
            kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic),
            execution=app.Execution(recovery_dir=store, fresh=True),
            with_models=False,
        )


def test_an_unreachable_broker_and_a_missing_dead_letter_topic_are_one_line_errors(
    world, bootstrap, tmp_path, chdb_dsn, capsys
):
    """Finding 8: a Bytewax traceback, and a crash 20 s in when the dead-letter topic was missing."""
    topic = new_topic(bootstrap, 1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([f"{topic}-dead-letters"])[f"{topic}-dead-letters"].result(timeout=30)
    env = {"PROPSTREAM_GROUPS_FILE": str(world.groups_file), "PROPSTREAM_KAFKA__IDLE_SECONDS": "1"}
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--exit-when-idle", "2"]
    for url, words in (
        (f"kafka://127.0.0.1:9/{topic}", "cannot reach Kafka"),
        (f"kafka://{bootstrap}/{topic}", "-dead-letters"),
    ):
        capsys.readouterr()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            assert main(["run", "--input", url, *common]) == 1
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if x.startswith("propstream run:")]  # notes share stderr
        assert words in line and "Traceback" not in err, err
