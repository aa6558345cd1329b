"""The ``propstream`` command line: thin commands over the library."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

# Flags that set a setting: argparse dest -> setting key (``section.name`` for nested ones). A flag
# given wins over the setting's environment variable and TOML file; a flag not given leaves the
# setting as configured. Help text and variable names come from the settings model.
FLAG_SETTINGS = {
    "data_dir": "data_dir",
    "clickhouse": "clickhouse_dsn",
    "catalog": "catalog_file",
    "groups": "groups_file",
    "input": "input",
    "mapping": "mapping",
    "train_input": "train_input",
    "kafka": "kafka_url",
    "recovery_dir": "recovery_dir",
    "snapshot_seconds": "snapshot_seconds",
    "process_id": "process_id",
    "addresses": "addresses",
    "clock": "kafka.clock",
    "partitions": "kafka.partitions",
    "host": "collector.host",
    "port": "collector.port",
    "workers": "collector.workers",
    "allowed_origins": "collector.allowed_origins",
    "dashboard_host": "dashboard.host",
    "dashboard_port": "dashboard.port",
    "dashboard_in_run": "dashboard.in_run",
    "holdout": "campaigns.holdout_share",
    "uplift_window": "campaigns.uplift_window",
    "since": "monitor.since",
    "every": "train.every",
    "if_new_data": "train.if_new_data",
    "retrain_on_drift": "monitor.retrain_on_drift",
}


def _settings(args: argparse.Namespace):
    from schemas.settings import Settings

    overrides: dict = {}
    for dest, key in FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            *sections, name = key.split(".")
            target = overrides
            for section in sections:
                target = target.setdefault(section, {})
            target[name] = value
    settings = Settings(**overrides)  # nested sections merge with the environment and the file
    logging.getLogger().setLevel(settings.log_level)
    return settings


def say(*text: object) -> None:
    """Progress and notes: stderr, so that stdout holds only a command's result (one JSON document with --json)."""
    print(*text, file=sys.stderr, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    note = "[0/4] loading the libraries (XGBoost, Bytewax, ClickHouse)"
    if args.json:
        say(note)
    else:
        print(note, flush=True)
    from propstream import demo

    summary = demo.run(_settings(args), log=say if args.json else print)
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.mapping import ColumnMapping, load_mapping

    settings = _settings(args)
    if settings.input is None:
        print("propstream run: give --input (or the setting input, env PROPSTREAM_INPUT)", file=sys.stderr)
        return 2
    if args.fresh and settings.recovery_dir is None:
        print("propstream run: --fresh creates a recovery store: give --recovery-dir", file=sys.stderr)
        return 2
    live = settings.input.startswith("kafka://")
    if live:
        settings = app.kafka_from_url(settings, settings.input)
    mapping = load_mapping(settings.mapping) if settings.mapping else ColumnMapping()
    inputs = None if live else [Path(p) for p in settings.input.split(",")]
    execution = app.Execution(
        recovery_dir=settings.recovery_dir,
        snapshot_seconds=settings.snapshot_seconds,
        fresh=args.fresh,
        process_id=settings.process_id,
        addresses=tuple(a for a in settings.addresses.split(",") if a),
    )
    source = app.build_source(settings, inputs, exit_when_idle=args.exit_when_idle, mapping=mapping)
    stats = app.run_stream(settings, source, mapping, progress=say, execution=execution, dead_letters_to_kafka=live)
    result = {
        "events_in": stats.events_in,
        "applied": stats.applied,
        "dead_letters": stats.dead_letters,
        "dropped": stats.dropped,
        "score_rows": stats.score_rows,
        "seconds": round(stats.elapsed, 2),
        "first_write_at": stats.first_write_at,
        "last_write_at": stats.last_write_at,
        "visible_lag": stats.visible_lag.summary(),  # event time -> rows written (live: freshness)
        "cpu_seconds": round(time.process_time(), 2),
        "gc_pauses": stats.gc_pauses.summary(),  # the timed collections: the stream stood still meanwhile
    }
    print(json.dumps(result) if args.json else stats.line())
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.mapping import ColumnMapping, load_mapping
    from stream.parse import EventParser
    from stream.producer import produce
    from stream.sources import read_records

    settings = _settings(args)
    if settings.kafka_url:
        settings = app.kafka_from_url(settings, settings.kafka_url)
    mapping = load_mapping(settings.mapping) if settings.mapping else ColumnMapping()
    paths = [Path(p) for p in args.files.split(",")]
    for p in paths:
        if not p.is_file():
            print(f"propstream produce: input file {p} does not exist", file=sys.stderr)
            return 1
    records = (r for p in paths for r in read_records(p, mapping=mapping))

    def show(rep) -> None:
        print(f"  {rep.read:,} read, {rep.sent:,} acknowledged, {len(rep.rejected):,} rejected", file=sys.stderr)

    parser = EventParser(mapping, types=settings.events.types)
    report = produce(records, parser, settings.kafka.client_config(), settings.kafka.topic, show)
    for source, reason in report.rejected[:20]:
        print(f"rejected {source}: {reason}", file=sys.stderr)
    if args.rejects:
        with open(args.rejects, "w") as f:
            for source, reason in report.rejected:
                f.write(json.dumps({"source": source, "reason": reason}) + "\n")
    summary = {
        "read": report.read,
        "sent": report.sent,
        "rejected": len(report.rejected),
        "topic": settings.kafka.topic,
    }
    print(
        json.dumps(summary)
        if args.json
        else f"sent {report.sent:,} events to {settings.kafka.topic}, rejected {len(report.rejected):,}"
    )
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from collector import serve
    from propstream import app

    settings = _settings(args)
    if settings.kafka_url:
        settings = app.kafka_from_url(settings, settings.kafka_url)
    c, k = settings.collector, settings.kafka
    print(
        f"collector on http://{c.host}:{c.port} ({c.workers} worker(s)) -> Kafka {k.bootstrap_servers} "
        f"topic {k.topic}, dead letters {k.dead_letters_topic}",
        file=sys.stderr,
        flush=True,
    )
    serve(settings)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard import serve
    from propstream import app
    from stream.sinks.clickhouse import redact_dsn

    settings = _settings(args)
    client = app.client_for(settings)  # fails in one line when a running stream holds the embedded store
    d = settings.dashboard
    say(f"dashboard on http://{d.host}:{d.port}: database {settings.clickhouse.database} at {redact_dsn(settings.dsn)}")
    serve(settings, client)
    return 0


def cmd_snippet(args: argparse.Namespace) -> int:
    from collector import snippet_js

    sys.stdout.write(snippet_js())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from propstream.schedule import parse_every
    from schemas.errors import PropstreamError

    settings = _settings(args)
    if settings.train.every is None:
        return _train_pass(args, settings, settings.train.if_new_data)
    seconds = parse_every(settings.train.every)  # a bad interval is a settings error before any work
    while True:  # the scheduled trainer: a failed pass is reported, the next one comes all the same
        try:
            _train_pass(args, settings, if_new_data=True)
        except PropstreamError as exc:
            say(f"propstream train: {exc}")
        say(f"next training pass in {settings.train.every}")
        time.sleep(seconds)


def _train_pass(args: argparse.Namespace, settings, if_new_data: bool) -> int:
    """One training pass under the data dir's trainer lock; with ``if_new_data``, only the groups that are due."""
    from propstream import app
    from propstream.schedule import TrainerLock
    from schemas.mapping import ColumnMapping, load_mapping

    with TrainerLock(settings.data_dir):
        if settings.train_input:
            mapping = load_mapping(settings.mapping) if settings.mapping else ColumnMapping()
            paths = [Path(p) for p in settings.train_input.split(",")]
            records, rejected = app.read_file_records(paths, mapping, settings.events.types)
            say(f"read {len(records):,} events ({rejected:,} rejected by the contract)")
            ts = [r.ts_ms for r in records]
            span = (_at(min(ts)), _at(max(ts))) if ts else None
        else:
            records, span = [], app.archive_span(settings)
        if span is None:
            print("propstream train: no events to train on", file=sys.stderr)
            return 1
        groups = args.group or None
        if if_new_data:
            configured = [g.name for g in app.group_rules(settings)]
            due = app.training_due(settings, span[1], span[0], groups or configured)
            if not due:
                say(f"no new data since the production models' training windows (events up to {span[1]})")
                if args.json:
                    print("[]")
                return 0
            groups = due
        if not settings.train_input:
            records = app.read_archive(settings)
            say(f"read {len(records):,} events from the events archive")
        cards = app.train(settings, records, groups, force=args.force, progress=say if args.json else print)
    if args.json:
        from models.registry import ModelRegistry

        registry = ModelRegistry(settings.models_dir)
        print(
            json.dumps(
                [
                    {
                        "group_id": c.group_id,
                        "version": c.version,
                        "stage": registry.stage(c.group_id, c.version).value,
                        **c.metrics,
                    }
                    for c in cards
                ]
            )
        )
    return 0


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def cmd_rescore(args: argparse.Namespace) -> int:
    from propstream import app

    result = app.rescore(_settings(args), progress=say)
    if args.json:
        print(json.dumps({"groups": result.groups, "customers": result.customers, "score_rows": result.rows}))
    elif not result.groups:
        print("scores are current: every stored score comes from its group's production model")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.tables import SCHEMA_VERSION
    from stream.sinks.clickhouse import redact_dsn

    settings = _settings(args)
    _, applied = app.open_store(settings)
    for m in applied:
        print(f"ClickHouse schema migration {m.version}: {m.description}")
    print(
        f"ClickHouse schema version {SCHEMA_VERSION} ready: database {settings.clickhouse.database} "
        f"at {redact_dsn(settings.dsn)}"
    )
    if settings.recovery_dir is not None:
        print(app.init_recovery(settings, settings.recovery_dir))
    if settings.kafka_url:
        from stream.topics import create_topics

        settings = app.kafka_from_url(settings, settings.kafka_url)
        for topic, state in create_topics(settings.kafka).items():
            print(f"Kafka topic {topic}: {state}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from propstream import app

    settings = _settings(args)
    result = app.run_query(settings, args.query)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        print(json.dumps(rows, default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(result.column_names)
        w.writerows(result.result_rows)
    else:
        print(_table(result.column_names, result.result_rows))
    return 0


def _table(names: tuple[str, ...], rows: list) -> str:
    """An aligned text table (numbers right-aligned).

    >>> print(_table(("group_id", "n"), [("coffee", 12), ("pet", 7)]))
    group_id   n
    coffee    12
    pet        7
    """
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(names))]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(names)), *(line(r) for r in cells)])


