"""The Markdown report of bench/suite.py: machine, command, one table per section."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """Cores, CPU model, memory, load average, commit."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().split()[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    return {"cores": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 2**20), "commit": commit.strip()}


def _f(x, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def setting(load: dict) -> str:
    """A phase run with ``stream.freshness_seconds`` set says so where it is named (its process count, its
    traffic)."""
    f = load.get("freshness_setting")
    held = load.get("preload")
    return ("" if f is None else f", freshness_seconds {f:g}") + (
        f", {held['customers']:,} customers in state" if held else ""
    )


def report(res: dict) -> str:
    """The results as Markdown: machine, command, then one table per section."""
    m = res["machine"]
    lines = [
        "# Benchmark suite (issue #15)",
        "",
        f"Run {res['started']} → {res['ended']} UTC on {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, "
        f"commit {m['commit']}; load average (1 min) {res['load_before']:.1f} before, {res['load_after']:.1f} after "
        "(the machine is shared with other sessions).",
        "",
        f"Command: `{res['command']}`",
        "",
        "## 1-2. Live through Kafka: freshness produce → score visible in ClickHouse",
        "",
        f"{res['customers']:,} synthetic customers; producer ceiling alone {_f(res['producer_ceiling'])} events/s. "
        f"Each phase {res['seconds']:g} s. Sustained = producer kept the rate, every score visible, lag not growing. "
        "Never visible: events with no score row and no feature row at or after them; events applied whose "
        "refresh moved no score (a score that does not move is not written again) are counted apart, their lag "
        "unknown. Not applied: events the streams' own counts leave unaccounted for (neither applied nor a dead "
        "letter): lost to the run. The generator (the producer, in the suite's own process) and the local broker "
        "share the machine with the streams; their CPU is that of the offer's window.",
        "",
        "| processes | offered events/s | achieved | events | customers | p50 s | p99 s | max s | never visible "
        "| applied, no score moved | not applied | lag head → tail (median s) | stream CPU µs/event "
        "| generator / broker CPU µs/event | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["loads"]:
        lines.append(
            f"| {r['processes']}{setting(r)} | {r['rate']:,} | {r['achieved_rate']:,} | {r['events']:,} "
            f"| {r['customers']:,} "
            f"| {_f(r['p50_s'], 3)} | {_f(r['p99_s'], 3)} | {_f(r['max_s'], 3)} | {r['never_visible']:,} "
            f"| {r.get('applied_no_score_moved', '')} | {_f(r.get('not_applied'))} "
            f"| {_f(r.get('head_median_s'), 2)} → {_f(r.get('tail_median_s'), 2)} "
            f"| {_f(r['stream_cpu_per_event_us'], 1)} "
            f"| {_f(r.get('generator_cpu_per_event_us'), 1)} / {_f(r.get('broker_cpu_per_event_us'), 1)} "
            f"| {'yes' if r['sustained'] else 'no'} |"
        )
    held = [r for r in res["loads"] if r.get("preload")]
    if held:
        lines += [
            "",
            "Customers in state before a phase (`--preload`: one basket each, offered at once; then the streams "
            "left until their CPU fell under 0.05 of a core; bytes per customer: the RSS slope through readings "
            "every second over the last four fifths of the load, and RSS after less before over the customers):",
        ]
        lines += [
            f"- {r['processes']}{setting(r)} at {r['rate']:,} events/s: {p['events']:,} events applied in "
            f"{p['seconds']:,} s ({p['events_per_s']:,} events/s), settled in {_f(p.get('settle_s'), 1)} s; RSS "
            f"{p['rss_mb_before']:,} → {p['rss_mb_after']:,} MB, **{_f(p['bytes_per_customer'])} bytes per "
            f"customer** (slope), {_f(p.get('bytes_per_customer_overall'))} overall"
            for r in held
            for p in (r["preload"],)
        ]
    lines += [
        "",
        "Maximum sustained rate (of the rates tried): "
        + ", ".join(f"{n} process{'es' if n > 1 else ''}: {_f(v)} events/s" for n, v in res["max_sustained"].items()),
        "",
    ]
    if "batch" in res and "naive" in res:
        lines += _alternatives(res)
    for key in ("state_error", "replay_error"):
        if key in res:
            lines += ["", f"{key}: {res[key]}"]
    s = res.get("state")
    if s:
        lines += [
            "",
            "## 4. State",
            "",
            "- Memory per live customer (one basket each): RSS "
            + ", ".join(f"{mb} MB at {c:,}" for mb, c in zip(s["rss_mb"], s["customers"], strict=True))
            + f" customers: **{s['bytes_per_customer']:,} bytes per customer**"
            + (" (the least-squares slope)." if len(s["customers"]) > 2 else "."),
            f"- Snapshot bytes per epoch ({s['snapshot_seconds']:g}-s epochs, median over the epochs; "
            f"{s['customers'][-1]:,} customers in state), by customers changed per epoch: "
            + ", ".join(f"{int(c):,} changed: {_f(v)}" for c, v in s["snapshot_bytes_per_epoch"].items())
            + ".",
        ]
    rp = res.get("replay")
    if rp:
        lines += [
            "",
            "## 5. The Complete Journey replay (bench/replay.py)",
            "",
            f"{rp['events']:,} events in {rp['seconds']} s: **{rp['events_per_s']:,} events/s**, "
            f"{rp['score_rows']:,} score rows, {rp['groups_scored']} groups.",
        ]
    return "\n".join(lines) + "\n"


_BATCH_IMPL = {
    "replay": "by the same state machine, event by event",
    "vectorised": "vectorised with numpy (bench/batch_features.py, equal to the state machine bit for bit)",
}


def _alternatives(res: dict) -> list[str]:
    """Section 3: naive scoring, the batch recompute, and the cost ratios."""
    lines: list[str] = []
    b, nv = res["batch"], res["naive"]
    lines += [
        "## 3. Against the alternatives",
        "",
        f"- Naive per-event scoring (state machine + one predict per event per group, {nv['groups']} groups): "
        f"{nv['events_per_cpu_s']:,} events per CPU-second.",
        f"- Nightly batch recompute (features of {b['customers']:,} households from {b['events']:,} events "
        f"{_BATCH_IMPL[b.get('impl', 'replay')]}, then one predict per group): {b['cpu_s_per_refresh']} CPU-s "
        f"({b['wall_s_per_refresh']} s wall) per refresh, {b['cpu_us_per_customer']:,} CPU-µs per customer.",
    ]
    if "scaling" in b:
        points = "; ".join(
            f"{p['events']:,} events of {p['customers']:,} customers {p['cpu_s']} CPU-s" for p in b["scaling"]
        )
        lines += [
            f"- The batch's refresh as its log grows ({points}): **{b['fit_us_per_event']} CPU-µs per event read "
            f"+ {b['fit_us_per_customer']:,} per customer** (non-negative least squares over the cheapest of 5 "
            "refreshes of each log: the kindest figure for the batch).",
        ]
    lines += [
        "",
        "Batch CPU per day at equal freshness ÷ stream CPU per day for the same traffic (> 1: the stream is cheaper). "
        "At a measured rate the batch reads the events of that traffic the features span (their longest window) "
        "for the suite's customers, at the fit above; the last column is how many days of that traffic the "
        "archive must hold for the batch at 1-hour freshness to cost 20x the stream (—: not within the span). "
        "A row with `freshness_seconds` is the stream run with that setting (its waits follow it, "
        "`Settings.latency`); a ratio is given only at a freshness the phase's p99 met (—: missed). "
        "The Complete Journey's rows are the measured refresh against the stream's idle CPU (measured before the "
        "setting's first phase) plus its events at the setting's cheapest CPU per event.",
        "",
        "| traffic | stream CPU-s/day | batch reads (events) | batch CPU-s/refresh | 1 min | 1 h | 1 day "
        "| archive days for 20x at 1 h |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["ratios"]:
        lines.append(
            f"| {r['traffic']} | {_f(r['stream_cpu_s_day'])} | {_f(r.get('batch_log_events'))} "
            f"| {_f(r.get('batch_cpu_s_per_refresh'), 1)} | {_f(r['1 min'], 2)} | {_f(r['1 h'], 2)} "
            f"| {_f(r['1 day'], 3)} | {_f(r.get('archive_days_20x'), 0)} |"
        )
    if b.get("impl", "replay") == "replay":
        vectorised = 1.8 * b["customers"] / 2469  # issue #15's vectorised batch: 1.8 s wall for 2,469
        slower = b["cpu_s_per_refresh"] / vectorised  # (its wall time, single-threaded, quiet machine)
        lines += [
            "",
            f"This batch replays the state machine event by event; issue #15 measured a vectorised batch with the "
            f"same features at 1.8 s wall per refresh of 2,469 households (`--batch-impl vectorised` measures it): "
            f"this one took {slower:.1f}x that in CPU seconds, so against the vectorised batch every ratio above is "
            f"about {slower:.1f}x smaller.",
        ]
    return lines
