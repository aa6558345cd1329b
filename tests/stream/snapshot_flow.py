"""A dataflow run with a real Bytewax recovery store, for the incremental snapshot tests (issue #15).

Run as a script it may kill itself (SIGKILL, as ``kill -9``) right after a
shard's side store committed a given generation, before Bytewax received the
marker of that generation::

    python -m tests.stream.snapshot_flow RECOVERY_DIR WORLD_DIR N_SHARDS [KILL_SHARD KILL_GENERATION]
    python -m tests.stream.snapshot_flow RECOVERY_DIR WORLD_DIR N_SHARDS --watch

With ``--watch`` the run has the app's ``ProgressWatch`` reading the store
all along, and exits with status 3 if a Bytewax partition's ``-wal`` file was
deleted under it while it ran (seen in ``/proc/self/fd`` at every snapshot).

The input is the faulty synthetic log of ``tests.stream.test_dataflow``, in
fixed batches, so every run reads the same batches in the same order.
"""

from __future__ import annotations

import csv
import os
import pickle
import signal
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, load_groups
from schemas.mapping import ColumnMapping
from stream.dataflow import FLOW_ID, FlowConfig, build_dataflow
from stream.parse import EventParser
from stream.shard import CustomerShard, restore_shard, state_layout
from stream.snapshots import ShardSnapshots
from stream.state import StateConfig
from tests.stream.test_dataflow import LATENESS_MS, MAX_AHEAD_MS, cut_batches, faulty_log
from tests.synthetic import make_world

STEP = f"{FLOW_ID}.customers.stateful_batch"  # where Bytewax keeps the customer shards' snapshots


def world_setup(world_dir: Path) -> tuple[StateConfig, GroupCatalog, list]:
    """(state config, catalog, batches) of a small synthetic world, the same for every run."""
    world = make_world(world_dir, n_users=40, n_events=900)
    with Path(world.catalog_file).open(newline="") as f:
        catalog = GroupCatalog.build(load_groups(world.groups_file), list(csv.DictReader(f)))
    cfg = StateConfig.build(FeatureSpec(groups=catalog.names))
    return cfg, catalog, cut_batches(faulty_log(world.events), 25, "round_robin")


def run(recovery: Path, world_dir: Path, n_shards: int) -> None:
    """Run the flow over the world's batches with ``recovery`` (created when missing), to the end of input."""
    cfg, catalog, batches = world_setup(world_dir)
    if not recovery.exists():
        recovery.mkdir(parents=True)
        init_db_dir(recovery, 2)
    flow = build_dataflow(
        TestingSource(batches),
        EventParser(ColumnMapping()),
        cfg,
        catalog,
        None,
        TestingSink([]),
        {"clickhouse_dead_letters": TestingSink([])},
        FlowConfig(n_shards, LATENESS_MS, MAX_AHEAD_MS, recovery=True, recovery_dir=recovery),
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(recovery))


def final_shards(recovery: Path, world_dir: Path, n_shards: int) -> dict[str, CustomerShard]:
    """Each shard as of its newest snapshot in the store (what a resume would start from after the run)."""
    cfg, catalog, _ = world_setup(world_dir)
    newest: dict[str, tuple[int, bytes]] = {}
    for part in sorted(recovery.glob("*.sqlite3")):
        con = sqlite3.connect(part)
        rows = con.execute("SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ?", (STEP,)).fetchall()
        con.close()
        for key, epoch, ser in rows:
            if key not in newest or epoch > newest[key][0]:
                newest[key] = (epoch, pickle.loads(ser))
    side = ShardSnapshots(recovery, STEP)
    layout = state_layout(cfg, catalog.groups, n_shards)
    try:
        return {key: restore_shard(snap, layout, None, side) for key, (_, snap) in newest.items()}
    finally:
        side.close()


def _kill_after(shard: int, generation: int) -> None:
    """Make this process die (SIGKILL) once ``shard``'s side store has committed ``generation``."""
    save = ShardSnapshots.save

    def saving_then_dying(self: ShardSnapshots, sh: CustomerShard) -> bytes:
        marker = save(self, sh)
        if sh.shard == shard and sh.generation >= generation:
            os.kill(os.getpid(), signal.SIGKILL)
        return marker

    ShardSnapshots.save = saving_then_dying  # type: ignore[method-assign]


def _deleted_wal_files() -> list[str]:
    """Files this process holds open whose name was unlinked: a partition's -wal deleted under Bytewax."""
    fds = Path("/proc/self/fd")
    out = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith(" (deleted)") and ".sqlite3-wal" in target:
            out.append(target)
    return out


def _watching(root: Path) -> list[str]:
    """Check at every snapshot that no partition's -wal file was deleted; the ones that were."""
    save = ShardSnapshots.save
    found: list[str] = []

    def saving_and_looking(self: ShardSnapshots, sh: CustomerShard) -> bytes:
        time.sleep(0.02)  # leave the watch time to read the store between epochs
        found.extend(_deleted_wal_files())
        return save(self, sh)

    ShardSnapshots.save = saving_and_looking  # type: ignore[method-assign]
    return found


if __name__ == "__main__":
    root, world_dir, shards = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["--watch"]:
        from stream.recovery import ProgressWatch, create_store

        create_store(root, 2, FLOW_ID)
        deleted = _watching(root)
        with ProgressWatch(root, FLOW_ID, 0.05):
            run(root, world_dir, shards)
        sys.exit(3 if deleted else 0)
    if len(sys.argv) > 4:
        _kill_after(int(sys.argv[4]), int(sys.argv[5]))
    run(root, world_dir, shards)
