"""Settings: one TOML file plus ``PROPSTREAM_*`` environment variables.

Precedence, highest first: explicit arguments (CLI flags), environment
variables (``PROPSTREAM_DATA_DIR``, ``PROPSTREAM_CLICKHOUSE_DSN``, nested keys
with ``__`` such as ``PROPSTREAM_STREAM__N_SHARDS``), the TOML file named by
``PROPSTREAM_CONFIG``, then defaults. A named file that is missing or not
valid TOML is an error, never silently skipped.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.errors import ConfigError
from schemas.events import TYPE_NAMES, check_type_names

DEFAULT_DATA_DIR = Path("propstream-data")


class SettingsFileError(ConfigError):
    """The settings file named by PROPSTREAM_CONFIG is missing or unreadable."""


def is_secret_key(key: str) -> bool:
    """Whether a librdkafka setting holds a secret (its value must never be shown).

    >>> [is_secret_key(k) for k in ("ssl.key.password", "sasl.oauthbearer.client.secret", "ssl.key.pem", "acks")]
    [True, True, True, False]
    """
    k = key.lower()
    return any(w in k for w in ("password", "secret", "token", "jaas", "oauthbearer.config")) or k == "ssl.key.pem"


class EventSettings(BaseModel):
    """The event contract's vocabulary: which event types exist, in feature layout order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: tuple[str, ...] = Field(
        default=TYPE_NAMES,
        description="event types, in feature order (each gets its features; changing them needs retraining "
        "and a fresh recovery store)",
    )

    @field_validator("types")
    @classmethod
    def _a_vocabulary(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_type_names(v)


class StreamSettings(BaseModel):
    """Tuning of the dataflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="customer shards, fixed for a recovery store; shard i runs on process i % processes: one per "
        "process is fastest (one predict call per batch), a multiple of every process count you will run "
        "keeps them even",
    )
    batch_size: int = Field(
        default=50_000, ge=1, le=1_000_000, description="file replay batch: one refresh per customer per batch"
    )
    max_batch_event_hours: float = Field(
        default=24.0,
        ge=0.0,
        description="a replay batch spans at most one such window of event time (aligned to the epoch, so UTC "
        "days for 24): score_history holds a refresh per window; 0: batches are cut by batch_size only",
    )
    freshness_seconds: float | None = Field(
        default=None,
        gt=0.0,
        le=3600.0,
        description="target event-to-visible lag of a live stream: sets the waits that trade lag for CPU "
        "(sink_flush_seconds, sink_archive_flush_seconds, kafka.batch_wait_seconds, kafka.poll_max_seconds, "
        "kafka.fetch_wait_seconds; one set explicitly wins) so that they add up to under half of it; a minute costs "
        "about a third of the default's CPU per event at 2,000 events/s (BENCHMARKS.md 6w); unset: their defaults "
        "(p99 ~0.4-1 s up to 20,000 events/s)",
    )
    sink_flush_rows: int = Field(
        default=200_000,
        ge=1,
        description="buffered rows (all tables) that make the sink hand them to its writer thread at once "
        "(stream/sinks/clickhouse.py)",
    )
    sink_flush_seconds: float = Field(
        default=0.2,
        ge=0.0,
        description="the longest a row waits in the sink's buffer: one insert per table for many batches; "
        "0, and any run with a recovery store: one insert per table per batch",
    )
    sink_archive_flush_seconds: float = Field(
        default=2.0,
        ge=0.0,
        description="the longest a row of the tables no reader waits for (events, customer_features, "
        "item_activity, score_history) waits in the sink's buffer (at least sink_flush_seconds): fewer inserts and "
        "parts to merge; scores still leave every sink_flush_seconds, and score_history's written_at is when they did",
    )
    sink_retry_seconds: float = Field(
        default=300.0,
        ge=0.0,
        description="how long the sink tries an insert again that ClickHouse refused for a passing reason "
        "(unreachable, restarting, too many parts, out of memory) before the stream stops with the error; "
        "batches wait meanwhile (stream/sinks/clickhouse.py ClickHouseWriter)",
    )
    allowed_lateness_hours: float = Field(
        default=24.0,
        ge=0.0,
        le=24.0 * 90,
        description="an event this far behind its source partition's watermark is a dead letter (stream/watermark.py)",
    )
    max_ahead_hours: float = Field(
        default=24.0 * 30,
        gt=0.0,
        description="an event this far past its partition's watermark is refused (a skewed clock, a wrong unit)",
    )
    model_poll_seconds: float = Field(default=5.0, gt=0.0, description="how often the stream looks for promoted models")
    reload_groups: bool = Field(
        default=True,
        description="a one-process Kafka run with a recovery store applies product groups added to the groups file "
        "by itself: it stops reading, snapshots, and resumes with them (added groups backfilled from the events "
        "archive, and trained there when they have no model); otherwise a run logs the change and goes on",
    )
    progress_seconds: float = Field(default=5.0, gt=0.0, description="how often a run prints a progress line")
    predict_threads: int = Field(default=0, ge=0, description="XGBoost threads when scoring (0: one per CPU)")
    gc_seconds: float = Field(
        default=1.0,
        ge=0.0,
        description="collect cyclic garbage among objects new since the last collection on this timer "
        "(0: Python's default collector)",
    )
    gc_full_seconds: float = Field(
        default=3600.0, gt=0.0, description="collect cyclic garbage among all objects, long-lived ones too, this often"
    )
    recovery_partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="partitions of a new recovery store: fixed for its life, whatever the number of processes",
    )


class TrendingSettings(BaseModel):
    """Popularity and surge of items and groups over sliding event-time windows (stream/trending.py).

    A window is written once every customer shard's retention horizon (the
    slowest partition watermark minus ``stream.allowed_lateness_hours``) has
    passed its end: the rows are final, so a replay writes the same ones, but
    they lag event time by the allowed lateness.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=False,
        description="compute trending in the stream and write the trending table (off by default: on The Complete "
        "Journey's sparse stream it still costs most of the replay's throughput, see README)",
    )
    windows: tuple[str, ...] = Field(
        default=("1h/5m", "24h/1h"),
        min_length=1,
        description="sliding windows LENGTH/STEP (m, h, d), named by their length; ends fall on multiples of STEP",
    )
    min_support: int = Field(
        default=5, ge=1, description="a window count below this never surges (3 views against 0.5 expected is noise)"
    )
    min_surge: float = Field(
        default=4.0,
        ge=0.0,
        description="ranked by surge only from this score, -log10 of the Poisson tail (4: under 1e-4 chance; "
        "thousands of series are tested every window)",
    )
    top_n: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="rows kept per window end, scope and type: the top N by count and by surge",
    )
    half_life_hours: float = Field(
        default=6.0,
        gt=0.0,
        description="half-life of the forecast (exponentially weighted mean of past window counts) of the windows "
        "half_lives does not name",
    )
    half_lives: dict[str, float] = Field(
        default={"1h": 1.0},
        description='half-life in hours per window name (its length), e.g. {"1h": 1}: hourly counts are best '
        "forecast from the last few hours, daily ones from the last day (bench/trending_forecast.py)",
    )
    min_expected: float = Field(
        default=0.5, gt=0.0, description="the forecast floor when judging surge (a series without history expects this)"
    )
    forget_after_hours: float = Field(
        default=72.0, gt=0.0, description="a series without events for this long is forgotten (bounded state)"
    )
    shards: int = Field(
        default=1, ge=1, le=4096, description="trend shards (keyed by crc32 of scope|key); fixed for a recovery store"
    )
    category_column: str = Field(
        default="product_category",
        description="catalog column ranked as the category scope (The Complete Journey's commodity); '' for none",
    )

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for w in v:
            if not re.fullmatch(r"\d+[mhd](/\d+[mhd])?", w):
                msg = f"trending.windows: {w!r} is not LENGTH/STEP such as 1h/5m or 24h/1h"
                raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _half_lives_name_windows(self) -> TrendingSettings:
        names = [w.partition("/")[0] for w in self.windows]
        for name, hours in self.half_lives.items():
            if name not in names and "half_lives" in self.model_fields_set:  # the default may name no window
                msg = f"trending.half_lives: {name!r} is not a window name; the windows are {names}"
                raise ValueError(msg)
            if not hours > 0:
                msg = f"trending.half_lives: the half-life of {name} must be positive, not {hours}"
                raise ValueError(msg)
        return self


