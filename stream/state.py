"""The customer state machine: the single definition of every feature.

Pure and picklable, no I/O. The stream runs it live; offline training replays
the archived events through it, so training and serving cannot disagree.

Counters are bucketed by event time (hourly buckets for the 1d window, daily
for the others). Running sums (per band, below) are updated when an event
lands in a window and when a bucket leaves one as the clock advances.
Values are integer cents, so every sum is exact and the result does not depend
on the order events arrive in.

The state of a customer is a handful of flat ``array('q')`` (issue #15: ~1.9 KB
for a one-basket customer at 25 groups instead of ~9.9 KB of nested dicts and
lists; BENCHMARKS.md section 6c); a customer who waits for its next event or
due time keeps them packed, as one compressed ``bytes`` (``CustomerState.pack``:
~0.4 KB; section 6m):

- per resolution, its bucket cells ``(bucket << KEY_BITS | key) -> n, cents``,
  tags ascending, so the oldest bucket comes first;
- the window sums as *bands*: a cell is counted in the band of the shortest
  window of its resolution that holds it (``n, cents, active`` per band and
  key); a window's sums are its own band plus those of the shorter windows of
  its resolution. A customer whose buckets all sit in the shortest windows
  keeps one band per resolution, not one sum per window;
- the groups' last event times, and the ids of the events seen within the
  allowed lateness as 64-bit BLAKE2b digests (duplicate detection; see
  ``event_digest`` for the odds of a collision).

``lo`` (each window's oldest bucket) is not stored: it is
``clock // res - n_buckets + 1``.

>>> from schemas.features import FeatureSpec
>>> cfg = StateConfig.build(FeatureSpec(groups=("coffee_tea",)))
>>> s = CustomerState()
>>> sorted(s.apply(cfg, 1_000 * 3600 * 24 * 17_000, type_index=2, groups=(0, 1), value_cents=499))
[0, 1]
>>> row = cfg.new_row(); s.write_features(cfg, row)
>>> float(row[cfg.spec.index["grp=coffee_tea|type=purchase|stat=value|win=7d"]])
4.99
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from itertools import pairwise
from typing import TYPE_CHECKING

import lz4.block
import numpy as np

from schemas.features import DAY_MS, FeatureSpec
from stream._cells import CellLayout, advance_state, apply_counts, write_features
from stream._cells import next_changes as _next_changes

NO_CHANGE: frozenset[int] = frozenset()
KEY_BITS = 16  # a cell's or band's tag: (bucket or window) << KEY_BITS | key
KEY_MASK = (1 << KEY_BITS) - 1


@dataclass(frozen=True)
class StateConfig:
    """Everything the state machine needs to know, resolved once from a FeatureSpec."""

    spec: FeatureSpec
    n_types: int
    type_names: tuple[str, ...]  # type index -> name (the spec's vocabulary)
    n_keys: int  # (group incl. all) x type
    resolutions_ms: tuple[int, ...]  # distinct bucket sizes
    window_res: tuple[int, ...]  # window -> resolution index
    window_n: tuple[int, ...]  # window -> number of buckets
    windows_of_res: tuple[tuple[int, ...], ...]  # resolution -> window indices
    shortest_of_res: tuple[int, ...]  # resolution -> its window with the fewest buckets
    expiry_plan: tuple[tuple[int, int, int, int, bool], ...]  # (window, res index, res ms, buckets, longest)
    bases: tuple[tuple[int, ...], ...]  # window -> key -> index of its count stat
    recency_edges: tuple[int, ...]
    recency_offset: int
    history_index: int  # position of history_days (after the recency features)
    history_res: int  # resolution index of the longest window, whose buckets history_days looks at
    all_index: int  # group index of ``all``
    n_features: int
    recency_table: tuple[int, ...]  # whole days -> bin edge, up to the cap
    bands: tuple[tuple[tuple[int, int], ...], ...]  # resolution -> its windows (buckets, window), fewest buckets first
    next_band: tuple[int, ...]  # window -> the next longer window of its resolution (-1: the longest)
    cell_layout: CellLayout = field(compare=False, repr=False)  # the tables above, for ``stream._cells``

    @classmethod
    def build(cls, spec: FeatureSpec) -> StateConfig:
        """Resolve the layout of ``spec`` into flat lookup tables."""
        if len(spec.all_groups) * len(spec.types) > KEY_MASK + 1:
            msg = f"{len(spec.all_groups)} groups x {len(spec.types)} event types exceed {KEY_MASK + 1} counter keys"
            raise ValueError(msg)
        res = sorted({w.bucket_seconds * 1000 for w in spec.windows})
        window_res = tuple(res.index(w.bucket_seconds * 1000) for w in spec.windows)
        n_types = len(spec.types)
        n_keys = len(spec.all_groups) * n_types
        longest_of_res = tuple(
            max((wi for wi, r in enumerate(window_res) if r == ri), key=lambda wi: spec.windows[wi].n_buckets)
            for ri in range(len(res))
        )
        bases = tuple(
            tuple(spec.counter_index(k // n_types, k % n_types, wi) for k in range(n_keys))
            for wi in range(len(spec.windows))
        )
        bands = tuple(
            tuple(sorted((w.n_buckets, wi) for wi, w in enumerate(spec.windows) if window_res[wi] == ri))
            for ri in range(len(res))
        )
        next_band = [-1] * len(spec.windows)
        for res_bands in bands:
            for (_, wi), (_, wj) in pairwise(res_bands):
                next_band[wi] = wj
        recency_table = tuple(  # whole days -> their bin edge, up to the cap
            spec.recency_edges_days[bisect_right(spec.recency_edges_days, d) - 1]
            for d in range(spec.recency_edges_days[-1] + 1)
        )
        return cls(
            spec=spec,
            n_types=n_types,
            type_names=spec.types,
            n_keys=n_keys,
            resolutions_ms=tuple(res),
            window_res=window_res,
            window_n=tuple(w.n_buckets for w in spec.windows),
            windows_of_res=tuple(tuple(wi for wi, r in enumerate(window_res) if r == ri) for ri in range(len(res))),
            shortest_of_res=tuple(
                min((wi for wi, r in enumerate(window_res) if r == ri), key=lambda wi: spec.windows[wi].n_buckets)
                for ri in range(len(res))
            ),
            expiry_plan=tuple(
                (wi, ri, res[ri], spec.windows[wi].n_buckets, wi == longest_of_res[ri])
                for wi, ri in sorted(
                    enumerate(window_res),
                    key=lambda w: (w[1], spec.windows[w[0]].n_buckets, w[0] == longest_of_res[w[1]]),
                )
            ),
            bases=bases,
            recency_edges=spec.recency_edges_days,
            recency_offset=spec.recency_offset,
            history_index=spec.index[spec.history_name],
            history_res=window_res[spec.history_window],
            all_index=len(spec.all_groups) - 1,
            n_features=len(spec.names),
            recency_table=recency_table,
            bands=bands,
            next_band=tuple(next_band),
            cell_layout=CellLayout(
                tuple(res), bands, tuple(next_band), n_types, window_res[spec.history_window], len(spec.all_groups) - 1,
                recency_table, next_edges(spec.recency_edges_days), bases, spec.recency_offset,
                spec.index[spec.history_name],
            ),
        )

    def new_row(self) -> np.ndarray:
        """A feature vector of a customer with no history."""
        row = np.zeros(self.n_features, dtype=np.float64)
        row[self.recency_offset : self.history_index] = self.recency_edges[-1]
        return row

    def recency_bin(self, days: int) -> int:
        """Round whole days down to a bin edge; the last edge caps."""
        table = self.recency_table
        return table[days] if days < len(table) else table[-1]

    def next_edge_time(self, since: int, at: int) -> int | None:
        """When whole days since ``since`` next reach a bin edge, seen from ``at``; None past the cap."""
        edges = self.recency_edges
        i = bisect_right(edges, (at - since) // DAY_MS)
        return since + edges[i] * DAY_MS if i < len(edges) else None


@lru_cache(maxsize=8)
def next_edges(edges: tuple[int, ...]) -> tuple[int, ...]:
    """Whole days -> the next bin edge after them (``StateConfig.next_edge_time`` as a table), up to the cap.

    >>> next_edges((0, 1, 3))
    (1, 3, 3)
    """
    return tuple(edges[bisect_right(edges, d)] for d in range(edges[-1]))


def event_digest(event_id: str) -> int:
    """A 64-bit digest of an event id (BLAKE2b, stable across processes and machines), as a signed int.

    Duplicate detection keeps these instead of the ids. Two different ids of
    one customer collide with probability 2**-64 per pair: with ``m`` ids kept
    (those within the allowed lateness) the odds that a new event is taken
    for a duplicate are about ``m * 2**-64``, i.e. below 1e-13 for m = 10**6.

    >>> event_digest("e1") == event_digest("e1"), event_digest("e1") == event_digest("e2")
    (True, False)
    """
    raw = blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


_ARRAY_SLOTS = frozenset({"_band_sums", "_band_tags", "_cells", "_ids", "_last"})


def _packed_bytes(lengths: Sequence[int], raw: bytes) -> bytes:
    """A packed state (``CustomerState.pack``, and its pickled form): array count, lengths, CRC-32, bytes squeezed.

    Squeezed: the int64s' bytes grouped by place (every lowest byte, then every
    next one...: the mostly-zero high bytes become runs) and LZ4-compressed.
    A pack and unpack cost ~10 µs against ~40 µs for zlib's level 1 (the
    pickled form until 2026-12-03), whose start-up alone costs more than LZ4's
    whole work on a customer's ~1.3 KB; the bytes come out ~1/10 to 1/6
    larger (BENCHMARKS.md 6o). LZ4 blocks carry no checksum: a CRC-32 of
    the count, the lengths and the grouped bytes lets a restore refuse damaged ones.
    """
    grouped = np.frombuffer(raw, np.uint8).reshape(-1, 8).T.tobytes()
    counts = bytes([len(lengths)]) + array("I", lengths).tobytes()
    return (
        counts
        + zlib.crc32(grouped, zlib.crc32(counts)).to_bytes(4, "little")
        + lz4.block.compress(grouped, store_size=False)
    )


def _unpacked_bytes(packed: bytes, check: bool = False) -> tuple[array, bytes]:
    """The array lengths and the arrays' bytes of a packed state (``_packed_bytes``); ``check``: its CRC-32 too.

    Raises ValueError for bytes that are not a packed state (checked or not).
    """
    n = packed[0]
    lengths = array("I", packed[1 : 1 + 4 * n])
    if len(lengths) != n:
        msg = f"customer state bytes end inside the lengths of its {n} arrays"
        raise ValueError(msg)
    size = 8 * sum(lengths)
    blob = memoryview(packed)[5 + 4 * n :]
    if size > 255 * len(blob) + 16:  # LZ4 expands at most ~255-fold: damaged lengths, not a buffer of gigabytes
        msg = f"customer state holds {len(blob)} compressed bytes for arrays of {size}"
        raise ValueError(msg)
    try:
        grouped = lz4.block.decompress(blob, uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        msg = f"customer state bytes do not decompress ({exc})"
        raise ValueError(msg) from exc
    if len(grouped) != size or (
        check
        and zlib.crc32(grouped, zlib.crc32(packed[: 1 + 4 * n]))
        != int.from_bytes(packed[1 + 4 * n : 5 + 4 * n], "little")
    ):
        msg = "customer state bytes do not match their checksum"
        raise ValueError(msg)
    return lengths, np.frombuffer(grouped, np.uint8).reshape(8, -1).T.tobytes()


def _pack(a: array) -> bytes:
    """An array's bytes, little-endian (the pickled form)."""
    if sys.byteorder == "big":  # pragma: no cover - every supported machine is little-endian
        a = array("q", a)
        a.byteswap()
    return a.tobytes()


