"""A throwaway single-node Apache Kafka broker (KRaft) for integration tests and local development.

The broker jars come from Maven Central through ``tools/kafka/pom.xml`` (needs ``mvn`` and Java 17);
they are installed once per machine into a cache directory and shared by every checkout::

    python tools/kafka/broker.py install                # fetch the jars (idempotent)
    python tools/kafka/broker.py run [--port 9092]      # a broker in the foreground until Ctrl-C

From Python (this file is stdlib-only)::

    with LocalBroker() as broker:                       # free ports, fresh temporary log dir
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        broker.restart()                                # same port and data: nothing is lost
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

POM = Path(__file__).resolve().with_name("pom.xml")
HOST = "127.0.0.1"
# Small heap; C1-only JIT and the serial GC start a test broker ~40% faster on a small machine.
JVM_OPTS = ("-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
LOG4J = """\
log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def kafka_version() -> str:
    """The Kafka version pinned in ``pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns) or "unknown"


def default_home() -> Path:
    """``$PROPSTREAM_KAFKA_HOME``, else ``~/.cache/propstream/kafka-<version>`` (honours ``$XDG_CACHE_HOME``)."""
    if home := os.environ.get("PROPSTREAM_KAFKA_HOME"):
        return Path(home)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "propstream" / f"kafka-{kafka_version()}"


def ensure_installed(root: Path | None = None) -> Path:
    """Install the broker jars under ``root`` (default: :func:`default_home`) and return their folder.

    Runs Maven only when ``root/libs`` does not hold this version yet. A lock file serialises concurrent
    installs, and the jars are copied to a temporary folder that is renamed into place when complete,
    so an interrupted install is never mistaken for a finished one.
    """
    root = Path(root) if root else default_home()
    libs = root / "libs"
    marker = libs / f"kafka_2.13-{kafka_version()}.jar"
    if marker.is_file():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if marker.is_file():  # another process installed it while we waited
            return libs
        if shutil.which("mvn") is None:
            msg = "Maven (mvn) is needed to install the Kafka broker jars"
            raise RuntimeError(msg)
        tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=root))
        try:
            cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
            done = subprocess.run(cmd, cwd=POM.parent, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                msg = f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
                raise RuntimeError(msg)
            shutil.rmtree(libs, ignore_errors=True)  # jars of another version
            tmp.chmod(0o755)  # mkdtemp made it private
            tmp.rename(libs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker on ``port`` answers an ApiVersions (v0) request without error."""
    client = b"propstream-probe"
    request = struct.pack(">hhih", 18, 0, 7, len(client)) + client  # api key, version, correlation id, client
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            head = b""
            while len(head) < 10:  # size, correlation id, error code
                chunk = s.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return correlation == 7 and error == 0


def _with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM if this Python process dies (via util-linux ``setpriv``, if present).

    A test run killed by a CI timeout then leaves no broker behind. ``setpriv`` execs ``cmd``, so the PID stays.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else cmd


class LocalBroker:
    """A single-node KRaft broker+controller on 127.0.0.1, as a subprocess.

    ``port``/``controller_port`` default to free ports, ``data_dir`` to a fresh temporary directory that
    :meth:`close` removes (a given ``data_dir`` is kept, and reused with its data if already formatted).
    The directory holds ``server.properties``, ``data/`` (Kafka's log.dirs) and ``broker.log``.
    ``config`` adds or overrides broker properties. Ports and data stay fixed across :meth:`restart`.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        controller_port: int | None = None,
        config: Mapping[str, object] | None = None,
        home: Path | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        """Configure the broker; nothing runs before :meth:`start` (or ``with``)."""
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self._owns_dir = data_dir is None
        self.dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="propstream-kafka-"))
        self.config = dict(config or {})
        self.home = home
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # of the last start(), without installing
        self._libs: Path | None = None
        self._log_offset = 0  # where the current process's output starts in log_file

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients."""
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's stdout/stderr (appended to by every start)."""
        return self.dir / "broker.log"

    def properties(self) -> dict[str, object]:
        """The broker's ``server.properties``."""
        return {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.dir / "data",
            "num.partitions": 1,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 4,  # default 50: slow to create on a first consumer group
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.check.interval.ms": 1000,
            "message.max.bytes": 2 * 1024 * 1024,  # as docker-compose.yml: 1 MB poison messages must pass
            # After kill() the restarted controller waits out the dead broker's session (default 9 s) first.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,  # default 128 MB of a 512 MB heap
            **self.config,
        }

    def _java(self, main: str, *args: str, level: str = "INFO") -> list[str]:
        log4j = self.dir / f"log4j-{level.lower()}.properties"
        log4j.write_text(LOG4J.format(level=level))
        return ["java", *JVM_OPTS, f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{self._libs}/*", main, *args]

    def start(self) -> LocalBroker:
        """Format storage if new, start the broker, and wait until it answers requests."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._libs = ensure_installed(self.home)
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        if not (self.dir / "data" / "meta.properties").exists():
            self._format(props)
        with open(self.log_file, "ab") as log:
            self._log_offset = log.tell()
            cmd = _with_parent(self._java("kafka.Kafka", str(props)))
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready(time.monotonic() + self.startup_timeout)
        self.startup_seconds = time.monotonic() - t0
        return self

    def _format(self, props: Path) -> None:
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid: 22 url-safe base64 chars, never a leading '-'
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), level="WARN")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"formatting Kafka storage failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
            raise RuntimeError(msg)

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while not api_versions_ok(self.port, timeout=1.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self.proc.poll() is not None else "did not answer in time"
                self.kill()
                msg = f"Kafka broker {why}; from {self.log_file}:\n{self.tail()}"
                raise RuntimeError(msg)
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        """The first ERROR lines and the last ``lines`` lines the current process logged, for error messages."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_offset)
                logged = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        errors = []  # each with the exception message that follows it, if any
        for i, line in enumerate(logged):
            if " ERROR " in line or " FATAL " in line:
                errors += [line, *(n for n in logged[i + 1 : i + 2] if not n.startswith("["))]
        return "\n".join([*errors[:10], "...", *logged[-lines:]])

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM), or SIGKILL after ``timeout`` seconds. Data stays."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the broker, as in a crash. Data written to the OS stays (Kafka recovers it on start)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> LocalBroker:
        """:meth:`stop` then :meth:`start` on the same ports and data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the data directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        """Start the broker."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """:meth:`close` the broker."""
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``install`` the jars, or ``run`` a broker in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="fetch the broker jars with Maven (once per machine)")
    run = sub.add_parser("run", help="run a broker until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--dir", type=Path, help="data directory, kept and reused (default: temporary)")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    libs = ensure_installed()
    print(f"Kafka {kafka_version()} jars in {libs} ({time.monotonic() - t0:.1f}s)", flush=True)
    if args.command == "run":
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as cleanly as Ctrl-C
        with LocalBroker(args.port, args.dir) as broker:
            print(f"bootstrap.servers={broker.bootstrap}  ({broker.startup_seconds:.1f}s to start)", flush=True)
            print(f"data and log: {broker.dir}; Ctrl-C stops", flush=True)
            try:
                broker.proc.wait()  # type: ignore[union-attr]
            except KeyboardInterrupt:
                print("stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
