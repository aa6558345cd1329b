"""Composition root: builds the packages' objects from Settings and runs them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytewax.inputs import Source

from models.registry import ModelRegistry
from models.scorer import ProductionModels
from offline_train.dataset import build_examples
from offline_train.rescore import RescoreResult, bulk_rescore
from schemas.cards import ModelCard
from schemas.errors import PropstreamError
from schemas.events import TYPE_NAMES, EventRecord, Vocabulary, iso_utc
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, GroupsFileWatch, ProductGroup, load_groups
from schemas.groups import key as group_key
from schemas.mapping import ColumnMapping
from schemas.settings import Settings, StreamSettings
from schemas.tables import EVENTS, SCORES, TRENDING, Migration
from stream.dataflow import FLOW_ID, FlowConfig, build_dataflow
from stream.gcpolicy import collected_every
from stream.parse import EventParser
from stream.placement import Placement
from stream.recovery import MARKER, ProgressWatch, check_store, create_store
from stream.sinks import ClickHouseSink, ClickHouseWriter, RunStats, open_client
from stream.sinks.clickhouse import apply_retention, migrate
from stream.snapshots import close_side_stores
from stream.sources import FileReplaySource, read_batches, read_records
from stream.state import StateConfig
from stream.ticks import TickBoard
from stream.trending import TrendConfig, TrendWindow

Progress = Callable[[str], None]

if TYPE_CHECKING:  # the trainer imports xgboost, which imports scikit-learn: only commands that train load them
    from offline_train.train import TrainPlan

log = logging.getLogger(__name__)


class AppError(PropstreamError):
    """A user-facing error of the application layer (bad flags, missing inputs)."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: Bytewax wraps errors raised inside the dataflow."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def group_rules(settings: Settings) -> tuple[ProductGroup, ...]:
    """The product groups of the settings' groups file, or the packaged Complete Journey groups."""
    from propstream.completejourney import GROUPS_FILE

    return load_groups(settings.groups_file or GROUPS_FILE)


def load_catalog(settings: Settings) -> GroupCatalog:
    """Product groups resolved over the catalog file (items without a catalog row join only ``all``)."""
    groups = group_rules(settings)
    path = settings.catalog_file
    if path is None:
        return GroupCatalog.build(groups, [])
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        msg = f"catalog file {path} does not exist"
        raise AppError(msg)
    table = pq.read_table(path) if str(path).endswith(".parquet") else pcsv.read_csv(path)
    if "item_id" not in table.column_names:
        msg = f"catalog file {path} needs an item_id column; it has {table.column_names}"
        raise AppError(msg)
    catalog = GroupCatalog.build(groups, table.to_pylist())
    empty = [g for g, n in catalog.member_counts().items() if n == 0]
    if empty:  # loud, never silent: such a group's model can learn nothing (`propstream groups` lists them)
        log.warning("product groups with no item in catalog %s: %s", path, ", ".join(empty))
    return catalog


def inactive_groups(settings: Settings, groups: tuple[ProductGroup, ...]) -> Callable[[], frozenset[str]]:
    """The groups not to score: marked inactive in the groups file, re-read when it changes (issue #14)."""
    if settings.groups_file is None:  # the packaged groups: all active, never edited
        return lambda: frozenset()
    return GroupsFileWatch(settings.groups_file, groups).inactive


def feature_spec(catalog: GroupCatalog, types: tuple[str, ...] = TYPE_NAMES) -> FeatureSpec:
    """The feature layout for the configured groups and event types (setting ``events.types``)."""
    return FeatureSpec(groups=catalog.names, types=types)


_migrated: set[tuple[str, str]] = set()  # (DSN, database) brought up to date by this process


def client_for(settings: Settings) -> Any:
    """The ClickHouse client, its store brought up to date (once per process)."""
    client, _ = open_store(settings)
    return client


def open_store(settings: Settings) -> tuple[Any, list[Migration]]:
    """The ClickHouse client and the migrations this call applied (none once up to date)."""
    pw = settings.clickhouse.password
    client = open_client(settings.dsn, settings.clickhouse.user, pw.get_secret_value() if pw else None)
    key = (settings.dsn, settings.clickhouse.database)
    if key in _migrated:
        return client, []
    applied = migrate(client, settings.clickhouse.database)
    changed = apply_retention(client, settings.clickhouse.database, settings.clickhouse.score_history_ttl_days)
    if changed:
        log.warning("%s", changed)
    _migrated.add(key)
    return client, applied


