"""The stream against a real Apache Kafka broker (KRaft, 127.0.0.1).

The broker comes from KAFKA_BOOTSTRAP when set, otherwise from the local
broker tooling (tools/kafka), which fetches Apache Kafka's jars from Maven
Central once. These tests never skip: no broker is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from propstream import app
from schemas.mapping import ColumnMapping
from stream.dataflow import FLOW_ID
from stream.placement import Placement, worker_of
from stream.recovery import check_store, create_store
from stream.sources.base import SourceError
from tests.integration.conftest import make_settings, write_events
from tests.integration.dump import merge, values
from tests.integration.helpers import production_predict, query, state_config, stored_features, stored_scores
from tests.integration.kafka_helpers import (
    ROOT,
    dump_db,
    free_addresses,
    kafka_settings,
    new_topic,
    one_basket_an_hour_ago,
    produce_events,
    run_kafka,
    stream_cmd,
    stream_env,
    topic_with,
    wait_started,
)
from tests.synthetic import make_world

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, world, trained_dir, chdb_dsn):
    data_dir = tmp_path_factory.mktemp("file_run")
    shutil.copytree(trained_dir / "models", data_dir / "models")
    settings = make_settings(data_dir, world, chdb_dsn)
    app.run_stream(
        settings,
        app.build_source(settings, [write_events(data_dir / "e.jsonl", world.events)]),
        ColumnMapping(),
        progress=None,
    )
    return settings


def test_kafka_end_to_end_equals_file_replay(world, file_run, bootstrap, tmp_path, chdb_dsn):
    topic = new_topic(bootstrap, 4)
    produce_events(bootstrap, topic, world.events, tmp_path / "e.jsonl")
    shutil.copytree(file_run.models_dir, tmp_path / "models")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic)
    stats = run_kafka(settings)
    assert stats.events_in == len(world.events) and stats.dead_letters == 0
    a, b = stored_features(file_run), stored_features(settings)
    assert a.keys() == b.keys()
    for u in a:
        assert (a[u] == b[u]).all(), u
    assert stored_scores(file_run) == stored_scores(settings)


POISON = [
    b"{not json",
    json.dumps(
        {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z", "pad": "x" * 1_000_000}
    ).encode(),
    json.dumps({"user_id": ["u1"], "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z"}).encode(),
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "levitate", "timestamp": "2017-02-01T00:00:00Z"}).encode(),
    b"\xff\xfe\x00garbage",
]


def test_poison_messages_go_to_dead_letters_and_the_flow_goes_on(world, trained_dir, bootstrap, tmp_path, chdb_dsn):
    topic = new_topic(bootstrap, 2)
    good = world.events[:500]
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    for i, e in enumerate(good):
        if i in (10, 200, 300, 400, 450):
            p.produce(topic, POISON[[10, 200, 300, 400, 450].index(i)], key=b"poison")
        p.produce(topic, json.dumps(e).encode(), key=e["user_id"].encode())
    assert p.flush(30) == 0
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic)
    stats = run_kafka(settings, dead_letters_to_kafka=True)
    assert stats.events_in == len(good) + len(POISON)
    assert stats.applied == len(good)
    dead = query(settings, "SELECT reason, source FROM {db}.dead_letters FINAL")
    assert len(dead) == len(POISON)
    reasons = " | ".join(r for r, _ in dead)
    for word in ("bad JSON", "too large", "user_id", "type", "UTF-8"):
        assert word in reasons
    assert all(s.startswith(f"kafka:{topic}/") for _, s in dead)
    # The same dead letters are on the dead-letter topic, with their reasons.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(f"{topic}-dead-letters", p, 0) for p in range(2)])
    got = []
    deadline = time.time() + 20
    while len(got) < len(POISON) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(json.loads(m.value()))
    c.close()
    assert sorted(g["reason"] for g in got) == sorted(r for r, _ in dead)


def test_each_process_reads_the_partitions_whose_watermark_state_it_holds(bootstrap):
    from stream.sources.kafka import KafkaSource

    topic = new_topic(bootstrap, 8)
    listed = []
    for worker in range(2):
        source = KafkaSource(bootstrap, topic)
        source.placement = Placement(True, worker, 2)
        listed.append(source.list_parts())
    assert sorted(listed[0] + listed[1], key=int) == [str(p) for p in range(8)]  # each read once
    key = Placement().partition_key  # the watermark step's key: its worker is the reader, no hop between processes
    assert [[worker_of(key(f"{topic}/{p}", int(p)), 2) for p in parts] for parts in listed] == [[0] * 4, [1] * 4]
    source = KafkaSource(bootstrap, topic)
    source.placement = Placement(False, 1, 2)  # a store's plain keys: Bytewax assigns every partition
    assert source.list_parts() == [str(p) for p in range(8)]


def test_a_store_an_earlier_version_wrote_resumes_under_its_plain_state_keys(
    world, bootstrap, tmp_path, chdb_dsn, monkeypatch
):
    """Stores made before stream.placement hold shard "0".."n-1" and partition "topic/p" state: a resume keeps them."""
    topic = new_topic(bootstrap, 2)
    half = len(world.events) // 2
    produce_events(bootstrap, topic, world.events[:half], tmp_path / "a.jsonl")
    store = tmp_path / "recovery"
    resumed = kafka_settings(make_settings(tmp_path / "resumed", world, chdb_dsn), bootstrap, topic)
    real_check = app.check_store

    def as_earlier_versions(*a, **k):  # a run of the earlier version: every store's keys plain
        return dataclasses.replace(real_check(*a, **k), balanced_keys=False)

    monkeypatch.setattr(app, "check_store", as_earlier_versions)
    run_kafka(resumed, execution=app.Execution(recovery_dir=store, snapshot_seconds=0.2, fresh=True), with_models=False)
    monkeypatch.undo()
    assert not check_store(store, FLOW_ID, starting=False).balanced_keys  # told apart by the keys it holds
    create_store(tmp_path / "empty", 2, FLOW_ID)
    assert check_store(tmp_path / "empty", FLOW_ID, starting=False).balanced_keys  # nothing to keep: the new names
    produce_events(bootstrap, topic, world.events[half:], tmp_path / "b.jsonl")
    stats = run_kafka(resumed, execution=app.Execution(recovery_dir=store, snapshot_seconds=0.2), with_models=False)
    assert stats.applied + stats.dead_letters == len(world.events) - half

    one_go = kafka_settings(make_settings(tmp_path / "one_go", world, chdb_dsn), bootstrap, topic)
    run_kafka(one_go, with_models=False)
    a, b = stored_features(resumed), stored_features(one_go)
    assert a.keys() == b.keys() and all((a[u] == b[u]).all() for u in a)


def test_resume_after_retention_deleted_the_offsets_fails_loudly(world, trained_dir, bootstrap, tmp_path, chdb_dsn):
    topic = new_topic(bootstrap, 1)
    produce_events(bootstrap, topic, world.events[:300], tmp_path / "a.jsonl")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic)
    fresh = app.Execution(recovery_dir=tmp_path / "recovery", snapshot_seconds=0.2, fresh=True)
    run_kafka(settings, execution=fresh, with_models=False)
    recovery = app.Execution(recovery_dir=tmp_path / "recovery", snapshot_seconds=0.2)
    produce_events(bootstrap, topic, world.events[300:600], tmp_path / "b.jsonl")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.delete_records([TopicPartition(topic, 0, 450)])
    next(iter(fut.values())).result(timeout=30)
    with pytest.raises(Exception) as info:
        run_kafka(settings, execution=recovery, with_models=False)
    assert isinstance(app.root_cause(info.value), SourceError)
    assert "no longer on the broker" in str(app.root_cause(info.value))


@pytest.fixture(scope="module")
def big_world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("big"), n_users=300, n_events=60_000, days=200, seed=11)


@pytest.fixture(scope="module")
def big_topic(big_world, bootstrap, tmp_path_factory):
    return topic_with(big_world.events, bootstrap, tmp_path_factory.mktemp("bt"))


@pytest.fixture(scope="module")
def clean_subprocess_run(big_world, big_topic, bootstrap, trained_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("clean_sub")
    shutil.copytree(trained_dir / "models", d / "models")
    dsn = f"chdb://{d / 'chdb'}"
    subprocess.run(
        stream_cmd(d, dsn, big_topic, bootstrap, big_world, []),
        env=stream_env(big_world),
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    result = values(dump_db(dsn))
    assert len(result["events"]) == len(big_world.events)
    return result


def test_broker_restart_during_a_run_loses_nothing(
    broker, big_world, big_topic, bootstrap, trained_dir, tmp_path, clean_subprocess_run
):
    local, _ = broker
    if local is None:
        pytest.fail("broker restart needs the local broker (unset KAFKA_BOOTSTRAP)")
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    dsn = f"chdb://{tmp_path / 'chdb'}"
    proc = subprocess.Popen(
        stream_cmd(tmp_path, dsn, big_topic, bootstrap, big_world, []),
        env=stream_env(big_world),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert wait_started(proc)
    time.sleep(1.0)  # reading the topic
    local.restart()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert values(dump_db(dsn)) == clean_subprocess_run


def test_two_processes_equal_one(big_world, big_topic, bootstrap, trained_dir, tmp_path, clean_subprocess_run):
    addresses = free_addresses(2)
    procs, dsns = [], []
    for i in range(2):
        d = tmp_path / f"p{i}"
        shutil.copytree(trained_dir / "models", d / "models")
        dsns.append(f"chdb://{d / 'chdb'}")  # one chDB per process; a server would be shared
        cmd = stream_cmd(
            d, dsns[-1], big_topic, bootstrap, big_world, ["--process-id", str(i), "--addresses", addresses]
        )
        procs.append(
            subprocess.Popen(
                cmd, env=stream_env(big_world), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    parts = [dump_db(d) for d in dsns]
    assert all(p["features"] for p in parts)  # both processes own customers
    assert not parts[0]["features"].keys() & parts[1]["features"].keys()
    assert values(merge(parts)) == clean_subprocess_run


def test_missing_topic_is_a_clear_error(bootstrap, world, tmp_path, chdb_dsn):
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, "no-such-topic")
    with pytest.raises(Exception) as info:
        run_kafka(settings, with_models=False)
    assert "propstream init" in str(app.root_cause(info.value))


def test_live_windows_expire_by_the_wall_clock_without_new_events(trained_dir, bootstrap, tmp_path, chdb_dsn, world):
    """Live mode: a quiet customer's 7-day counters drop to zero when a week passes on the wall clock."""
    from stream.sources.kafka import KafkaSource

    topic = new_topic(bootstrap, 2)
    now_ms = int(time.time() * 1000)
    events = one_basket_an_hour_ago("live-1", "l", now_ms)
    produce_events(bootstrap, topic, events, tmp_path / "live.jsonl")
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic, clock="wall")
    start = time.time()
    week = 8 * 86_400

    def wall_clock() -> float:  # eight days pass, 6 s into the run
        return time.time() + (week if time.time() - start > 6 else 0)

    source = KafkaSource(bootstrap, topic, wall_clock=True, tick_seconds=0.2, exit_when_idle=30, clock=wall_clock)
    stats = app.run_stream(settings, source, ColumnMapping(), progress=None)
    assert stats.applied == 5
    index = state_config(settings).spec.index
    feats = stored_features(settings)["live-1"]
    assert feats[index["grp=all|type=purchase|stat=count|win=30d"]] == 5
    assert feats[index["grp=all|type=purchase|stat=count|win=7d"]] == 0  # expired without a new event
    assert feats[index["grp=all|stat=recency_days"]] == 7
    as_of = query(settings, "SELECT max(toUnixTimestamp64Milli(as_of)) FROM {db}.customer_features FINAL")[0][0]
    assert as_of >= now_ms + 7 * 86_400_000
    scores = {g: s for (u, g), (s, _) in stored_scores(settings).items() if u == "live-1"}
    for group, score in scores.items():
        expected, _ = production_predict(settings, group, feats[None, :])
        assert score == expected[0]


