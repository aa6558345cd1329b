"""Feature naming and layout: one deterministic rule shared by state, training and models.

Every customer feature has a name built by one rule, used alike in the
stream's state, training sets, model cards and ClickHouse::

    grp=<group>|type=<event type>|stat=<count|value|active>|win=<window>
    grp=<group>|stat=recency_days
    grp=all|stat=history_days

``count`` is the number of events, ``value`` their summed value, ``active``
the number of distinct non-empty buckets (hours for the 1d window, days
otherwise), ``recency_days`` the whole days since the customer's last event in
the group, rounded down to a bin edge and capped at the longest window.
``history_days`` is how far back the customer's history in the longest window
reaches: whole days from the start of its oldest non-empty bucket to the
as-of time, rounded down to a bin edge (the same edges as recency). It tells a
customer first seen last week from one with a year of history behind the same
counts, and like every other feature it depends only on events in a window.

>>> spec = FeatureSpec(groups=("coffee_tea",))
>>> spec.names[0]
'grp=coffee_tea|type=view|stat=count|win=1d'
>>> spec.recency_name("all")
'grp=all|stat=recency_days'
>>> spec.names[-1]
'grp=all|stat=history_days'
>>> len(spec.names)
111
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import TYPE_NAMES, Vocabulary, check_type_names
from schemas.groups import ALL_GROUP

HOUR_S = 3600
DAY_S = 86400
DAY_MS = DAY_S * 1000
STATS: tuple[str, ...] = ("count", "value", "active")


class Window(BaseModel):
    """A sliding window made of ``n_buckets`` buckets of ``bucket_seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    bucket_seconds: int = Field(gt=0)
    n_buckets: int = Field(gt=0, le=10_000)

    @property
    def span_ms(self) -> int:
        """Length of the window in milliseconds."""
        return self.bucket_seconds * self.n_buckets * 1000


DEFAULT_WINDOWS: tuple[Window, ...] = (
    Window(name="1d", bucket_seconds=HOUR_S, n_buckets=24),
    Window(name="7d", bucket_seconds=DAY_S, n_buckets=7),
    Window(name="30d", bucket_seconds=DAY_S, n_buckets=30),
    Window(name="90d", bucket_seconds=DAY_S, n_buckets=90),
    # Half-year and one-year history lift ROC AUC by ~0.015 on average (README, "Measured");
    # the state keeps at most 365 daily buckets per (group, type) key per customer.
    Window(name="180d", bucket_seconds=DAY_S, n_buckets=180),
    Window(name="365d", bucket_seconds=DAY_S, n_buckets=365),
)
DEFAULT_RECENCY_EDGES: tuple[int, ...] = (0, 1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 150, 180, 240, 300, 365)


def feature_name(group: str, type_: str, stat: str, window: str) -> str:
    """The name of a windowed counter feature."""
    return f"grp={group}|type={type_}|stat={stat}|win={window}"


class FeatureSpec(BaseModel):
    """The full, ordered feature layout for a set of product groups.

    The dense feature vector holds, for each group and then ``all``, for each
    event type, for each window, the stats ``count, value, active``; then one
    ``recency_days`` per group and ``all``; last ``history_days``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: tuple[str, ...]
    types: tuple[str, ...] = TYPE_NAMES  # the event-type vocabulary (setting ``events.types``), in layout order
    windows: tuple[Window, ...] = DEFAULT_WINDOWS
    recency_edges_days: tuple[int, ...] = DEFAULT_RECENCY_EDGES

    @field_validator("types")
    @classmethod
    def _types_are_a_vocabulary(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_type_names(v)

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if len(set(self.groups)) != len(self.groups) or ALL_GROUP in self.groups:
            msg = f"feature spec groups must be unique and exclude {ALL_GROUP!r}: {self.groups}"
            raise ValueError(msg)
        edges = self.recency_edges_days
        if not edges or edges[0] != 0 or list(edges) != sorted(set(edges)):
            msg = f"recency_edges_days must start at 0 and increase strictly: {edges}"
            raise ValueError(msg)
        return self

    @cached_property
    def vocabulary(self) -> Vocabulary:
        """The event types as the object that maps names to type indexes and back."""
        return Vocabulary(self.types)

    @property
    def all_groups(self) -> tuple[str, ...]:
        """Groups in layout order, ending with the ``all`` pseudo-group."""
        return (*self.groups, ALL_GROUP)

    @property
    def recency_cap_days(self) -> int:
        """Recency value meaning "never, or longer ago than the last edge"."""
        return self.recency_edges_days[-1]

    def counter_index(self, group_index: int, type_index: int, window_index: int) -> int:
        """Position of the ``count`` stat; ``value`` and ``active`` follow it."""
        return ((group_index * len(self.types) + type_index) * len(self.windows) + window_index) * 3

    @cached_property
    def recency_offset(self) -> int:
        """Position of the first ``recency_days`` feature."""
        return len(self.all_groups) * len(self.types) * len(self.windows) * 3

    def recency_name(self, group: str) -> str:
        """The name of a group's recency feature."""
        return f"grp={group}|stat=recency_days"

    @property
    def history_name(self) -> str:
        """The name of the customer's history length feature (it belongs to ``all``)."""
        return f"grp={ALL_GROUP}|stat=history_days"

    @cached_property
    def history_window(self) -> int:
        """Index of the longest window: the history feature looks back as far as it does."""
        return max(range(len(self.windows)), key=lambda wi: self.windows[wi].span_ms)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """All feature names in vector order."""
        out = [
            feature_name(g, t, s, w.name)
            for g in self.all_groups
            for t in self.types
            for w in self.windows
            for s in STATS
        ]
        out += [self.recency_name(g) for g in self.all_groups]
        out.append(self.history_name)
        return tuple(out)

    @cached_property
    def index(self) -> dict[str, int]:
        """Feature name to position in the dense vector."""
        return {n: i for i, n in enumerate(self.names)}

    def group_of_feature(self, name: str) -> str:
        """The group a feature is about (``all`` for totals)."""
        return name.split("|", 1)[0].removeprefix("grp=")

    def default_inputs(self, group: str) -> tuple[str, ...]:
        """Features a group's model uses by default: its own and the totals."""
        return tuple(n for n in self.names if self.group_of_feature(n) in (group, ALL_GROUP))
