"""`propstream collect` in a subprocess, and reading what it wrote to Kafka (tests and bench/collector.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from confluent_kafka import Consumer, TopicPartition

from tools.kafka.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


class RunningCollector:
    """The collector as users run it: ``python -m propstream collect`` on a free port, until :meth:`stop`.

    ``settings`` are collector settings (``ack_timeout_seconds=1``), given as
    ``PROPSTREAM_COLLECTOR__*`` variables; its stderr is kept for :meth:`stop` to return.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        workers: int = 1,
        origins: str = "",
        log_level: str = "DEBUG",  # even then, no body and no user id may reach the log
        **settings: object,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [
            sys.executable,
            "-m",
            "propstream",
            "collect",
            "--kafka",
            f"kafka://{bootstrap}/{topic}",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--allowed-origins",
            origins,
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PROPSTREAM_LOG_LEVEL": log_level,
            **{f"PROPSTREAM_COLLECTOR__{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log = tempfile.TemporaryFile()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> RunningCollector:
        """Start and wait until /health answers 200 (Kafka reachable, topics there)."""
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"propstream collect exited {self.proc.returncode}:\n{self.output()[-3000:]}"
                raise RuntimeError(msg)
            try:
                if httpx2.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx2.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        msg = f"propstream collect did not become healthy in {timeout} s:\n{self.output()[-3000:]}"
        raise RuntimeError(msg)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> str:
        """SIGTERM (graceful: queued messages are flushed), and the process's output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()

    def __enter__(self) -> RunningCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()


def read_topic(bootstrap: str, topic: str, at_least: int, timeout: float = 30.0, settle: float = 1.0) -> list:
    """Every message of ``topic`` from the start (all partitions): (key, value as JSON) pairs.

    Reads until ``at_least`` arrived and nothing more came for ``settle`` seconds, or ``timeout``.
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-topic", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        got: list = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and (len(got) < at_least or time.monotonic() - last < settle):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append((m.key(), json.loads(m.value())))
                last = time.monotonic()
        return got
    finally:
        c.close()
