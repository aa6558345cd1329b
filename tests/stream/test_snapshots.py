"""Incremental recovery snapshots (issue #15): side stores per shard, markers in Bytewax, resume = uninterrupted run."""

from __future__ import annotations

import os
import pickle
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.placement import Placement
from stream.recovery import RecoveryStoreError, check_store, create_store
from stream.shard import (
    STATE_VERSION,
    CustomerShard,
    ShardInput,
    ShardOutput,
    ShardProcessor,
    SnapshotMismatchError,
    restore_shard,
)
from stream.snapshots import (
    ShardMarker,
    ShardSnapshots,
    ShardStore,
    SideStoreError,
    close_side_stores,
    side_path,
)
from stream.state import StateConfig
from tests.stream import snapshot_flow
from tests.stream.test_shard import CATALOG, CFG, DAY, HOUR, T, ev, purchases_models

L = 1_000
STEP = "propstream.customers"


def fingerprint(sh: CustomerShard, cfg: StateConfig = CFG) -> dict:
    """What a shard holds, in a form two shards can be compared by (feature rows, not object identity)."""
    customers = {}
    for user, state in sh.customers.items():
        row = cfg.new_row()
        state.write_features(cfg, row)
        scores = sh.roster.last_scores(user)
        customers[user] = (
            row.tobytes(),
            sorted(state.seen),
            state.next_change(cfg),
            sh.roster.due_of(user),
            None if scores is None else np.nan_to_num(scores, nan=-1.0).tobytes(),
        )
    return {
        "customers": customers,
        "heap": sh.roster.heap_times() == sh.roster.due_times(),
        "clock": (sh.clock, sh.horizon, dict(sh.watermarks), sorted((k, tuple(v)) for k, v in sh.items.items())),
        "pending": {u: sorted(g) for u, g in sh.pending.items()},
        "held": [tuple(e) for e in sh.held],
        "model_versions": dict(sh.model_versions),
    }


def batches(n_users: int = 60, n_batches: int = 12, seed: int = 5) -> list[ShardInput]:
    """Batches of purchases over a few days: each touches a few customers and moves the clock."""
    rng = random.Random(seed)
    items = ["c1", "t1"]
    out, eid = [], 0
    for b in range(n_batches):
        at = T + b * 6 * HOUR
        events = []
        for _ in range(rng.randint(1, 8)):
            eid += 1
            events.append(ev(f"u{rng.randrange(n_users)}", rng.choice(items), at + rng.randrange(HOUR), f"e{eid}"))
        events.sort(key=lambda e: e.ts_ms)
        out.append(ShardInput(0, events, None, watermark=at + HOUR))
    return out


def gen_rows(root: Path, shard: int = 0) -> dict[int, tuple[int, int]]:
    """Generation -> (rows, bytes) written, from a side store."""
    con = sqlite3.connect(side_path(root, shard))
    try:
        return {g: (n, b) for g, n, b in con.execute("SELECT gen, n_rows, n_bytes FROM gens")}
    finally:
        con.close()


def uninterrupted(proc: ShardProcessor, inputs: list[ShardInput]) -> tuple[list[ShardOutput], list[dict]]:
    """A shard that runs through ``inputs`` with no snapshot: its output and its fingerprint after each batch."""
    ref = CustomerShard(0, "layout")
    outs, prints = [], []
    for inp in inputs:
        outs.append(proc.process(ref, inp))
        prints.append(fingerprint(ref))
    return outs, prints


