"""Benchmark: CPU per event of a shard's apply and refresh in the live regime, in one process (no Kafka, no sinks).

    python bench/live_step.py [--data-dir DIR] [--customers N] [--batch E] [--rate R] [--warm K] [--rounds K]
                              [--base DIR] [--profile FILE]

The live regime of issue #15 (BENCHMARKS.md section 1d): many customers, each
seen about once per batch. ``--customers`` synthetic customers are cloned from
The Complete Journey's households (``bench.workload.CloneWorkload``: one
basket per customer per round, customers in a seeded random order), every
event stamped with a simulated wall clock that moves ``1 / --rate`` seconds per
event, and fed in wire batches of ``--batch`` events through
``ShardProcessor.process`` the way the dataflow does after parsing (one shard,
one partition, the batch's wall clock as the tick, its latest event time as
the watermark), with the production models of ``--data-dir`` when there are
any (``--no-models``: features only).

The first ``--warm`` rounds are applied untimed; the next ``--rounds`` are
timed: CPU of the main thread (``time.thread_time``, the scoring thread's
XGBoost excluded; waiting on it is not CPU) and of the whole process, per
event, and the wall time of the calls (the wait for the scoring thread
included: what a change to that wait moves). Prints one JSON line, with a digest of every output row of the timed
rounds (features, scores, item activity, applied events): two versions of the
code that print the same digest wrote the same rows.

``--base DIR`` (an export of older code, ``git archive REV | tar -x -C DIR``):
that code's ``stream`` package is imported beside this one and both take every
batch, in turn (who goes first alternates), each with a shard of its own; the
figures are printed for both, with new/old and whether they wrote the same
rows (BENCHMARKS.md section 1d). Garbage is collected as the stream
collects it (``stream.gc_seconds``, on a thread of its own), not by the
allocation counts that charged whole collections to one side.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from bench.refresh_floor import registered_models
from bench.workload import CloneWorkload
from propstream import app
from schemas.events import EventRecord
from stream import shard as shard_module
from stream.gcpolicy import collected_every
from stream.shard import CustomerShard, ShardInput, ShardOutput, ShardProcessor
from stream.state import StateConfig

T0 = 1_800_000_000_000  # the simulated wall clock's start (2027-01-15), epoch ms


def out_digest(h, out: ShardOutput) -> None:
    """Feed every row of ``out`` to ``h`` in a fixed order."""
    for f in sorted(out.features, key=lambda r: r.user_id):
        h.update(repr((f.user_id, f.as_of, f.version, sorted(f.features.items()))).encode())
    s = out.scores
    h.update(repr(sorted(zip(s.user_id, s.group_id, s.score, s.model_version, s.version, strict=True))).encode())
    h.update(repr(s.as_of).encode())
    h.update(repr(sorted(out.item_activity)).encode())
    h.update(repr([r.event_id for r in out.applied]).encode())
    h.update(repr(list(out.dead_letters)).encode())


class Side:
    """One version of the code: its processor and shard, the CPU it took, a digest of its rows."""

    def __init__(self, name: str, processor, shard, code: str):
        self.name, self.processor, self.shard = name, processor, shard
        self.code = str(Path(code).resolve().parents[1])
        self.digest = hashlib.sha256()
        self.timed: dict[str, float] = {
            "events": 0,
            "batches": 0,
            "refreshes": 0,
            "thread": 0.0,
            "process": 0.0,
            "wall": 0.0,
        }

    def run(self, inp: ShardInput, k: int, is_timed: bool, profiler: cProfile.Profile | None) -> None:
        """Process one batch; count its CPU when timed."""
        if is_timed and profiler is not None:
            profiler.enable()
        t_thread, t_proc, t_wall = time.thread_time(), time.process_time(), time.perf_counter()
        out = self.processor.process(self.shard, inp)
        d_thread, d_proc = time.thread_time() - t_thread, time.process_time() - t_proc
        d_wall = time.perf_counter() - t_wall
        if profiler is not None:
            profiler.disable()
        if is_timed:
            self.timed["thread"] += d_thread
            self.timed["process"] += d_proc
            self.timed["wall"] += d_wall  # waiting for the scoring thread included
            self.timed["events"] += k
            self.timed["batches"] += 1
            self.timed["refreshes"] += len(out.features)  # customers refreshed (each writes a features row)
            out_digest(self.digest, out)

    def figures(self) -> dict:
        n = self.timed["events"] or 1
        return {
            "main_us_per_event": round(self.timed["thread"] / n * 1e6, 2),
            "main_us_per_refresh": round(self.timed["thread"] / (self.timed["refreshes"] or 1) * 1e6, 1),
            "process_us_per_event": round(self.timed["process"] / n * 1e6, 2),
            "wall_us_per_event": round(self.timed["wall"] / n * 1e6, 2),
            "digest": self.digest.hexdigest()[:16],
            "code": self.code,
        }


def side_figures(sides: list[Side]) -> dict:
    """Each side's figures; with two (old, new): new/old of the main thread's CPU, and whether both wrote alike."""
    result = {side.name: side.figures() for side in sides}
    if len(sides) == 2:
        old_side, new_side = sides
        result["new_over_old_main"] = round(new_side.timed["thread"] / old_side.timed["thread"], 3)
        result["new_over_old_wall"] = round(new_side.timed["wall"] / old_side.timed["wall"], 3)
        result["same_rows"] = old_side.digest.hexdigest() == new_side.digest.hexdigest()
    return result


def load_base(base: Path) -> tuple[ModuleType, ModuleType]:
    """``stream.shard`` and ``stream.state`` of an export of older code, imported beside this checkout's ``stream``.

    The older ``stream.*`` modules are imported from ``base`` while this
    checkout's are out of ``sys.modules``, then this checkout's are put back:
    each version's functions keep the modules they imported (``schemas``,
    ``models`` and the rest are shared). An export with the compiled cells
    (``stream/_cells.pyx``) gets them built in place first (``setup.py``).
    """
    if (base / "stream" / "_cells.pyx").exists() and not list((base / "stream").glob("_cells.*.so")):
        build = [sys.executable, "setup.py", "build_ext", "--inplace", "-q"]
        subprocess.run(build, cwd=base, check=True, capture_output=True)
    mine = {k: m for k, m in sys.modules.items() if k == "stream" or k.startswith("stream.")}
    for k in mine:
        del sys.modules[k]
    sys.path.insert(0, str(base.resolve()))
    try:
        return importlib.import_module("stream.shard"), importlib.import_module("stream.state")
    finally:
        sys.path.remove(str(base.resolve()))
        for k in [k for k in sys.modules if k == "stream" or k.startswith("stream.")]:
            del sys.modules[k]
        sys.modules.update(mine)


def collected_as_the_stream(settings):
    """Garbage collected as a stream collects it: on a timer, on a thread of its own (``stream.gcpolicy``).

    Left to CPython's allocation counts, a collection of every generation
    (over both sides' customers) lands on whichever side's batch crosses the
    count, and its CPU is charged to that side: the same code on both sides
    measured 0.927 in one run (BENCHMARKS.md 6zc). A stream's dataflow thread
    never collects; its ``stream.gc_seconds`` thread does.
    """
    return collected_every(settings.stream.gc_seconds, settings.stream.gc_full_seconds)


def make_sides(settings, cfg: StateConfig, catalog, models, base: Path | None) -> list[Side]:
    """This checkout's processor and shard; with ``base`` (an export of older code) that code's first, beside it.

    Each side's state layout is built by its own code from ``cfg``'s spec.
    """
    lateness = int(settings.stream.allowed_lateness_hours * 3_600_000)
    sides = [Side("new", ShardProcessor(cfg, catalog, models, lateness), CustomerShard(0), shard_module.__file__)]
    if base is not None:  # the older code beside this one, fed the same batches, in turn
        old, old_state = load_base(base)
        old_cfg = old_state.StateConfig.build(cfg.spec)
        sides.insert(
            0, Side("old", old.ShardProcessor(old_cfg, catalog, models, lateness), old.CustomerShard(0), old.__file__)
        )
    return sides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5_000, help="events per wire batch")
    ap.add_argument("--rate", type=float, default=10_000, help="events per simulated second")
    ap.add_argument("--warm", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds")
    ap.add_argument("--no-models", action="store_true", help="features only")
    ap.add_argument("--profile", type=Path, help="write cProfile stats of the timed ``process`` calls here")
    ap.add_argument("--base", type=Path, help="an export of older code: both versions take every batch, in turn")
    args = ap.parse_args()
    settings, records, _ = complete_journey(Path(args.data_dir))
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    cfg = StateConfig.build(spec)
    models = None if args.no_models else registered_models(settings, spec)
    sides = make_sides(settings, cfg, catalog, models, args.base)
    workload = CloneWorkload(records, args.customers)
    step = 1000 / args.rate
    profiler = cProfile.Profile() if args.profile else None
    i = 0
    h = len(workload.households)
    per_round = [  # events of each round: the generator yields round after round
        sum(
            len(own[r % workload.rounds])
            for own in (workload.baskets[c % h] for c in range(args.customers))
            if r % workload.rounds < len(own)
        )
        for r in range(args.warm + args.rounds)
    ]
    feed = workload.events(rounds=args.warm + args.rounds)
    n_batches = 0
    with collected_as_the_stream(settings):
        for r, n in enumerate(per_round):
            is_timed = r >= args.warm
            left = n
            while left:
                k = min(args.batch, left)
                left -= k
                batch = []
                for _ in range(k):
                    user, rec = next(feed)
                    ts = T0 + int(i * step)
                    batch.append(
                        EventRecord(
                            user, rec.item_id, rec.type_index, ts, f"e{i}", rec.quantity, rec.value_cents, "bench"
                        )
                    )
                    i += 1
                n_batches += 1
                for side in sides if n_batches % 2 else sides[::-1]:  # who goes first alternates
                    inp = ShardInput(0, list(batch), batch[-1].ts_ms, "p0", 1, False, batch[-1].ts_ms)
                    side.run(inp, k, is_timed, profiler if side.name == "new" else None)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    result: dict = {
        "customers": args.customers,
        "batch": args.batch,
        "models": models is not None,
        "events": int(sides[-1].timed["events"]),
        "batches": int(sides[-1].timed["batches"]),
        **side_figures(sides),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
