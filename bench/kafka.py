"""Benchmark: The Complete Journey through Kafka -> dataflow -> chDB, one process and two.

    python bench/kafka.py [--data-dir DIR] [--limit N] [--bootstrap HOST:PORT]

Produces the transactions to a fresh 4-partition topic (the local KRaft broker
from tools/kafka unless --bootstrap or KAFKA_BOOTSTRAP is given), then runs
`propstream run --input kafka://...` with the event-time clock until the topic
is drained, once as one process and once as two (each process writing its own
chDB here; in production both write to one ClickHouse server). Uses the
production models registered under the data dir. Prints events/s from the
first to the last write of events (the idle wait at the end is not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from propstream import completejourney
from schemas.mapping import load_mapping
from schemas.settings import KafkaSettings
from stream.parse import EventParser
from stream.producer import produce
from stream.sources import read_records
from stream.topics import create_topics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import free_port, run_command, run_env  # noqa: E402


def dump(dsn: str) -> dict:
    """Final features, scores and events of a chDB database, read in a subprocess (one chDB path per process)."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.dump", "--values", dsn],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout)


def run_processes(n: int, data_dir: Path, topic: str, bootstrap: str, catalog: Path, work: Path) -> dict:
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(n))
    procs = []
    for i in range(n):
        d = work / f"n{n}-p{i}"
        shutil.copytree(data_dir / "models", d / "models")
        cmd = run_command(
            d,
            f"chdb://{d / 'chdb'}",
            f"kafka://{bootstrap}/{topic}",
            "event",
            catalog,
            5,
            i if n > 1 else None,
            addresses,
        )
        env = run_env(ROOT, {"PROPSTREAM_STREAM__N_SHARDS": "16"})
        log = (work / f"n{n}-p{i}.log").open("w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, cwd=ROOT))
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            logs = "\n".join((work / f"n{n}-p{i}.log").read_text()[-3000:] for i in range(n))
            msg = f"stream process failed with exit code {p.returncode}:\n{logs}"
            raise SystemExit(msg)
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    events = sum(r["events_in"] for r in results)
    first = min(r["first_write_at"] for r in results)
    last = max(r["last_write_at"] for r in results)
    return {
        "processes": n,
        "events": events,
        "seconds": round(last - first, 2),
        "events_per_s": round(events / (last - first)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to run")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    ap.add_argument(
        "--compare-dsn",
        help="chDB DSN of a file replay of the same events (e.g. the demo's): check the 1-process "
        "Kafka run ends with the same features and scores",
    )
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    events, catalog = completejourney.prepare(data_dir)
    if args.limit:
        small = data_dir / "completejourney" / f"transactions_{args.limit}.parquet"
        pq.write_table(pq.read_table(events).slice(0, args.limit), small)
        events = small
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap
        if not bootstrap:
            sys.path.insert(0, str(ROOT))
            from tools.kafka.broker import LocalBroker

            bootstrap = stack.enter_context(LocalBroker()).bootstrap
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        create_topics(KafkaSettings(bootstrap_servers=bootstrap, topic=topic))
        t0 = time.perf_counter()
        rep = produce(
            read_records(events),
            EventParser(load_mapping(completejourney.MAPPING_FILE)),
            {"bootstrap.servers": bootstrap},
            topic,
        )
        produced = {"produced": rep.sent, "produce_events_per_s": round(rep.sent / (time.perf_counter() - t0))}
        print(json.dumps(produced), flush=True)
        work = Path(tempfile.mkdtemp(prefix="propstream-bench-"))
        try:
            for n in args.processes:
                print(json.dumps(run_processes(n, data_dir, topic, bootstrap, catalog, work)), flush=True)
                if n == 1 and args.compare_dsn:
                    a, b = dump(f"chdb://{work / 'n1-p0' / 'chdb'}"), dump(args.compare_dsn)
                    same = {k: a[k] == b[k] for k in ("features", "scores", "events")}
                    print(json.dumps({"equal_to_file_replay": same, "score_rows": len(a["scores"])}), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
