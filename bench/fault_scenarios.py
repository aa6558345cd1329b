"""Three faults of issue #9, run against whichever checkout is first on PYTHONPATH; prints what they did.

    .venv/bin/python bench/fault_scenarios.py WORK_DIR          # this checkout (from its root)
    cd OTHER && PYTHONPATH=$PWD /path/to/.venv/bin/python /path/to/bench/fault_scenarios.py WORK_DIR

1. a clean stop (every partition ended), 10,000 more events, a resume: event
   time, 4 partitions, 300 customers; compared with one clean run;
2. live mode (wall clock) down for 30 h while a backlog piles up, read back in
   100-message batches;
3. one event stamped with today's date in a 2017 replay, on 1 and 4 partitions;
   compared with a file replay of the same events without it.

It starts its own Kafka broker (tools/kafka) and writes into embedded chDB
under WORK_DIR. The chaos suite (tests/integration/test_chaos.py) asserts the
same and more; this script exists to put a figure on the behaviour before and
after a change.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from propstream import app
from schemas.mapping import ColumnMapping
from schemas.settings import KafkaSettings, Settings, StreamSettings
from stream.parse import EventParser
from stream.producer import produce
from stream.sources import read_records
from stream.sources.kafka import KafkaSource
from stream.topics import create_topics

sys.path.insert(0, str(Path.cwd()))  # tests.synthetic and tools.kafka live beside the packages, not in them
from tests.synthetic import make_world, write_jsonl
from tools.kafka.broker import LocalBroker

HOUR = 3_600_000
FRESH = "fresh" in inspect.signature(app.Execution).parameters  # checkouts before #9 created stores silently


def main() -> None:
    root = Path(sys.argv[1])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    def settings(world, **kafka) -> Settings:
        return Settings(
            data_dir=root / uuid.uuid4().hex[:6],
            clickhouse_dsn=f"chdb://{root / 'chdb'}",
            groups_file=world.groups_file,
            catalog_file=world.catalog_file,
            stream=StreamSettings(batch_size=500, n_shards=3, progress_seconds=3600),
            clickhouse={"database": "d" + uuid.uuid4().hex[:8]},
            kafka={"clock": "event", **kafka},
        )

    def topic(bootstrap: str, n: int) -> str:
        name = "t" + uuid.uuid4().hex[:8]
        create_topics(KafkaSettings(bootstrap_servers=bootstrap, topic=name, partitions=n))
        return name

    def send(bootstrap: str, t: str, events: list) -> None:
        path = write_jsonl(root / f"{uuid.uuid4().hex}.jsonl", events)
        rep = produce(read_records(path), EventParser(ColumnMapping()), {"bootstrap.servers": bootstrap}, t)
        assert rep.sent == len(events)

    def execution(store: Path, first: bool) -> app.Execution:
        return app.Execution(recovery_dir=store, snapshot_seconds=0.5, **({"fresh": first} if FRESH else {}))

    def run(s: Settings, source=None, e: app.Execution | None = None):
        source = source or app.build_source(s, None, exit_when_idle=3)
        return app.run_stream(
            s, source, ColumnMapping(), progress=None, with_models=False, execution=e or app.Execution()
        )

    def features(s: Settings) -> dict:
        q = f"SELECT user_id, features FROM {s.clickhouse.database}.customer_features FINAL"
        return {u: dict(f) for u, f in app.client_for(s).query(q).result_rows}

    def differing(a: dict, b: dict) -> int:
        return sum(a.get(u) != b[u] for u in b)

    out = {}
    with LocalBroker(data_dir=root / "kafka") as broker:
        bs = broker.bootstrap
        world = make_world(root / "w1", n_users=300, n_events=20_000, days=200, seed=13)
        t = topic(bs, 4)
        send(bs, t, world.events[:10_000])
        s = settings(world, bootstrap_servers=bs, topic=t)
        store = root / uuid.uuid4().hex
        run(s, e=execution(store, True))
        send(bs, t, world.events[10_000:])
        stats = run(s, e=execution(store, False))
        clean = settings(world, bootstrap_servers=bs, topic=t)
        run(clean)
        out["clean stop, resume"] = {
            "dead letters of 10,000 new events": stats.dead_letters,
            "customers differing from a clean run": f"{differing(features(s), features(clean))} of 300",
        }

        world = make_world(root / "w3", n_users=300, n_events=6_000, days=3, seed=5)
        stamp = [int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1000) for e in world.events]
        split = stamp[0] + 36 * HOUR
        before = [e for e, x in zip(world.events, stamp, strict=True) if x < split]
        backlog = [e for e, x in zip(world.events, stamp, strict=True) if split <= x < split + 30 * HOUR]
        t = topic(bs, 4)
        send(bs, t, before)
        s = settings(world, bootstrap_servers=bs, topic=t, clock="wall")
        store = root / uuid.uuid4().hex

        def live(clock_at: int, e: app.Execution):
            t0 = time.time()
            clock = lambda: clock_at / 1000 + time.time() - t0  # noqa: E731
            return run(s, KafkaSource(bs, t, batch_size=100, exit_when_idle=4, clock=clock), e)

        live(split, execution(store, True))
        send(bs, t, backlog)
        stats = live(split + 31 * HOUR, execution(store, False))
        out["30 h downtime, live"] = {
            "backlog": len(backlog),
            "applied": stats.applied,
            "dead letters": stats.dead_letters,
        }

        world = make_world(root / "w4")
        skewed = {
            "user_id": "u1",
            "item_id": "i1",
            "type": "view",
            "event_id": "skewed",
            "timestamp": int(time.time() * 1000),
        }
        middle = len(world.events) // 2
        reference = settings(world)
        run(reference, app.build_source(reference, [write_jsonl(root / "w4.jsonl", world.events)]))
        expected = features(reference)
        for n in (1, 4):
            t = topic(bs, n)
            send(bs, t, [*world.events[:middle], skewed, *world.events[middle:]])
            s = settings(world, bootstrap_servers=bs, topic=t)
            stats = run(s)
            out[f"skewed timestamp, {n} partition(s)"] = {
                "dead letters": stats.dead_letters,
                "customers differing from the replay without it": f"{differing(features(s), expected)} of 60",
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
