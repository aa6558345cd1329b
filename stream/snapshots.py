"""Incremental recovery snapshots: a shard's customers live in a versioned side store (issue #15).

Bytewax asks every customer shard for a snapshot at the end of each epoch in
which it was awoken, and keeps what it is given. Pickling the whole shard made
every epoch cost the bytes of all its customers, however few had changed. So
a shard's customers live in a side store of their own, and Bytewax keeps only
a small marker:

- the shard tracks the customers changed since its last snapshot
  (``CustomerShard.changed``: applied events, windows that expired, rescored
  groups, customers dropped);
- ``snapshot()`` writes those customers (state, last written scores, place on
  the expiry heap; a tombstone for one dropped) under a new generation, with
  the rest of the shard (``shell``: clock, watermarks, item cells, ...),
  commits, and returns a ``ShardMarker`` (shard, generation) to Bytewax;
- a resume reads the marker Bytewax chose, then from the side store each
  customer's newest version at or below its generation.

What Bytewax v0.21.1 does, from its source (``src/operators.rs``,
``src/recovery.rs``), and what follows for the side store:

- ``snapshot()`` is called when the operator's input frontier passes an
  epoch, once per key awoken in that epoch (an item or a notification), and
  the returned object is pickled later, by the recovery writer: hence an
  immutable marker (bytes). Keys not awoken in an epoch are not asked: their changes
  stay in ``changed`` until they are.
- Resume: each worker records its frontier per execution; a resume starts at
  epoch ``R`` = the smallest frontier of the last execution's workers, and
  loads per key the newest snapshot with ``snap_epoch < R``. A run killed
  between our commit of generation ``g + 1`` and Bytewax writing (or
  committing the frontier past) its marker resumes from a marker of an
  older generation: rows above it were written by a run whose snapshot never
  counted. ``ShardStore.restore`` deletes them (and the generation numbers are
  never reused: a stale marker of an abandoned generation is refused instead
  of read with other rows).
- Garbage collection: ``commit(c)`` (``c`` = the closed epoch minus
  ``ceil(backup_interval / epoch_interval)`` epochs) deletes, per key, every
  snapshot older than its newest one at or before ``c``, and a later resume
  with ``R < c`` is refused (``InconsistentPartitionsError``). So the markers a
  resume can ever load are exactly those still in Bytewax's ``snaps`` table,
  plus the ones not yet written, which are newer. Compaction
  (``ShardStore.compact``) takes the smallest generation among this shard's
  markers in Bytewax's partitions (read by a child process: Bytewax links its
  own copy of SQLite, and two copies in one process break SQLite's locking)
  as its floor ``F`` and keeps, per customer,
  the newest version at or below ``F`` and every newer one: any resume reads
  the same customers as before. A longer ``-b`` backup interval keeps older
  markers in Bytewax's store, and so older versions here.
- A marker older than the floor (the side store is newer than the recovery
  partitions: one restored from an older backup than the other) or newer
  than the side store (the reverse) is a one-line error, never wrong state.

The side store belongs to the shard, not to the process: it is
``<recovery dir>/shards/shard-<n>.sqlite``, so a resume with another process
count opens the same files. SQLite in WAL mode with ``synchronous=FULL``, as
Bytewax's own partitions (an fsync per generation: a generation Bytewax may
load is on disk before the marker can be).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> store = ShardStore.open(root, 0)
>>> store.abandon_after(0)
>>> g1 = store.write(0, b"shell-1", [("u1", b"a"), ("u2", b"b")])
>>> g2 = store.write(g1, b"shell-2", [("u1", b"a2"), ("u2", None)])  # u2 dropped
>>> store.restore(g2)
(b'shell-2', {'u1': b'a2'})
>>> g3 = store.write(g2, b"shell-3", [("u3", b"c")])
>>> store.restore(g1)  # a resume from g1 abandons g2 and g3 for good
(b'shell-1', {'u1': b'a', 'u2': b'b'})
>>> store.write(g1, b"shell-4", [("u1", b"a4")])  # numbers are never reused
4
>>> store.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stream.errors import StreamError

if TYPE_CHECKING:
    from stream.shard import CustomerShard

SIDE_DIR = "shards"  # under the recovery directory; not *.sqlite3, which are Bytewax's partitions
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # one row per generation written (shell: the shard without its customers; NULL once compacted)
    "CREATE TABLE IF NOT EXISTS gens (gen INTEGER PRIMARY KEY, parent INTEGER NOT NULL, shell BLOB,"
    " n_rows INTEGER NOT NULL, n_bytes INTEGER NOT NULL, written_at REAL NOT NULL)",
    # a customer's version per generation it changed in (value NULL: dropped)
    "CREATE TABLE IF NOT EXISTS customers (user_id TEXT NOT NULL, gen INTEGER NOT NULL, value BLOB,"
    " PRIMARY KEY (user_id, gen)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS customers_by_gen ON customers (gen)",
)
_TABLES = {"meta", "gens", "customers"}
FLOORS_EVERY_S = 5.0  # how often the compaction floors are read from Bytewax's partitions
GENS_KEPT = 1000  # generation rows (sizes, times) kept below the floor, for benchmarks and diagnosis


class SideStoreError(StreamError, ValueError):
    """A shard's side store is damaged or does not match the recovery snapshot; one line says what to do."""