def test_a_shard_resumed_from_any_generation_continues_exactly_as_the_uninterrupted_shard(tmp_path: Path):
    """Generations written after the marker a resume reads (a killed run's) are abandoned, never read."""
    inputs = batches()
    proc = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    ref_outs, ref_prints = uninterrupted(proc, inputs)

    for cut in (0, 3, 7):
        root = tmp_path / f"cut{cut}"
        side = ShardSnapshots(root, STEP)
        sh = CustomerShard(0, "layout")
        sh.changed = set()
        markers = []
        for inp in inputs:
            proc.process(sh, inp)
            markers.append(side.save(sh))
        side.close()
        # A new process resumes from the marker after batch ``cut``; the side store holds generations past it.
        side = ShardSnapshots(root, STEP)
        resumed = restore_shard(markers[cut], "layout", None, side)
        assert fingerprint(resumed) == ref_prints[cut]
        for i in range(cut + 1, len(inputs)):
            out = proc.process(resumed, inputs[i])
            assert (out.features, list(out.scores.user_id), list(out.scores.score)) == (
                ref_outs[i].features,
                list(ref_outs[i].scores.user_id),
                list(ref_outs[i].scores.score),
            )
            side.save(resumed)
        assert fingerprint(resumed) == ref_prints[-1]
        side.close()
        gens = gen_rows(root)  # the abandoned generations' numbers are not reused
        assert ShardMarker.from_bytes(markers[cut]).generation in gens  # type: ignore[union-attr]
        assert not set(gens) & {ShardMarker.from_bytes(m).generation for m in markers[cut + 1 :]}  # type: ignore[union-attr]


def two_partition_batches(n_batches: int = 12, seed: int = 7) -> list[ShardInput]:
    """Purchases from two partitions in turn, ``p0`` a day ahead of ``p1``: ``p0``'s events wait for the clock."""
    rng = random.Random(seed)
    out, eid = [], 0
    for b in range(n_batches):
        for part, ahead in (("p0", DAY), ("p1", 0)):
            at = T + b * 6 * HOUR + ahead
            events = []
            for _ in range(rng.randint(1, 6)):
                eid += 1
                events.append(
                    ev(f"u{rng.randrange(40)}", rng.choice(["c1", "t1"]), at + rng.randrange(HOUR), f"e{eid}")
                )
            events.sort(key=lambda e: e.ts_ms)
            out.append(ShardInput(0, events, None, part, 2, watermark=at + HOUR))
    return out


def test_events_waiting_for_the_clock_are_in_the_snapshot_and_a_resume_continues_exactly(tmp_path: Path):
    """Side store or whole pickled shard: a resume from any batch holds the same waiting events and goes on the same."""
    inputs = two_partition_batches()
    proc = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    outs, ref_prints = uninterrupted(proc, inputs)
    ref_outs = [outputs(o) for o in outs]
    assert all(fp["held"] for fp in ref_prints[:-1])  # p0's latest events always wait for p1
    for cut in (0, 5, 16):
        root = tmp_path / f"cut{cut}"
        side = ShardSnapshots(root, STEP)
        sh = CustomerShard(0, "layout")
        sh.changed = set()
        for inp in inputs[: cut + 1]:
            proc.process(sh, inp)
            marker = side.save(sh)
        side.close()
        whole = pickle.dumps(sh)
        side = ShardSnapshots(root, STEP)
        for resumed in (restore_shard(marker, "layout", None, side), restore_shard(whole, "layout")):
            assert fingerprint(resumed) == ref_prints[cut]
            assert [outputs(proc.process(resumed, inp)) for inp in inputs[cut + 1 :]] == ref_outs[cut + 1 :]
            assert fingerprint(resumed) == ref_prints[-1]
        side.close()


def outputs(out) -> tuple:
    return (out.features, list(out.scores.user_id), list(out.scores.score))


def test_packed_customers_snapshot_and_resume_exactly_as_a_run_that_never_packs(tmp_path: Path, monkeypatch):
    """Waiting customers are packed (``CustomerState.pack``); neither outputs, snapshots nor resumes can tell."""
    inputs = batches()
    monkeypatch.setattr("stream.shard.PACK_AFTER_REFRESHES", 10**9)  # the reference never packs
    never = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    ref = CustomerShard(0, "layout")
    ref_outs = [never.process(ref, inp) for inp in inputs]
    ref_print = fingerprint(ref)

    monkeypatch.setattr("stream.shard.PACK_AFTER_REFRESHES", 1)  # customers packed after one refresh's wait
    proc = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    side = ShardSnapshots(tmp_path, STEP)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    markers, pickles, packed = [], [], 0
    for inp, ref_out in zip(inputs, ref_outs, strict=True):
        assert outputs(proc.process(sh, inp)) == outputs(ref_out)
        packed += sum(s.packed for s in sh.customers.values())
        pickles.append(pickle.dumps(sh))  # Bytewax's own snapshot, without a recovery directory
        markers.append(side.save(sh))
    side.close()
    assert packed > 0  # the premise: customers were packed when snapshotted
    assert fingerprint(sh) == ref_print
    cut = 5
    side = ShardSnapshots(tmp_path, STEP)
    for resumed in (restore_shard(markers[cut], "layout", None, side), restore_shard(pickles[cut], "layout")):
        again = ShardProcessor(CFG, CATALOG, purchases_models(), L)  # a new process
        for inp, ref_out in zip(inputs[cut + 1 :], ref_outs[cut + 1 :], strict=True):
            assert outputs(again.process(resumed, inp)) == outputs(ref_out)
        assert fingerprint(resumed) == ref_print
    side.close()


