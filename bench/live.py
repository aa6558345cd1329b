"""Benchmark: a live stream through Kafka, measured from outside: idle CPU, and produce -> score visible.

    python bench/live.py [--data-dir DIR] [--rates 1000 5000] [--seconds 20] [--idle 60] [--idle-settle 15]
                         [--bootstrap HOST:PORT] [--src DIR] [--markdown]

Starts the local KRaft broker from tools/kafka (unless --bootstrap or
KAFKA_BOOTSTRAP is given) and, for each phase, a fresh 4-partition topic and a
`propstream run --input kafka://... --clock wall` process of its own (its own
chDB; production models copied from the data dir; `propstream demo` or
`train` first):

- idle: the stream reads an empty topic; ``--idle-settle`` seconds after it
  started (its partitions have gone idle), the process's CPU seconds (user +
  system, /proc) over ``--idle`` seconds, given per idle minute, in all and by
  thread name. The stream is then stopped.
- one phase per rate: customers of The Complete Journey cloned with new ids
  (``live-<run>-<clone>-<household>``, their baskets in the file's order),
  offered at a fixed rate for ``--seconds``, each event stamped with the time
  it is produced. The stream exits 30 s after the topic is drained; then this
  script reads its chDB (a subprocess: one chDB path per process) and, for
  each event, finds the first `score_history` row of its customer refreshed at
  or after the event (``as_of`` >= produce time): freshness is that row's
  ``written_at`` (when the refresh's scores became visible in ``scores``)
  minus the produce time.
  Printed: p50, p99, max, the first event's (produced after the stream sat
  quiet for 10 s), events whose score never became visible, and the stream's
  CPU per second of load.

``--src DIR`` runs the stream from another source tree (an export of another
commit, `git archive`), to compare before and after with the same benchmark.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Stream, cpu_seconds, households, new_topic, refreshes  # noqa: E402


def thread_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of each thread of a running process, summed by thread name (/proc/PID/task)."""
    out: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[(task / "comm").read_text().strip()] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def idle_phase(args, bootstrap: str, work: Path) -> dict:
    """CPU seconds per minute of a stream on an empty topic, in all and by thread name."""
    topic = new_topic(bootstrap, args.partitions)
    recovery = work / f"{topic}-recovery" if args.recovery else None  # snapshots and the store's watch included
    stream = Stream(args.src, args.data_dir, work, topic, bootstrap, 3600, recovery_dir=recovery)
    try:
        stream.wait_started()
        time.sleep(args.idle_settle)  # the partitions go idle after kafka.idle_seconds (10 s)
        c0, t0, th0 = cpu_seconds(stream.proc.pid), time.monotonic(), thread_cpu(stream.proc.pid)
        time.sleep(args.idle)
        c1, t1, th1 = cpu_seconds(stream.proc.pid), time.monotonic(), thread_cpu(stream.proc.pid)
    finally:
        stream.stop()
    per_minute = 60 / (t1 - t0)
    threads = {name: round((c - th0.get(name, 0.0)) * per_minute, 3) for name, c in th1.items()}
    return {
        "phase": "idle",
        "seconds": round(t1 - t0, 1),
        "cpu_s_per_idle_minute": round((c1 - c0) * per_minute, 3),
        # MainThread is "python": Bytewax's worker loop, the polls, the ticks through the shards
        "by_thread": dict(sorted(((k, v) for k, v in threads.items() if v > 0), key=lambda kv: -kv[1])),
    }


def offer(
    bootstrap: str, topic: str, records: list, rate: int, seconds: float, run: str
) -> tuple[dict[str, list[int]], float]:
    """Produce ``rate`` events/s for ``seconds``, stamped now; each customer's produce times (ms), seconds taken."""
    from confluent_kafka import Producer

    from schemas.events import TYPE_NAMES

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    produced: dict[str, list[int]] = defaultdict(list)
    total = int(rate * seconds)
    n = len(records)
    t0 = time.time()
    i = 0
    while i < total:
        due = min(total, int((time.time() - t0) * rate) + 1)
        now_ms = int(time.time() * 1000)
        for j in range(i, due):
            rec = records[j % n]
            user = f"live-{run}-{j // n}-{rec.user_id}"
            value = {
                "user_id": user,
                "item_id": rec.item_id,
                "type": TYPE_NAMES[rec.type_index],
                "timestamp": now_ms,
                "event_id": f"{run}-{j}",
                "quantity": rec.quantity,
                "value": rec.value_cents / 100,
            }
            producer.produce(topic, json.dumps(value).encode(), key=user.encode())
            produced[user].append(now_ms)
        i = due
        producer.poll(0)
        time.sleep(0.005)
    took = time.time() - t0
    producer.flush(60)
    return produced, took


