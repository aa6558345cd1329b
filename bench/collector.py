"""Benchmark: the HTTP collector, events accepted and acknowledged by Kafka per second, at 1 and 2 worker processes.

    python bench/collector.py [--seconds 15] [--concurrency 32] [--batch 1 --batch 20] [--workers 1 --workers 2]

Starts its own Kafka broker (tools/kafka; or --bootstrap HOST:PORT), then for
each worker count and batch size a fresh 4-partition topic and
`propstream collect --workers N`, and drives it with an aiohttp load
generator: ``--concurrency`` connections, each POSTing a JSON array of
``--batch`` valid events and waiting for the answer, for ``--seconds`` after a
2-second warm-up. A 200 means Kafka acknowledged every event of the request
(acks=all); the figure is events in 200 answers per second, and the topic's
end offsets are checked to hold at least that many. The load generator, the
broker and the collector share this machine's cores, so the CPU time the
collector's processes used in the measured seconds is printed too: events
per CPU-second is what one core of collector would take with the load
generator and the broker elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.collector_helpers import RunningCollector
from tests.integration.kafka_helpers import new_topic
from tools.kafka.broker import LocalBroker


def bodies(batch: int, n: int = 2000) -> list[bytes]:
    """``n`` request bodies of ``batch`` valid events each (500 customers, 40 items, the last hour)."""
    now = int(time.time() * 1000)
    out = []
    for b in range(n):
        events = [
            {
                "user_id": f"u{(b * batch + i) % 500}",
                "item_id": f"i{(b + i) % 40}",
                "type": ("view", "cart", "purchase")[i % 3],
                "timestamp": now - 3_600_000 + b,
                "event_id": f"b{b}-{i}",
                "value": 2.5,
            }
            for i in range(batch)
        ]
        out.append(json.dumps(events).encode())
    return out


async def drive(url: str, payloads: list[bytes], batch: int, seconds: float, concurrency: int) -> dict:
    """POST ``payloads`` round-robin from ``concurrency`` connections for ``seconds``; latencies and statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def client(k: int) -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.post(url, data=payloads[k % len(payloads)]) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                statuses[r.status] += 1
                k += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "statuses": dict(statuses),
        "events_acknowledged": statuses[200] * batch,
        "events_per_s": round(statuses[200] * batch / elapsed),
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "seconds": round(elapsed, 1),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (uvicorn's workers) so far."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def topic_size(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def run(bootstrap: str, workers: int, batch: int, args: argparse.Namespace) -> dict:
    topic = new_topic(bootstrap, 4)
    payloads = bodies(batch)
    with RunningCollector(bootstrap, topic, workers=workers, log_level="WARNING") as collector:
        url = f"{collector.url}/events"
        asyncio.run(drive(url, payloads, batch, 2.0, args.concurrency))  # warm-up
        pid = collector.proc.pid  # type: ignore[union-attr]
        cpu0 = cpu_seconds(pid)
        result = asyncio.run(drive(url, payloads, batch, args.seconds, args.concurrency))
        cpu = cpu_seconds(pid) - cpu0
    result["collector_cpu_s"] = round(cpu, 1)
    result["events_per_cpu_s"] = round(result["events_acknowledged"] / cpu) if cpu else None
    on_topic = topic_size(bootstrap, topic)
    if on_topic < result["events_acknowledged"]:
        msg = f"only {on_topic:,} events on {topic}, {result['events_acknowledged']:,} acknowledged"
        raise SystemExit(msg)
    return {"workers": workers, "batch": batch, "concurrency": args.concurrency, **result, "on_topic": on_topic}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run (after a 2 s warm-up)")
    p.add_argument("--concurrency", type=int, default=32, help="connections, each with one request in flight")
    p.add_argument("--batch", type=int, action="append", help="events per request (repeatable; default 1 and 20)")
    p.add_argument("--workers", type=int, action="append", help="collector processes (repeatable; default 1 and 2)")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"), help="a running broker (default: own)")
    p.add_argument("--json", action="store_true", help="one JSON line per run")
    args = p.parse_args()
    broker = None if args.bootstrap else LocalBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        for workers in args.workers or [1, 2]:
            for batch in args.batch or [1, 20]:
                r = run(bootstrap, workers, batch, args)
                if args.json:
                    print(json.dumps(r), flush=True)
                else:
                    print(
                        f"{workers} worker(s), {batch:>3} event(s)/request, {args.concurrency} connections: "
                        f"{r['events_per_s']:>7,} events/s acknowledged ({r['requests_per_s']:,} requests/s), "
                        f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; statuses {r['statuses']}; "
                        f"{r['on_topic']:,} on the topic; collector CPU {r['collector_cpu_s']} s "
                        f"({r['events_per_cpu_s']:,} events per CPU-second)",
                        flush=True,
                    )
    finally:
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    main()