def test_a_snapshot_writes_the_changed_customers_not_the_shard(tmp_path: Path):
    proc = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    side = ShardSnapshots(tmp_path, STEP)
    everyone = [ev(f"u{i}", "c1", T + i, f"e{i}") for i in range(300)]
    proc.process(sh, ShardInput(0, everyone, None, watermark=T + 300))
    marker = side.save(sh)
    two = [ev("u7", "t1", T + 301, "x1"), ev("u9", "c1", T + 302, "x2")]
    proc.process(sh, ShardInput(0, two, None, watermark=T + 302))
    side.save(sh)
    side.save(sh)  # nothing changed since
    (g1, (n1, b1)), (_, (n2, b2)), (_, (n3, _)) = sorted(gen_rows(tmp_path).items())
    assert (n1, n2, n3) == (300, 2, 0)
    assert b2 < b1 / 50
    assert len(marker) < 100 and ShardMarker.from_bytes(marker) == ShardMarker(STATE_VERSION, 0, g1)
    side.close()


def test_a_dropped_customer_is_a_tombstone_and_stays_dropped_after_a_resume(tmp_path: Path):
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    side = ShardSnapshots(tmp_path, STEP)
    proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1"), ev("u2", "c1", T + 400 * DAY, "e2")], None, watermark=T))
    side.save(sh)
    proc.process(sh, ShardInput(0, [], None, watermark=T + 400 * DAY))  # u1's history expired: dropped
    assert "u1" not in sh.customers
    marker = side.save(sh)
    side.close()
    resumed = restore_shard(marker, "layout", None, ShardSnapshots(tmp_path, STEP))
    assert set(resumed.customers) == {"u2"} and fingerprint(resumed) == fingerprint(sh)


def test_compaction_keeps_what_any_marker_at_or_above_the_floor_reads_and_refuses_older_ones(tmp_path: Path):
    store = ShardStore.open(tmp_path, 3)
    store.abandon_after(0)
    g = [store.write(0, b"s1", [("a", b"a1"), ("b", b"b1"), ("c", b"c1")])]
    g.append(store.write(g[-1], b"s2", [("a", b"a2"), ("c", None)]))
    g.append(store.write(g[-1], b"s3", [("a", b"a3")]))
    g.append(store.write(g[-1], b"s4", [("b", b"b4")]))
    assert store.compact(g[2]) == 4  # a1, a2 and c1 superseded; then c's tombstone, with nothing older
    con = sqlite3.connect(side_path(tmp_path, 3))
    left = sorted(con.execute("SELECT user_id, gen FROM customers").fetchall())
    con.close()
    assert left == [("a", g[2]), ("b", g[0]), ("b", g[3])]
    assert store.restore(g[3]) == (b"s4", {"a": b"a3", "b": b"b4"})
    with pytest.raises(SideStoreError, match="compacted"):
        store.restore(g[1])
    with pytest.raises(SideStoreError, match="never reached"):
        store.restore(g[3] + 5)
    assert store.restore(g[2]) == (b"s3", {"a": b"a3", "b": b"b1"})
    with pytest.raises(SideStoreError, match="abandoned"):  # g4 was given up by the resume from g3
        store.restore(g[3])
    store.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_side_store_is_a_one_line_error_naming_the_file(tmp_path: Path, damage: str):
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    side = ShardSnapshots(tmp_path, STEP)
    proc.process(sh, ShardInput(0, [ev(f"u{i}", "c1", T + i, f"e{i}") for i in range(2000)], None, watermark=T))
    marker = side.save(sh)
    side.close()
    path = side_path(tmp_path, 0)
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(random.Random(1).randbytes(50_000))
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(SideStoreError) as err:
        restore_shard(marker, "layout", None, ShardSnapshots(tmp_path, STEP))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_run_leaves_its_side_stores_closed_and_whole_in_their_files(tmp_path: Path):
    """Connections left open kept the last generations in -wal files, and a later run in the process read them."""
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    side = ShardSnapshots(tmp_path, STEP)
    proc.process(sh, ShardInput(0, [ev(f"u{i}", "c1", T + i, f"e{i}") for i in range(50)], None, watermark=T))
    marker = side.save(sh)
    assert Path(f"{side_path(tmp_path, 0)}-wal").exists()
    close_side_stores()  # what propstream.app does when the dataflow ends
    assert not Path(f"{side_path(tmp_path, 0)}-wal").exists()
    resumed = restore_shard(marker, "layout", None, ShardSnapshots(tmp_path, STEP))
    assert fingerprint(resumed) == fingerprint(sh)
    close_side_stores()


