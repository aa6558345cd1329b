"""The recovery store: Bytewax's SQLite partitions in one directory, checked before a run resumes from it.

Bytewax keeps each worker's state snapshots and source offsets in ``part-*.sqlite3``
files. Left to itself it starts afresh, without a word, from a directory that
holds none, and resumes from whatever a damaged or partial store still holds.
Either can lose history for good once the broker's retention has deleted the
messages a fresh start would need. So a store is created only on purpose
(``create_store``: ``propstream run --fresh`` or ``propstream init
--recovery-dir``) and checked before every run (``check_store``):

- every file opens as a Bytewax partition (a truncated or overwritten file
  does not);
- the partitions are one complete set (``part_count`` agrees, no index
  missing or doubled): a store assembled from two stores, or copied in part,
  is refused;
- its snapshots were written by this dataflow (their step ids);
- it has not lost progress: ``propstream-recovery.json`` beside the
  partitions records the most executions any check or running stream has
  seen in the store; fewer now means a ``-wal`` file was lost or an older copy
  was restored;
- every customer shard's side store (``shards/shard-<n>.sqlite``, where
  incremental snapshots keep the customers: ``stream.snapshots``) opens and
  passes SQLite's quick check. Whether it holds the generation a resume needs
  is checked when the shard is restored.

Rescaling: the store's partition count is fixed when it is created and does
not depend on how many processes run. Every process of a run opens the same
directory (shared storage on a cluster), and Bytewax assigns the partitions
to whichever workers there are, so a flow stopped with N processes resumes
with M.

State keys: a store whose shards hold state under the plain names of earlier
versions (``"3"``; their partitions under ``"topic/0"``) is resumed with
those names; any other gets ``stream.placement``'s balanced ones
(``StoreState.balanced_keys``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from stream.errors import StreamError
from stream.snapshots import SideStoreError, check_side_store, side_files

MARKER = "propstream-recovery.json"
_TABLES = {"parts", "exs", "fronts", "commits", "snaps"}


class RecoveryStoreError(StreamError, ValueError):
    """A recovery store is missing, damaged, incomplete or not this dataflow's; the message says what to do."""


@dataclass(frozen=True)
class StoreState:
    """What a checked store holds."""

    partitions: int
    executions: int  # runs Bytewax has recorded in the store
    starts: int = 0  # runs started on the store before this one (a run may write rows before Bytewax records it)
    # its shards' and partitions' state under stream.placement's balanced names (an empty store: yes)
    balanced_keys: bool = True


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*.sqlite3")) if root.is_dir() else []


def create_store(root: Path, partitions: int, flow_id: str) -> StoreState:
    """Create an empty store of ``partitions`` partitions; refuse to overwrite one."""
    from bytewax.recovery import init_db_dir

    if _files(root) or (root / MARKER).exists():
        msg = f"{root} already holds a recovery store: resume from it, or remove the directory to start afresh"
        raise RecoveryStoreError(msg)
    if root.exists() and any(root.iterdir()):
        msg = f"{root} is not empty and holds no recovery store: give an empty or new directory"
        raise RecoveryStoreError(msg)
    # Built beside it and renamed into place: a process killed halfway leaves no half-made store.
    root.parent.mkdir(parents=True, exist_ok=True)
    building = root.parent / f".{root.name}.{os.getpid()}.creating"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    init_db_dir(building, partitions)
    _write_marker(building, {"flow_id": flow_id, "partitions": partitions, "executions": 0, "starts": 0})
    if root.exists():
        root.rmdir()  # empty, checked above
    building.rename(root)
    return StoreState(partitions, 0)


def _read_marker(root: Path) -> dict | None:
    path = root / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"recovery store marker {path} is unreadable ({exc}): restore it with the store"
        raise RecoveryStoreError(msg) from exc
    return marker if isinstance(marker, dict) else {}


def _write_marker(root: Path, marker: dict) -> None:
    tmp = root / f".{MARKER}.{os.getpid()}.{threading.get_ident()}.tmp"  # processes of a run share the store
    tmp.write_text(json.dumps(marker, sort_keys=True))
    tmp.replace(root / MARKER)


def _read_partition(path: Path, thorough: bool) -> tuple[list[tuple[int, int]], int, set[tuple[str, str]]]:
    """(index, count) rows, executions recorded and the (step id, state key) pairs of the snapshots of one file."""
    con = sqlite3.connect(path)
    try:
        check = con.execute("PRAGMA quick_check").fetchone() if thorough else ("ok",)
        if check is None or check[0] != "ok":
            msg = f"integrity check failed: {check}"
            raise sqlite3.DatabaseError(msg)
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not _TABLES <= tables:
            msg = f"not a Bytewax recovery partition (tables {sorted(tables)})"
            raise sqlite3.DatabaseError(msg)
        parts = [(int(i), int(n)) for i, n in con.execute("SELECT part_index, part_count FROM parts")]
        (max_ex,) = con.execute("SELECT MAX(ex_num) FROM exs").fetchone()
        keys = set(con.execute("SELECT DISTINCT step_id, state_key FROM snaps"))
    finally:
        con.close()
    return parts, (0 if max_ex is None else int(max_ex) + 1), keys


