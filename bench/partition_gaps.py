"""Benchmark: how long one partition waits while another's backlog is delivered (one worker's Kafka reader).

    python bench/partition_gaps.py [--rate R] [--seconds S] [--per-record-us U] [--fetch-bytes B ...]

A worker's partitions share one consumer (``stream.sources.kafka._TopicReader``)
and Bytewax asks each for a batch in turn. This offers ``--rate`` events/s to a
4-partition topic on the local broker for ``--seconds`` (a producer process,
as bench/suite.py offers them), reads partitions 0 and 2 on one reader as a
worker that spends ``--per-record-us`` per record (slower than they arrive, so
a backlog builds), and prints, for each ``max.partition.fetch.bytes`` given,
the longest time a partition went without a delivery while the other was
served, and when each partition ended (``exit_when_idle`` 30 s after the topic
drained). A partition that ends with fewer records than were produced to it
lost them for that run (the bug of BENCHMARKS.md §6g).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import new_topic
from stream.sources.kafka import KafkaSource
from tools.kafka.broker import LocalBroker

PRODUCER = """
import sys, time, json
sys.path.insert(0, sys.argv[5])
from bench.workload import producer
bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
p, t0, i, total = producer(bootstrap), time.time(), 0, int(rate * seconds)
while i < total:
    due, now = min(total, int((time.time() - t0) * rate) + 1), int(time.time() * 1000)
    for j in range(i, due):
        user = f"u{j % 100_000}"
        value = {"user_id": user, "item_id": "i1", "type": "purchase", "timestamp": now, "event_id": str(j)}
        p.produce(topic, json.dumps(value).encode(), key=user.encode())
    i = due
    p.poll(0)
    time.sleep(0.005)
p.flush(60)
"""


def one_run(bootstrap: str, args: argparse.Namespace, fetch_bytes: int) -> dict:
    """Offer, read partitions 0 and 2 on one reader at the given cost per record; gaps, counts, ends."""
    topic = new_topic(bootstrap, 4)
    src = KafkaSource(bootstrap, topic, {"max.partition.fetch.bytes": fetch_bytes}, exit_when_idle=30)
    src.list_parts()
    parts = {p: src.build_part("read", str(p), None) for p in (0, 2)}
    root = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-c", PRODUCER, bootstrap, topic, str(args.rate), str(args.seconds), root]
    producer = subprocess.Popen(cmd)
    got, gap, last, ended = dict.fromkeys(parts, 0), dict.fromkeys(parts, 0.0), {}, {}
    t0 = time.time()
    while len(ended) < len(parts) and time.time() - t0 < args.seconds * 20 + 120:
        for p, part in parts.items():
            if p in ended:
                continue
            try:
                n = sum(len(b.records) for b in part.next_batch())
            except StopIteration:
                ended[p] = round(time.time() - t0, 1)
                continue
            if n:
                now = time.time()
                if p in last:
                    gap[p] = max(gap[p], now - last[p])
                last[p] = now
                got[p] += n
                time.sleep(n * args.per_record_us / 1e6)
    producer.wait()
    return {
        "max.partition.fetch.bytes": fetch_bytes,
        "records": got,
        "longest_gap_s": {p: round(g, 2) for p, g in gap.items()},
        "ended_after_s": ended,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=20_000, help="events/s offered to the 4-partition topic")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--per-record-us", type=float, default=250.0, help="the worker's time per record read")
    ap.add_argument("--fetch-bytes", type=int, nargs="+", default=[1_048_576, 65_536])
    args = ap.parse_args()
    with LocalBroker() as broker:
        for b in args.fetch_bytes:
            print(one_run(broker.bootstrap, args, b), flush=True)


if __name__ == "__main__":
    main()
