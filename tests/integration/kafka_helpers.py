"""Helpers for tests against the real Kafka broker: topics, producing, running the stream in and out of process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from propstream import app
from schemas.mapping import ColumnMapping
from stream.parse import EventParser
from stream.producer import produce
from tests.integration.conftest import write_events

ROOT = Path(__file__).resolve().parents[2]


def new_topic(bootstrap: str, partitions: int = 4) -> str:
    """A fresh events topic and its dead-letter topic, as `propstream init` makes them."""
    from schemas.settings import KafkaSettings
    from stream.topics import create_topics

    name = f"t-{uuid.uuid4().hex[:10]}"
    k = KafkaSettings(bootstrap_servers=bootstrap, topic=name, partitions=partitions)
    assert create_topics(k) == {name: "created", f"{name}-dead-letters": "created"}
    assert create_topics(k) == {name: "exists", f"{name}-dead-letters": "exists"}  # idempotent
    return name


def topic_with(events: list[dict], bootstrap: str, work: Path, partitions: int = 4) -> str:
    """A fresh topic holding ``events``, produced as `propstream produce` would (keyed by user)."""
    topic = new_topic(bootstrap, partitions)
    produce_events(bootstrap, topic, events, work / "events.jsonl")
    return topic


def kafka_settings(settings, bootstrap: str, topic: str, **kafka):
    k = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap, "topic": topic, "clock": "event", **kafka})
    return settings.model_copy(update={"kafka": k})


def one_basket_an_hour_ago(user_id: str, id_prefix: str, now_ms: int) -> list[dict]:
    """Five purchase lines of one customer an hour before ``now_ms`` (a live stream's quiet customer)."""
    return [
        {
            "user_id": user_id,
            "item_id": "i0",
            "type": "purchase",
            "event_id": f"{id_prefix}{i}",
            "timestamp": now_ms - 3_600_000 + i,
            "value": 3.5,
        }
        for i in range(5)
    ]


def produce_events(bootstrap: str, topic: str, events: list[dict], path: Path) -> None:
    from stream.sources import read_records

    report = produce(
        read_records(write_events(path, events)), EventParser(ColumnMapping()), {"bootstrap.servers": bootstrap}, topic
    )
    assert report.sent == len(events) and not report.rejected


def run_kafka(settings, exit_when_idle: float = 3.0, **kw):
    source = app.build_source(settings, None, exit_when_idle=exit_when_idle)
    return app.run_stream(settings, source, ColumnMapping(), progress=None, **kw)


def stream_cmd(data_dir: Path, dsn: str, topic: str, bootstrap: str, world, extra: list[str]) -> list[str]:
    """`propstream run` over a topic in event time, ending when idle for 6 s."""
    return [
        sys.executable,
        "-m",
        "propstream.cli",
        "run",
        "--data-dir",
        str(data_dir),
        "--clickhouse",
        dsn,
        "--input",
        f"kafka://{bootstrap}/{topic}",
        "--clock",
        "event",
        "--catalog",
        str(world.catalog_file),
        "--exit-when-idle",
        "6",
        *extra,
    ]


def stream_env(world, **more: str) -> dict:
    # 16 shards so that keys spread over several processes (Bytewax hashes shard keys to workers).
    # Partitions idle after 1 s instead of 10: a harsher test of what idleness may decide.
    return {
        **os.environ,
        "PROPSTREAM_GROUPS_FILE": str(world.groups_file),
        "PROPSTREAM_STREAM__N_SHARDS": "16",
        "PROPSTREAM_KAFKA__IDLE_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
        **more,
    }


def dump_db(dsn: str) -> dict:
    """Every table of a chDB database (tests.integration.dump), read in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.dump", dsn],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def free_addresses(n: int) -> str:
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ",".join(f"127.0.0.1:{p}" for p in ports)


def wait_started(proc, timeout: float = 180.0) -> bool:
    """Read a stream process's stderr until it says it started (set up, recovery store in place); False if it ended.

    Faults are timed from this moment, not from the launch: how long the
    interpreter takes to import its libraries is no part of the test.
    """
    from propstream.app import STARTED

    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        if STARTED.encode() in line:
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stream did not start within {timeout} s")
    return False
