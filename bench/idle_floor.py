"""Benchmark: a resident stream's parts idle, against the batch recompute at The Complete Journey's rate.

    python bench/idle_floor.py [--data-dir DIR] [--settle S] [--window S] [--parts python chdb kafka stream]
                               [--freshness S] [--batch-cpu-per-refresh S] [--bootstrap HOST:PORT]

Issue #15 asks the stream to be 20x cheaper than the batch recompute at
1-hour freshness at The Complete Journey's own rate (4,025 events a day):
the batch costs 24 refreshes a day of ``--batch-cpu-per-refresh`` CPU-s
(the suite's measured refresh, read from bench/results/suite.json), so the
stream may spend a twentieth of that a day, idle time included. Each part
a resident stream holds runs alone in a process of its own, idle, and its
CPU (/proc, every thread) is read over ``--window`` s after ``--settle`` s:

- ``python``: the interpreter with the stream's modules imported, asleep;
- ``chdb``: an embedded chDB opened on a fresh path with the stream's tables
  (``migrate``), nothing asked of it;
- ``kafka``: one librdkafka consumer as the stream configures it
  (``consumer_config``), assigned every partition of an empty topic at its
  end, in polls of ``kafka.poll_max_seconds``, with ``kafka.fetch_wait_seconds``
  as ``stream.freshness_seconds`` ``--freshness`` derives them
  (``Settings.latency``);
- ``stream``: the whole stream (`propstream run --clock wall`) on an empty
  topic with that freshness setting.

Prints one JSON line: each part's CPU-s a day, the batch's CPU-s a day at
1 hour, the stream's allowance (a twentieth) and each part over it.
BENCHMARKS.md section 6zd.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Stream, cpu_seconds, new_topic  # noqa: E402

READY = "idle-floor: ready"
DAY = 86_400.0
PARTS = ("python", "chdb", "kafka", "stream")


def batch_refresh_cpu(suite_json: Path) -> float | None:
    """The batch recompute's CPU-s per refresh of The Complete Journey from a saved suite run (None: none saved)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads(suite_json.read_text())["batch"]["cpu_s_per_refresh"])
    return None


def allowance(batch_cpu_per_refresh: float, refreshes_per_day: float = 24.0, ratio: float = 20.0) -> float:
    """CPU-s a day the stream may spend to be ``ratio`` x cheaper than the batch refreshed that often.

    >>> round(allowance(0.43), 3)
    0.516
    """
    return batch_cpu_per_refresh * refreshes_per_day / ratio


def child(part: str, bootstrap: str, topic: str, freshness: float, work: Path) -> None:
    """Hold ``part`` idle until killed (run as ``--child PART``; chDB's files under ``work``): print READY once up."""
    import stream.dataflow  # noqa: F401  (the stream's modules: numpy, xgboost, bytewax, pyarrow, ...)

    if part == "chdb":
        from stream.sinks.clickhouse import migrate, open_client

        client = open_client(f"chdb://{work / 'chdb'}")
        migrate(client)
    if part == "kafka":
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from schemas.settings import Settings, StreamSettings
        from stream.sources.kafka import consumer_config

        latency = Settings(stream=StreamSettings(freshness_seconds=freshness)).latency()
        consumer = Consumer(consumer_config(bootstrap, {}, latency.fetch_wait_seconds))
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
        print(READY, flush=True)
        while True:
            consumer.consume(1000, latency.poll_max_seconds)
    print(READY, flush=True)
    while True:
        time.sleep(3600)


def measure(proc_pid: int, settle: float, window: float) -> float:
    """CPU-s a day of a running process over ``window`` s, after ``settle`` s."""
    time.sleep(settle)
    c0, t0 = cpu_seconds(proc_pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(proc_pid) - c0) / (time.monotonic() - t0) * DAY


def part_floor(part: str, args: argparse.Namespace, bootstrap: str, work: Path) -> float:
    """Idle CPU-s a day of one part, alone in a process of its own."""
    topic = new_topic(bootstrap, args.partitions, prefix="idle") if part in ("kafka", "stream") else ""
    if part == "stream":
        env = {"PROPSTREAM_STREAM__FRESHNESS_SECONDS": f"{args.freshness:g}"}
        s = Stream(ROOT, args.data_dir, work, topic, bootstrap, args.settle + args.window + 3600, env=env)
        try:
            s.wait_started()
            return measure(s.proc.pid, args.settle, args.window)
        finally:
            s.stop()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--bootstrap", bootstrap]
    cmd += ["--topic", topic, "--freshness", str(args.freshness), "--work", str(work / part)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != READY:
            msg = f"idle-floor: the {part} part did not start (exit {proc.wait()})"
            raise SystemExit(msg)
        return measure(proc.pid, args.settle, args.window)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--settle", type=float, default=30.0, help="seconds after a part is up before its window")
    ap.add_argument("--window", type=float, default=120.0, help="seconds of idle CPU read per part")
    ap.add_argument("--freshness", type=float, default=3600.0, help="stream.freshness_seconds of kafka and stream")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-cpu-per-refresh", type=float, default=None, help="default: bench/results/suite.json's")
    ap.add_argument("--bootstrap", default=None, help="a broker elsewhere (default: a local one, tools/kafka)")
    ap.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--topic", default="", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.bootstrap, args.topic, args.freshness, args.work or Path(tempfile.mkdtemp()))
        return
    batch = args.batch_cpu_per_refresh or batch_refresh_cpu(ROOT / "bench" / "results" / "suite.json")
    if batch is None:
        msg = "idle-floor: no batch figure: pass --batch-cpu-per-refresh or run bench/suite.py first"
        raise SystemExit(msg)
    floors: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap
        if bootstrap is None and {"kafka", "stream"} & set(args.parts):
            from tools.kafka.broker import LocalBroker

            bootstrap = stack.enter_context(LocalBroker()).bootstrap
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idle-floor-")))
        for part in args.parts:
            floors[part] = part_floor(part, args, bootstrap or "", work)
            print(f"idle-floor: {part} {floors[part]:.1f} CPU-s a day", file=sys.stderr, flush=True)
    allowed = allowance(batch)
    print(
        json.dumps(
            {
                "freshness_seconds": args.freshness,
                "window_s": args.window,
                "batch_cpu_s_per_refresh": batch,
                "batch_cpu_s_per_day_1h": round(batch * 24, 2),
                "stream_allowance_cpu_s_per_day": round(allowed, 3),
                "idle_cpu_s_per_day": {p: round(v, 1) for p, v in floors.items()},
                "over_allowance": {p: round(v / allowed, 1) for p, v in floors.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