def kafka_from_url(settings: Settings, url: str) -> Settings:
    """Apply ``kafka://HOST:PORT[,HOST:PORT]/TOPIC`` to the Kafka settings."""
    rest = url.removeprefix("kafka://")
    bootstrap, _, topic = rest.partition("/")
    if not bootstrap:
        msg = f"bad Kafka URL {url!r}: expected kafka://HOST:PORT/TOPIC"
        raise AppError(msg)
    update = {"bootstrap_servers": bootstrap} | ({"topic": topic} if topic else {})
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=update)})


def build_source(
    settings: Settings,
    inputs: list[Path] | None,
    exit_when_idle: float | None = None,
    mapping: ColumnMapping | None = None,
) -> Source:
    """Files to replay (read as ``mapping`` says), or (``inputs`` None) the Kafka topic of the settings."""
    if inputs is not None:
        return FileReplaySource(inputs, settings.stream.batch_size, mapping)  # fails fast on a missing file
    from stream.sources.kafka import KafkaSource

    k, lat = settings.kafka, settings.latency()
    return KafkaSource(
        k.bootstrap_servers,
        k.topic,
        extra_config={kk: v for kk, v in k.client_config().items() if kk != "bootstrap.servers"},
        batch_size=k.batch_size,
        wall_clock=k.clock == "wall",
        tick_seconds=k.tick_seconds,
        exit_when_idle=exit_when_idle,
        idle_seconds=k.idle_seconds,
        poll_max_seconds=lat.poll_max_seconds,
        batch_wait_seconds=lat.batch_wait_seconds,
        fetch_wait_seconds=lat.fetch_wait_seconds,
    )


@dataclass(frozen=True)
class Execution:
    """How the dataflow runs: recovery and scale-out (Bytewax ``-r -s`` and ``-i -a``).

    ``recovery_dir`` is one store shared by every process of the run; it must
    exist (``stream.recovery``) unless ``fresh`` asks to create it.
    """

    recovery_dir: Path | None = None
    snapshot_seconds: float = 10.0
    process_id: int | None = None
    addresses: tuple[str, ...] = ()
    fresh: bool = False


STARTED = "stream started"  # the first line of a run once it is set up (its recovery store checked or created)


def run_stream(
    settings: Settings,
    source: Source,
    mapping: ColumnMapping,
    progress: Progress | None = print,
    with_models: bool = True,
    execution: Execution = Execution(),
    dead_letters_to_kafka: bool = False,
) -> RunStats:
    """Run the dataflow from ``source`` into ClickHouse; returns the run's counters.

    With ``stream.reload_groups`` (a Kafka source, a recovery store, a groups
    file), product groups added to the file while it runs end the dataflow
    where it stands; it resumes at once from its snapshot with the new groups
    (``propstream.groups.resume_with_new_groups``), in this process.
    """
    stats = RunStats(live=bool(getattr(source, "wall_clock", False)))  # a Kafka source on the wall clock
    while True:
        watch = _groups_watch(settings, source, execution)
        _run_flow(settings, source, mapping, progress, with_models, execution, dead_letters_to_kafka, stats, watch)
        if watch is None or not watch.layout_changed or getattr(source, "stop", None) is None:
            return stats  # ended by its input, or groups changed in a run that does not reload them
        from propstream.groups import resume_with_new_groups

        resume_with_new_groups(settings, watch, progress or (lambda _: None))
        execution = dataclasses.replace(execution, fresh=False)


def reloads_groups(settings: Settings, execution: Execution) -> bool:
    """Whether a run whose source can stop (Kafka) applies an edited groups file by itself (``stream.reload_groups``).

    Only a run of one process: the processes of a cluster would each stop,
    train the added group into one models directory and resume, each on its own
    poll; they log the change and go on instead (run them again on the same
    recovery store to apply it).
    """
    return settings.stream.reload_groups and execution.recovery_dir is not None and len(execution.addresses) <= 1