class TrainSettings(BaseModel):
    """Promotion gate of ``propstream train``: how much worse than production a candidate may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Both models are measured on the candidate's test slice; the seed alone moves ROC AUC by ~0.0005.
    max_auc_drop: float = Field(
        default=0.005, ge=0.0, le=1.0, description="a candidate whose ROC AUC is lower by more is not promoted"
    )
    max_brier_rise: float = Field(
        default=0.002, ge=0.0, le=1.0, description="a candidate whose Brier score is higher by more is not promoted"
    )
    min_auc: float = Field(
        default=0.55,
        ge=0.0,
        le=1.0,
        description="a model ranking worse than this ROC AUC on its test slice is never promoted, even a group's first",
    )
    label_horizon_days: int = Field(
        default=30, ge=1, le=365, description="a label is a label-type event in the group within this many days"
    )
    label_types: tuple[str, ...] = Field(
        default=("purchase",), min_length=1, description="the event types that count as the label event"
    )
    cutoff_every_days: int | None = Field(
        default=None,
        ge=1,
        le=365,
        description="days between training cutoffs; default month starts (training on the 1st and 15th)",
    )
    history_days: int = Field(
        default=28, ge=0, le=3650, description="history a customer needs before the first training cutoff"
    )
    calibration_cutoffs: int = Field(
        default=1,
        ge=1,
        le=12,
        description="cutoffs pooled for Platt calibration: the test cutoff minus one label horizon and weekly "
        "cutoffs before it (1: that one slice)",
    )
    min_distinct_predictions: int = Field(
        default=10,
        ge=1,
        description="a model with fewer distinct predictions on its test slice is never promoted (one score for all)",
    )
    if_new_data: bool = Field(
        default=False,
        description="`train`: train only groups whose production model predates the plan the events now give "
        "(a cron-friendly pass)",
    )
    every: str | None = Field(
        default=None, description="`train`: run the if-new-data pass now and then every interval (7d, 12h, 30m)"
    )


class MonitorSettings(BaseModel):
    """`propstream monitor`: drift detectors and live calibration per group, from score_history and the events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: Literal["adwin", "page_hinkley"] = Field(
        default="adwin", description="river drift detector fed each group's per-bucket series in time order"
    )
    delta: float = Field(
        default=0.0001,
        gt=0.0,
        lt=1.0,
        description="ADWIN's confidence, smaller: fewer, surer alarms (a customer's scores are not independent rows, "
        "so stricter than river's 0.002); or Page-Hinkley's tolerated change per row",
    )
    threshold: float = Field(
        default=50.0, gt=0.0, description="Page-Hinkley's alarm threshold (cumulative deviation of the rows)"
    )
    bucket_days: int = Field(
        default=1, ge=1, le=31, description="a drift event names the bucket of this many days that tripped the detector"
    )
    calibration_window_days: int = Field(
        default=28, ge=1, le=365, description="live calibration: matured scores of this many days per window"
    )
    calibration_step_days: int = Field(
        default=7, ge=1, le=365, description="live calibration: a window ends every this many days"
    )
    since: str | None = Field(
        default=None,
        description="score history from this ISO time, or the last `Nd` days before the newest event; default all",
    )
    retrain_on_drift: bool = Field(
        default=False,
        description="retrain a group (`propstream train --group G`) when a drift event is known after its model's data",
    )


