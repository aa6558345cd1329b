"""Column mappings: how a file's columns become the event contract.

Any CSV / JSONL / Parquet export can be replayed once a mapping names which of
its columns holds user_id, item_id, type and timestamp (and the timestamp's
unit). Missing optional fields fall back to constants or contract defaults.
A CSV file without a header line names its columns in ``csv_columns``; raw
type values are renamed by ``type_values`` (``pv`` -> ``view``) into the
configured vocabulary (``events.types``; ``EventParser`` checks it), and
those in ``drop_types`` are skipped, counted as dropped.

>>> m = ColumnMapping(user_id="household_id", item_id="product_id",
...                   timestamp="ts", timestamp_unit="s", type_value="purchase")
>>> m.apply({"household_id": 7, "product_id": 9, "ts": 1488362400})["timestamp"].isoformat()
'2017-03-01T10:00:00+00:00'
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from schemas.errors import ConfigError

TimestampUnit = Literal["iso", "s", "ms", "us", "ns"]
_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


class MappingFileError(ConfigError):
    """A mapping file is unreadable or invalid; the message names the file."""


class MappingTypesError(ConfigError):
    """A mapping renames raw values to types that are not in the configured vocabulary (``events.types``)."""


class ColumnMapping(BaseModel):
    """Source column names for each contract field (identity by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str = "user_id"
    item_id: str = "item_id"
    type: str | None = "type"
    type_value: str | None = None  # a constant type when the file has no type column
    timestamp: str = "timestamp"
    timestamp_unit: TimestampUnit = "iso"
    event_id: tuple[str, ...] | str | None = "event_id"  # several columns are joined with ':'
    quantity: str | None = "quantity"
    value: str | None = "value"
    csv_columns: tuple[str, ...] | None = None  # a CSV file without a header line: its columns, in order
    type_values: dict[str, str] = {}  # raw type value -> contract type, e.g. {"pv": "view", "buy": "purchase"}
    drop_types: tuple[str, ...] = ()  # raw type values skipped on purpose: counted as dropped, not dead letters

    @model_validator(mode="after")
    def _type_source(self) -> ColumnMapping:
        if self.type_value is None and self.type is None:
            msg = "a mapping needs either a `type` column or a constant `type_value`"
            raise ValueError(msg)
        both = sorted(set(self.type_values) & set(self.drop_types))
        if both:
            msg = f"type values {both} are both renamed (type_values) and dropped (drop_types)"
            raise ValueError(msg)
        return self

    def check_types(self, types: tuple[str, ...]) -> None:
        """MappingTypesError unless every ``type_values`` target is a type of the vocabulary ``types``.

        >>> ColumnMapping(type_values={"fav": "wishlist"}).check_types(("view", "cart"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        schemas.mapping.MappingTypesError: the mapping's type_values map to ['wishlist'], which are not event types; ...
        """
        unknown = sorted({t for t in self.type_values.values() if t not in types})
        if unknown:
            msg = (
                f"the mapping's type_values map to {unknown}, which are not event types; "
                f"events.types are {list(types)}"
            )
            raise MappingTypesError(msg)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns every row must have for the mapping to read it (user, item, timestamp, type)."""
        typed = () if self.type_value is not None else (self.type or "",)
        return (self.user_id, self.item_id, self.timestamp, *typed)

    def drops(self, row: dict[str, Any]) -> bool:
        """Whether a raw row's type is one the mapping skips on purpose (``drop_types``).

        >>> ColumnMapping(drop_types=("fav",)).drops({"type": "fav"})
        True
        """
        if not self.drop_types or self.type_value is not None:
            return False
        raw = row.get(self.type or "")
        return raw is not None and str(raw) in self.drop_types

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """Rename one raw row to contract field names (values are validated later)."""
        get = row.get
        out: dict[str, Any] = {
            "user_id": get(self.user_id),
            "item_id": get(self.item_id),
            "type": self.type_value if self.type_value is not None else self._type(get(self.type or "")),
            "timestamp": self._timestamp(get(self.timestamp)),
        }
        eid = self.event_id
        if isinstance(eid, tuple):
            parts = [get(c) for c in eid]
            if all(p is not None and p != "" for p in parts):
                out["event_id"] = ":".join([str(p) for p in parts])
        elif eid is not None:
            v = get(eid)
            if v is not None and v != "":
                out["event_id"] = v
        if self.quantity is not None:
            v = get(self.quantity)
            if v is not None and v != "":
                out["quantity"] = v
        if self.value is not None:
            v = get(self.value)
            if v is not None and v != "":
                out["value"] = v
        return out

    def _type(self, raw: Any) -> Any:
        if raw is None or not self.type_values:
            return raw
        return self.type_values.get(str(raw), raw)

    def _timestamp(self, v: Any) -> Any:
        if self.timestamp_unit == "iso" or v is None or isinstance(v, datetime):
            return v
        try:
            x = float(v)
        except (TypeError, ValueError):
            return v  # left for the contract to reject with a reason
        try:
            return datetime.fromtimestamp(x / _SCALE[self.timestamp_unit], tz=UTC)
        except (OverflowError, OSError, ValueError):
            return f"out of range: {v!r} {self.timestamp_unit}"


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read a mapping from a TOML file (keys as the ColumnMapping fields)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
        if isinstance(raw.get("event_id"), list):
            raw["event_id"] = tuple(raw["event_id"])
        return ColumnMapping(**raw)
    except (OSError, tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        msg = f"{path}: invalid column mapping: {exc}"
        raise MappingFileError(msg) from exc