def _groups_watch(settings: Settings, source: Source, execution: Execution) -> GroupsFileWatch | None:
    """The run's watch of the groups file; with ``stream.reload_groups``, it ends the source when groups change."""
    if hasattr(source, "stop"):
        source.stop = None  # armed again below if this run reloads groups
    if settings.groups_file is None:
        return None
    watch = GroupsFileWatch(settings.groups_file, group_rules(settings))
    if hasattr(source, "stop") and reloads_groups(settings, execution):
        every = settings.stream.model_poll_seconds
        due = [0.0]

        def stop() -> bool:
            now = time.monotonic()
            if now >= due[0]:
                due[0] = now + every
                watch.inactive()  # re-reads the file when it changed
            return watch.layout_changed

        source.stop = stop
    return watch


def _run_flow(
    settings: Settings,
    source: Source,
    mapping: ColumnMapping,
    progress: Progress | None,
    with_models: bool,
    execution: Execution,
    dead_letters_to_kafka: bool,
    stats: RunStats,
    groups_watch: GroupsFileWatch | None,
) -> None:
    """Build the dataflow for the groups of the settings now and run it until its source ends."""
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from propstream import groups

    catalog = load_catalog(settings)
    spec = feature_spec(catalog, settings.events.types)
    cfg = StateConfig.build(spec)
    parser = EventParser(mapping, types=spec.vocabulary)  # before anything is opened: the mapping must fit the types
    models = None
    if with_models:
        models = ProductionModels.load(
            spec,
            ModelRegistry(settings.models_dir),
            settings.stream.model_poll_seconds,
            threads=settings.stream.predict_threads or os.cpu_count() or 1,
            # `propstream groups deactivate` stops scoring
            inactive=groups_watch.inactive if groups_watch is not None else inactive_groups(settings, catalog.groups),
        )
        if not models.scorers and progress:
            progress("no production models yet: features only (run `propstream train`)")
    ticks = _tick_board(settings, source, execution, models)
    client = client_for(settings)
    if with_models:  # promotions and rollbacks made while the store was held by an earlier run
        from propstream.lifecycle import sync_models_table

        sync_models_table(client, settings.clickhouse.database, ModelRegistry(settings.models_dir))
    sink = ClickHouseSink(
        ClickHouseWriter(client, settings.clickhouse.database, settings.stream.sink_retry_seconds),
        stats,
        report=(lambda s: progress(s.line())) if progress else None,
        report_every_s=settings.stream.progress_seconds,
        type_names=cfg.type_names,
        # With a recovery store a buffered row could be lost after its epoch's snapshot: write per batch.
        flush_rows=settings.stream.sink_flush_rows,
        flush_seconds=0.0 if execution.recovery_dir is not None else settings.latency().sink_flush_seconds,
        archive_flush_seconds=settings.latency().sink_archive_flush_seconds,
    )
    if models is not None:
        models.on_swap = _models_table_sync(settings, client, sink)
    dead_sinks = {"clickhouse_dead_letters": sink.dead_letter_sink()}
    if dead_letters_to_kafka:
        from stream.sinks.kafka import DeadLetterTopicSink
        from stream.topics import require_topics

        require_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letters_topic])

        dead_sinks["dead_letter_topic"] = DeadLetterTopicSink(
            settings.kafka.client_config(), settings.kafka.dead_letters_topic
        )
    recovery = None
    watch: contextlib.AbstractContextManager = contextlib.nullcontext()
    resumed, balanced = False, True
    if execution.recovery_dir is not None:
        root = execution.recovery_dir
        if execution.fresh:
            create_store(root, settings.stream.recovery_partitions, FLOW_ID)
        store = check_store(root, FLOW_ID)
        resumed = store.starts > 0  # an earlier run may have written rows
        balanced = store.balanced_keys  # a store of an earlier version keeps its keys' names
        recovery = RecoveryConfig(root)
        watch = ProgressWatch(root, FLOW_ID, max(1.0, 2 * execution.snapshot_seconds))
    placement = Placement(balanced, execution.process_id or 0, max(1, len(execution.addresses)))
    if hasattr(source, "placement"):  # Kafka: each process reads the partitions whose state it holds
        source.placement = placement
    flow = build_dataflow(
        source,
        parser,
        cfg,
        catalog,
        models,
        sink,
        dead_sinks,
        FlowConfig(
            settings.stream.n_shards,
            int(settings.stream.allowed_lateness_hours * 3_600_000),
            int(settings.stream.max_ahead_hours * 3_600_000),
            recovery=execution.recovery_dir is not None,
            recovery_dir=execution.recovery_dir,
            resumed=resumed,
            trending=trend_config(settings),
            max_batch_event_ms=int(settings.stream.max_batch_event_hours * 3_600_000),
            placement=placement,
        ),
        stats,
        trending_sinks={"clickhouse_trending": sink.trending_sink()},
        # a snapshot made for other groups is migrated: added groups backfilled from the archive (issue #14)
        archive=groups.archive_reader(client, settings.clickhouse.database, catalog, cfg.type_names),
        ticks=ticks,
    )
    board = dashboard_in_run(settings, client, execution)
    if progress:
        recovery_note = f"recovery store {execution.recovery_dir}" if execution.recovery_dir else "no recovery"
        board_note = f", dashboard on {board.url}" if board is not None else ""
        progress(
            f"{STARTED}: {settings.stream.n_shards} shard(s), {recovery_note}{board_note}"
            f"{freshness_note(settings, execution.recovery_dir is not None)}"
        )
        if placement.workers > 1 and not placement.shards_held(settings.stream.n_shards):
            progress(
                f"process {placement.worker} holds none of the {settings.stream.n_shards} customer shard(s): it reads "
                f"and routes events only (stream.n_shards >= {placement.workers} spreads them; fixed for a store)"
            )
    stats.started = time.perf_counter()
    collector = collected_every(settings.stream.gc_seconds, settings.stream.gc_full_seconds, stats.gc_pauses)
    with collector, watch, board or contextlib.nullcontext():
        try:
            cli_main(
                flow,
                workers_per_process=1,
                process_id=execution.process_id,
                addresses=list(execution.addresses) or None,
                epoch_interval=timedelta(seconds=execution.snapshot_seconds),
                recovery_config=recovery,
            )
        finally:
            close_side_stores()  # the shards' side stores (incremental snapshots) are left closed, as Bytewax's