class KafkaSettings(BaseModel):
    """Where events come from when live.

    ``config`` passes librdkafka settings through (``security.protocol``,
    ``sasl.mechanism``, ``ssl.ca.location``, ...); the SASL password is a
    secret, merged in only when a client is built and never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka brokers, host:port,...")
    topic: str = Field(default="interactions", description="the events topic (keyed by user_id)")
    dead_letter_topic: str | None = Field(default=None, description='dead letters; default "<topic>-dead-letters"')
    partitions: int = Field(default=4, ge=1, le=10_000, description="partitions of topics `init` creates")
    replication_factor: int = Field(default=1, ge=1, le=10, description="replication of topics `init` creates")
    config: dict[str, SecretStr | str | int | float | bool] = Field(
        default={},
        description="librdkafka settings passed through (values of secret-looking keys are kept as SecretStr)",
    )
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (a secret)")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="messages per poll of a partition")
    clock: Literal["wall", "event"] = Field(
        default="wall", description="expire windows by the wall clock (live) or event time (backfill)"
    )
    tick_seconds: float = Field(
        default=1.0,
        gt=0.0,
        description="wall-clock tick of a live stream (carried by partition 0 when quiet; with tick_when_due, the "
        "shortest time between two ticks)",
    )
    tick_when_due: bool = Field(
        default=True,
        description="a quiet live stream ticks only when a customer's window is due to expire or a model was "
        "swapped (one-process runs); false: every tick_seconds",
    )
    fetch_wait_seconds: float = Field(
        default=0.1,
        gt=0.0,
        le=10.0,
        description="the broker holds a stream's fetch until it has 1 MB for it or this long (librdkafka "
        "fetch.wait.max.ms; kafka.config wins): fewer fetches for the broker and the stream under traffic, at most "
        "this much more event-to-visible lag; a quiet stream's empty fetches come this often (librdkafka's "
        "default: every 0.5 s)",
    )
    batch_wait_seconds: float = Field(
        default=0.1,
        ge=0.0,
        le=10.0,
        description="a busy stream waits this long after a poll that brought messages before the next one ends "
        "(sooner with batch_size messages of a partition; at most poll_max_seconds): fewer, larger refreshes "
        "for the CPU, at most this much more event-to-visible lag (0: the next poll takes whatever has arrived)",
    )
    poll_max_seconds: float = Field(
        default=0.5,
        ge=0.0,
        description="longest a quiet process waits for messages in its one poll of all its partitions (a message "
        "on any of them ends the wait; the wait doubles from 1 ms after each empty poll; after a poll that brought "
        "messages it is batch_wait_seconds)",
    )
    idle_seconds: float = Field(
        default=10.0,
        gt=0.0,
        description="a partition read to its end and quiet this long is idle: it does not hold the event-time "
        "clock back",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _secrets_hidden(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: SecretStr(str(x)) if is_secret_key(k) and not isinstance(x, SecretStr) else x for k, x in v.items()}

    @property
    def dead_letters_topic(self) -> str:
        """Where dead letters go: the setting, or the input topic's name with ``-dead-letters``."""
        return self.dead_letter_topic or f"{self.topic}-dead-letters"

    def client_config(self) -> dict[str, Any]:
        """Librdkafka settings for a client, secrets included (do not log)."""
        cfg: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for k, v in self.config.items():
            cfg[k] = v.get_secret_value() if isinstance(v, SecretStr) else v
        if self.sasl_password is not None:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        return cfg