@pytest.mark.parametrize("damage", ["every compressed byte", "the last byte", "a length", "two lengths swapped"])
def test_a_customer_whose_state_bytes_are_damaged_is_a_one_line_error_at_the_resume(tmp_path: Path, damage: str):
    """A restored customer stays packed until read: its bytes are checked at the resume, not mid-run."""
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0, "layout")
    sh.changed = set()
    side = ShardSnapshots(tmp_path, STEP)
    proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1"), ev("u2", "t1", T + 1, "e2")], None, watermark=T + 1))
    marker = side.save(sh)
    side.close()
    con = sqlite3.connect(side_path(tmp_path, 0))
    (value,) = con.execute("SELECT value FROM customers WHERE user_id = 'u1'").fetchone()
    blob = sh.customers["u1"].__getstate__()[2]
    assert value.count(blob) == 1
    head = 5 + 4 * blob[0]  # array count, lengths, CRC-32: the compressed bytes follow
    flipped = {
        "every compressed byte": blob[:head] + bytes(b ^ 0xFF for b in blob[head:]),
        "the last byte": blob[:-1] + bytes([blob[-1] ^ 1]),
        "a length": blob[:1] + (2**32 - 1).to_bytes(4, "little") + blob[5:],  # 32 GiB of arrays claimed
        # the band tags' and sums' lengths: the same total, the arrays cut elsewhere (the CRC covers the lengths)
        "two lengths swapped": blob[:1] + blob[5:9] + blob[1:5] + blob[9:],
    }[damage]
    assert flipped != blob  # (the last byte is an LZ4 literal: it decompresses, only the CRC can tell)
    damaged = value.replace(blob, flipped)  # same length, pickle intact
    con.execute("UPDATE customers SET value = ? WHERE user_id = 'u1'", (damaged,))
    con.commit()
    con.close()
    with pytest.raises(SideStoreError) as err:
        restore_shard(marker, "layout", None, ShardSnapshots(tmp_path, STEP))
    assert str(side_path(tmp_path, 0)) in str(err.value) and "\n" not in str(err.value)
    close_side_stores()


def test_the_store_check_refuses_a_damaged_side_store_before_a_run(tmp_path: Path):
    store = tmp_path / "recovery"
    create_store(store, 2, "propstream")
    path = side_path(store, 4)
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 1000)
    with pytest.raises(RecoveryStoreError, match=str(path)):
        check_store(store, "propstream")


def test_a_marker_is_refused_without_the_recovery_directory_and_an_older_version_is_refused():
    marker = ShardMarker(STATE_VERSION, 2, 5).to_bytes()
    with pytest.raises(SnapshotMismatchError, match="--recovery-dir"):
        restore_shard(marker, "layout")
    with pytest.raises(SnapshotMismatchError, match="version 3"):
        restore_shard(ShardMarker(3, 2, 5).to_bytes(), "layout")


# ----------------------------------------------------------------- a real Bytewax recovery store, kill -9