def _tick_board(
    settings: Settings, source: Source, execution: Execution, models: ProductionModels | None
) -> TickBoard | None:
    """The board of due ticks of a live source in a one-process run (``stream.ticks``); None: periodic ticks.

    The shards of a run of several processes live in all of them, beyond one
    process's board, so such a run (and ``kafka.tick_when_due`` false) keeps
    ticking every ``kafka.tick_seconds``. A model swap found by the source's
    poll of the registry ticks at once: the shards rescore its group.
    """
    if not hasattr(source, "ticks"):
        return None
    live = bool(getattr(source, "wall_clock", False))
    board = None
    if live and settings.kafka.tick_when_due and len(execution.addresses) <= 1:
        board = TickBoard(models.refresh if models is not None else None)
    source.ticks = board
    return board


def _models_table_sync(settings: Settings, client: Any, sink: ClickHouseSink) -> Callable[[], None]:
    """What the stream does when it swaps models: record the registry's changes in the ``models`` table.

    A promotion or rollback made while the stream holds an embedded store cannot
    write the table itself; the stream, which sees the change within its poll,
    does (on the sink's client, between its flushes). A failure is logged, not
    raised: the next process that opens the store syncs the table anyway.
    """
    from propstream.lifecycle import sync_models_table

    registry = ModelRegistry(settings.models_dir)

    def sync() -> None:
        try:
            sink.buffer.locked(lambda: sync_models_table(client, settings.clickhouse.database, registry))
        except Exception as exc:  # a table of record, never a reason to stop scoring
            log.error("models table not synced with the registry (the next run syncs it): %s", exc)

    return sync


def freshness_note(settings: Settings, recovery: bool) -> str:
    """What ``stream.freshness_seconds`` set, for the start line ("" when it is unset)."""
    target = settings.stream.freshness_seconds
    if target is None:
        return ""
    lat = settings.latency()
    writes = (
        "every table written with every batch (a recovery store)"
        if recovery
        else f"scores written every {lat.sink_flush_seconds:g} s, the archive tables every "
        f"{lat.sink_archive_flush_seconds:g} s"
    )
    return (
        f", freshness target {target:g} s (a busy poll waits {lat.batch_wait_seconds:g} s, a fetch "
        f"{lat.fetch_wait_seconds:g} s; {writes})"
    )


def dashboard_in_run(settings: Settings, client: Any, execution: Execution) -> Any:
    """The dashboard served from this stream's process (setting ``dashboard.in_run``; process 0 only), or None.

    Only this process may open an embedded store while it writes, so the
    dashboard shares the stream's client (``dashboard.queries`` says why that is safe).
    """
    if not settings.dashboard.in_run or (execution.process_id or 0) != 0:
        return None
    from dashboard import DashboardThread

    return DashboardThread(settings, client).start()


