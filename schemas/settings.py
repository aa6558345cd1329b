"""Settings: one TOML file plus ``PROPSTREAM_*`` environment variables.

Precedence, highest first: explicit arguments (CLI flags), environment
variables (``PROPSTREAM_DATA_DIR``, ``PROPSTREAM_CLICKHOUSE_DSN``, nested keys
with ``__`` such as ``PROPSTREAM_STREAM__N_SHARDS``), the TOML file named by
``PROPSTREAM_CONFIG``, then defaults. A named file that is missing or not
valid TOML is an error, never silently skipped.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.errors import ConfigError

DEFAULT_DATA_DIR = Path("propstream-data")
PACKAGED_GROUPS = Path(__file__).resolve().parent.parent / "propstream" / "data" / "completejourney_groups.toml"


class SettingsFileError(ConfigError):
    """The settings file named by PROPSTREAM_CONFIG is missing or unreadable."""


def is_secret_key(key: str) -> bool:
    """Whether a librdkafka setting holds a secret (its value must never be shown).

    >>> [is_secret_key(k) for k in ("ssl.key.password", "sasl.oauthbearer.client.secret", "ssl.key.pem", "acks")]
    [True, True, True, False]
    """
    k = key.lower()
    return any(w in k for w in ("password", "secret", "token", "jaas", "oauthbearer.config")) or k == "ssl.key.pem"


class StreamSettings(BaseModel):
    """Tuning of the dataflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # One shard per process is fastest (one predict call per group and batch); scale-out wants >= 8 per process.
    n_shards: int = Field(default=1, ge=1, le=4096)
    batch_size: int = Field(default=50_000, ge=1, le=1_000_000)  # replay batch: one refresh per customer per batch
    # Judged per source partition against its own event-time watermark (stream/watermark.py).
    allowed_lateness_hours: float = Field(default=24.0, ge=0.0, le=24.0 * 90)
    # An event further than this past its partition's watermark is refused (a skewed clock, a wrong unit).
    max_ahead_hours: float = Field(default=24.0 * 30, gt=0.0)
    model_poll_seconds: float = Field(default=5.0, gt=0.0)
    progress_seconds: float = Field(default=5.0, gt=0.0)
    predict_threads: int = Field(default=0, ge=0)  # XGBoost threads when scoring (0: one per CPU)
    gc_seconds: float = Field(default=60.0, ge=0.0)  # collect cyclic garbage on this timer (0: Python's default)
    # Partitions of a new recovery store; fixed for its life, independent of how many processes run.
    recovery_partitions: int = Field(default=4, ge=1, le=1024)


class TrainSettings(BaseModel):
    """Promotion gate of ``propstream train``: how much worse than production a candidate may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Both models are measured on the candidate's test slice; the seed alone moves ROC AUC by ~0.0005.
    max_auc_drop: float = Field(default=0.005, ge=0.0, le=1.0)
    max_brier_rise: float = Field(default=0.002, ge=0.0, le=1.0)


class KafkaSettings(BaseModel):
    """Where events come from when live.

    ``config`` passes librdkafka settings through (``security.protocol``,
    ``sasl.mechanism``, ``ssl.ca.location``, ...); the SASL password is a
    secret, merged in only when a client is built and never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "interactions"
    dead_letter_topic: str | None = None  # default: "<topic>-dead-letters" (see dead_letters_topic)
    partitions: int = Field(default=4, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    # Values of secret-looking keys (passwords, secrets, tokens, key material) are kept as SecretStr.
    config: dict[str, SecretStr | str | int | float | bool] = {}
    sasl_password: SecretStr | None = None
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    clock: Literal["wall", "event"] = "wall"
    tick_seconds: float = Field(default=1.0, gt=0.0)
    # A partition read to its end and without a message this long is idle: it does not hold back the event-time clock.
    idle_seconds: float = Field(default=10.0, gt=0.0)

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


class ClickHouseSettings(BaseModel):
    """Where scores go. ``dsn`` empty means embedded chDB under the data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = ""
    database: str = "propstream"
    user: str | None = None
    password: SecretStr | None = None


class Settings(BaseSettings):
    """Everything configurable, validated once."""

    model_config = SettingsConfigDict(env_prefix="PROPSTREAM_", env_nested_delimiter="__", extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    clickhouse_dsn: str = ""
    groups_file: Path = PACKAGED_GROUPS
    catalog_file: Path | None = None
    # What to run on; each has a command-line flag, which wins (propstream --help names both).
    input: str | None = None  # `run`: comma-separated files, or kafka://HOST:PORT/TOPIC
    mapping: Path | None = None  # column mapping TOML of file inputs
    train_input: str | None = None  # `train`: files instead of the events archive
    kafka_url: str | None = None  # `produce` / `init`: kafka://HOST:PORT/TOPIC, else the kafka settings
    recovery_dir: Path | None = None  # the recovery store shared by every process of a run
    snapshot_seconds: float = Field(default=10.0, gt=0.0)  # epoch between recovery snapshots
    process_id: int | None = Field(default=None, ge=0)  # this process's index in addresses
    addresses: str = ""  # comma-separated host:port of every process
    stream: StreamSettings = StreamSettings()
    train: TrainSettings = TrainSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    kafka: KafkaSettings = KafkaSettings()

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

    @property
    def dsn(self) -> str:
        """The ClickHouse DSN: explicit, or embedded chDB inside the data dir."""
        return self.clickhouse_dsn or self.clickhouse.dsn or f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def models_dir(self) -> Path:
        """Root of the model registry."""
        return self.data_dir / "models"
