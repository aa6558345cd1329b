"""The ``propstream`` command line: thin commands over the library."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _settings(args: argparse.Namespace):
    from schemas.settings import Settings

    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "clickhouse", None):
        overrides["clickhouse_dsn"] = args.clickhouse
    return Settings(**overrides)  # type: ignore[arg-type]


def cmd_demo(args: argparse.Namespace) -> int:
    from propstream import demo

    summary = demo.run(_settings(args))
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.mapping import ColumnMapping, load_mapping

    if args.input.startswith("kafka://"):
        print("propstream run: Kafka input is not available yet; pass files with --input", file=sys.stderr)
        return 2
    settings = _settings(args)
    if args.catalog:
        settings = settings.model_copy(update={"catalog_file": Path(args.catalog)})
    mapping = load_mapping(args.mapping) if args.mapping else ColumnMapping()
    stats = app.run_stream(settings, [Path(p) for p in args.input.split(",")], mapping)
    result = {
        "events_in": stats.events_in,
        "applied": stats.applied,
        "dead_letters": stats.dead_letters,
        "score_rows": stats.score_rows,
        "seconds": round(stats.elapsed, 2),
    }
    print(json.dumps(result) if args.json else stats.line())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from propstream import app
    from schemas.mapping import ColumnMapping, load_mapping

    settings = _settings(args)
    if args.catalog:
        settings = settings.model_copy(update={"catalog_file": Path(args.catalog)})
    if args.input:
        mapping = load_mapping(args.mapping) if args.mapping else ColumnMapping()
        records, rejected = app.read_file_records([Path(p) for p in args.input.split(",")], mapping)
        print(f"read {len(records):,} events ({rejected:,} rejected by the contract)")
    else:
        records = app.read_archive(settings)
        print(f"read {len(records):,} events from the events archive")
    if not records:
        print("propstream train: no events to train on", file=sys.stderr)
        return 2
    cards = app.train(settings, records, args.group or None)
    if args.json:
        print(json.dumps([{"group_id": c.group_id, "version": c.version, **c.metrics} for c in cards]))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from propstream import app

    settings = _settings(args)
    app.client_for(settings)
    print(f"ClickHouse schema ready: database {settings.clickhouse.database} at {settings.dsn}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from schemas.events import event_json_schema

    print(json.dumps(event_json_schema(), indent=2))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from propstream import app

    if (args.min_score is None) == (args.top is None):
        print("propstream segment: give exactly one of --min-score or --top", file=sys.stderr)
        return 2
    settings = _settings(args)
    client = app.client_for(settings)
    rows = client.query(app.segment_sql(args.group, args.min_score, args.top, settings.clickhouse.database)).result_rows
    if args.format == "json":
        print(json.dumps([{"user_id": u, "score": s, "model_version": v, "as_of": str(a)} for u, s, v, a in rows]))
    else:
        w = csv.writer(sys.stdout)
        w.writerow(["user_id", "score", "model_version", "as_of"])
        w.writerows(rows)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every flag shows its environment-variable fallback."""
    p = argparse.ArgumentParser(prog="propstream", description="Streaming propensity scoring.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--data-dir",
            default=_env("PROPSTREAM_DATA_DIR"),
            help="data directory (env PROPSTREAM_DATA_DIR, default ./propstream-data)",
        )
        sp.add_argument(
            "--clickhouse",
            default=_env("PROPSTREAM_CLICKHOUSE_DSN"),
            help="ClickHouse DSN, chdb:///path or http://host:8123 "
            "(env PROPSTREAM_CLICKHOUSE_DSN, default chDB inside the data dir)",
        )
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("demo", help="The Complete Journey end to end on embedded defaults")
    common(sp)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("run", help="run the stream over files (CSV / JSONL / Parquet)")
    common(sp)
    sp.add_argument(
        "--input", required=True, default=_env("PROPSTREAM_INPUT"), help="comma-separated files (env PROPSTREAM_INPUT)"
    )
    sp.add_argument(
        "--mapping", default=_env("PROPSTREAM_MAPPING"), help="column mapping TOML (env PROPSTREAM_MAPPING)"
    )
    sp.add_argument(
        "--catalog",
        default=_env("PROPSTREAM_CATALOG_FILE"),
        help="product catalog Parquet/CSV (env PROPSTREAM_CATALOG_FILE)",
    )
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("train", help="train, calibrate, evaluate and promote one model per group")
    common(sp)
    sp.add_argument("--group", action="append", help="only these groups (repeatable)")
    sp.add_argument(
        "--input",
        default=_env("PROPSTREAM_TRAIN_INPUT"),
        help="train from files instead of the events archive (env PROPSTREAM_TRAIN_INPUT)",
    )
    sp.add_argument(
        "--mapping", default=_env("PROPSTREAM_MAPPING"), help="column mapping TOML (env PROPSTREAM_MAPPING)"
    )
    sp.add_argument(
        "--catalog",
        default=_env("PROPSTREAM_CATALOG_FILE"),
        help="product catalog Parquet/CSV (env PROPSTREAM_CATALOG_FILE)",
    )
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("init", help="create the ClickHouse schema (idempotent)")
    common(sp)
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser("schema", help="print the event contract as JSON Schema")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser("segment", help="customers of a group at a score threshold, or the top N")
    common(sp)
    sp.add_argument("--group", required=True)
    sp.add_argument("--min-score", type=float)
    sp.add_argument("--top", type=int)
    sp.add_argument("--format", choices=["csv", "json"], default="csv")
    sp.set_defaults(func=cmd_segment)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``propstream`` console script."""
    logging.basicConfig(
        level=os.environ.get("PROPSTREAM_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = build_parser().parse_args(argv)
    from propstream.app import AppError
    from schemas.groups import GroupsFileError
    from schemas.mapping import MappingFileError
    from stream.sources import SourceError

    try:
        return int(args.func(args))
    except (AppError, GroupsFileError, MappingFileError, SourceError, ValidationError) as exc:
        print(f"propstream {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
