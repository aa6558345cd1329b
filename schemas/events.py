"""The event contract: what producers send and what the stream accepts.

An event says that a customer (``user_id``) did something (``type``) with an
item (``item_id``) at a moment (``timestamp``). Timestamps are normalised to
timezone-aware UTC: an offset-carrying timestamp is converted, a naive one is
taken as UTC, and epoch numbers are read in the unit the mapping names
(milliseconds by default for raw JSON numbers).

>>> e = Event.model_validate(
...     {"user_id": "u1", "item_id": "42", "type": "purchase",
...      "timestamp": "2017-03-01T10:00:00+01:00", "value": 2.5})
>>> e.timestamp.isoformat()
'2017-03-01T09:00:00+00:00'
>>> e.to_record("file.csv:2").value_cents
250
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

MAX_ID_LENGTH = 128
MAX_EVENT_ID_LENGTH = 128
MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2100, 1, 1, tzinfo=UTC)
MIN_TIMESTAMP_MS = int(MIN_TIMESTAMP.timestamp() * 1000)  # the bounds as epoch ms, for the fast paths
MAX_TIMESTAMP_MS = int(MAX_TIMESTAMP.timestamp() * 1000)
# Characters that are not whitespace anywhere: an id that starts and ends with one needs no stripping (the
# parsers' fast paths, stream.columns and stream.fastparse, check this instead of stripping).
PLAIN_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.:@/+#"
MAX_QUANTITY = 1_000_000.0
MAX_VALUE = 1_000_000_000.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class EventType(StrEnum):
    """The default kinds of interaction (The Complete Journey's). The order is the feature layout order."""

    VIEW = "view"
    CART = "cart"
    PURCHASE = "purchase"


# The default vocabulary. A configured one (setting ``events.types``) travels as a :class:`Vocabulary`.
EVENT_TYPES: tuple[EventType, ...] = tuple(EventType)
TYPE_INDEX: dict[str, int] = {t.value: i for i, t in enumerate(EVENT_TYPES)}
TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in EVENT_TYPES)  # by type index
TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"  # a type name is part of feature names: grp=..|type=<name>|..
MAX_TYPES = 64


def check_type_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if they make a vocabulary (non-empty, unique, each matching TYPE_NAME_PATTERN), else ValueError.

    >>> check_type_names(("view", "View"))
    Traceback (most recent call last):
    ...
    ValueError: event type names must match ^[a-z][a-z0-9_]{0,31}$ (they are part of feature names): ['View']
    """
    names = tuple(names)
    if not names or len(names) > MAX_TYPES:
        msg = f"event types: give 1 to {MAX_TYPES} names, got {len(names)}"
        raise ValueError(msg)
    bad = [n for n in names if not isinstance(n, str) or not re.match(TYPE_NAME_PATTERN, n)]
    if bad:
        msg = f"event type names must match {TYPE_NAME_PATTERN} (they are part of feature names): {bad}"
        raise ValueError(msg)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        msg = f"event type names must be unique: {twice} appear more than once"
        raise ValueError(msg)
    return names


@dataclass(frozen=True)
class Vocabulary:
    """The configured event types: ``names[i]`` is the type of type index ``i`` (the feature layout order).

    It is the one object that turns a type name into its index and back:
    validation (:attr:`model`), the hot path's ``EventRecord.type_index``,
    and every writer that shows a name again (``names``, a plain tuple).

    >>> v = Vocabulary(("view", "cart", "purchase", "wishlist"))
    >>> v.index["wishlist"], v.names[1], v.expected
    (3, 'cart', "'view', 'cart', 'purchase' or 'wishlist'")
    """

    names: tuple[str, ...] = TYPE_NAMES

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", check_type_names(tuple(self.names)))

    @cached_property
    def index(self) -> dict[str, int]:
        """Type name -> type index."""
        return {n: i for i, n in enumerate(self.names)}

    @property
    def expected(self) -> str:
        """The names as validation errors list them: ``'view', 'cart' or 'purchase'``."""
        quoted = [repr(n) for n in self.names]
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]

    @cached_property
    def model(self) -> type[Event]:
        """The event contract over this vocabulary (:class:`Event` itself for the default)."""
        if self.names == TYPE_NAMES:
            return Event
        enum = StrEnum("EventType", {n.upper(): n for n in self.names})  # type: ignore[misc]
        model = create_model("Event", __base__=Event, __module__=__name__, type=(enum, ...))
        model.type_index_of = self.index
        return model

    @classmethod
    def of(cls, types: Vocabulary | tuple[str, ...] | list[str] | None) -> Vocabulary:
        """A vocabulary from names (None: the default)."""
        if isinstance(types, Vocabulary):
            return types
        return DEFAULT_VOCABULARY if types is None else cls(tuple(types))


class EventRecord(NamedTuple):
    """A validated event in the compact form the hot path uses."""

    user_id: str
    item_id: str
    type_index: int
    ts_ms: int
    event_id: str
    quantity: float
    value_cents: int
    source: str

    def to_json(self, type_names: tuple[str, ...]) -> str:
        """The event on the wire: contract field names, epoch-ms timestamp (valid contract input).

        ``type_names`` is the vocabulary's ``names`` (the record holds only the type's index).
        """
        return json.dumps(
            {
                "user_id": self.user_id,
                "item_id": self.item_id,
                "type": type_names[self.type_index],
                "timestamp": self.ts_ms,
                "event_id": self.event_id,
                "quantity": self.quantity,
                "value": self.value_cents / 100,
            },
            separators=(",", ":"),
        )


class DeadLetter(NamedTuple):
    """An input that was not applied, and why (a row of ``dead_letters``, less its receive time)."""

    reason: str
    payload: str  # the raw input as text
    source: str  # where it came from: file and line, or topic/partition/offset


class FeatureRow(NamedTuple):
    """A customer's feature vector as of a time (a row of ``customer_features``)."""

    user_id: str
    as_of: int  # ms
    features: dict[str, float]
    version: int