def cmd_check(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.mapping import ColumnMapping, load_mapping

    settings = _settings(args)
    mapping = load_mapping(settings.mapping) if settings.mapping else ColumnMapping()
    if settings.input is None or settings.input.startswith("kafka://"):
        print("propstream check: give --input FILES (CSV / JSONL / Parquet)", file=sys.stderr)
        return 2
    paths = [Path(p) for p in settings.input.split(",")]
    result = app.check_mapping(paths, mapping, preview=args.rows, limit=args.limit, types=settings.events.types)
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
        return 0
    print(
        f"{result.read:,} rows read: {result.valid:,} valid, {result.dropped:,} dropped by the mapping, "
        f"{result.read - result.valid - result.dropped:,} would be dead letters"
    )
    for kind, n in sorted(result.reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>10,}  {kind}")
    for source, reason in result.rejected:
        print(f"  e.g. {source}: {reason}")
    if result.preview:
        print("first valid events, as the stream sees them:")
        for event in result.preview:
            print("  " + json.dumps(event))
    return 0


def cmd_groups(args: argparse.Namespace) -> int:
    from propstream import app

    settings = _settings(args)
    command = getattr(args, "groups_command", None)
    if command is not None:
        return _groups_change(args, settings, command)
    counts = app.load_catalog(settings).member_counts()
    if args.json:
        print(json.dumps(counts))
    else:
        print(_table(("group", "items"), list(counts.items())))
    if settings.catalog_file is None:
        say("no catalog (--catalog or catalog_file): every group is empty; events count only in `all`")
    elif not all(counts.values()):
        say("groups with no item match no catalog row: check their rules against the catalog's columns")
    return 0


def _groups_change(args: argparse.Namespace, settings, command: str) -> int:
    """``groups list | add | deactivate | activate`` (propstream.groups)."""
    from propstream import groups
    from schemas.groups import ProductGroup

    as_json = getattr(args, "json", False)
    if command == "list":
        rows = groups.list_groups(settings)
        if as_json:
            print(json.dumps([dataclasses.asdict(r) for r in rows]))
        else:
            table = [(r.group, "yes" if r.active else "no", r.items, r.production_version or "") for r in rows]
            print(_table(("group", "active", "items", "production_version"), table))
        return 0
    path = groups.groups_path(settings)
    if command == "add":
        try:
            group = ProductGroup(
                name=args.name,
                departments=tuple(args.department or ()),
                categories=tuple(args.category or ()),
                product_types=tuple(args.product_type or ()),
                items=tuple(args.item or ()),
                brand=tuple(args.brand or ()),
                base_rate_30d=args.base_rate,
            )
        except ValidationError as exc:
            say(f"propstream groups add: {exc.errors()[0]['msg']}")
            return 2
        if not (group.departments or group.categories or group.product_types or group.items):
            say("propstream groups add: give at least one --department, --category, --product-type or --item")
            return 2
        added = groups.add(settings, group, train=not args.no_train, progress=say)
        for note in added.notes:
            say(note)
        if as_json:
            print(json.dumps({"group": added.group, "production_version": added.production_version}))
        else:
            print(
                f"{added.group}: added to {path}; production model v{added.production_version}"
                if added.production_version is not None
                else f"{added.group}: added to {path}; no model yet"
            )
        return 0
    active = command == "activate"
    changed = groups.set_active(path, args.name, active)
    state = "active" if active else "inactive"
    if as_json:
        print(json.dumps({"group": args.name, "active": active, "changed": changed}))
    else:
        print(f"{args.name}: {state}" + ("" if changed else " already"))
    if changed:
        say(
            f"a running stream {'scores every customer of' if active else 'stops scoring'} {args.name} within "
            f"stream.model_poll_seconds ({settings.stream.model_poll_seconds:g} s); "
            + ("" if active else "its rows in scores and score_history stay")
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from schemas.events import Vocabulary, event_json_schema
    from schemas.settings import Settings

    print(json.dumps(event_json_schema(Vocabulary(Settings().events.types)), indent=2))
    return 0


def _as_of(command: str, text: str | None, flag: str = "--as-of") -> datetime | None:
    """An ISO time flag (UTC if it has no offset); None if not given. Raises ValueError with a usage line."""
    from schemas.events import iso_utc

    if text is None:
        return None
    try:
        return iso_utc(text)
    except ValueError:
        msg = f"propstream {command}: {flag} {text!r} is not an ISO time such as 2017-06-01T12:00"
        raise ValueError(msg) from None


def cmd_segment(args: argparse.Namespace) -> int:
    from propstream import app, campaigns

    if (args.min_score is None) == (args.top is None):
        print("propstream segment: give exactly one of --min-score or --top", file=sys.stderr)
        return 2  # usage
    try:
        as_of = _as_of("segment", args.as_of)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = _settings(args)
    if args.campaign is not None:
        audience = campaigns.record_campaign(settings, args.campaign, args.group, args.min_score, args.top, as_of)
        say(
            f"campaign {audience.campaign}: {len(audience.members):,} members of {audience.group} selected at "
            f"{audience.selected_at.isoformat()}, {audience.held_out:,} held out "
            f"(share {settings.campaigns.holdout_share:g}); target those with holdout false"
        )
        names = ["user_id", "score", "model_version", "holdout"]
        out: list[tuple] = [(u, s, v, h) for u, s, v, h in audience.members]
    else:
        if as_of is None:
            rows = app.segment(settings, args.group, args.min_score, args.top)
        else:
            client = app.client_for(settings)
            rows = campaigns.select(client, settings.clickhouse.database, args.group, args.min_score, args.top, as_of)
        names = ["user_id", "score", "model_version", "as_of"]
        out = [(u, s, v, str(a)) for u, s, v, a in rows]
    if args.format == "json" or args.json:
        print(json.dumps([dict(zip(names, r, strict=True)) for r in out]))
    else:
        w = csv.writer(sys.stdout)
        w.writerow(names)
        w.writerows(out)
    return 0


def cmd_uplift(args: argparse.Namespace) -> int:
    from propstream import campaigns

    settings = _settings(args)
    u = campaigns.measure_uplift(settings, args.campaign)
    if args.json:
        print(json.dumps(dataclasses.asdict(u)))
        return 0
    rows = [
        (name, a.members, a.converted, round(a.rate, 4), round(a.expected, 4))
        for name, a in (("targeted", u.targeted), ("holdout", u.holdout))
    ]
    print(f"campaign {u.campaign} ({u.group}): conversion within {u.window} of selection")
    print(_table(("arm", "members", "converted", "rate", "expected"), rows))
    print(
        f"uplift {u.uplift:+.4f} ({u.confidence:.0%} interval {u.low:+.4f} .. {u.high:+.4f}, p = {u.p_value:.3g}); "
        "expected = mean score at selection"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry
    from propstream import lifecycle
    from schemas.errors import PropstreamError

    settings = _settings(args)
    registry = ModelRegistry(settings.models_dir)
    if args.models_command in ("list", "show"):
        rows = lifecycle.list_models(registry, getattr(args, "group", None))
        try:  # mirror the registry's record into the models table when the store can be opened
            from propstream import app

            lifecycle.sync_models_table(app.client_for(settings), settings.clickhouse.database, registry)
        except PropstreamError as exc:
            say(f"models table not synced: {exc}")
        if args.json:
            out: object = [dataclasses.asdict(r) for r in rows]
            if args.models_command == "show":
                out = {"versions": out, "actions": [dataclasses.asdict(a) for a in registry.actions(args.group)]}
            print(json.dumps(out))
            return 0
        names = tuple(f.name for f in dataclasses.fields(lifecycle.ModelRow))
        print(_table(names, [tuple("" if v is None else v for v in dataclasses.astuple(r)) for r in rows]))
        if args.models_command == "show":
            print(f"actions on {args.group} (oldest first):")
            for a in registry.actions(args.group):
                print(f"  {a.at}  {a.action} v{a.previous} -> v{a.version}  by {a.by}: {a.reason}")
        return 0
    if args.models_command == "promote":
        move = lifecycle.promote(settings, args.group, args.version, args.by, args.reason or "", say)
    else:
        move = lifecycle.rollback(settings, args.group, args.by, args.reason or "", say)
    for note in move.notes:
        say(note)
    a = move.action
    if args.json:
        print(
            json.dumps(
                {
                    **dataclasses.asdict(a),
                    "store": move.store,
                    "rescored_customers": move.rescored_customers,
                    "report": dataclasses.asdict(move.report) if move.report else None,
                }
            )
        )
    else:
        print(f"{a.group_id}: v{a.previous} -> v{a.version} in production ({a.action} by {a.by})")
    return 0


def cmd_trending(args: argparse.Namespace) -> int:
    from propstream import app

    try:
        at = _as_of("trending", args.at or None, "--at")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2  # usage
    rows = app.trending(_settings(args), args.scope, args.window, args.type, at, args.top, args.by)
    names = app.TRENDING_COLUMNS
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(names)
        w.writerows(rows)
    else:
        print(_table(names, rows))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from propstream import app

    report = app.monitor(_settings(args), args.group or None, progress=say)
    if report.now is None:
        print("propstream monitor: the events archive is empty: nothing to monitor", file=sys.stderr)
        return 1
    # Page-Hinkley has no estimate (NaN): null in JSON.
    drift = [{k: None if v != v else v for k, v in dataclasses.asdict(e).items()} for e in report.drift]
    per_group = {
        g: [
            {
                "group_id": g,
                "window_end": datetime.fromtimestamp(w.end_ms / 1000, UTC),
                "rows": w.rows,
                "predicted": round(w.predicted, 4),
                "realised": round(w.realised, 4),
                "ece": round(w.ece, 4),
            }
            for w in ws
        ]
        for g, ws in report.calibration.items()
    }
    windows = [w for ws in per_group.values() for w in ws]
    if args.json:
        print(
            json.dumps(
                {
                    "now": report.now,
                    "matured_until": report.matured_until,
                    "drift_events": drift,
                    "live_calibration": windows,
                    "retrained": report.retrained,
                },
                default=str,
            )
        )
        return 0
    print(f"events up to {report.now}; outcomes matured for scores up to {report.matured_until}")
    print(f"\ndrift events ({len(drift)}):")
    if drift:
        names = ("group_id", "signal", "detector", "bucket", "known_at", "value", "rows", "estimate")
        print(_table(names, [tuple(round(v, 4) if isinstance(v, float) else v for v in e.values()) for e in drift]))
    last = [w for ws in per_group.values() for w in ws[max(0, len(ws) - args.windows) :]] if args.windows > 0 else []
    print(f"\nlive calibration (last {args.windows} windows per group):")
    if last:
        print(_table(tuple(last[0]), [tuple(w.values()) for w in last]))
    if report.retrained:
        print(f"\nretrained: {', '.join(report.retrained)}")
    return 0


def settings_table() -> str:
    """Every setting as a Markdown table: TOML key, variable, flag, default, meaning (README shows the same)."""
    from schemas.settings import setting_docs

    flags = {key: "--" + dest.replace("_", "-") for dest, key in FLAG_SETTINGS.items()}
    flags["train_input"] = "`train --input`"
    flags["kafka_url"] = "--kafka"
    flags["dashboard.host"] = "`dashboard --host`"
    flags["dashboard.port"] = "`dashboard --port`"
    flags["dashboard.in_run"] = "`run --dashboard`"
    lines = ["| setting | environment variable | flag | default | what it does |", "|---|---|---|---|---|"]
    for d in setting_docs():
        flag = flags.get(d.key, "")
        flag = flag if flag.startswith("`") or not flag else f"`{flag}`"
        default = f"`{d.default}`" if d.default else ""
        lines.append(f"| `{d.key}` | `{d.env}` | {flag} | {default} | {d.description.replace('|', '/')} |")
    return "\n".join(lines)


def cmd_settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def _flag(sp: argparse.ArgumentParser, flag: str, text: str | None = None, **kw: object) -> None:
    """A flag that overrides a setting (``FLAG_SETTINGS``); its help is the setting's, with its variable and default.

    The flag has no default of its own: when it is not given, the setting
    keeps the value of its variable, of the TOML file, or its default.
    ``text`` replaces the setting's description where a command uses it
    in its own way.
    """
    from schemas.settings import setting_docs

    dest = str(kw.get("dest") or flag.lstrip("-").replace("-", "_"))
    doc = {d.key: d for d in setting_docs()}[FLAG_SETTINGS[dest]]
    default = f", default {doc.default}" if doc.default else ""
    sp.add_argument(flag, help=f"{text or doc.description} (env {doc.env}{default})", **kw)  # type: ignore[arg-type]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("propstream")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Every flag shows its environment-variable fallback."""
    p = argparse.ArgumentParser(
        prog="propstream",
        description="Streaming propensity scoring. Exit status: 0 done, 1 failed, 2 usage or settings error.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, func, *, common: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text)
        sp.set_defaults(func=func)
        if common:
            _flag(sp, "--data-dir")
            _flag(sp, "--clickhouse")
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    def files(sp: argparse.ArgumentParser, catalog: bool = True) -> None:
        _flag(sp, "--mapping")
        if catalog:
            _flag(sp, "--catalog")

    command("demo", "The Complete Journey end to end on embedded defaults", cmd_demo)
    command(
        "settings", "every setting: TOML key, environment variable, flag, default, meaning", cmd_settings, common=False
    )

    sp = command("run", "run the stream over files (CSV / JSONL / Parquet) or a Kafka topic", cmd_run)
    _flag(sp, "--input")
    files(sp)
    _flag(sp, "--clock", choices=["wall", "event"])
    _flag(
        sp,
        "--recovery-dir",
        "recovery store, one for all processes: resume from its snapshots (checked first: a missing, damaged "
        "or partial store is an error)",
    )
    sp.add_argument(
        "--fresh",
        action="store_true",
        help="create the recovery store (refused if one exists): the stream reads every source from its start",
    )
    _flag(sp, "--snapshot-seconds", type=float)
    _flag(sp, "--process-id", type=int)
    _flag(sp, "--addresses")
    _flag(sp, "--dashboard", dest="dashboard_in_run", action="store_const", const=True)
    sp.add_argument(
        "--exit-when-idle",
        type=float,
        help="Kafka input: stop once every partition is read to its end and quiet this many seconds",
    )

    sp = command("produce", "validate events from files and send them to Kafka", cmd_produce)
    sp.add_argument("--input", help="comma-separated CSV / JSONL / Parquet files", required=True, dest="files")
    _flag(sp, "--kafka")
    files(sp, catalog=False)
    sp.add_argument("--rejects", help="write rejected rows (source, reason) to this JSONL file")

    sp = command(
        "collect",
        "serve the HTTP event collector: pixel, POST /events (sendBeacon, backends), health, metrics, the snippet",
        cmd_collect,
        common=False,
    )
    _flag(sp, "--kafka", "kafka://HOST:PORT/TOPIC: where events go (their dead letters to TOPIC-dead-letters)")
    _flag(sp, "--host")
    _flag(sp, "--port", type=int)
    _flag(sp, "--workers", type=int)
    _flag(sp, "--allowed-origins")
    sp = command(
        "dashboard",
        "serve the web dashboard (trending, score distributions, segment sizes, pipeline health) over a store",
        cmd_dashboard,
        common=False,
    )
    _flag(sp, "--data-dir")
    _flag(sp, "--clickhouse")
    _flag(sp, "--host", dest="dashboard_host", metavar="HOST")
    _flag(sp, "--port", dest="dashboard_port", type=int, metavar="PORT")
    command(
        "snippet", "print the page snippet (JavaScript) that sends events to the collector", cmd_snippet, common=False
    )

    sp = command(
        "train",
        "train, calibrate and evaluate one model per group; promote it unless worse than production; rescore",
        cmd_train,
    )
    sp.add_argument("--group", help="only these groups (repeatable)", action="append")
    _flag(sp, "--input", dest="train_input")
    sp.add_argument(
        "--force", action="store_true", help="promote every new model, even one worse than production on the test slice"
    )
    _flag(sp, "--if-new-data", action="store_const", const=True)
    _flag(sp, "--every")
    files(sp)

    command(
        "rescore",
        "score stored customer features with the production models where scores hold another model's",
        cmd_rescore,
    )

    sp = command("init", "create the ClickHouse schema and, with --kafka, the topics (idempotent)", cmd_init)
    _flag(sp, "--kafka", "kafka://HOST:PORT/TOPIC: also create the events and dead-letter topics")
    _flag(sp, "--partitions", type=int)
    _flag(
        sp,
        "--recovery-dir",
        "also create this recovery store if there is none (stream.recovery_partitions partitions), else check it",
    )

    sp = command(
        "check", "read files through a mapping: valid, dropped and rejected rows, a preview; writes nothing", cmd_check
    )
    _flag(sp, "--input")
    files(sp, catalog=False)
    sp.add_argument("--rows", type=int, default=5, help="how many events and rejects to show, default 5")
    sp.add_argument("--limit", type=int, help="read at most this many rows (default: all)")

    sp = command(
        "groups", "the product groups and how many catalog items each holds; list, add, deactivate", cmd_groups
    )
    _flag(sp, "--catalog")
    _flag(sp, "--groups")
    gsub = sp.add_subparsers(dest="groups_command", help="change the catalog (the groups file) without a full replay")
    for name, text in (
        ("list", "every group: active or not, catalog items, production model version"),
        ("add", "add a group to the groups file, then train and promote its model from the events archive"),
        ("deactivate", "stop scoring a group (a running stream too); its scores and history stay"),
        ("activate", "score a deactivated group again (every customer is rescored)"),
    ):
        gp = gsub.add_parser(name, help=text)
        for flag in ("--data-dir", "--clickhouse", "--catalog", "--groups"):
            _flag(gp, flag, default=argparse.SUPPRESS)  # given before the subcommand, it still counts
        gp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
        if name == "list":
            continue
        gp.add_argument("name", help="the product group")
        if name != "add":
            continue
        for flag, what in (
            ("--department", "department"),
            ("--category", "product_category"),
            ("--product-type", "product_type"),
            ("--item", "item_id"),
            ("--brand", "brand (restricts the others)"),
        ):
            gp.add_argument(flag, action="append", help=f"a catalog {what} of the group (repeatable)")
        gp.add_argument("--base-rate", type=float, help="the group's 30-day base rate, if known")
        gp.add_argument("--no-train", action="store_true", help="only write the groups file")

    sp = command("schema", "print the event contract as JSON Schema", cmd_schema, common=False)
    sp.add_argument("--json", action="store_true", help="the schema is JSON already: accepted for uniformity")

    sp = command("sql", "run a query on the ClickHouse store (embedded chDB or a server) and print the rows", cmd_sql)
    sp.add_argument("query", help='the SQL, e.g. "SELECT count() FROM propstream.scores FINAL"')
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format, default table")

    sp = command(
        "trending",
        "top items, groups or categories of the last closed event-time window (at or before --at), by surge or count",
        cmd_trending,
    )
    sp.add_argument(
        "--scope",
        choices=["item", "group", "category"],
        default="item",
        help="items, product groups or catalog categories (trending.category_column), default item",
    )
    sp.add_argument("--type", help="event type (view, cart, purchase, ...); default every type, each ranked apart")
    sp.add_argument("--window", default="1h", help="window name as in trending.windows (its length), default 1h")
    sp.add_argument("--at", help="ISO time (UTC if no offset): the last window ending at or before it; default latest")
    sp.add_argument("--top", type=int, default=10, help="how many rows per type, default 10 (at most trending.top_n)")
    sp.add_argument("--by", choices=["surge", "count"], default="surge", help="rank by surge or count, default surge")
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format, default table")

    sp = command(
        "models", "the model registry: list, show a group, promote a version, roll back", cmd_models, common=False
    )
    msub = sp.add_subparsers(dest="models_command", required=True, help="what to do with the registry")
    for name, text in (
        ("list", "every registered version: stage, metrics, last promotion or rollback"),
        ("show", "one group's versions and every action on it"),
        ("promote", "make VERSION the group's production model (a running stream picks it up), then rescore"),
        ("rollback", "make the previous production version production again, then rescore"),
    ):
        mp = msub.add_parser(name, help=text)
        _flag(mp, "--data-dir")
        _flag(mp, "--clickhouse")
        _flag(mp, "--catalog")
        mp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "list":
            continue
        mp.add_argument("group", help="the product group")
        if name == "show":
            continue
        if name == "promote":
            mp.add_argument("version", type=int, help="the registered version to serve")
        mp.add_argument("--by", help="who does it, recorded (default: the OS user)")
        mp.add_argument("--reason", help="why, recorded with the action")

    sp = command(
        "monitor",
        "per group: drift of served scores and of realised outcomes (river), live calibration; written to the store",
        cmd_monitor,
    )
    sp.add_argument("--group", help="only these groups (repeatable)", action="append")
    _flag(sp, "--since")
    _flag(sp, "--retrain-on-drift", action="store_const", const=True)
    _flag(sp, "--catalog")
    _flag(sp, "--groups")
    sp.add_argument("--windows", type=int, default=3, help="calibration windows shown per group (table), default 3")

    sp = command("segment", "customers of a group at a score threshold, or the top N", cmd_segment)
    sp.add_argument("--group", required=True, help="the product group")
    sp.add_argument("--min-score", type=float, help="customers whose calibrated probability is at least this")
    sp.add_argument("--top", type=int, help="the N customers with the highest scores")
    sp.add_argument("--format", choices=["csv", "json"], default="csv", help="output format, default csv")
    sp.add_argument(
        "--campaign", help="record the segment as this campaign's audience (campaign_members) with holdout flags"
    )
    _flag(sp, "--holdout", type=float)
    sp.add_argument(
        "--as-of", help="ISO time (UTC if no offset): answer from score_history, each customer's last score then"
    )

    sp = command(
        "uplift", "a campaign's conversion in its group, targeted vs holdout, with a confidence interval", cmd_uplift
    )
    sp.add_argument("--campaign", required=True, help="the campaign recorded by `segment --campaign`")
    _flag(sp, "--window", dest="uplift_window")
    _flag(sp, "--catalog")
    _flag(sp, "--groups")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``propstream`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from bytewax.recovery import InconsistentPartitionsError, MissingPartitionsError, NoPartitionsError

    from propstream.app import root_cause
    from schemas.errors import ConfigError, PropstreamError

    # Expected failures: the project's own (one root), settings that do not validate, and Bytewax's
    # recovery errors (the store check refuses those stores first; these are a last line). Settings
    # and configuration files are usage (status 2, as argparse's own errors); the rest failed at work (1).
    user_errors = (
        PropstreamError,
        ValidationError,
        InconsistentPartitionsError,
        MissingPartitionsError,
        NoPartitionsError,
    )

    def status(exc: BaseException) -> int:
        return 2 if isinstance(exc, ConfigError | ValidationError) else 1

    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`propstream settings | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        return 0
    except user_errors as exc:
        print(f"propstream {args.command}: {exc}", file=sys.stderr)
        return status(exc)
    except Exception as exc:
        cause = root_cause(exc)
        if isinstance(cause, user_errors):  # raised inside the dataflow, wrapped by Bytewax
            print(f"propstream {args.command}: {cause}", file=sys.stderr)
            return status(cause)
        raise


if __name__ == "__main__":
    sys.exit(main())
