"""What the live benchmarks share: the `propstream run` process, topics, /proc readings, the refreshes read-out.

bench/live.py, bench/kafka.py and bench/suite.py start the stream the same
way (a `propstream run` subprocess with its own chDB and a copy of the
production models); the command line is built here once, so the benchmarks
measure the same thing.

    python bench/common.py --read-refreshes DSN   # (internal) score_history refreshes of a chDB, as JSON
    python bench/common.py --read-features DSN    # (internal) each customer's feature row as_of, as JSON
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STARTED = "stream started"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (threads included) and of the children it waited for, from /proc.

    Children count: the stream reads its recovery store in short-lived child processes.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of a running process, from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_topic(bootstrap: str, partitions: int, prefix: str = "live") -> str:
    """A fresh events topic (and its dead-letter topic), as `propstream init` makes them."""
    from schemas.settings import KafkaSettings
    from stream.topics import create_topics

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_topics(KafkaSettings(bootstrap_servers=bootstrap, topic=topic, partitions=partitions))
    return topic


def run_command(
    data_dir: Path,
    dsn: str,
    source: str,
    clock: str,
    catalog: Path,
    exit_when_idle: float,
    process_id: int | None = None,
    addresses: str = "",
    recovery_dir: Path | None = None,
    snapshot_seconds: float | None = None,
) -> list[str]:
    """The `propstream run --json` command line of one stream process."""
    cmd = [sys.executable, "-m", "propstream.cli", "run", "--json", "--data-dir", str(data_dir)]
    cmd += ["--clickhouse", dsn, "--input", source, "--clock", clock, "--catalog", str(catalog)]
    cmd += ["--exit-when-idle", str(exit_when_idle)]
    if process_id is not None and addresses:
        cmd += ["--process-id", str(process_id), "--addresses", addresses]
    if recovery_dir is not None:
        cmd += ["--recovery-dir", str(recovery_dir)]
        if not recovery_dir.exists():
            cmd.append("--fresh")
    if snapshot_seconds is not None:
        cmd += ["--snapshot-seconds", str(snapshot_seconds)]
    return cmd


def run_env(src: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a stream process: The Complete Journey's groups, the source tree on the path."""
    from propstream import completejourney

    env = {**os.environ, "PROPSTREAM_GROUPS_FILE": str(completejourney.GROUPS_FILE), "PYTHONPATH": str(src)}
    return {**env, **(extra or {})}