MARKER_PREFIX = b"propstream-shard-marker:"


@dataclass(frozen=True)
class ShardMarker:
    """What Bytewax keeps of a shard: its number and the side store generation that holds its state.

    Plain bytes, not a pickle, so that a process without this package reads it
    (``marker_floors``' reader).

    >>> ShardMarker(4, 2, 17).to_bytes()
    b'propstream-shard-marker:4:2:17'
    >>> ShardMarker.from_bytes(b'propstream-shard-marker:4:2:17')
    ShardMarker(version=4, shard=2, generation=17)
    """

    version: int  # stream.shard.STATE_VERSION of the code that wrote it
    shard: int
    generation: int

    def to_bytes(self) -> bytes:
        """The snapshot handed to Bytewax."""
        return MARKER_PREFIX + f"{self.version}:{self.shard}:{self.generation}".encode()

    @classmethod
    def from_bytes(cls, snapshot: bytes) -> ShardMarker | None:
        """The marker in ``snapshot``, or None when it is not one (a whole pickled shard)."""
        if not snapshot.startswith(MARKER_PREFIX):
            return None
        version, shard, generation = (int(x) for x in snapshot[len(MARKER_PREFIX) :].split(b":"))
        return cls(version, shard, generation)


def side_path(root: Path, shard: int) -> Path:
    """The side store of ``shard`` in recovery directory ``root``."""
    return root / SIDE_DIR / f"shard-{shard}.sqlite"


def side_files(root: Path) -> list[Path]:
    """Every shard side store in recovery directory ``root``."""
    d = root / SIDE_DIR
    return sorted(d.glob("shard-*.sqlite")) if d.is_dir() else []


def _damaged(path: Path, exc: BaseException) -> SideStoreError:
    msg = (
        f"recovery side store {path} is damaged ({type(exc).__name__}: {exc}): restore the whole recovery "
        "directory from one backup, or remove it and start afresh with --fresh"
    )
    return SideStoreError(msg)