def item_categories(settings: Settings) -> dict[str, str]:
    """Each catalog item's value of ``trending.category_column`` (the ``category`` scope of trending).

    Empty without a catalog file or with the setting ''; a catalog without the
    column is an error (a typo must not leave the scope silently empty).
    """
    column = settings.trending.category_column
    path = settings.catalog_file
    if not column or path is None:
        return {}
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        msg = f"catalog file {path} does not exist"
        raise AppError(msg)
    if str(path).endswith(".parquet"):
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in ("item_id", column) if c in names])
    else:
        table = pcsv.read_csv(path)
    if column not in table.column_names or "item_id" not in table.column_names:
        msg = (
            f"catalog file {path} has no column {column!r} for trending.category_column "
            f"(it has {table.column_names}; '' ranks no categories)"
        )
        raise AppError(msg)
    out: dict[str, str] = {}
    for item, value in zip(table.column("item_id").to_pylist(), table.column(column).to_pylist(), strict=True):
        item_key, category = group_key(item), group_key(value)
        if item_key is not None and category:
            out[item_key] = category
    return out


def trend_config(settings: Settings) -> TrendConfig | None:
    """What the stream's trending steps compute (None: trending is off)."""
    t = settings.trending
    if not t.enabled:
        return None
    return TrendConfig(
        tuple(TrendWindow.parse(w) for w in t.windows),
        min_support=t.min_support,
        min_surge=t.min_surge,
        top_n=t.top_n,
        half_life_hours=t.half_life_hours,
        half_lives=tuple(sorted(t.half_lives.items())),
        min_expected=t.min_expected,
        forget_after_hours=t.forget_after_hours,
        shards=t.shards,
        sources=settings.stream.n_shards,
        type_names=settings.events.types,
        categories=item_categories(settings),
    )


def init_recovery(settings: Settings, root: Path) -> str:
    """Create the recovery store at ``root`` if there is none, else check it; a line saying which."""
    if not any(root.glob("*.sqlite3")) and not (root / MARKER).exists():
        state = create_store(root, settings.stream.recovery_partitions, FLOW_ID)
        return f"recovery store created at {root}: {state.partitions} partitions"
    state = check_store(root, FLOW_ID, starting=False)
    return f"recovery store at {root}: {state.partitions} partitions, {state.executions} run(s) recorded"


def read_file_records(
    paths: list[Path], mapping: ColumnMapping, types: tuple[str, ...] = TYPE_NAMES
) -> tuple[list[EventRecord], int]:
    """Valid events of files (through the stream's own parser, over the vocabulary ``types``), the number rejected."""
    parser = EventParser(mapping, types=types)
    FileReplaySource(paths, mapping=mapping)  # checks that every file exists and has a known format
    records: list[EventRecord] = []
    rejected = 0
    for p in paths:
        for batch in read_batches(p, StreamSettings().batch_size, mapping=mapping):
            parsed = parser.parse_batch(batch)
            records += parsed.records
            rejected += len(parsed.dead)
    return records, rejected


@dataclass
class MappingCheck:
    """What a mapping makes of some files, before anything is written."""

    read: int = 0
    valid: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # dead-letter reason (its kind) -> rows
    preview: list[dict] = field(default_factory=list)  # the first valid events, as the stream sees them
    rejected: list[tuple[str, str]] = field(default_factory=list)  # the first (source, reason)


def check_mapping(
    paths: list[Path],
    mapping: ColumnMapping,
    preview: int = 5,
    limit: int | None = None,
    types: tuple[str, ...] = TYPE_NAMES,
) -> MappingCheck:
    """Read files through the stream's own parser under ``mapping`` and ``types``: counts, reasons, a preview.

    Writes nothing.
    """
    parser = EventParser(mapping, types=types)
    FileReplaySource(paths, mapping=mapping)  # missing files and unknown formats fail here
    out = MappingCheck()
    for p in paths:
        for source, payload in read_records(p, mapping=mapping):
            if limit is not None and out.read >= limit:
                return out
            out.read += 1
            rec = parser.parse_one(source, payload)
            if rec is None:
                out.dropped += 1
            elif isinstance(rec, str):
                kind = rec.split(":")[0]
                out.reasons[kind] = out.reasons.get(kind, 0) + 1
                if len(out.rejected) < preview:
                    out.rejected.append((source, rec))
            else:
                out.valid += 1
                if len(out.preview) < preview:
                    out.preview.append(json.loads(rec.to_json(parser.types.names)))
    return out