def _script(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "tests.stream.snapshot_flow", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.integration
@pytest.mark.chaos
def test_kill_9_after_the_side_store_committed_a_generation_bytewax_never_kept_equals_an_uninterrupted_run(
    tmp_path: Path,
):
    world, n_shards = tmp_path / "world", 3
    clean = _script(tmp_path / "clean", world, n_shards)
    assert clean.returncode == 0, clean.stderr[-2000:]
    killed = _script(tmp_path / "killed", world, n_shards, 1, 6)  # shard 1 dies once generation 6 is committed
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert max(gen_rows(tmp_path / "killed", 1)) == 6  # committed to the side store, never given to Bytewax
    resumed = _script(tmp_path / "killed", world, n_shards)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected = snapshot_flow.final_shards(tmp_path / "clean", world, n_shards)
    got = snapshot_flow.final_shards(tmp_path / "killed", world, n_shards)
    assert sorted(got) == sorted(expected) == sorted(Placement().shard_key(s) for s in range(n_shards))
    cfg = snapshot_flow.world_setup(world)[0]
    for key in expected:
        assert fingerprint(got[key], cfg) == fingerprint(expected[key], cfg), key
    assert sum(len(s.customers) for s in got.values()) > 30
    gens = gen_rows(tmp_path / "killed", 1)
    assert 6 not in gens and max(gens) > 6  # the killed run's generation 6 was abandoned, its number not reused
    for shard in range(n_shards):  # compaction ran, bounded by the markers in Bytewax's store
        con = sqlite3.connect(side_path(tmp_path / "killed", shard))
        (floor,) = con.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()
        (superseded,) = con.execute("SELECT COUNT(*) FROM customers WHERE gen < ?", (floor,)).fetchone()
        (users,) = con.execute("SELECT COUNT(DISTINCT user_id) FROM customers WHERE gen < ?", (floor,)).fetchone()
        con.close()
        assert floor > 1 and superseded == users  # at most one version per customer below the floor


@pytest.mark.integration
@pytest.mark.chaos
def test_reading_the_store_while_bytewax_writes_it_never_deletes_its_wal_file(tmp_path: Path):
    """Bytewax links its own SQLite: a connection of Python's closed in the same process deleted Bytewax's -wal."""
    done = _script(tmp_path / "recovery", tmp_path / "world", 2, "--watch")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.integration
def test_the_progress_watch_records_the_runs_execution_and_then_stops_reading(tmp_path: Path):
    """Each read of the store is a child process (CPU on an idle stream): once the run is on record, no more."""
    import json
    import time

    from stream.dataflow import FLOW_ID
    from stream.recovery import MARKER, ProgressWatch

    root = tmp_path / "recovery"
    create_store(root, 2, FLOW_ID)
    assert json.loads((root / MARKER).read_text())["executions"] == 0
    done = _script(root, tmp_path / "world", 2)  # a run of the flow: one execution in Bytewax's store
    assert done.returncode == 0, done.stderr[-2000:]
    watch = ProgressWatch(root, FLOW_ID, 0.05)
    with watch:
        deadline = time.monotonic() + 60
        while watch._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watch._thread.is_alive()  # stopped by itself, the run still going
        assert json.loads((root / MARKER).read_text())["executions"] == 1


def test_a_process_killed_while_creating_a_side_store_leaves_none_and_the_next_run_creates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Found by the kill -9 chaos test: killed between the file's creation and its schema, an empty side store was
    left, and the check before the next run took it for a damaged one. Now it is made whole beside its path and
    renamed into place."""
    import stream.snapshots as snapshots

    def killed(*_: object) -> None:
        raise SystemExit(-9)  # the process ends before the rename, as a kill -9 there would

    create_store(tmp_path, 2, "propstream")
    monkeypatch.setattr(snapshots.os, "replace", killed)
    with pytest.raises(SystemExit):
        ShardStore.open(tmp_path, 3)
    monkeypatch.undo()
    assert not side_path(tmp_path, 3).exists()
    assert list(side_path(tmp_path, 3).parent.glob("shard-3.sqlite.creating-*"))  # what the killed process left
    check_store(tmp_path, "propstream")  # the next run's check: nothing damaged
    store = ShardStore.open(tmp_path, 3)
    assert store.write(0, b"shell", [("u1", b"a")]) == 1
    store.close()
    assert not list(side_path(tmp_path, 3).parent.glob("shard-3.sqlite.creating-*"))  # the leftover is gone