class Stream:
    """A `propstream run` process on a Kafka topic; its stderr goes to a log file, stdout is its JSON summary."""

    def __init__(
        self,
        src: Path,
        data_dir: Path,
        work: Path,
        topic: str,
        bootstrap: str,
        exit_when_idle: float,
        clock: str = "wall",
        name: str | None = None,
        process_id: int | None = None,
        addresses: str = "",
        recovery_dir: Path | None = None,
        snapshot_seconds: float | None = None,
        env: dict[str, str] | None = None,
    ):
        from propstream import completejourney

        _, catalog = completejourney.prepare(data_dir)
        self.dir = work / (name or topic)
        shutil.copytree(data_dir / "models", self.dir / "models")
        self.dsn = f"chdb://{self.dir / 'chdb'}"
        cmd = run_command(
            self.dir,
            self.dsn,
            f"kafka://{bootstrap}/{topic}",
            clock,
            catalog,
            exit_when_idle,
            process_id,
            addresses,
            recovery_dir,
            snapshot_seconds,
        )
        self.log = self.dir / "stream.log"
        self.proc = subprocess.Popen(
            cmd, env=run_env(src, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=src, text=True
        )
        self.started = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stderr is not None
        with self.log.open("w") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                if STARTED in line:
                    self.started.set()

    def wait_started(self, timeout: float = 300) -> None:
        """Block until the stream prints its start line; exit with its log if it died first."""
        if not self.started.wait(timeout) or self.proc.poll() is not None:
            msg = f"the stream did not start:\n{self.log.read_text()[-3000:]}"
            raise SystemExit(msg)

    def applied(self) -> int:
        """Events applied so far, from the stream's last progress line (``12,345 applied, ...``) on stderr."""
        count = 0
        with contextlib.suppress(OSError):
            for line in self.log.read_text().splitlines():
                head = line.split(" applied,", 1)
                if len(head) == 2 and head[0].replace(",", "").isdigit():
                    count = int(head[0].replace(",", ""))
        return count

    def wait_applied(self, n: int, timeout: float) -> bool:
        """Block until the stream says it applied ``n`` events (or ``timeout`` s pass); whether it did."""
        deadline = time.time() + timeout
        while self.applied() < n:
            if time.time() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(1.0)
        return True

    def stop(self) -> None:
        """Terminate this process (by its own PID) and wait for it."""
        self.proc.terminate()
        self.proc.wait(60)

    def wait_exit(self, timeout: float) -> dict:
        """The stream's JSON summary once it exits; exit with its log if it failed."""
        self.proc.wait(timeout)  # stdout holds one JSON line; stderr is the follower thread's
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        if self.proc.returncode != 0:
            msg = f"stream failed ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
            raise SystemExit(msg)
        return json.loads(out.strip().splitlines()[-1])


def complete_journey(data_dir: Path) -> tuple:
    """(Settings, valid EventRecords in the file's order, the events file) of The Complete Journey under ``data_dir``.

    The data set is downloaded and prepared on first use (``propstream.completejourney.prepare``).
    """
    from propstream import app, completejourney
    from schemas.mapping import load_mapping
    from schemas.settings import Settings

    events, catalog_file = completejourney.prepare(data_dir)
    settings = Settings(data_dir=data_dir, catalog_file=catalog_file, groups_file=completejourney.GROUPS_FILE)
    records, _ = app.read_file_records([events], load_mapping(completejourney.MAPPING_FILE), settings.events.types)
    return settings, records, events


def households(data_dir: Path, limit: int | None = None) -> list:
    """The Complete Journey's valid events (EventRecords) in the file's order (the first ``limit`` batches' worth)."""
    from propstream import completejourney
    from schemas.mapping import load_mapping
    from stream.parse import EventParser
    from stream.sources import read_batches

    events, _ = completejourney.prepare(data_dir)
    mapping = load_mapping(completejourney.MAPPING_FILE)
    parser = EventParser(mapping)
    out: list = []
    for batch in read_batches(events, 50_000, mapping=mapping):
        out += parser.parse_batch(batch).records
        if limit is not None and len(out) >= limit:
            break
    return out


def refreshes(dsns: list[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Per customer: refresh times (as_of, ms, ascending) and when each refresh's first score row was written.

    Read in a subprocess per chDB (one chDB path per process); customers of
    several processes' stores are disjoint (keyed by user).
    """
    rows: dict[str, tuple[list[int], list[int]]] = {}
    for dsn in dsns:
        for user, as_of, written in _read_out("--read-refreshes", dsn):
            a, w = rows.setdefault(user, ([], []))
            a.append(as_of)
            w.append(written)
    return rows


def features_as_of(dsns: list[str]) -> dict[str, int]:
    """Per customer: the as_of (ms) of its stored feature row, the last refresh the stream applied.

    A refresh that moved no score writes no score row (scores are written when
    they change), so an event can be applied and its customer's scores current
    with no score row at or after it; its feature row says it was applied.
    """
    found: dict[str, int] = {}
    for dsn in dsns:
        found.update(_read_out("--read-features", dsn))
    return found


def _read_out(flag: str, dsn: str) -> Any:
    """The JSON this file prints with ``flag`` for one chDB, run in a subprocess (one chDB path per process)."""
    out = subprocess.run(
        [sys.executable, __file__, flag, dsn],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout)


def read_features(dsn: str) -> None:
    """Print {user: as_of ms} of customer_features (a subprocess)."""
    from stream.sinks.clickhouse import open_client

    rows = (
        open_client(dsn)
        .query("SELECT user_id, toUnixTimestamp64Milli(max(as_of)) FROM propstream.customer_features GROUP BY user_id")
        .result_rows
    )
    print(json.dumps(dict(rows)))


def read_refreshes(dsn: str) -> None:
    """Print [user, as_of ms, min written_at ms] of every refresh in score_history, ordered (a subprocess)."""
    from stream.sinks.clickhouse import open_client

    client = open_client(dsn)
    rows = client.query(
        "SELECT user_id, toUnixTimestamp64Milli(as_of) AS a, toUnixTimestamp64Milli(min(written_at)) "
        "FROM propstream.score_history GROUP BY user_id, as_of ORDER BY user_id, a"
    ).result_rows
    print(json.dumps([list(r) for r in rows]))


if __name__ == "__main__":
    readers = {"--read-refreshes": read_refreshes, "--read-features": read_features}
    if len(sys.argv) != 3 or sys.argv[1] not in readers:
        raise SystemExit(__doc__)
    readers[sys.argv[1]](sys.argv[2])