def _unpack(raw: bytes | memoryview) -> array:
    """The array ``_pack`` wrote."""
    a = array("q")
    a.frombytes(raw)
    if sys.byteorder == "big":  # pragma: no cover
        a.byteswap()
    return a


class SeenIds:
    """A read-only view of the event ids a customer has seen: ``event_id in state.seen``."""

    __slots__ = ("_ids",)

    def __init__(self, ids: array):
        self._ids = ids

    def __contains__(self, event_id: object) -> bool:
        ids = self._ids
        return isinstance(event_id, str) and event_digest(event_id) in ids[: len(ids) >> 1]

    def __len__(self) -> int:
        return len(self._ids) >> 1

    def __iter__(self) -> Iterator[int]:
        """The digests (``event_digest``) of the ids seen, in no particular order: compare two views sorted."""
        ids = self._ids
        return iter(ids[: len(ids) >> 1])


class CustomerState:
    """Windowed counters of one customer. Small, picklable, versioned by ``seq``.

    ``apply`` and ``advance`` return the indices of the groups (``all`` is the
    last index) whose features changed, so only affected models rescore.

    Layout (all ``array('q')``, see the module docstring):

    - ``_cells``: per resolution one array, its ``m`` tags
      ``bucket << KEY_BITS | key`` ascending, then their ``m`` pairs ``n, cents``;
    - ``_band_tags`` / ``_band_sums``: tags ``window << KEY_BITS | key`` (any
      order) and their ``n, cents, active``; a tag is there while ``n > 0``;
    - ``_last``: groups, then their last event times (two halves);
    - ``_ids``: event-id digests, then their event times (two halves).
    """

    __slots__ = ("_band_sums", "_band_tags", "_cells", "_ids", "_last", "_packed", "clock", "seq")

    def __init__(self) -> None:
        self.clock: int | None = None  # ms; features are as of this time
        self.seq = 0  # per-customer update sequence (versions in ClickHouse)
        self._cells: list[array] = []  # per resolution: m tags, then m (n, cents) pairs
        self._band_tags = array("q")
        self._band_sums = array("q")
        self._last = array("q")
        self._ids = array("q")
        self._packed: bytes | None = None  # the arrays while packed (``pack``), else None

    def pack(self) -> None:
        """Keep the arrays as one ``bytes`` until one is next read (an idle customer's memory; issue #15).

        The six arrays of a one-basket customer cost ~1.3 KB (headers, spare
        capacity, int64s that are mostly zero bytes); packed ~0.45 KB
        (``_packed_bytes``). The first read of an array (``__getattr__``) unpacks them
        all, so the rest of the class, and ``write_rows``, never see the
        packed form; the packed bytes are the pickled form (a snapshot copies
        them), and a restored customer stays packed until it is read.
        The shard packs the customers that wait (``ShardProcessor._pack_waiting``).
        """
        if self._packed is None:
            self._packed = _packed_bytes(*self._raw())
            del self._band_tags, self._band_sums, self._last, self._ids, self._cells

    @property
    def packed(self) -> bool:
        """True while the arrays are packed (``pack``), until one is read."""
        return self._packed is not None

    def _raw(self) -> tuple[list[int], bytes]:
        """The arrays' lengths and their bytes, one after the other."""
        arrays = (self._band_tags, self._band_sums, self._last, self._ids, *self._cells)
        return [len(a) for a in arrays], b"".join(_pack(a) for a in arrays)

    if not TYPE_CHECKING:  # (hidden from mypy, which would otherwise accept any attribute name)

        def __getattr__(self, name: str) -> object:
            """Called only for an unset slot: the arrays of a packed state are unpacked on their first read."""
            if name in _ARRAY_SLOTS:
                packed = self._packed
                if packed is not None:
                    self._open(*_unpacked_bytes(packed))
                    return object.__getattribute__(self, name)
            msg = f"{type(self).__name__!r} object has no attribute {name!r}"
            raise AttributeError(msg)

    def _open(self, lengths: Sequence[int], raw: bytes) -> None:
        arrays, at = [], 0
        for n in lengths:
            arrays.append(_unpack(raw[at : at + 8 * n]))
            at += 8 * n
        self._band_tags, self._band_sums, self._last, self._ids = arrays[:4]
        self._cells = arrays[4:]
        self._packed = None

    def __getstate__(self) -> tuple:
        """Clock, sequence and the packed arrays (``_packed_bytes``): a packed customer's bytes as they are."""
        return (self.clock, self.seq, self._packed if self._packed is not None else _packed_bytes(*self._raw()))

    def __setstate__(self, st: tuple) -> None:
        """Restored packed (its arrays are unpacked when first read), once its bytes are known to unpack.

        A damaged snapshot is refused here, where the restore reports it in
        one line, not at the customer's next event in the middle of a run.
        Snapshots written before 2026-12-03 hold the arrays' lengths and
        their bytes zlib-compressed: read as well, and packed.
        """
        if len(st) == 3:
            self.clock, self.seq, packed = st
            _unpacked_bytes(packed, check=True)
            self._packed = packed
            return
        self.clock, self.seq, lengths, blob = st
        try:
            raw = zlib.decompress(blob)
        except zlib.error as exc:
            msg = f"customer state bytes do not decompress ({exc})"
            raise ValueError(msg) from exc
        if len(raw) != 8 * sum(lengths):
            msg = f"customer state holds {len(raw)} bytes for arrays of {8 * sum(lengths)}"
            raise ValueError(msg)
        self._packed = _packed_bytes(lengths, raw)

    @property
    def seen(self) -> SeenIds:
        """The event ids seen within the allowed lateness (``in`` tests an id)."""
        return SeenIds(self._ids)

    @property
    def buckets(self) -> list[list[int]]:
        """Per resolution, the buckets that hold a cell, ascending (for tests and inspection)."""
        out = []
        for a in self._cells:
            out.append(sorted({t >> KEY_BITS for t in a[: len(a) // 3]}))
        return out

    @property
    def last_ts(self) -> dict[int, int]:
        """Group -> ms of its last event, for groups whose recency is not capped (a copy)."""
        last = self._last
        k = len(last) >> 1
        return dict(zip(last[:k], last[k:], strict=True))

    def _start(self, cfg: StateConfig, ts: int) -> None:
        self.clock = ts
        self._cells = [array("q") for _ in cfg.resolutions_ms]

    def see(self, event_id: str, ts: int) -> bool:
        """Remember an event id; False when it was already seen (a second delivery)."""
        digest = event_digest(event_id)
        ids = self._ids
        k = len(ids) >> 1
        if digest in ids[:k]:
            return False
        ids.insert(k, digest)
        ids.append(ts)
        return True

    def seen_digests(self) -> set[int]:
        """The digests (``event_digest``) of the ids seen, as a set: a batch's duplicate checks (``stream.apply``)."""
        ids = self._ids
        return set(ids[: len(ids) >> 1].tolist())

    def remember(self, digests: list[int], ts: int) -> None:
        """Keep the digests of new event ids of one time (``see`` without the check: the caller made it)."""
        ids = self._ids
        k = len(ids) >> 1
        ids[k:k] = array("q", digests)
        ids.extend([ts] * len(digests))

    def apply(
        self,
        cfg: StateConfig,
        ts: int,
        type_index: int,
        groups: tuple[int, ...],
        value_cents: int,
        event_id: str | None = None,
    ) -> set[int] | frozenset[int]:
        """Count one event; returns the groups whose features changed."""
        if event_id is not None and not self.see(event_id, ts):
            ids = self._ids
            k = len(ids) >> 1
            ids[k + ids.index(event_digest(event_id), 0, k)] = ts  # applied again on purpose: its time is the latest
        return self.apply_run(cfg, ts, type_index, {g: [1, value_cents] for g in groups}, 1)

    def apply_run(
        self, cfg: StateConfig, ts: int, type_index: int, counts: dict[int, list[int]], n_events: int
    ) -> set[int] | frozenset[int]:
        """Count ``n_events`` events of one time and type at once; ``counts`` is group -> [events, cents].

        The same as applying them one by one (sums are exact), with one update
        per group instead of one per event: a basket's lines share a timestamp.
        After the clock moves (if ``ts`` is later), each resolution's cell of
        every group gets the run, and so does the band of the shortest window
        holding it; each group's last event time moves on
        (``stream._cells.apply_counts``: this, compiled).
        """
        if self.clock is None:
            self._start(cfg, ts)
            changed: set[int] = set()
        elif ts > self.clock:
            changed = self._advance(cfg, self.clock, ts)
        else:
            changed = set()
        clock: int = self.clock  # type: ignore[assignment]  # set by _start/_advance above
        cells, tags, sums, last = self._cells, self._band_tags, self._band_sums, self._last
        apply_counts(cfg.cell_layout, cells, tags, sums, last, clock, ts, type_index, counts, changed)
        self.seq += n_events
        return changed

    def advance(self, cfg: StateConfig, now: int) -> frozenset[int]:
        """Move the clock forward to ``now``; expire buckets; return changed groups."""
        clock = self.clock
        if clock is None or now <= clock:
            return NO_CHANGE
        return frozenset(self._advance(cfg, clock, now))

    def _advance(self, cfg: StateConfig, clock: int, now: int) -> set[int]:
        """Move the clock from ``clock`` to ``now`` (later); the groups whose features changed.

        Each resolution's cells older than a window's oldest bucket leave it,
        shortest window first: their ``n, cents`` move from the window's band
        to the next longer window's, or go with the cells past the longest.
        ``history_days`` (of ``all``) changes when its oldest bucket goes or
        its whole days reach another bin; a group's recency when its whole
        days since its last event reach another bin, and a group whose
        recency is capped is forgotten (capped equals "never").
        ``stream._cells.advance_state`` is this, compiled.
        """
        changed: set[int] = advance_state(
            cfg.cell_layout, self._cells, self._band_tags, self._band_sums, self._last, clock, now
        )
        self.clock = now
        if changed:
            self.seq += 1
        return changed

    def forget_seen_before(self, ts: int) -> None:
        """Drop duplicate-detection ids of events older than ``ts`` (past allowed lateness)."""
        ids = self._ids
        k = len(ids) >> 1
        if k and min(ids[k:]) < ts:
            keep = [j for j in range(k) if ids[k + j] >= ts]
            self._ids = array("q", [ids[j] for j in keep] + [ids[k + j] for j in keep])

    def is_empty(self) -> bool:
        """True when the state equals a customer with no history (safe to drop)."""
        return not self._last and not self._ids and not any(self._cells)

    def history_start(self, cfg: StateConfig) -> int | None:
        """Start (ms) of the oldest bucket in the longest window, where ``history_days`` counts from."""
        if not self._cells:
            return None
        a = self._cells[cfg.history_res]
        return (a[0] >> KEY_BITS) * cfg.resolutions_ms[cfg.history_res] if a else None

    def next_change(self, cfg: StateConfig) -> int | None:
        """Earliest clock time at which a feature changes without a new event (``next_changes`` of one)."""
        return next_changes(cfg, [self])[0]

    def renumber(self, remap: Mapping[int, int], n_types: int) -> None:
        """Move the counters of group ``g`` to ``remap[g]``; drop those of groups not in ``remap`` (regroup)."""

        def moved(tag: int) -> int | None:
            key = tag & KEY_MASK
            g = remap.get(key // n_types)
            return None if g is None else (tag & ~KEY_MASK) | (g * n_types + key % n_types)

        for ri, a in enumerate(self._cells):
            m = len(a) // 3
            kept = sorted(
                (new, a[m + 2 * i], a[m + 2 * i + 1]) for i, t in enumerate(a[:m]) if (new := moved(t)) is not None
            )
            self._cells[ri] = array("q", [c[0] for c in kept] + [v for c in kept for v in c[1:]])
        sums = self._band_sums
        bands = [(new, sums[3 * j : 3 * j + 3]) for j, t in enumerate(self._band_tags) if (new := moved(t)) is not None]
        self._band_tags = array("q", [t for t, _ in bands])
        self._band_sums = array("q", [v for _, s in bands for v in s])
        last = self.last_ts
        kept_last = {remap[g]: ts for g, ts in last.items() if g in remap}
        self._last = array("q", [*kept_last, *kept_last.values()])

    def merge(self, part: CustomerState) -> None:
        """Add ``part``'s counters and last event times (of keys this state has none of; regroup's backfill)."""
        for ri, pa in enumerate(part._cells):
            a = self._cells[ri]
            m, pm = len(a) // 3, len(pa) // 3
            cells = {t: [a[m + 2 * i], a[m + 2 * i + 1]] for i, t in enumerate(a[:m])}
            for i, t in enumerate(pa[:pm]):
                cell = cells.setdefault(t, [0, 0])
                cell[0] += pa[pm + 2 * i]
                cell[1] += pa[pm + 2 * i + 1]
            order = sorted(cells)
            self._cells[ri] = array("q", order + [v for t in order for v in cells[t]])
        for j, t in enumerate(part._band_tags):
            add = part._band_sums[3 * j : 3 * j + 3]
            if t in self._band_tags:
                at = 3 * self._band_tags.index(t)
                for x in range(3):
                    self._band_sums[at + x] += add[x]
            else:
                self._band_tags.append(t)
                self._band_sums.extend(add)
        last = {**self.last_ts, **part.last_ts}
        self._last = array("q", [*last, *last.values()])

    def write_features(self, cfg: StateConfig, row: np.ndarray) -> None:
        """Fill a vector from ``cfg.new_row()`` with this customer's features as of ``clock``."""
        write_rows(cfg, [self], row.reshape(1, -1))


def advance_all(cfg: StateConfig, states: Sequence[CustomerState], now: int) -> list[set[int] | frozenset[int]]:
    """``state.advance(cfg, now)`` of each of ``states``: the same state afterwards, the same groups changed."""
    out: list[set[int] | frozenset[int]] = [NO_CHANGE] * len(states)
    for i, state in enumerate(states):
        clock = state.clock
        if clock is not None and clock < now:
            out[i] = state._advance(cfg, clock, now)
    return out


def next_changes(cfg: StateConfig, states: Sequence[CustomerState]) -> list[int | None]:
    """Per state, the earliest clock time at which a feature changes without a new event (None: never).

    A cell leaving a window (a state's cells ascend by bucket, so the first
    one still inside a window is the next to leave it), or the whole days
    since a group's last event or since ``history_days``' start reaching the
    next recency bin edge (``stream._cells.next_changes``: this, compiled).
    """
    return _next_changes(cfg.cell_layout, list(states))


def write_rows(cfg: StateConfig, states: Sequence[CustomerState | None], rows: np.ndarray) -> None:
    """Fill ``rows`` (C-contiguous, one row per state, each from ``cfg.new_row()``) with the states' features.

    Per resolution, each window's sums are its bands' accumulated in int64,
    shortest first (a window is its own band plus the shorter windows' of
    its resolution), and written as count, ``cents / 100`` (the cents as a
    double divided by 100, the same IEEE result as Python's for any cents a
    double holds exactly) and active; then the recency of each remembered
    group and ``history_days`` (``stream._cells.write_features``: this, compiled).

    >>> from schemas.features import FeatureSpec
    >>> cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    >>> s = CustomerState(); _ = s.apply(cfg, 1_500_000_000_000, type_index=2, groups=(0, 1), value_cents=250)
    >>> rows = np.tile(cfg.new_row(), (2, 1)); write_rows(cfg, [None, s], rows)
    >>> float(rows[1, cfg.spec.index["grp=coffee|type=purchase|stat=value|win=7d"]])
    2.5
    >>> bool((rows[0] == cfg.new_row()).all())  # no state: a customer with no history
    True
    """
    if not rows.flags.c_contiguous or rows.dtype != np.float64 or rows.shape != (len(states), cfg.n_features):
        msg = f"write_rows needs C-contiguous float64 rows, {len(states)} of {cfg.n_features} features: {rows.shape}"
        raise ValueError(msg)
    write_features(cfg.cell_layout, list(states), rows)