def _scan(root: Path, flow_id: str, thorough: bool = True) -> StoreState:
    """Read every partition file; raise if the set is damaged, incomplete or another flow's."""
    where: dict[int, Path] = {}
    counts: set[int] = set()
    executions = 0
    # the shard steps, whose keys Placement names (inner steps' ids start so: "<flow>.customers.stateful_batch")
    named = (f"{flow_id}.customers.", f"{flow_id}.trending.")
    balanced = True
    for path in _files(root):
        try:
            parts, ex, keys = _read_partition(path, thorough)
        except sqlite3.DatabaseError as exc:
            msg = (
                f"recovery store file {path} is damaged ({exc}): restore the whole directory from one backup, "
                "or remove it and start afresh with --fresh"
            )
            raise RecoveryStoreError(msg) from exc
        if thorough:  # not in ProgressWatch's child, which has no numpy (-S) and records executions only
            from stream.placement import is_balanced_key

            balanced = balanced and all(is_balanced_key(k) for s, k in keys if s.startswith(named))
        foreign = sorted({s for s, _ in keys if not s.startswith(f"{flow_id}.")})
        if foreign:
            msg = f"recovery store {root} holds state of another dataflow (steps {foreign[:3]}): use its own directory"
            raise RecoveryStoreError(msg)
        for index, count in parts:
            if index in where:
                msg = f"recovery store {root} holds partition {index} twice ({where[index].name}, {path.name})"
                raise RecoveryStoreError(msg)
            where[index] = path
            counts.add(count)
        executions = max(executions, ex)
    if len(counts) != 1:
        msg = (
            f"recovery store {root} mixes partitions of different stores (partition counts {sorted(counts)}); "
            "restore one store whole"
        )
        raise RecoveryStoreError(msg)
    (n,) = counts
    missing = sorted(set(range(n)) - where.keys())
    if missing:
        msg = f"recovery store {root} is incomplete: partitions {missing} of {n} are missing; restore the directory"
        raise RecoveryStoreError(msg)
    return StoreState(n, executions, balanced_keys=balanced)


def check_store(root: Path, flow_id: str, starting: bool = True) -> StoreState:
    """Check a store before a run resumes from it; record what it holds, and (``starting``) one more start."""
    marker = _read_marker(root)
    if not _files(root):
        if marker is not None:
            msg = (
                f"recovery store {root} has lost its partition files: restore them, "
                "or remove the directory and start afresh with --fresh"
            )
        else:
            msg = (
                f"no recovery store at {root}: start one on purpose with --fresh (the stream then reads every "
                "source from its beginning), or point --recovery-dir at the existing store"
            )
        raise RecoveryStoreError(msg)
    state = _scan(root, flow_id)
    for path in side_files(root):
        try:
            check_side_store(path)
        except SideStoreError as exc:
            raise RecoveryStoreError(str(exc)) from exc
    seen = int((marker or {}).get("executions", 0))
    if state.executions < seen:
        msg = (
            f"recovery store {root} has lost progress: it holds {state.executions} run(s), but {seen} were seen in it "
            "before (a missing -wal file, or an older copy restored); restore the whole directory, "
            "or remove it and start afresh with --fresh"
        )
        raise RecoveryStoreError(msg)
    starts = int((marker or {}).get("starts", state.executions))
    record_progress(root, flow_id, state, starts + starting)
    return StoreState(state.partitions, state.executions, starts, state.balanced_keys)


def record_progress(root: Path, flow_id: str, state: StoreState, starts: int | None = None) -> None:
    """Raise the marker's count of executions to what the store holds (it never goes down)."""
    marker = _read_marker(root) or {}
    new = {
        "flow_id": flow_id,
        "partitions": state.partitions,
        "executions": max(state.executions, int(marker.get("executions", 0))),
        "starts": starts if starts is not None else int(marker.get("starts", 0)),
    }
    if new != marker:
        _write_marker(root, new)


class ProgressWatch:
    """While a run lasts, records in the marker the executions the store holds (the new run's among them).

    Without it, a store that loses the current run's ``-wal`` file would look
    like the store as the run found it: older, but not obviously damaged.

    The partitions are read by a child process: Bytewax links its own copy of
    SQLite, and a second copy in the stream's process breaks SQLite's POSIX
    locking. Closing such a connection took it for the last one, checkpointed
    and deleted the ``-wal`` file Bytewax was still writing to. Bytewax's later
    writes then went to an unlinked file: invisible to every other reader, and
    lost to a kill -9.
    """

    def __init__(self, root: Path, flow_id: str, every_s: float):
        self.root, self.flow_id, self.every_s = root, flow_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="propstream-recovery-watch", daemon=True)
        self._found = 0  # executions on record when the run began

    def __enter__(self) -> ProgressWatch:
        self._found = self._on_record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._record()

    def _on_record(self) -> int:
        with contextlib.suppress(RecoveryStoreError):
            return int((_read_marker(self.root) or {}).get("executions", 0))
        return 0

    def _run(self) -> None:
        """Record until this run's execution is on record; nothing the run does later changes it (a child costs CPU)."""
        while not self._stop.wait(self.every_s):
            self._record()
            if self._on_record() > self._found:
                return

    def _record(self) -> None:
        # -I -S: no site packages to scan; the package is imported from this checkout
        cmd = [sys.executable, "-I", "-S", "-c", _RECORD_SCRIPT, str(self.root), self.flow_id, str(_PACKAGE_ROOT)]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, timeout=60, check=False)


_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_RECORD_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[3]); from pathlib import Path; "
    "from stream.recovery import record_scanned; record_scanned(Path(sys.argv[1]), sys.argv[2])"
)


def record_scanned(root: Path, flow_id: str) -> None:
    """Scan the store and record its progress (``ProgressWatch``'s child process); a busy store is left for later."""
    try:
        record_progress(root, flow_id, _scan(root, flow_id, thorough=False))
    except (RecoveryStoreError, sqlite3.Error, OSError):
        pass  # a store busy mid-write is read again at the next turn; the check before a run decides