def load_phase(args, bootstrap: str, work: Path, records: list, rate: int) -> dict:
    """Offer ``rate`` events/s; freshness produce -> visible of every event."""
    topic = new_topic(bootstrap, args.partitions)
    stream = Stream(args.src, args.data_dir, work, topic, bootstrap, 30)  # exits 30 s after the topic is drained
    stream.wait_started()
    time.sleep(10)  # the dataflow builds after the start line
    c0 = cpu_seconds(stream.proc.pid)
    produced, offered_s = offer(bootstrap, topic, records, rate, args.seconds, uuid.uuid4().hex[:6])
    summary = stream.wait_exit(args.seconds * 20 + 300)
    cpu = summary.get("cpu_seconds")
    seen = refreshes([stream.dsn])
    lags, unseen = [], 0
    first: tuple[int, int | None] | None = None  # (produce time, lag) of the first event: quiet -> busy
    for user, times in produced.items():
        as_of, written = seen.get(user, ([], []))
        for p in times:
            k = bisect.bisect_left(as_of, p)
            visible_ms = None if k == len(as_of) else min(written[k:]) - p
            if first is None or p < first[0]:
                first = (p, visible_ms)
            if visible_ms is None:
                unseen += 1
                continue
            lags.append(visible_ms)
    lag = np.array(lags, dtype=np.float64) / 1000
    n = sum(len(t) for t in produced.values())
    result = {
        "phase": f"{rate} events/s",
        "events": n,
        "offered_events_per_s": round(n / offered_s),
        "p50_s": round(float(np.percentile(lag, 50)), 3) if len(lag) else None,
        "p99_s": round(float(np.percentile(lag, 99)), 3) if len(lag) else None,
        "max_s": round(float(lag.max()), 3) if len(lag) else None,
        # the first event after the stream sat quiet for 10 s
        "first_event_s": round(first[1] / 1000, 3) if first is not None and first[1] is not None else None,
        "never_visible": unseen,
        "applied": summary["applied"],
    }
    if cpu is not None:  # a stream older than this benchmark does not report its CPU seconds
        # over the phase and the 30 s idle wait before the stream exits
        result["stream_cpu_s"] = round(cpu - c0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 5000], help="events/s offered, a phase each")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each rate's phase")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured (0: no idle phase)")
    ap.add_argument(
        "--idle-settle",
        type=float,
        default=15.0,
        help="seconds after the start line before the idle measure (past 60: after the first timed gc collection)",
    )
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--recovery", action="store_true", help="the idle stream runs with a recovery store, as deployed")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    ap.add_argument("--src", type=Path, default=ROOT, help="source tree the stream runs from")
    ap.add_argument("--markdown", action="store_true", help="also print the results as a Markdown table")
    args = ap.parse_args()
    args.data_dir = args.data_dir.resolve()
    args.src = args.src.resolve()
    results = []
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap
        if not bootstrap:
            from tools.kafka.broker import LocalBroker

            bootstrap = stack.enter_context(LocalBroker()).bootstrap
        work = Path(tempfile.mkdtemp(prefix="propstream-live-"))
        stack.callback(shutil.rmtree, work, True)
        if args.idle > 0:
            results.append(idle_phase(args, bootstrap, work))
            print(json.dumps(results[-1]), flush=True)
        if args.rates:
            records = households(args.data_dir)
            for rate in args.rates:
                results.append(load_phase(args, bootstrap, work, records, rate))
                print(json.dumps(results[-1]), flush=True)
    if args.markdown:
        keys = list(dict.fromkeys(k for r in results for k in r))
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for r in results:
            print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
