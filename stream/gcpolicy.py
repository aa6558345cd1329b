"""Garbage collection on a timer while the dataflow runs.

The stream keeps millions of small, long-lived, acyclic objects (customer
state). CPython's collector is driven by allocation counts, so it rescans that
state over and over: about a quarter of replay time on The Complete Journey.
Reference counting frees almost everything; only the rare cycles need the
collector. So while a run lasts, automatic collection is off and a thread
collects every ``seconds``, then freezes the survivors (``gc.freeze``) so the
next collection only looks at what is new. Once ``full_seconds`` have passed
since the last full collection, the frozen objects are thawed first, so cycles
among them are collected too.

A collection holds the GIL, so it pauses the dataflow for as long as it takes,
and that grows with the objects it looks at. Collecting what is new every
second keeps each pause short (40-60 ms at 10,000 live events/s, where one
collection a minute paused the stream 1.3 s: XGBoost leaves ~25 objects in
cycles per predict call). A full collection looks at every object (~0.3 s per
500,000): it is rare because it finds almost nothing the young ones did not
(BENCHMARKS 6i).

>>> import gc
>>> with collected_every(60):
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Pauses:
    """How long the timed collections held the GIL (the stream stood still meanwhile); for the run's summary."""

    collections: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        """Count one collection that took ``seconds``."""
        self.collections += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)

    def summary(self) -> dict[str, float]:
        """Collections, their longest and their total pause (seconds)."""
        return {"collections": self.collections, "max_s": round(self.max_s, 4), "total_s": round(self.total_s, 3)}


class Collections:
    """Which collection is due: what is new each time, every object once ``full_seconds`` have passed."""

    def __init__(self, full_seconds: float, now: float):
        self.full_seconds = full_seconds
        self.last_full = now

    def collect(self, now: float) -> bool:
        """Collect, then freeze the survivors; True when the frozen objects were collected too."""
        full = now - self.last_full >= self.full_seconds
        if full:
            gc.unfreeze()
            self.last_full = now
        gc.collect()
        gc.freeze()
        return full


@contextmanager
def collected_every(seconds: float, full_seconds: float = 3600.0, pauses: Pauses | None = None) -> Iterator[None]:
    """Within the block, collect every ``seconds`` instead of by allocation count (0: leave gc alone).

    ``pauses`` counts every timed collection and how long it took.
    """
    if seconds <= 0 or not gc.isenabled():
        yield
        return
    stop = threading.Event()
    plan = Collections(full_seconds, time.monotonic())
    counted = pauses if pauses is not None else Pauses()

    def collect() -> None:
        while not stop.wait(seconds):
            t0 = time.perf_counter()
            plan.collect(time.monotonic())
            counted.add(time.perf_counter() - t0)

    thread = threading.Thread(target=collect, name="propstream-gc", daemon=True)
    gc.disable()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        gc.unfreeze()
        gc.enable()