class CollectorSettings(BaseModel):
    """The HTTP event collector (``propstream collect``): where it listens and what it accepts.

    The collector answers a request only after Kafka acknowledged everything
    the request wrote; ``ack_timeout_seconds`` bounds that wait.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="address the collector listens on (0.0.0.0: every interface)")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port of the collector")
    workers: int = Field(
        default=1, ge=1, le=64, description="collector processes sharing the port, each its own producer"
    )
    allowed_origins: str = Field(
        default="",
        description="comma-separated origins (scheme://host[:port]) whose pages may call the collector (CORS); "
        "* for any",
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, le=64 * 1024 * 1024, description="a larger request body is refused (413)"
    )
    max_events: int = Field(default=500, ge=1, le=100_000, description="a larger JSON array of events is refused (413)")
    ack_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        le=300.0,
        description="how long a request waits for Kafka's acknowledgement before it is answered 503",
    )
    retry_after_seconds: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="Retry-After of a 503; for this long after a failed delivery, requests are answered 503 at once",
    )
    max_queued_events: int = Field(
        default=100_000,
        ge=100,
        le=10_000_000,
        description="messages a worker may hold unacknowledged; past it requests are answered 503",
    )
    linger_ms: float = Field(
        default=5.0, ge=0.0, le=1000.0, description="producer batching delay (librdkafka linger.ms)"
    )
    health_timeout_seconds: float = Field(
        default=2.0, gt=0.0, le=60.0, description="/health answers 503 when Kafka's metadata takes longer"
    )

    @property
    def origins(self) -> list[str]:
        """The allowed origins as a list.

        >>> CollectorSettings(allowed_origins="https://shop.example, http://127.0.0.1:8000").origins
        ['https://shop.example', 'http://127.0.0.1:8000']
        """
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]


class DashboardSettings(BaseModel):
    """The web dashboard (``propstream dashboard``, or served by ``propstream run`` from its own process).

    chDB opens a path in one process only: while a stream writes the embedded
    store, the stream itself serves the page (``in_run``); a stopped stream's
    store or a server DSN can be served by ``propstream dashboard``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_run: bool = Field(
        default=False,
        description="`propstream run` serves the dashboard from its own process, on host:port (process 0 only)",
    )
    host: str = Field(default="127.0.0.1", description="address the dashboard listens on (0.0.0.0: every interface)")
    port: int = Field(default=8050, ge=0, le=65535, description="TCP port of the dashboard (0: any free port)")
    window: str = Field(default="1h", description="trending window shown first (a name of trending.windows)")
    top: int = Field(default=10, ge=1, le=1000, description="rows of each trending table")
    history_windows: int = Field(
        default=48, ge=2, le=10_000, description="window ends of count-vs-forecast history drawn per series"
    )
    histogram_bins: int = Field(default=20, ge=2, le=200, description="bins of each group's score histogram")
    thresholds: tuple[float, ...] = Field(
        default=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        min_length=1,
        description="score thresholds at which segment sizes are shown",
    )
    refresh_seconds: int = Field(default=60, ge=0, description="the page reloads itself this often (0: never)")