def read_archive(settings: Settings) -> list[EventRecord]:
    """Every archived event (``events FINAL``) as records, for training from the archive."""
    index = Vocabulary(settings.events.types).index
    client = client_for(settings)
    db = settings.clickhouse.database
    q = client.query(
        f"SELECT user_id, item_id, type, toUnixTimestamp64Milli(ts), event_id, quantity, value, source "
        f"FROM {EVENTS.at(db)} FINAL ORDER BY ts, user_id, event_id"
    )
    rows = q.result_rows
    unknown = sorted({t for _, _, t, *_ in rows if t not in index})
    if unknown:
        msg = f"the events archive holds types {unknown} that are not in events.types {list(index)}"
        raise AppError(msg)
    return [EventRecord(u, i, index[t], int(ts), e, float(q_), round(v * 100), s) for u, i, t, ts, e, q_, v, s in rows]


def _progress_bar(what: str, total: int) -> Callable[[list], Any]:
    """A tqdm bar on stderr for long loops (drawn after a second; into a log, not a terminal, every 15 s)."""
    import sys

    from tqdm import tqdm

    every = 0.1 if sys.stderr.isatty() else 15.0
    return lambda items: tqdm(
        items, total=total, desc=what, unit=" ev", unit_scale=True, file=sys.stderr, delay=1.0, mininterval=every
    )


def train(
    settings: Settings,
    records: list[EventRecord],
    groups: list[str] | None = None,
    plan: TrainPlan | None = None,
    progress: Progress = print,
    params: dict[str, float | int | str] | None = None,
    force: bool = False,
    rescore_after: bool = True,
    rounds: int | None = None,
) -> list[ModelCard]:
    """Build point-in-time examples by replay, train one model per group, promote those the gate lets through.

    ``force`` promotes every new model without comparing it with production
    (a model below the floor, ``train.min_auc`` and ``train.min_distinct_predictions``,
    is still not promoted). ``rescore_after``: rescore stored customers with
    the promoted models (``rescore``). ``params`` and ``rounds`` override the
    trainer's XGBoost defaults (``offline_train.train.DEFAULT_PARAMS``,
    ``DEFAULT_ROUNDS``).
    """
    from offline_train.train import DEFAULT_ROUNDS, PromotionGate, TrainPlan, train_all

    catalog = load_catalog(settings)
    spec = feature_spec(catalog, settings.events.types)
    cfg = StateConfig.build(spec)
    if plan is None:
        ts = [r.ts_ms for r in records]
        first, last = (datetime.fromtimestamp(t / 1000, tz=UTC) for t in (min(ts), max(ts)))
        plan = TrainPlan.fit(first, last, settings.train)
    unknown = sorted(set(groups or []) - set(spec.groups))
    if unknown:
        msg = f"unknown group(s) {unknown}; configured groups are {list(spec.groups)}"
        raise AppError(msg)
    if groups is None:  # deactivated groups are not trained unless named
        groups = [g.name for g in catalog.groups if g.active]
    progress(f"building point-in-time examples at {len(plan.all_cutoffs())} cutoffs from {len(records):,} events")
    t = settings.train
    bar = _progress_bar("replaying events", len(records)) if progress is not None else None
    ex = build_examples(records, cfg, catalog, plan.all_cutoffs(), t.label_horizon_days, t.label_types, bar)
    progress(f"{len(ex.users):,} examples; training {len(groups or spec.groups)} group model(s)")
    registry = ModelRegistry(settings.models_dir)
    t = settings.train
    gate = PromotionGate.from_settings(t)
    n_rounds = DEFAULT_ROUNDS if rounds is None else rounds
    cards = train_all(
        spec, ex, plan, registry, groups, gate=gate, progress=progress, params=params, force=force, rounds=n_rounds
    )
    write_cards(settings, registry, cards)
    if rescore_after:  # not for a group just added: stored features lack its counters until the stream backfills
        rescore(settings, progress, spec)
    return cards


