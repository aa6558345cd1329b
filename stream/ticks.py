"""When a live stream next needs a wall-clock tick: ticks scale with what is due, not with time.

In wall-clock mode a tick moves the shards' clock so that windows expire while
nothing arrives. A tick that reaches shards with nobody due changes nothing,
so a quiet stream need not tick every second. The shards of a process post
when they next need one (``stream.clock.ShardClock.tick_due``: the top of the
expiry heap, or at once for a resumed shard's one-time rewrite) and the Kafka
source ticks only when one is due, or when ``changed`` (the production models'
poll) says that something outside the shards changed: a swapped model must
rescore its group even if no event comes.

Every batch of events carries the wall clock anyway, so a busy stream needs no
ticks at all; a quiet one sends one when a customer's window expires.

One board per process: the shards of a run with several processes live in all
of them, so such a run keeps the periodic ticks (``stream.sources.kafka``).

>>> board = TickBoard()
>>> print(board.next_due())  # nothing posted: no tick needed
None
>>> board.post(0, 5_000)
>>> board.post(1, 3_000)
>>> board.due(2_999), board.due(3_000)
(False, True)
>>> board.post(1, None)  # shard 1 has nobody left to expire
>>> board.next_due()
5000
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class TickBoard:
    """The next time (epoch ms) each shard of this process needs a tick; read by the source that ticks."""

    def __init__(self, changed: Callable[[], bool] | None = None):
        self._due: dict[int, int] = {}
        self._lock = threading.Lock()  # shards and source may run on different worker threads of a process
        self.changed = changed  # polled by the ticking source: True when a tick must carry a change at once
        self.last_tick = 0.0  # when the ticking source last sent the clock (s, its clock)

    def post(self, shard: int, due_ms: int | None) -> None:
        """Shard ``shard`` next needs a tick at ``due_ms`` (None: it has nothing scheduled)."""
        with self._lock:
            if due_ms is None:
                self._due.pop(shard, None)
            else:
                self._due[shard] = due_ms

    def next_due(self) -> int | None:
        """The earliest time a shard of this process needs a tick (None: none does)."""
        with self._lock:
            return min(self._due.values(), default=None)

    def due(self, now_ms: int) -> bool:
        """Whether a tick at ``now_ms`` reaches a customer due, or carries a change (``changed``)."""
        at = self.next_due()
        if at is not None and now_ms >= at:
            return True
        return self.changed is not None and self.changed()