class ItemActivityRow(NamedTuple):
    """Cumulative counts of one item, hour, type and shard (a row of ``item_activity``)."""

    hour: int  # ms, start of the hour
    item_id: str
    type: str
    shard: int
    events: int
    quantity: float
    value: float


def iso_utc(text: str) -> datetime:
    """An ISO time typed by a person (a flag, a setting, a URL): UTC when it has no offset; ValueError if unreadable.

    >>> iso_utc("2017-05-27T15:00"), iso_utc("2017-05-27 17:00+02:00") == iso_utc("2017-05-27T15:00")
    (datetime.datetime(2017, 5, 27, 15, 0, tzinfo=datetime.timezone.utc), True)
    """
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _timestamp_from_number(x: float, unit: str) -> datetime:
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    return datetime.fromtimestamp(x / scale, tz=UTC)


class Event(BaseModel):
    """One customer interaction, validated.

    Limits reject absurd input with a reason: ids must be 1..128 characters,
    the timestamp must fall in [2000-01-01, 2100-01-01), numbers must be finite
    and within bounds, and the type must be one of :class:`EventType` (this class)
    or of a configured vocabulary (``Vocabulary.model``, a subclass).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)
    type_index_of: ClassVar[dict[str, int]] = TYPE_INDEX

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    type: EventType
    timestamp: datetime
    event_id: str | None = Field(default=None, min_length=1, max_length=MAX_EVENT_ID_LENGTH)
    quantity: float = Field(default=1.0, ge=0.0, le=MAX_QUANTITY, allow_inf_nan=False)
    value: float = Field(default=0.0, ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False)

    @field_validator("user_id", "item_id", "event_id", mode="before")
    @classmethod
    def _ids_are_text(cls, v: Any) -> Any:
        # Integer ids from CSV/Parquet exports are fine; floats, bools and
        # containers are not (1.0 vs "1" would silently split a customer).
        cls_ = v.__class__
        if cls_ is str:
            return v
        if cls_ is int:
            return str(v)
        if cls_ is float:
            if not (math.isfinite(v) and v.is_integer()):
                msg = f"id must be a string or integer, got float {v!r}"
                raise ValueError(msg)
            return str(int(v))
        if isinstance(v, bool):
            msg = "id must be a string or integer, got bool"
            raise ValueError(msg)
        return v

    @field_validator("quantity", "value", mode="before")
    @classmethod
    def _numbers_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            msg = "must be a number, got bool"
            raise ValueError(msg)
        return v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, v: Any) -> Any:
        if v.__class__ is datetime or v.__class__ is str:
            return v
        if isinstance(v, bool):
            msg = "timestamp must be an ISO-8601 string, a datetime or epoch milliseconds"
            raise ValueError(msg)
        if isinstance(v, int | float):
            if isinstance(v, float) and not math.isfinite(v):
                msg = "timestamp is not a finite number"
                raise ValueError(msg)
            try:
                return _timestamp_from_number(float(v), "ms")  # an int of hundreds of digits overflows float()
            except (OverflowError, OSError, ValueError) as exc:
                text = f"{v!r}" if abs(v) < 10**30 else f"of about {int(int(v).bit_length() * 0.30103)} digits"
                msg = f"timestamp {text} is out of range as epoch milliseconds"
                raise ValueError(msg) from exc
        return v

    @field_validator("timestamp", mode="after")
    @classmethod
    def _normalise_timestamp(cls, v: datetime) -> datetime:
        tz = v.tzinfo
        if tz is None:
            v = v.replace(tzinfo=UTC)
        elif tz is not UTC:
            v = v.astimezone(UTC)
        if not MIN_TIMESTAMP <= v < MAX_TIMESTAMP:
            msg = f"timestamp {v.isoformat()} is outside [{MIN_TIMESTAMP.date()}, {MAX_TIMESTAMP.date()})"
            raise ValueError(msg)
        return v

    def content_id(self) -> str:
        """A deterministic id for events sent without one (same content, same id)."""
        return content_id_of(self.user_id, self.item_id, self.type.value, self.ts_ms, self.quantity, self.value)

    @property
    def ts_ms(self) -> int:
        """Event time as integer epoch milliseconds."""
        return (self.timestamp - _EPOCH) // _ONE_MS

    def to_record(self, source: str) -> EventRecord:
        """The compact hot-path form; ``value`` becomes integer cents so sums are exact."""
        return EventRecord(
            self.user_id,
            self.item_id,
            self.type_index_of[self.type.value],
            self.ts_ms,
            self.event_id or self.content_id(),
            self.quantity,
            round(self.value * 100),
            source,
        )


def content_id_of(user_id: str, item_id: str, type_: str, ts_ms: int, quantity: float, value: float) -> str:
    """The id of an event sent without one: a hash of its content (same content, same id)."""
    key = "\x1f".join((user_id, item_id, type_, str(ts_ms), repr(quantity), repr(value)))
    return "h:" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and why, for the dead-letter ``reason``."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def event_json_schema(types: Vocabulary | None = None) -> dict[str, Any]:
    """The contract as JSON Schema, for producers (``propstream schema``); ``type`` enumerates the vocabulary."""
    return Vocabulary.of(types).model.model_json_schema()


DEFAULT_VOCABULARY = Vocabulary()