class CampaignSettings(BaseModel):
    """Campaign audiences (`propstream segment --campaign`) and their measured uplift (`propstream uplift`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holdout_share: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="share of a campaign's audience held out (not targeted), chosen by a stable hash of customer "
        "and campaign",
    )
    uplift_window: str = Field(
        default="30d",
        pattern=r"^[1-9][0-9]*[dh]$",
        description="`uplift`: a member converts with a purchase in the group this long after the campaign's "
        "as-of time (e.g. 30d, 12h)",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="`uplift`: confidence level of the interval on the difference"
    )


class ClickHouseSettings(BaseModel):
    """Where scores go. ``dsn`` empty means embedded chDB under the data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = Field(default="", description="chdb:///path or http://host:8123 (see clickhouse_dsn)")
    database: str = Field(default="propstream", description="the database of propstream's tables")
    user: str | None = Field(default=None, description="server user")
    password: SecretStr | None = Field(default=None, description="server password (a secret)")
    score_history_ttl_days: int | None = Field(
        default=None,
        ge=1,
        description="keep score_history rows this many days after their as_of (ClickHouse TTL, set on existing "
        "stores by every command that opens the store); unset: kept forever (an existing TTL is removed)",
    )


class Latency(NamedTuple):
    """The waits between an event's arrival and its score's visibility, as a run uses them (``Settings.latency``)."""

    sink_flush_seconds: float
    sink_archive_flush_seconds: float
    batch_wait_seconds: float
    poll_max_seconds: float
    fetch_wait_seconds: float