def archive_span(settings: Settings) -> tuple[datetime, datetime] | None:
    """Event times of the oldest and newest archived events (None for an empty archive), without reading them."""
    client = client_for(settings)
    span = "count(), toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts))"
    sql = f"SELECT {span} FROM {EVENTS.at(settings.clickhouse.database)}"
    ((n, lo, hi),) = client.query(sql).result_rows
    return None if not n else (datetime.fromtimestamp(lo / 1000, UTC), datetime.fromtimestamp(hi / 1000, UTC))


def training_due(settings: Settings, newest: datetime, oldest: datetime, groups: list[str]) -> list[str]:
    """Groups whose production model was not trained on the plan that events up to ``newest`` give.

    A group without a production model is due. The plan snaps to month
    starts (``TrainPlan.fit``), so new events inside the production model's
    training window do not make a group due; a new month whose labels have
    matured does.
    """
    from offline_train.train import TrainPlan

    plan = TrainPlan.fit(oldest, newest, settings.train)
    registry = ModelRegistry(settings.models_dir)
    due = []
    for g in groups:
        v = registry.production_version(g)
        card = None if v is None else registry.card(g, v)
        if card is None or (card.train_cutoffs, card.calibration_cutoffs, card.test_cutoff) != (
            plan.train,
            plan.calibrate,
            plan.test,
        ):
            due.append(g)
    return due


def rescore(settings: Settings, progress: Progress = print, spec: FeatureSpec | None = None) -> RescoreResult:
    """Score stored customer features with production models where ``scores`` holds another model's.

    Scoring needs the feature layout (the group names), not the product catalog.
    """
    if spec is None:
        spec = FeatureSpec(groups=tuple(g.name for g in group_rules(settings)), types=settings.events.types)
    models = ProductionModels.load(
        spec,
        ModelRegistry(settings.models_dir),
        threads=os.cpu_count() or 1,
        inactive=inactive_groups(settings, group_rules(settings)),  # a deactivated group is not rescored
    )
    result = bulk_rescore(
        client_for(settings), settings.clickhouse.database, StateConfig.build(spec), models, progress=progress
    )
    if result.groups:
        names = ", ".join(result.groups) if len(result.groups) <= 5 else f"{len(result.groups)} groups"
        progress(f"rescored {names}: {result.customers:,} customers, {result.rows:,} score rows")
    return result


def write_cards(settings: Settings, registry: ModelRegistry, cards: list[ModelCard]) -> None:
    """Mirror model cards into the ``models`` table: the new ones, and versions whose stage or last action changed.

    Promoting a version archives the previous production model and older
    candidates, so every registered version of the trained groups is compared
    with what the table holds (``propstream.lifecycle.sync_models_table``).
    """
    from propstream.lifecycle import sync_models_table

    groups = sorted({c.group_id for c in cards})
    sync_models_table(client_for(settings), settings.clickhouse.database, registry, groups, cards)


def parse_since(text: str | None, now: datetime | None) -> datetime | None:
    """``--since``: an ISO time (UTC if no offset) or ``Nd`` days before ``now`` (the newest event).

    >>> parse_since("7d", datetime(2017, 6, 8, tzinfo=UTC))
    datetime.datetime(2017, 6, 1, 0, 0, tzinfo=datetime.timezone.utc)
    >>> parse_since("2017-03-01", None)
    datetime.datetime(2017, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if not text:
        return None
    if text.endswith("d") and text[:-1].isdigit():
        return None if now is None else now - timedelta(days=int(text[:-1]))
    try:
        return iso_utc(text)
    except ValueError:
        msg = f"monitor.since {text!r} is neither an ISO time such as 2017-06-01 nor a number of days such as 90d"
        raise AppError(msg) from None


def monitor(
    settings: Settings, groups: list[str] | None = None, progress: Progress = print
) -> Any:  # offline_train.monitor.MonitorReport
    """Drift events and live calibration per group, written to the store; retrain drifted groups if set to."""
    from offline_train.monitor import due_for_retraining, monitor_groups, newest_event_ms, write_report

    catalog = load_catalog(settings)
    names = [g.name for g in catalog.groups]
    unknown = sorted(set(groups or []) - set(names))
    if unknown:
        msg = f"unknown group(s) {unknown}; configured groups are {names}"
        raise AppError(msg)
    client, _ = open_store(settings)
    db = settings.clickhouse.database
    newest = newest_event_ms(client, db)
    since = parse_since(settings.monitor.since, None if newest is None else datetime.fromtimestamp(newest / 1000, UTC))
    m = settings.monitor
    report = monitor_groups(client, db, catalog, groups or names, m, settings.train, since)
    write_report(client, db, report, m.calibration_window_days)
    if m.retrain_on_drift:
        due = due_for_retraining(report, ModelRegistry(settings.models_dir), settings.train.label_horizon_days)
        if due:
            progress(f"drift after the production models' data: retraining {', '.join(due)}")
            train(settings, read_archive(settings), due, progress=progress)
            report.retrained = due
    return report


class QueryError(AppError):
    """ClickHouse refused a query (`propstream sql`)."""


def run_query(settings: Settings, sql: str) -> Any:
    """The result of one query on the store; a refused query is a one-line QueryError."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    client = client_for(settings)
    try:
        return client.query(sql)
    except ClickHouseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"ClickHouse refused the query: {first}"
        raise QueryError(msg) from exc


