"""The shard clock and retention horizon, from where the shard's source partitions stand.

Two times, both moved only forwards by ``ShardClock.advance``:

- the **clock**, which expires windows: the wall clock of a live source, or in
  event time the slowest watermark among partitions that are not idle (the
  fastest once all are idle), unknown until every partition has reported;
- the **retention horizon**: nothing older can still be accepted, so duplicate
  ids and item cells before it are forgotten, and an event older than it is a
  dead letter (``late_reason``).

In event time an event waits for the clock (``ShardClock.due_events``): one
of a partition ahead of the slowest is held until the clock reaches it, so a
refresh as of the clock reflects no event after it.

>>> from stream.shard import CustomerShard
>>> sh = CustomerShard(0)
>>> print(sh.advance("p0", 2, 9_000, None, idle=False, lateness=1_000))  # p1 not heard from yet
None
>>> sh.advance("p1", 2, 5_000, None, idle=False, lateness=1_000)  # the slowest active partition
5000
>>> sh.advance("p1", 2, None, None, idle=True, lateness=1_000)  # p1 idle: no longer holds the clock back
9000
>>> sh.horizon  # but p1 may still send events as old as its watermark minus the lateness
4000
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.events import EventRecord

HOUR_MS = 3_600_000


def late_reason(horizon: int, ts: int) -> str:
    """Dead-letter reason of an event older than the shard's retention horizon.

    >>> late_reason(10 * HOUR_MS, 7 * HOUR_MS).split(" (")[0]
    "late: event time is 3.0 h before the shard's retention horizon"
    """
    return (
        f"late: event time is {(horizon - ts) / HOUR_MS:.1f} h before the shard's retention "
        "horizon (its partition had delivered nothing while the others moved on)"
    )


class ShardClock:
    """Clock, retention horizon and restart rewrite of a shard; mixed into ``stream.shard.CustomerShard``.

    The attributes are the shard's own (set by its constructor, part of its
    recovery snapshot); this class holds only the rules that move them.
    """

    clock: int | None
    horizon: int | None  # retention: no event older than this can still be accepted
    watermarks: dict[str, int]  # source partition -> its event-time watermark
    idle: set[str]  # partitions with nothing to deliver for now (not kept across restarts)
    resumed: bool  # a run before this one may have written rows after its last snapshot
    held: list[EventRecord]  # event time: events after the clock, in arrival order, until it reaches them

    def advance(
        self, part: str, n_parts: int, watermark: int | None, tick: int | None, idle: bool, lateness: int
    ) -> int | None:
        """Record where a partition stands; move the clock and the retention horizon (never backwards).

        Returns the clock (None while unknown).

        The clock, which expires windows: the wall clock of a live source
        (``tick``), at once: a batch's tick is read after its events, so a
        refresh at the clock covers every event applied (with two processes,
        partitions' batches reach a shard by different routes, and waiting for
        a partition not heard from yet stamped refreshes with its older tick).
        In event time, the slowest watermark among partitions that are not
        idle, or the fastest once all are idle (as Flink's source idleness: a
        partition with nothing to deliver does not hold the others back);
        until every partition has a watermark or is idle, it is unknown.

        The retention horizon, before which duplicate ids and item cells are
        forgotten: the slowest watermark of all partitions, idle or not, minus
        the allowed lateness. A partition accepts nothing older than its own
        watermark minus the lateness, so nothing it can still send is older
        than the horizon. Only a partition that has never delivered an event
        has no watermark: once idle it does not hold the horizon back, and
        should it then send events older than the horizon, they are dead
        letters (``late_reason``).
        """
        wm = self.watermarks
        if watermark is not None and watermark > wm.get(part, watermark - 1):
            wm[part] = watermark
        if idle:
            self.idle.add(part)
        else:
            self.idle.discard(part)
        if tick is not None and (self.clock is None or tick > self.clock):
            self.clock = tick  # live: the wall clock, whichever partitions have reported
        if len(wm.keys() | self.idle) < n_parts:
            return self.clock
        if tick is None:
            live = [v for p, v in wm.items() if p not in self.idle]
            clock = min(live) if live else max(wm.values(), default=None)
            if clock is not None and (self.clock is None or clock > self.clock):
                self.clock = clock
        if wm:
            horizon = min(wm.values()) - lateness
            if self.horizon is None or horizon > self.horizon:
                self.horizon = horizon
        return self.clock

    def due_events(
        self, events: list[EventRecord], horizon: int | None, clock: int | None, partition_watermark: int | None
    ) -> list[EventRecord]:
        """In event time, the events to apply now at ``clock``: those held before that it reached, then ``events``'.

        An event after the clock is held (``held``, in arrival order) until
        the clock reaches it; an event before ``horizon`` (the horizon its
        batch was judged against) is not held: it goes on to become a dead
        letter. While the clock is unknown, every other event waits. An event
        held is never late when it comes due: the horizon stays at least the
        lateness behind the clock (``advance``). ``partition_watermark``: of
        the batch's partition after it, no earlier than any of its events;
        at or before the clock, nothing of the batch waits (a single
        partition's replay never holds anything).

        >>> from stream.shard import CustomerShard
        >>> from schemas.events import EventRecord
        >>> sh = CustomerShard(0)
        >>> ev = [EventRecord("u", "i", 2, ts, f"e{ts}", 1.0, 1, "s") for ts in (4_000, 7_000, 8_000)]
        >>> [e.ts_ms for e in sh.due_events(ev, None, 5_000, 8_000)]
        [4000]
        >>> [e.ts_ms for e in sh.due_events([], None, 7_500, 6_000)]  # the clock moved: one comes due
        [7000]
        >>> [e.ts_ms for e in sh.held]
        [8000]
        """
        held = self.held
        ready: list[EventRecord] = []
        if held and clock is not None:
            ready = [e for e in held if e.ts_ms <= clock]
            if ready:
                self.held = held = [e for e in held if e.ts_ms > clock]
        if clock is not None and partition_watermark is not None and partition_watermark <= clock:
            return ready + events if ready else events
        for e in events:
            if (clock is not None and e.ts_ms <= clock) or (horizon is not None and e.ts_ms < horizon):
                ready.append(e)
            else:
                held.append(e)
        return ready

    def tick_due(self) -> int | None:
        """When this shard next needs a wall-clock tick (epoch ms; None: nothing scheduled).

        The top of the expiry heap (an entry left by a rescheduled customer may
        be earlier than anyone's due time: it costs one tick that pops it), or
        0 (at once) while a resumed shard still owes its one-time rewrite
        (``rewrite_due``). Posted to ``stream.ticks.TickBoard``.
        """
        if self.resumed:
            return 0
        return self.next_due()

    def next_due(self) -> int | None:
        """The time of the top of the shard's expiry heap (None: empty); ``CustomerShard`` keeps the heap."""
        raise NotImplementedError

    def rewrite_due(self, live: bool, n_parts: int) -> bool:
        """Whether to write every customer of the shard now, once after a restart.

        A run that was killed had written rows after its last snapshot. The
        resumed run recomputes them from the snapshot, but its batches are cut
        differently, so in event time its last row for a customer can carry a
        lower version than one the killed run wrote with fewer events applied;
        and a score equal to the cached one is not written again. Rewriting
        every customer once, at a clock no killed run can have passed, makes
        the resumed run's rows win: when live, at the first wall-clock tick
        (later than anything written before the restart); in event time, once
        every partition is idle (the input the killed run read has been read
        again, so the clock is at least where it was). One edge remains: a
        killed run that wrote at this very clock while one of its partitions
        was idle with unread events; the tie goes to the higher sequence.
        """
        if not self.resumed or not (live or len(self.idle) >= n_parts):
            return False
        self.resumed = False
        return True