def _create(path: Path) -> None:
    """Make an empty side store at ``path`` atomically: its schema written beside it, then renamed into place."""
    for stale in path.parent.glob(f"{path.name}.creating-*"):  # left by a process killed while creating it
        stale.unlink(missing_ok=True)
    building = path.with_name(f"{path.name}.creating-{os.getpid()}")
    con = sqlite3.connect(building, isolation_level=None)
    try:
        con.execute("BEGIN")
        for stmt in _SCHEMA:
            con.execute(stmt)
        con.execute("COMMIT")
    finally:
        con.close()
    with building.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(building, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_side_store(path: Path) -> None:
    """Raise ``SideStoreError`` naming ``path`` unless it is a readable, intact side store."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (check,) = con.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                msg = f"integrity check failed: {check}"
                raise sqlite3.DatabaseError(msg)
            tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not _TABLES <= tables:
                msg = f"not a shard side store (tables {sorted(tables)})"
                raise sqlite3.DatabaseError(msg)
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise _damaged(path, exc) from exc


class ShardStore:
    """One shard's versioned side store (see the module docstring); every error is a ``SideStoreError``."""

    def __init__(self, path: Path, con: sqlite3.Connection):
        self.path = path
        self._con = con

    @classmethod
    def open(cls, root: Path, shard: int) -> ShardStore:
        """Open (or create) the side store of ``shard`` under recovery directory ``root``.

        A new store is made whole beside its path and renamed into place, so a
        process killed while creating it leaves no store, never an empty one
        (which the check before a run rightly takes for a damaged file).
        """
        path = side_path(root, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not path.exists():
                _create(path)
            con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=5000")
            tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not _TABLES <= tables:
                msg = f"not a shard side store (tables {sorted(tables)})"
                raise sqlite3.DatabaseError(msg)
            for stmt in _SCHEMA:
                con.execute(stmt)
        except sqlite3.Error as exc:
            raise _damaged(path, exc) from exc
        return cls(path, con)

    def close(self) -> None:
        """Close the connection (every write is committed already)."""
        self._con.close()

    def _meta(self, key: str, default: int = 0) -> int:
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _next_gen(self) -> int:
        (top,) = self._con.execute("SELECT MAX(gen) FROM gens").fetchone()
        return max(self._meta("next_gen", 1), (top or 0) + 1)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), rolled back on any error; SQLite's errors mean damage."""
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _damaged(self.path, exc) from exc

    def write(self, parent: int, shell: bytes, rows: Iterable[tuple[str, bytes | None]]) -> int:
        """Commit ``rows`` (customer, pickled version; None: dropped) and ``shell`` as a generation after ``parent``."""
        with self._transaction() as con:
            gen = self._next_gen()
            stamped = [(user, gen, value) for user, value in rows]
            con.executemany("INSERT OR REPLACE INTO customers (user_id, gen, value) VALUES (?, ?, ?)", stamped)
            n_bytes = len(shell) + sum(len(v) for _, _, v in stamped if v is not None)
            con.execute(
                "INSERT INTO gens (gen, parent, shell, n_rows, n_bytes, written_at) VALUES (?, ?, ?, ?, ?, ?)",
                (gen, parent, shell, len(stamped), n_bytes, time.time()),
            )
            self._set_meta("next_gen", gen + 1)
        return gen

    def abandon_after(self, gen: int) -> None:
        """Delete generations above ``gen``: a run wrote them, but died before Bytewax kept their markers."""
        with self._transaction() as con:
            self._set_meta("next_gen", self._next_gen())  # numbers of abandoned generations are never reused
            con.execute("DELETE FROM customers WHERE gen > ?", (gen,))
            con.execute("DELETE FROM gens WHERE gen > ?", (gen,))

    def restore(self, gen: int) -> tuple[bytes, dict[str, bytes]]:
        """(shell, customer -> pickled version) as of generation ``gen``; newer generations are abandoned."""
        con = self._con
        try:
            floor, next_gen = self._meta("floor"), self._next_gen()
            row = con.execute("SELECT shell FROM gens WHERE gen = ?", (gen,)).fetchone()
            if row is None or row[0] is None:
                raise SideStoreError(self._missing(gen, floor, next_gen))
            self.abandon_after(gen)
            # SQLite takes the bare column ``value`` from the row holding MAX(gen): each customer's newest version.
            got = con.execute("SELECT user_id, MAX(gen), value FROM customers GROUP BY user_id").fetchall()
        except sqlite3.Error as exc:
            raise _damaged(self.path, exc) from exc
        return bytes(row[0]), {user: bytes(value) for user, _, value in got if value is not None}

    def _missing(self, gen: int, floor: int, next_gen: int) -> str:
        if gen >= next_gen:
            why = (
                f"which it never reached (it holds up to {next_gen - 1}): the side store is older than the "
                "recovery partitions"
            )
        elif gen < floor:
            why = f"which was compacted (floor {floor}): the side store is newer than the recovery partitions"
        else:
            why = "which a resume abandoned: the recovery partitions hold a snapshot of a run that did not count"
        return (
            f"recovery snapshot needs generation {gen} of side store {self.path}, {why}; restore the whole "
            "recovery directory from one backup, or remove it and start afresh with --fresh"
        )

    def compact(self, floor: int) -> int:
        """Drop versions no resume can read once every marker of generation < ``floor`` is gone; rows deleted."""
        try:
            old = self._meta("floor")
        except sqlite3.Error as exc:
            raise _damaged(self.path, exc) from exc
        if floor <= old:
            return 0
        with self._transaction() as con:
            touched = "user_id IN (SELECT user_id FROM customers WHERE gen > :old AND gen <= :f)"
            superseded = con.execute(
                f"DELETE FROM customers AS c WHERE gen < :f AND {touched} AND EXISTS (SELECT 1 FROM customers "
                "AS n WHERE n.user_id = c.user_id AND n.gen > c.gen AND n.gen <= :f)",
                {"old": old, "f": floor},
            ).rowcount
            tombstones = con.execute(
                "DELETE FROM customers AS c WHERE value IS NULL AND gen > :old AND gen <= :f AND NOT EXISTS "
                "(SELECT 1 FROM customers AS o WHERE o.user_id = c.user_id AND o.gen < c.gen)",
                {"old": old, "f": floor},
            ).rowcount
            con.execute("UPDATE gens SET shell = NULL WHERE gen < ? AND shell IS NOT NULL", (floor,))
            con.execute("DELETE FROM gens WHERE gen < ?", (floor - GENS_KEPT,))
            self._set_meta("floor", floor)
        return superseded + tombstones


# Run in a child process, with the standard library only: prints {state_key: smallest marker generation}.
_FLOORS_SCRIPT = """
import json, pickle, sqlite3, sys
from pathlib import Path
root, step, prefix = Path(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
floors = {}
for part in sorted(root.glob("*.sqlite3")):
    con = sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=10)
    rows = con.execute(
        "SELECT state_key, ser_change FROM snaps WHERE step_id = ? AND ser_change IS NOT NULL", (step,)
    ).fetchall()
    con.close()
    for key, ser in rows:
        snap = pickle.loads(ser)  # Bytewax pickles the bytes snapshot() returned
        if isinstance(snap, bytes) and snap.startswith(prefix):
            gen = int(snap.split(b":")[-1])
            floors[key] = min(gen, floors.get(key, gen))
print(json.dumps(floors))
"""


def marker_floors(root: Path, step_id: str) -> dict[str, int] | None:
    """Smallest marker generation per shard key in Bytewax's partitions (None: could not be read now).

    Read by a child process: Bytewax links its own copy of SQLite, and a
    second copy in the same process breaks SQLite's POSIX locking (closing our
    connection would checkpoint and delete the WAL file Bytewax is writing).
    Failing, or with a partition busy, there is no floor this time:
    compaction waits, since a missed marker would make a floor too high.
    """
    cmd = [sys.executable, "-I", "-S", "-c", _FLOORS_SCRIPT, str(root), step_id, MARKER_PREFIX.decode()]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
        floors = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {str(k): int(v) for k, v in floors.items()}


_PER_CUSTOMER = ("customers", "roster")  # CustomerShard attributes kept per customer, not in the shell


def _shell(sh: CustomerShard) -> bytes:
    """The shard pickled without its customers (nor their rows: heap entries, scores) and change set."""
    saved = {name: getattr(sh, name) for name in (*_PER_CUSTOMER, "changed")}
    try:
        for name in _PER_CUSTOMER:
            setattr(sh, name, type(saved[name])())
        sh.changed = None
        return pickle.dumps(sh, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for name, value in saved.items():
            setattr(sh, name, value)


def _version(sh: CustomerShard, user: str) -> bytes | None:
    """A customer's row: (state, last written scores as float64 bytes, time on the expiry heap), None once dropped."""
    state = sh.customers.get(user)
    if state is None:
        return None
    scores, due = sh.roster.entry(user)
    return pickle.dumps((state, scores, due), protocol=pickle.HIGHEST_PROTOCOL)


class ShardSnapshots:
    """Incremental snapshots of the customer shards of one flow, in side stores under ``root``.

    ``step_id`` is the stateful step's id in Bytewax's store (``<flow>.customers``):
    its markers there bound compaction. One instance per process; it keeps one
    open ``ShardStore`` per shard that process holds. ``keys``: each shard's state
    key in that step (``Placement.shard_key``; None: its number).
    """

    def __init__(
        self, root: Path, step_id: str, keys: Sequence[str] | None = None, floors_every_s: float = FLOORS_EVERY_S
    ):
        self.root = root
        self.step_id = step_id
        self.keys = keys
        self.floors_every_s = floors_every_s
        self._stores: dict[int, ShardStore] = {}
        self._floors: dict[str, int] = {}
        self._floors_at = float("-inf")
        _OPEN.add(self)

    def _floor(self, shard: int) -> int | None:
        """The compaction floor of ``shard``: read again at most every ``floors_every_s`` (an old one is lower)."""
        now = time.monotonic()
        if now - self._floors_at >= self.floors_every_s:
            got = marker_floors(self.root, self.step_id)
            if got is not None:
                self._floors, self._floors_at = got, now
        return self._floors.get(self.keys[shard] if self.keys is not None else str(shard))

    def _store(self, shard: int) -> ShardStore:
        store = self._stores.get(shard)
        if store is None:
            store = self._stores[shard] = ShardStore.open(self.root, shard)
        return store

    def save(self, sh: CustomerShard) -> bytes:
        """Write the customers changed since the last snapshot as a new generation; the marker for Bytewax."""
        store = self._store(sh.shard)
        if sh.generation == 0:  # a shard new to this run: what a killed run left for it never counted
            store.abandon_after(0)
        changed = sh.changed if sh.changed is not None else set(sh.customers)
        gen = store.write(sh.generation, _shell(sh), [(user, _version(sh, user)) for user in changed])
        sh.generation, sh.changed = gen, set()
        floor = self._floor(sh.shard)
        if floor is not None:
            store.compact(floor)
        return ShardMarker(sh.version, sh.shard, gen).to_bytes()

    def load(self, marker: ShardMarker) -> CustomerShard:
        """The shard as of ``marker``: its shell and each customer's newest version at or below its generation."""
        store = self._store(marker.shard)
        shell, rows = store.restore(marker.generation)
        try:
            sh: CustomerShard = pickle.loads(shell)
            for user, value in rows.items():
                state, scores, due = pickle.loads(value)
                sh.customers[user] = state
                sh.roster.restore_entry(user, scores, due)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise _damaged(store.path, exc) from exc
        sh.roster.reheap()
        sh.generation, sh.changed = marker.generation, set()
        return sh

    def close(self) -> None:
        """Close every open side store (SQLite checkpoints each one into its file and removes its -wal)."""
        for store in self._stores.values():
            store.close()
        self._stores.clear()


_OPEN: weakref.WeakSet[ShardSnapshots] = weakref.WeakSet()


def close_side_stores() -> None:
    """Close the side stores of every flow built in this process: a run calls it when its dataflow ends.

    Left open, their connections would outlive the run (and its ``-wal``
    files hold the last generations until they close), and a later run in
    the same process would read through them instead of from the files.
    """
    for snapshots in list(_OPEN):
        snapshots.close()