def segment(settings: Settings, group: str, min_score: float | None, top: int | None) -> list[tuple]:
    """Customers of ``group`` with a score of at least ``min_score``, or its ``top`` customers, best first.

    A group without any score is an error naming the groups that have scores,
    so that a typo does not look like an empty segment.
    """
    client = client_for(settings)
    db = settings.clickhouse.database
    where = "group_id = {group:String}" + ("" if min_score is None else " AND score >= {min_score:Float64}")
    limit = "" if top is None else " LIMIT {top:UInt64}"
    rows = client.query(
        f"SELECT user_id, score, model_version, as_of FROM {SCORES.at(db)} FINAL "
        f"WHERE {where} ORDER BY score DESC, user_id{limit}",
        parameters={k: v for k, v in {"group": group, "min_score": min_score, "top": top}.items() if v is not None},
    ).result_rows
    if not rows:
        groups = client.query(f"SELECT DISTINCT group_id FROM {SCORES.at(db)} ORDER BY group_id").result_rows
        known = [g for (g,) in groups]
        if group not in known:
            msg = f"no scores for group {group!r}; groups with scores: {', '.join(known) or 'none yet'}"
            raise AppError(msg)
    return rows


TRENDING_COLUMNS = ("window_end", "type", "key", "count", "expected", "surge", "rank", "surge_rank")


def trending(
    settings: Settings,
    scope: str = "item",
    window: str = "1h",
    type_: str | None = None,
    at: datetime | None = None,
    top: int = 10,
    by: str = "surge",
) -> list[tuple]:
    """The top ``top`` rows by ``by`` (surge or count) of the last closed window ending at or before ``at``.

    Rows are per type (all types when ``type_`` is None), as ``TRENDING_COLUMNS``.
    An empty answer where the table has no such window, scope or type is an
    error saying what it holds, so that a typo does not look like a quiet hour.
    """
    client = client_for(settings)
    table = TRENDING.at(settings.clickhouse.database)
    rank = "surge_rank" if by == "surge" else "rank"
    params: dict[str, Any] = {"window": window, "scope": scope, "top": top}
    where = "window = {window:String} AND scope = {scope:String}"
    if type_ is not None:
        where += " AND type = {type:String}"
        params["type"] = type_
    if at is not None:
        params["at"] = int(at.timestamp())
    before = "" if at is None else " AND window_end <= toDateTime({at:Int64}, 'UTC')"
    rows = client.query(
        f"SELECT formatDateTime(window_end, '%Y-%m-%dT%H:%i:%SZ', 'UTC'), type, key, count, "
        "round(expected, 2), round(surge, 2), rank, surge_rank "
        f"FROM {table} FINAL WHERE {where} AND {rank} BETWEEN 1 AND {{top:UInt32}} "
        f"AND window_end = (SELECT max(window_end) FROM {table} WHERE {where}{before}) "
        f"ORDER BY type, {rank}",
        parameters=params,
    ).result_rows
    if not rows:
        held = client.query(f"SELECT DISTINCT window, scope, type FROM {table} ORDER BY ALL").result_rows
        if not any(h[0] == window and h[1] == scope and type_ in (None, h[2]) for h in held):
            shown = ", ".join(f"{w} {sc} {t}" for w, sc, t in held) or "none yet"
            msg = f"no trending rows for window {window}, scope {scope}, type {type_ or 'any'}; held: {shown}"
            raise AppError(msg)
    return rows