class Settings(BaseSettings):
    """Everything configurable, validated once."""

    model_config = SettingsConfigDict(env_prefix="PROPSTREAM_", env_nested_delimiter="__", extra="forbid", frozen=True)

    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="models, embedded ClickHouse and prepared data")
    clickhouse_dsn: str = Field(
        default="", description="ClickHouse: chdb:///path or http://host:8123; default chDB inside the data dir"
    )
    groups_file: Path | None = Field(
        default=None, description="product groups TOML; default the packaged Complete Journey groups"
    )
    catalog_file: Path | None = Field(default=None, description="product catalog Parquet/CSV (item_id, attributes)")
    # What to run on; each has a command-line flag, which wins (propstream --help names both).
    input: str | None = Field(default=None, description="`run`: comma-separated files, or kafka://HOST:PORT/TOPIC")
    mapping: Path | None = Field(default=None, description="column mapping TOML of file inputs")
    train_input: str | None = Field(default=None, description="`train`: files instead of the events archive")
    kafka_url: str | None = Field(
        default=None, description="`produce` / `init` / `collect`: kafka://HOST:PORT/TOPIC, else the kafka settings"
    )
    recovery_dir: Path | None = Field(default=None, description="the recovery store shared by every process of a run")
    snapshot_seconds: float = Field(default=10.0, gt=0.0, description="epoch between recovery snapshots")
    process_id: int | None = Field(default=None, ge=0, description="this process's index in addresses")
    addresses: str = Field(default="", description="comma-separated host:port of every process of a run")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING", description="log messages of this level and above go to stderr"
    )
    events: EventSettings = EventSettings()
    stream: StreamSettings = StreamSettings()
    train: TrainSettings = TrainSettings()
    monitor: MonitorSettings = MonitorSettings()
    trending: TrendingSettings = TrendingSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    campaigns: CampaignSettings = CampaignSettings()
    kafka: KafkaSettings = KafkaSettings()
    collector: CollectorSettings = CollectorSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @model_validator(mode="after")
    def _label_types_are_event_types(self) -> Settings:
        unknown = sorted(set(self.train.label_types) - set(self.events.types))
        if unknown:
            msg = f"train.label_types {unknown} are not event types; events.types are {list(self.events.types)}"
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then env, then the TOML file named by PROPSTREAM_CONFIG."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("PROPSTREAM_CONFIG")
        if toml_path:
            if not Path(toml_path).is_file():
                msg = f"PROPSTREAM_CONFIG names {toml_path}, which is not a file"
                raise SettingsFileError(msg)
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            except tomllib.TOMLDecodeError as exc:
                msg = f"{toml_path} (PROPSTREAM_CONFIG) is not valid TOML: {exc}"
                raise SettingsFileError(msg) from exc
        return tuple(sources)

    def latency(self) -> Latency:
        """The stream's waits: each set explicitly as given, else from ``stream.freshness_seconds``, else its default.

        From a target F: the source waits F/12 after a poll that brought
        messages (at most 10 s; librdkafka's fetch F/60, 1 ms to 10 s), the
        sink writes scores every F/3 and the other tables every F/3 but at
        least every 2 s: a wait of ~F/3 + F/12 + F/60 (~0.43 F) at most
        before the insert, leaving the rest for the refresh and the insert
        itself. Measured at F = 60 s, 2,000 events/s: p99 24.8 s.

        >>> Settings(stream={"freshness_seconds": 60}).latency()
        Latency(sink_flush_seconds=20.0, sink_archive_flush_seconds=20.0, batch_wait_seconds=5.0, \
poll_max_seconds=5.0, fetch_wait_seconds=1.0)
        >>> Settings(stream={"freshness_seconds": 60, "sink_flush_seconds": 1}).latency().sink_flush_seconds
        1.0
        >>> Settings().latency() == Settings(stream={"freshness_seconds": None}).latency()
        True
        """
        st, k, f = self.stream, self.kafka, self.stream.freshness_seconds
        derived: dict[str, float] = {}
        if f is not None:
            batch_wait = min(10.0, f / 12)
            derived = {
                "sink_flush_seconds": f / 3,
                "sink_archive_flush_seconds": max(2.0, f / 3),
                "batch_wait_seconds": batch_wait,
                "poll_max_seconds": max(k.poll_max_seconds, batch_wait),
                "fetch_wait_seconds": min(10.0, max(0.001, f / 60)),
            }

        def wait(model: BaseModel, name: str) -> float:
            if name in model.model_fields_set or name not in derived:
                return float(getattr(model, name))
            return derived[name]

        return Latency(
            sink_flush_seconds=wait(st, "sink_flush_seconds"),
            sink_archive_flush_seconds=wait(st, "sink_archive_flush_seconds"),
            batch_wait_seconds=wait(k, "batch_wait_seconds"),
            poll_max_seconds=wait(k, "poll_max_seconds"),
            fetch_wait_seconds=wait(k, "fetch_wait_seconds"),
        )

    @property
    def dsn(self) -> str:
        """The ClickHouse DSN: explicit, or embedded chDB inside the data dir."""
        return self.clickhouse_dsn or self.clickhouse.dsn or f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def models_dir(self) -> Path:
        """Root of the model registry."""
        return self.data_dir / "models"


class SettingDoc(NamedTuple):
    """One setting as users set it: TOML key, environment variable, default, what it does."""

    key: str
    env: str
    default: str
    description: str


def env_name(key: str) -> str:
    """The environment variable of a setting key.

    >>> env_name("kafka.clock")
    'PROPSTREAM_KAFKA__CLOCK'
    """
    return "PROPSTREAM_" + key.replace(".", "__").upper()


def setting_docs(model: type[BaseModel] = Settings, prefix: str = "") -> list[SettingDoc]:
    """Every setting, nested sections included, generated from the models (the one place they are documented)."""
    docs = []
    for name, info in model.model_fields.items():
        key = prefix + name
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            docs += setting_docs(info.annotation, key + ".")
            continue
        default = info.get_default(call_default_factory=True)
        shown = "" if default is None or default in ("", {}) else str(default)
        docs.append(SettingDoc(key, env_name(key), shown, info.description or ""))
    return docs
