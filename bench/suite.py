"""The benchmark suite of issue #15, one command: live freshness, sustainable rate, baselines, state cost, replay.

    python bench/suite.py [--quick] [--customers N] [--rates 2000 10000 20000] [--seconds S]
                          [--processes 1 2] [--search/--no-search] [--state-customers 20000 100000]
                          [--replay-limit N] [--data-dir DIR] [--bootstrap HOST:PORT] [--out FILE]

Prints a Markdown table (machine, command, figure) and writes it to
``bench/results/suite.md`` (``--out``). Sections:

1. **Workload.** ``--customers`` synthetic customers (100,000 by default)
   cloned from The Complete Journey's households with new ids
   (``h<household>~<clone>``): each clone replays its household's baskets in
   order, one basket per customer per round, customers visited in a seeded
   random order, so the basket and group mix are the file's. Events are
   offered through the local Kafka broker (tools/kafka) with a batching
   confluent-kafka Producer at fixed rates, each stamped with its produce
   time. The producer's own ceiling (as fast as it can, no stream reading) and
   the rate it achieved in each phase are reported. ``--preload N`` first
   gives the first N customers one basket each and waits for the streams to
   apply them and settle (``preload``), so a phase is served with N customers
   in state (``--customers 1000000 --preload 1000000``: the issue's million).
2. **Freshness.** Per rate and process count, a fresh topic and fresh
   `propstream run --clock wall` processes; freshness of an event = the first
   `score_history` row of its customer refreshed at or after it
   (``written_at``: when its scores became visible in ``scores``) minus its produce time, read from
   the processes' chDB after they exit (as bench/live.py). A rate is
   *sustained* when the producer kept it (>= 95 %), every event's score
   became visible, and the lag did not grow: the median freshness of the last
   fifth of the events is at most 1.5 x that of the first fifth + 0.5 s. With
   ``--search`` (the default) more rates follow the given ones: 1.5 x the best
   sustained rate while nothing above it failed (up to the producer's
   ceiling), else the geometric mean of the best sustained and the lowest
   failed rate, until they are within 25 % (``next_rate``).
3. **Baselines, as ratios.** Naive per-event scoring (one predict per event
   per group, the state machine in-process) in events per CPU-second; the
   nightly batch recompute (every household's features from the full log,
   vectorised with numpy by bench/batch_features.py, equal to the state
   machine bit for bit; ``--batch-impl replay``: every event through the state
   machine, `offline_train.dataset.replay_features`; then one predict per
   group over all customers): CPU and wall per refresh and per customer,
   and its CPU per day at 1-minute, 1-hour and 1-day freshness against the
   stream's CPU per day for the same traffic (stream CPU from /proc, from the
   first event offered to the last score written, summed over processes), at
   each measured rate and at The Complete Journey's own rate (4,025
   events/day over 2,469 households; the stream's cost there = its idle CPU +
   events x its CPU per event).
4. **State.** One process with a recovery store: RSS after the first
   ``--state-customers`` customers got one basket each, then after each of
   ``--state-steps`` equal steps to the second count; memory per live
   customer = the least-squares slope through them. Snapshot bytes per epoch (the
   recovery store's ``snaps`` rows written per epoch, read from its SQLite
   files) while no customer, a few and ten times as many change per epoch.
5. **Replay.** bench/replay.py (The Complete Journey through the dataflow
   into chDB), ``--replay-limit`` events (0: all).

``--baselines-only`` runs section 3's baselines alone (no broker) and prints
them as JSON; with ``--stream-from JSON ...`` (saved runs) also the cost ratios
against that run's live phases, e.g.::

    python bench/suite.py --baselines-only --naive-events 0 --stream-from bench/results/suite*.json

``--quick`` is a smoke run (a few thousand customers, 10-second phases, one
rate, 1 and 2 processes, a 20,000-event replay) of a few minutes.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Stream,
    cpu_seconds,
    features_as_of,
    free_port,
    households,
    new_topic,
    refreshes,
    rss_bytes,
)
from bench.suite_report import machine, report, setting  # noqa: E402
from bench.workload import CloneWorkload, offer, offer_customers  # noqa: E402
from schemas.features import DEFAULT_WINDOWS  # noqa: E402

CJ_EVENTS_PER_DAY = 4025  # The Complete Journey: 1,469,307 events over its 365 days
FRESHNESS = {"1 min": 60, "1 h": 3600, "1 day": 86400}
# Days of events a recompute of the features must read: the longest window (365 days by default).
HORIZON_DAYS = max(w.span_ms for w in DEFAULT_WINDOWS) / 86_400_000
QUICK = {
    "customers": 3000,
    "rates": [2000],
    "seconds": 10.0,
    "state_customers": [1000, 3000],
    "replay_limit": 20000,
    "idle": 5.0,
    "batch_households": 200,
}


# -- 2. freshness ----------------------------------------------------------------------------------------------------


class CpuTrace:
    """CPU seconds of some processes, sampled every ``every`` seconds in a thread (wall time, summed CPU)."""

    def __init__(self, pids: list[int], every: float = 0.5):
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        self.samples.append((time.time(), total))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(5)

    def at(self, t: float) -> float:
        """CPU seconds at wall time ``t`` (the last sample at or before it)."""
        times = [s[0] for s in self.samples]
        k = bisect.bisect_right(times, t) - 1
        return self.samples[max(k, 0)][1]


def freshness(produced: dict[str, list[int]], seen: dict[str, tuple[list[int], list[int]]]) -> tuple[list, int, int]:
    """(produce ms, lag s) of every event whose score became visible, sorted by produce time; unseen; last write ms."""
    pairs, unseen, last_write = [], 0, 0
    for user, times in produced.items():
        as_of, written = seen.get(user, ([], []))
        if written:
            last_write = max(last_write, max(written))
        for p in times:
            k = bisect.bisect_left(as_of, p)
            if k == len(as_of):
                unseen += 1
                continue
            pairs.append((p, (min(written[k:]) - p) / 1000))
    pairs.sort()
    return pairs, unseen, last_write


def applied_unmoved(
    produced: dict[str, list[int]], seen: dict[str, tuple[list[int], list[int]]], features: dict[str, int]
) -> int:
    """Events with no score row at or after them whose customer's feature row is at or after them.

    Applied, and their scores current: the refresh moved no score, and a score
    that did not move is not written again. The rest of ``freshness``'s unseen
    events were never applied, or never refreshed: those are lost.
    """
    n = 0
    for user, times in produced.items():
        as_of = seen.get(user, ([], []))[0]
        last = as_of[-1] if as_of else None
        n += sum(1 for p in times if (last is None or last < p) and features.get(user, -1) >= p)
    return n


def not_applied(events: int, summaries: list[dict]) -> int | None:
    """Events the streams' own counts leave unaccounted for: produced, neither applied nor a dead letter.

    From each process's JSON summary (``propstream run --json``); None when a
    stream was stopped and gave none. Not zero means events were lost to that
    run (§6g of BENCHMARKS.md: a partition ended with its messages unread).

    >>> not_applied(10, [{"applied": 6, "dead_letters": 1}, {"applied": 3, "dead_letters": 0}])
    0
    >>> not_applied(10, [{"applied": 6, "dead_letters": 0}, {"stopped": True}]) is None
    True
    """
    if any("applied" not in s for s in summaries):
        return None
    return events - sum(s["applied"] + s["dead_letters"] for s in summaries)


def lag_summary(pairs: list, unseen: int) -> dict:
    """p50 / p99 / max freshness, and whether the lag stayed bounded (see the module doc)."""
    if not pairs:
        return {"p50_s": None, "p99_s": None, "max_s": None, "bounded": False}
    lag = np.array([p[1] for p in pairs])
    fifth = max(1, len(lag) // 5)
    head, tail = float(np.median(lag[:fifth])), float(np.median(lag[-fifth:]))
    return {
        "p50_s": round(float(np.percentile(lag, 50)), 3),
        "p99_s": round(float(np.percentile(lag, 99)), 3),
        "max_s": round(float(lag.max()), 3),
        "head_median_s": round(head, 3),
        "tail_median_s": round(tail, 3),
        "bounded": unseen == 0 and tail <= 1.5 * head + 0.5,
    }


def start_streams(
    args, bootstrap: str, work: Path, topic: str, n: int, idle_exit: float, env: dict[str, str] | None = None, **kw
) -> list[Stream]:
    """``n`` stream processes on ``topic`` (``-i/-a`` when more than one), each with its own chDB and ``env``."""
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(n)) if n > 1 else ""
    env = {**(env or {}), **({"PROPSTREAM_STREAM__N_SHARDS": str(args.shards_per_process * n)} if n > 1 else {})}
    streams = [
        Stream(
            ROOT,
            args.data_dir,
            work,
            topic,
            bootstrap,
            idle_exit,
            name=f"{topic}-p{i}",
            process_id=i if n > 1 else None,
            addresses=addresses,
            env=env or None,
            **kw,
        )
        for i in range(n)
    ]
    for s in streams:
        s.wait_started()
    return streams


def finish(streams: list[Stream], timeout: float) -> list[dict]:
    """Wait for the streams to exit (at most ``timeout`` s in all); stop the ones still running."""
    deadline = time.time() + timeout
    out = []
    for s in streams:
        try:
            out.append(s.wait_exit(max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            s.stop()
            out.append({"stopped": True})
    return out


def load_phase(
    args,
    bootstrap: str,
    work: Path,
    workload: CloneWorkload,
    rate: int,
    n: int,
    idle: float,
    broker_pid: int | None,
    setting: float | None = None,
) -> dict:
    """Offer ``rate`` events/s to ``n`` processes for ``--seconds``: freshness, CPU, whether it was sustained.

    Beside the streams' CPU, the same window's CPU of the generator (this
    process: the producer and its librdkafka threads) and of the local broker
    (``broker_pid``; None: a broker elsewhere): all share the machine.
    ``setting``: the streams run with ``stream.freshness_seconds`` set to it.
    """
    topic = new_topic(bootstrap, args.partitions)
    env = {} if setting is None else {"PROPSTREAM_STREAM__FRESHNESS_SECONDS": f"{setting:g}"}
    # a preload's streams must outlast its settling (a stream exits once its topic was quiet that long)
    wait = args.idle_exit + idle + 10 + (args.preload_settle if args.preload else 0)
    streams = start_streams(args, bootstrap, work, topic, n, wait, env=env)
    time.sleep(10)  # the dataflow builds after the start line; partitions go idle after kafka.idle_seconds
    result: dict = {"phase": "load", "processes": n, "rate": rate, "freshness_setting": setting}
    if args.preload:
        result["preload"] = preload(args, bootstrap, topic, workload, streams)
        say("suite: preloaded", json.dumps(result["preload"]))
    trace = CpuTrace([s.proc.pid for s in streams])
    beside = {"generator": CpuTrace([os.getpid()])}
    if broker_pid is not None:
        beside["broker"] = CpuTrace([broker_pid])
    if idle > 0:
        c0, t0 = trace.at(time.time()), time.time()
        time.sleep(idle)
        result["idle_cpu_s_per_s"] = round((trace.at(time.time()) - c0) / (time.time() - t0), 4)
    start = time.time()
    sent = offer(bootstrap, topic, workload.events(), rate, args.seconds, uuid.uuid4().hex[:6])
    offered = time.time()
    summaries = finish(streams, args.seconds * 2 + 70 + wait)
    trace.stop()
    for t in beside.values():
        t.stop()
    seen = refreshes([s.dsn for s in streams])
    pairs, unseen, last_write = freshness(sent["produced"], seen)
    unmoved = applied_unmoved(sent["produced"], seen, features_as_of([s.dsn for s in streams]))
    unseen -= unmoved  # applied, scores current: only their lag is unknown
    cpu = trace.at(last_write / 1000 if last_write else time.time()) - trace.at(start)
    result.update(
        {
            "events": sent["events"],
            "achieved_rate": round(sent["achieved"]),
            "customers": len(sent["produced"]),
            "never_visible": unseen,
            "applied_no_score_moved": unmoved,
            "not_applied": not_applied(sent["events"] + result.get("preload", {}).get("events", 0), summaries),
            **lag_summary(pairs, unseen),
            "stream_cpu_s": round(cpu, 1),
            "stream_cpu_per_event_us": round(cpu / max(sent["events"], 1) * 1e6, 1),
            # while the events were offered (the streams' window runs on to their last write)
            **{
                f"{name}_cpu_per_event_us": round((t.at(offered) - t.at(start)) / max(sent["events"], 1) * 1e6, 1)
                for name, t in beside.items()
            },
            "stopped": any(s.get("stopped") for s in summaries),
            # the longest timed garbage collection of any stream (the stream stands still meanwhile)
            "gc_pause_max_s": max((s.get("gc_pauses", {}).get("max_s", 0.0) for s in summaries), default=None),
        }
    )
    result["sustained"] = bool(
        result["bounded"] and sent["achieved"] >= 0.95 * rate and not result["stopped"] and result["not_applied"] == 0
    )
    if not args.keep:
        for s in streams:
            shutil.rmtree(s.dir, ignore_errors=True)
    return result


def preload(args, bootstrap: str, topic: str, workload: CloneWorkload, streams: list[Stream]) -> dict:
    """Give the first ``--preload`` customers one basket each, wait until the streams applied them and settled.

    The phase measured next draws its customers from the same workload, so at
    ``--preload`` = ``--customers`` every event it offers is a customer the
    streams already hold: the rate is served with that many customers in
    state (issue #15: 100k and 1M). While they load, the streams' RSS is read
    every second against the events applied: ``bytes_per_customer`` is the
    least-squares slope through the readings of the last four fifths of the
    load (events applied x customers / events: baskets come in a random
    order), ``rss_mb_before``/``after`` the totals. Then the streams are left
    until their CPU falls under 0.05 of a core over 5 s (chDB merging the
    loaded rows' parts), for at most ``--preload-settle`` seconds, so the
    phase measures the rate, not the load's tail.
    """
    pids = [s.proc.pid for s in streams]
    before = sum(rss_bytes(pid) for pid in pids)
    t0 = time.time()
    sent = offer(bootstrap, topic, workload.events(0, args.preload, rounds=1), args.preload_rate, 1e9, "pre")
    events, customers = sent["events"], len(sent["produced"])
    deadline = time.time() + args.preload_timeout
    readings: list[tuple[int, int]] = []  # (events applied, RSS bytes)
    while (applied := sum(s.applied() for s in streams)) < events:
        if time.time() > deadline or any(s.proc.poll() is not None for s in streams):
            msg = f"preload: the streams applied {applied:,} of {events:,} events in {time.time() - t0:,.0f} s"
            raise SystemExit(msg)
        readings.append((applied, sum(rss_bytes(pid) for pid in pids)))
        time.sleep(1.0)
    took = time.time() - t0
    settle_until = time.time() + args.preload_settle
    trace = CpuTrace(pids, every=1.0)
    while time.time() < settle_until:
        time.sleep(5.0)
        now = time.time()
        if trace.at(now) - trace.at(now - 5.0) < 0.05 * 5.0:
            break
    trace.stop()
    settled = time.time() - t0 - took
    after = sum(rss_bytes(pid) for pid in pids)
    late = [(a, r) for a, r in readings if a >= events / 5]
    slope = float(np.polyfit(*zip(*late, strict=True), 1)[0]) * events / customers if len(late) > 2 else None
    return {
        "customers": customers,
        "events": events,
        "seconds": round(took, 1),
        "events_per_s": round(events / took),
        "settle_s": round(settled, 1),
        "rss_mb_before": round(before / 2**20, 1),
        "rss_mb_after": round(after / 2**20, 1),
        "bytes_per_customer": None if slope is None else round(slope),
        "bytes_per_customer_overall": round((after - before) / max(customers, 1)),
    }


# -- 3. baselines ----------------------------------------------------------------------------------------------------


def scoring_parts(data_dir: Path):
    """(settings, catalog, state config, production models) of The Complete Journey under ``data_dir``."""
    from models.registry import ModelRegistry
    from models.scorer import ProductionModels
    from propstream import app, completejourney
    from schemas.settings import Settings
    from stream.state import StateConfig

    _, catalog_file = completejourney.prepare(data_dir)
    settings = Settings(data_dir=data_dir, catalog_file=catalog_file, groups_file=completejourney.GROUPS_FILE)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    models = ProductionModels.load(spec, ModelRegistry(settings.models_dir))
    return settings, catalog, StateConfig.build(spec), models


def naive_scoring(data_dir: Path, workload: CloneWorkload, n_events: int) -> dict:
    """Per event: apply it to its customer's state, then one predict per group on that customer's row."""
    from stream.state import CustomerState

    _, catalog, cfg, models = scoring_parts(data_dir)
    scorers = list(models.scorers.values())
    states: dict[str, CustomerState] = {}
    events = workload.events()
    now = int(time.time() * 1000)
    c0 = time.process_time()
    for i in range(n_events):
        user, rec = next(events)
        st = states.setdefault(user, CustomerState())
        st.apply(cfg, now + i, rec.type_index, catalog.groups_of(rec.item_id), rec.value_cents)
        row = cfg.new_row()
        st.write_features(cfg, row)
        for s in scorers:
            s.score(row[None, :])
    cpu = time.process_time() - c0
    return {"phase": "naive", "events": n_events, "groups": len(scorers), "events_per_cpu_s": round(n_events / cpu)}


def batch_recompute(data_dir: Path, records: list, impl: str = "vectorised", repeats: int = 3) -> dict:
    """One nightly refresh: every household's features from the whole log, then one predict per group over all.

    ``impl``: ``vectorised`` (bench/batch_features.py: numpy over the log's
    columns, equal to the state machine bit for bit) or ``replay`` (every
    event through the state machine, ``offline_train.dataset.replay_features``).
    The vectorised refresh starts from the log as columns, as a batch job
    reads the events archive; turning the records into columns is measured
    apart (``load_cpu_s``) and is not part of the refresh. The refresh runs
    ``repeats`` times; the figures are the median's.

    What a refresh costs as its log grows (``scaling``, vectorised only): the
    same refresh over the log with every event 2, 4 and 8 times (same
    customers, more events each) and with every customer cloned 2, 4 and 8
    times (both grow), the cheapest of 5 each, and the non-negative
    least-squares fit of CPU = per event x events + per customer x customers
    over all of them (``fit_us_per_event``, ``fit_us_per_customer``). CPU is
    user + system; a large log's system time (the kernel handing out and
    zeroing its pages) varies by 2x from one refresh to the next, hence the
    cheapest run: the kindest figure for the batch.
    """
    from bench.batch_features import EventColumns, features_as_of
    from offline_train.dataset import replay_features

    _, catalog, cfg, models = scoring_parts(data_dir)
    as_of = max(r.ts_ms for r in records)
    c0 = time.process_time()
    log = EventColumns.from_records(records) if impl == "vectorised" else None
    load_cpu = time.process_time() - c0

    def refresh(
        log: EventColumns | None, repeats: int = repeats, cheapest: bool = False
    ) -> tuple[float, float, float, float, int]:
        """The median (``cheapest``: least CPU) of ``repeats`` refreshes: CPU, wall, features' and scoring's CPU,
        customers."""
        runs = []
        for _ in range(max(1, repeats)):
            c0, w0 = time.process_time(), time.perf_counter()
            if log is not None:
                x = features_as_of(log, cfg, catalog, as_of).x
            else:
                rows = replay_features(records, cfg, catalog, [as_of])[as_of]
                x = np.vstack([rows[u] for u in sorted(rows)])
            c1 = time.process_time()
            for s in models.scorers.values():
                s.score(x)
            c2, w2 = time.process_time(), time.perf_counter()
            runs.append((c2 - c0, w2 - w0, c1 - c0, c2 - c1, len(x)))
        return sorted(runs)[0 if cheapest else len(runs) // 2]

    cpu, wall, feature_cpu, score_cpu, customers = refresh(log)
    res = {
        "phase": "batch",
        "impl": impl,
        "customers": customers,
        "events": len(records),
        "groups": len(models.scorers),
        "repeats": repeats,
        "cpu_s_per_refresh": round(cpu, 2),
        "wall_s_per_refresh": round(wall, 2),
        "cpu_us_per_customer": round(cpu / customers * 1e6),
        "wall_us_per_customer": round(wall / customers * 1e6),
        "features_cpu_s": round(feature_cpu, 2),
        "scoring_cpu_s": round(score_cpu, 2),
        "load_cpu_s": round(load_cpu, 2),
    }
    if log is not None:
        from scipy.optimize import nnls

        points = [(len(log), customers, cpu)]
        for k_events, k_clones in ((2, 1), (4, 1), (8, 1), (1, 2), (1, 4), (1, 8)):
            bigger = log.scaled(repeats=k_events, clones=k_clones)
            big_cpu, *_, big_customers = refresh(bigger, 5, cheapest=True)
            points.append((len(bigger), big_customers, big_cpu))
        per_event, per_customer = nnls(
            np.array([[e, c] for e, c, _ in points], dtype=float), np.array([t for *_, t in points])
        )[0]
        res["scaling"] = [{"events": e, "customers": c, "cpu_s": round(t, 2)} for e, c, t in points]
        res["fit_us_per_event"] = round(per_event * 1e6, 4)
        res["fit_us_per_customer"] = round(per_customer * 1e6, 1)
    return res


def batch_cpu_per_refresh(batch: dict, events: float, customers: int) -> float:
    """The batch's CPU-s per refresh over a log of ``events`` and ``customers`` (its measured scaling fit).

    A batch measured without the fit (``--batch-impl replay``, older runs) is
    scaled by customers alone, as if every customer had The Complete
    Journey's events per household.
    """
    if "fit_us_per_event" in batch:
        return (batch["fit_us_per_event"] * events + batch["fit_us_per_customer"] * customers) / 1e6
    return batch["cpu_s_per_refresh"] / batch["customers"] * customers


def cost_ratios(batch: dict, loads: list[dict], customers: int) -> list[dict]:
    """Batch CPU per day at each freshness / the stream's CPU per day, at each 1-process phase and at CJ's rate.

    Each one-process phase is a row, named by its rate and freshness setting
    (``stream.freshness_seconds``; none: the default waits); a ratio is given
    only at a freshness the phase's p99 met (None above it). At a measured
    rate the batch reads one horizon of that traffic (the longest feature
    window, ``HORIZON_DAYS``: what a recompute of the same features must read)
    for ``customers``; ``archive_days_20x`` is how many days of that traffic
    its archive must hold for the batch at 1-hour freshness to cost 20x the
    stream (None: not even the whole horizon). The Complete Journey's rows,
    one per setting whose idle CPU was measured: the stream's idle CPU + 4,025
    events a day at the cheapest CPU per event of that setting's phases,
    against the measured refresh itself (its year of events is one horizon).
    """
    out = []
    for r in loads:
        if r["processes"] != 1 or not r["events"] or not r["stream_cpu_s"]:
            continue
        stream_day = r["stream_cpu_s"] / (r["events"] / r["achieved_rate"]) * 86400
        log_events = r["achieved_rate"] * 86400 * HORIZON_DAYS
        refresh = batch_cpu_per_refresh(batch, log_events, customers)
        row = {
            "traffic": f"{r['achieved_rate']:,} events/s, {customers:,} customers{setting(r)}",
            "stream_cpu_s_day": stream_day,
            "batch_log_events": log_events,
            "batch_cpu_s_per_refresh": refresh,
            **_ratios(refresh, stream_day, r.get("p99_s")),
        }
        days = None
        if batch.get("fit_us_per_event"):  # refreshes a day x (per day of archive x days + per customers) = 20 x stream
            per_customers = batch["fit_us_per_customer"] * customers / 1e6
            per_archive_day = batch["fit_us_per_event"] * r["achieved_rate"] * 86400 / 1e6
            days = (20 * stream_day / (86400 / FRESHNESS["1 h"]) - per_customers) / per_archive_day
        row["archive_days_20x"] = days if days is not None and days <= HORIZON_DAYS else None
        out.append(row)
    for chosen in dict.fromkeys(r.get("freshness_setting") for r in loads if "idle_cpu_s_per_s" in r):
        same = [r for r in loads if r.get("freshness_setting") == chosen]
        idle = next(r["idle_cpu_s_per_s"] for r in same if "idle_cpu_s_per_s" in r)
        per_event = min((r["stream_cpu_per_event_us"] for r in same if r["stream_cpu_per_event_us"] > 0), default=0)
        stream_day = idle * 86400 + CJ_EVENTS_PER_DAY * per_event / 1e6
        p99 = max((r["p99_s"] for r in same if r.get("p99_s") is not None), default=None)
        row = {
            "traffic": f"The Complete Journey ({CJ_EVENTS_PER_DAY:,} events/day){setting(same[0])}",
            "stream_cpu_s_day": stream_day,
            "batch_log_events": batch["events"],
            "batch_cpu_s_per_refresh": batch["cpu_s_per_refresh"],
            **_ratios(batch["cpu_s_per_refresh"], stream_day, p99),
            "archive_days_20x": None,
        }
        out.append(row)
    return out


def _ratios(batch_refresh: float, stream_day: float, p99: float | None) -> dict[str, float | None]:
    """Batch CPU per day / the stream's at each freshness the stream's p99 met."""
    return {
        name: batch_refresh * 86400 / f / stream_day if p99 is not None and p99 <= f else None
        for name, f in FRESHNESS.items()
    }


# -- 4. state: memory per customer, snapshot bytes per epoch ---------------------------------------------------------


def _side_bytes(recovery: Path, snap: bytes) -> int:
    """Bytes an incremental snapshot's marker stands for: its generation in the shard's side store (0: no marker)."""
    import pickle

    from stream.snapshots import ShardMarker, side_path

    try:
        marker = ShardMarker.from_bytes(pickle.loads(snap))  # Bytewax pickles the bytes the shard returned
    except Exception:  # not a marker (another step's state, a whole pickled shard)
        return 0
    if marker is None:
        return 0
    path = side_path(recovery, marker.shard)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
        row = db.execute("SELECT n_bytes FROM gens WHERE gen = ?", (marker.generation,)).fetchone()
    return int(row[0]) if row else 0


def snapshot_bytes(recovery: Path) -> dict[int, int]:
    """Bytes of the state snapshots written at each epoch, from the recovery store's partitions (read-only).

    An incremental snapshot (``stream.snapshots``) counts its marker and the
    generation of the shard's side store the marker stands for.
    """
    out: dict[int, int] = defaultdict(int)
    for part in recovery.glob("*.sqlite3"):
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=1)) as db,
        ):
            for epoch, size, small in db.execute(
                "SELECT snap_epoch, length(ser_change), CASE WHEN length(ser_change) < 512 THEN ser_change END "
                "FROM snaps"
            ).fetchall():
                out[int(epoch)] += int(size or 0) + (_side_bytes(recovery, small) if small is not None else 0)
    return dict(out)


class SnapshotWatch:
    """Samples a recovery store's bytes per epoch every second (old epochs are collected as the run goes)."""

    def __init__(self, recovery: Path):
        self.recovery = recovery
        self.seen: dict[int, int] = {}
        self.first_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for epoch, size in snapshot_bytes(self.recovery).items():
                self.seen[epoch] = max(self.seen.get(epoch, 0), size)
                self.first_seen.setdefault(epoch, time.time())

    def between(self, t0: float, t1: float) -> list[int]:
        """Bytes of each epoch whose snapshot first appeared between wall times ``t0`` and ``t1``."""
        return [self.seen[e] for e in sorted(self.seen) if t0 <= self.first_seen[e] <= t1]

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(5)


def state_phase(args, bootstrap: str, work: Path, workload: CloneWorkload) -> dict:
    """RSS slope per live customer, and snapshot bytes per epoch as no / few / more customers change.

    The slope is the least-squares line through the RSS read after each of
    ``--state-steps`` equal steps from the first ``--state-customers`` count to
    the second (two readings moved ~15 % from run to run).
    """
    n1, n2 = args.state_customers
    counts = [n1 + round(i * (n2 - n1) / args.state_steps) for i in range(args.state_steps + 1)]
    topic = new_topic(bootstrap, args.partitions)
    recovery = work / f"{topic}-recovery"
    snap_s = args.snapshot_seconds
    (stream,) = start_streams(args, bootstrap, work, topic, 1, 3600, recovery_dir=recovery, snapshot_seconds=snap_s)
    pid = stream.proc.pid
    watch = SnapshotWatch(recovery)
    result: dict = {"phase": "state", "snapshot_seconds": snap_s}
    try:
        time.sleep(10)
        rss, sent = [], 0
        for first, last in zip([0, *counts], counts, strict=False):
            events = workload.events(first, last, rounds=1)
            sent += offer(bootstrap, topic, events, args.state_rate, 1e9, f"m{first}")["events"]
            if not stream.wait_applied(sent, 1200):
                msg = f"the stream applied {stream.applied():,} of {sent:,} events in 20 minutes"
                raise SystemExit(msg)
            time.sleep(3)  # the refreshes and inserts that follow the last events
            rss.append(rss_bytes(pid))
        result.update(
            {
                "customers": counts,
                "rss_mb": [round(r / 2**20, 1) for r in rss],
                "bytes_per_customer": round(float(np.polyfit(counts, rss, 1)[0])),
            }
        )
        time.sleep(2 * snap_s)
        per_epoch = {}
        for changed in (0, *args.changed_per_epoch):
            t0 = time.time()
            if changed:  # the same customers each time, in the workload's order: each epoch other ones
                sent += offer_customers(
                    bootstrap, topic, workload.events(0, n2), changed / snap_s, args.epochs * snap_s
                )
            else:
                time.sleep(args.epochs * snap_s)
            t1 = time.time()
            stream.wait_applied(sent, 600)
            time.sleep(2 * snap_s)
            per_epoch[changed] = watch.between(t0 + snap_s, t1)
        result["snapshot_bytes_per_epoch"] = {
            str(c): (round(float(np.median(v))) if v else None) for c, v in per_epoch.items()
        }
        result["snapshot_epochs"] = {str(c): v for c, v in per_epoch.items()}
    finally:
        watch.stop()
        stream.stop()
        shutil.rmtree(stream.dir, ignore_errors=True)
        shutil.rmtree(recovery, ignore_errors=True)
    return result


# -- 5. replay -------------------------------------------------------------------------------------------------------


def replay(data_dir: Path, limit: int) -> dict:
    """bench/replay.py's result (a subprocess: its own chDB)."""
    cmd = [sys.executable, str(ROOT / "bench" / "replay.py"), "--data-dir", str(data_dir)]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return {"phase": "replay", **json.loads(out.stdout.strip().splitlines()[-1])}


def next_rate(loads: list[dict], ceiling: float) -> int | None:
    """The next rate to try for one process count, or None: 1.5 x the best sustained rate while nothing above it
    failed; else the geometric mean of the best sustained rate and the lowest failed one above it (to 100
    events/s), until they are within 25 % of each other.

    >>> next_rate([{"rate": 2000, "sustained": True}, {"rate": 10000, "sustained": False}], 50000)
    4500
    >>> next_rate([{"rate": 2000, "sustained": True}], 50000)
    3000
    >>> next_rate([{"rate": 2000, "sustained": True}, {"rate": 4500, "sustained": True}, {"rate": 10000,
    ...            "sustained": False}, {"rate": 6700, "sustained": False}], 50000)
    5500
    >>> next_rate([{"rate": 5500, "sustained": True}, {"rate": 6700, "sustained": False}], 50000)
    """
    tried = {r["rate"] for r in loads}
    ok = [r["rate"] for r in loads if r["sustained"]]
    if not ok:
        return None
    best = max(ok)
    failed = [r["rate"] for r in loads if not r["sustained"] and r["rate"] > best]
    if not failed:
        nxt = int(best * 1.5)
        return nxt if nxt <= ceiling and nxt not in tried else None
    low = min(failed)
    mid = int(round((best * low) ** 0.5, -2))
    return None if low <= best * 1.25 or mid in tried else mid


def max_sustained(loads: list[dict]) -> dict[int, int | None]:
    """The highest sustained rate of each process count (with the default waits: no freshness setting)."""
    out: dict[int, int | None] = {}
    for r in loads:
        if r.get("freshness_setting") is not None:
            continue
        best = out.get(r["processes"])
        if r["sustained"] and (best is None or r["rate"] > best):
            best = r["rate"]
        out[r["processes"]] = best
    return out


def save(args, res: dict) -> None:
    """The raw results so far, as JSON (``--json-out``), so a failed later section loses nothing."""
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1, default=str))


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def run(args) -> dict:
    """Every section in turn; the results as a dict."""
    res: dict = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load_before": os.getloadavg()[0],
        "machine": machine(),
        "command": "python bench/suite.py " + " ".join(sys.argv[1:]),
        "customers": args.customers,
        "seconds": args.seconds,
    }
    records = households(args.data_dir)
    workload = CloneWorkload(records, args.customers, args.seed)
    say(f"suite: {len(workload.households):,} households → {args.customers:,} customers")
    if args.baselines and args.naive_events:
        res["naive"] = naive_scoring(args.data_dir, workload, args.naive_events)
        say("suite:", json.dumps(res["naive"]))
    if args.baselines:
        sample = records
        if args.batch_households:
            keep = set(workload.households[: args.batch_households])
            sample = [r for r in records if r.user_id in keep]
        repeats = args.batch_repeats
        if repeats is None:
            repeats = 3 if args.batch_impl == "vectorised" else 1  # a replaying refresh takes ~40 CPU-s
        res["batch"] = batch_recompute(args.data_dir, sample, args.batch_impl, repeats)
        say("suite:", json.dumps(res["batch"]))
    if args.baselines_only:
        if args.stream_from:  # the cost ratios against saved runs' live phases (the first run's customers)
            saved = [json.loads(p.read_text()) for p in args.stream_from]
            loads = [r for run in saved for r in run.get("loads", [])]
            res["stream_from"] = [str(p) for p in args.stream_from]
            res["ratios"] = cost_ratios(res["batch"], loads, saved[0]["customers"])
        return res
    with contextlib.ExitStack() as stack:
        bootstrap, broker_pid = args.bootstrap, None
        if not bootstrap:
            from tools.kafka.broker import LocalBroker

            broker = stack.enter_context(LocalBroker())
            bootstrap, broker_pid = broker.bootstrap, broker.proc.pid if broker.proc else None
        work = Path(tempfile.mkdtemp(prefix="propstream-suite-"))
        if not args.keep:
            stack.callback(shutil.rmtree, work, True)
        say("suite: work dir", work)
        ceiling = offer(bootstrap, new_topic(bootstrap, args.partitions), workload.events(), 0, 5, "ceiling")
        res["producer_ceiling"] = round(ceiling["achieved"])
        say("suite: producer ceiling", res["producer_ceiling"], "events/s")
        loads: list[dict] = []
        for n in args.processes:
            rates = list(args.rates)
            k = 0
            while k < len(rates):
                r = load_phase(args, bootstrap, work, workload, rates[k], n, args.idle if not loads else 0, broker_pid)
                loads.append(r)
                say("suite:", json.dumps(r))
                save(args, {**res, "loads": loads})
                if args.search and k == len(rates) - 1:
                    nxt = next_rate([x for x in loads if x["processes"] == n], res["producer_ceiling"])
                    if nxt is not None:
                        rates.append(nxt)
                k += 1
            if n == 1:  # the same rates at each freshness setting: the stream's cost at equal freshness
                for f in args.freshness:
                    first = not any(x.get("freshness_setting") == f for x in loads)
                    for rate in args.rates:
                        idle = args.idle if first and rate == args.rates[0] else 0
                        r = load_phase(args, bootstrap, work, workload, rate, n, idle, broker_pid, setting=f)
                        loads.append(r)
                        say("suite:", json.dumps(r))
                        save(args, {**res, "loads": loads})
        res["loads"] = loads
        res["max_sustained"] = max_sustained(loads)
        res["ratios"] = cost_ratios(res["batch"], loads, args.customers) if "batch" in res else []
        save(args, res)
        if args.state_customers:
            try:
                res["state"] = state_phase(args, bootstrap, work, workload)
            except Exception as e:  # a failed section is reported, the others kept
                res["state_error"] = f"{type(e).__name__}: {e}"
            say("suite:", json.dumps(res.get("state") or res["state_error"]))
            save(args, res)
    if args.replay_limit >= 0:
        try:
            res["replay"] = replay(args.data_dir, args.replay_limit)
        except subprocess.CalledProcessError as e:
            res["replay_error"] = f"bench/replay.py failed: {e.stderr[-500:]}"
        say("suite:", json.dumps(res.get("replay") or res["replay_error"]))
    res["ended"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    res["load_after"] = os.getloadavg()[0]
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small N, short phases, one rate")
    ap.add_argument("--customers", type=int, default=100_000, help="synthetic customers (1000000 for a million)")
    ap.add_argument("--rates", type=int, nargs="+", default=[2000, 10000, 20000], help="events/s offered")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each rate's phase")
    ap.add_argument("--processes", type=int, nargs="*", default=[1, 2], help="stream process counts")
    ap.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raise the rate by 1.5x past the last rate while it is sustained",
    )
    ap.add_argument(
        "--freshness",
        type=float,
        nargs="*",
        default=[60.0],
        help="one process again at each of --rates with stream.freshness_seconds set to each (none: skip)",
    )
    ap.add_argument(
        "--preload",
        type=int,
        default=0,
        help="before each live phase, the first N customers get one basket each (N = --customers: every measured "
        "event is a customer the stream holds; 0: none)",
    )
    ap.add_argument("--preload-rate", type=int, default=0, help="events/s offered while preloading (0: at once)")
    ap.add_argument("--preload-timeout", type=float, default=3600.0, help="seconds the streams get to apply it")
    ap.add_argument(
        "--preload-settle",
        type=float,
        default=180.0,
        help="at most this long after a preload for the streams' CPU to fall under 0.05 of a core (chDB's merges)",
    )
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured before the first phase")
    ap.add_argument("--idle-exit", type=float, default=20.0, help="a stream exits this long after its topic drains")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument(
        "--shards-per-process",
        type=int,
        default=1,
        help="customer shards per process with 2+ processes (stream.placement puts shard i on process i %% n)",
    )
    ap.add_argument("--naive-events", type=int, default=3000)
    ap.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip naive and batch scoring")
    ap.add_argument("--batch-households", type=int, default=0, help="households of the batch recompute (0: all)")
    ap.add_argument(
        "--batch-impl",
        choices=["vectorised", "replay"],
        default="vectorised",
        help="the batch recompute's features: numpy over the log (bench/batch_features.py) or the state machine "
        "replaying every event (offline_train.dataset.replay_features)",
    )
    ap.add_argument("--batch-repeats", type=int, help="refreshes measured, the median reported (3; replay: 1)")
    ap.add_argument(
        "--baselines-only",
        action="store_true",
        help="only section 3's baselines (naive, batch), no broker: their figures as JSON on stdout",
    )
    ap.add_argument(
        "--stream-from",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="with --baselines-only: the cost ratios against the live phases of these saved runs (--json-out)",
    )
    ap.add_argument("--state-customers", type=int, nargs=2, default=[20_000, 100_000], metavar=("N1", "N2"))
    ap.add_argument("--state-steps", type=int, default=4, help="RSS readings from N1 to N2 customers, after N1's")
    ap.add_argument("--no-state", dest="state", action="store_false", help="skip the memory and snapshot phase")
    ap.add_argument("--state-rate", type=int, default=10_000, help="events/s offered while loading state")
    ap.add_argument("--snapshot-seconds", type=float, default=10.0, help="epoch length of the state phase")
    ap.add_argument("--changed-per-epoch", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--epochs", type=int, default=3, help="epochs measured per change rate")
    ap.add_argument("--replay-limit", type=int, default=0, help="events of the replay (0: all; -1: no replay)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the streams' directories (logs, chDB) for a look")
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "suite.md")
    ap.add_argument("--json-out", type=Path, help="also write the raw results as JSON (after each section)")
    ap.add_argument(
        "--report-from",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only print (and write) the report of saved results (several: later files add their sections)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for k, v in QUICK.items():
            if f"--{k.replace('_', '-')}" not in given:
                setattr(args, k, v)
        args.search = "--search" in given
        args.changed_per_epoch = [100, 1000] if "--changed-per-epoch" not in given else args.changed_per_epoch
        args.epochs = 2 if "--epochs" not in given else args.epochs
        args.naive_events = 500 if "--naive-events" not in given else args.naive_events
    if not args.state:
        args.state_customers = None
    args.data_dir = args.data_dir.resolve()
    return args


def main() -> None:
    args = parse_args()
    if args.report_from:
        res = {}
        for path in args.report_from:
            more = json.loads(path.read_text())
            if res:  # a later run adds its phases and sections; the first run's figures stay
                res["command"] = f"{res['command']}; then {more['command']}"
                res["loads"] = res.get("loads", []) + more.get("loads", [])
                res["ended"], res["load_after"] = more.get("ended", res["ended"]), more.get("load_after", 0.0)
                res.update({k: v for k, v in more.items() if k not in res})
            else:
                res = more
        res.setdefault("ended", "(unfinished)")
        res.setdefault("load_after", float("nan"))
        res.setdefault("loads", [])
        res["max_sustained"] = max_sustained(res["loads"])  # (JSON made its keys strings)
        res["ratios"] = cost_ratios(res["batch"], res["loads"], res["customers"]) if "batch" in res else []
    else:
        res = run(args)
    if args.baselines_only:
        keys = ("command", "machine", "naive", "batch", "stream_from", "ratios")
        print(json.dumps({k: res[k] for k in keys if k in res}))
        return
    text = report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