def test_cli_init_creates_topics_and_produce_reports_rejects(bootstrap, world, tmp_path, chdb_dsn, capsys):
    from propstream.cli import main

    topic = f"cli-{uuid.uuid4().hex[:8]}"
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn]
    assert main(["init", *common, "--kafka", f"kafka://{bootstrap}/{topic}", "--partitions", "3"]) == 0
    assert main(["init", *common, "--kafka", f"kafka://{bootstrap}/{topic}", "--partitions", "3"]) == 0
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert len(meta.topics[topic].partitions) == 3
    assert len(meta.topics[f"{topic}-dead-letters"].partitions) == 3  # the dead-letter topic follows the topic
    csv_file = tmp_path / "export.csv"
    csv_file.write_text(
        "hh,sku,when,kind\n"
        "7,100,2017-03-01T10:00:00Z,purchase\n"
        "8,101,not-a-time,purchase\n"
        "9,102,2017-03-01T11:00:00Z,teleport\n"
        "7,103,2017-03-02T10:00:00Z,view\n"
    )
    mapping = tmp_path / "m.toml"
    mapping.write_text('user_id = "hh"\nitem_id = "sku"\ntimestamp = "when"\ntype = "kind"\n')
    capsys.readouterr()
    rejects = tmp_path / "rejects.jsonl"
    args = [
        "produce",
        *common,
        "--json",
        "--input",
        str(csv_file),
        "--mapping",
        str(mapping),
        "--kafka",
        f"kafka://{bootstrap}/{topic}",
        "--rejects",
        str(rejects),
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"read": 4, "sent": 2, "rejected": 2, "topic": topic}
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [r["source"] for r in lines] == [f"{csv_file}:3", f"{csv_file}:4"]
    assert "timestamp" in lines[0]["reason"] and "type" in lines[1]["reason"]
