"""Garbage collection on a timer while the dataflow runs.

The stream keeps millions of small, long-lived, acyclic objects (customer
state). CPython's collector is driven by allocation counts, so it rescans that
state over and over: about a quarter of replay time on The Complete Journey.
Reference counting frees almost everything; only the rare cycles need the
collector. So while a run lasts, automatic collection is off and a thread
collects every ``seconds``, then freezes the survivors (``gc.freeze``) so the
next collection only looks at what is new. Every ``full_every``-th time the
frozen objects are thawed first, so cycles among them are collected too.

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
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collected_every(seconds: float, full_every: int = 10) -> Iterator[None]:
    """Within the block, collect every ``seconds`` instead of by allocation count (0: leave gc alone)."""
    if seconds <= 0 or not gc.isenabled():
        yield
        return
    stop = threading.Event()

    def collect() -> None:
        n = 0
        while not stop.wait(seconds):
            n += 1
            if n % full_every == 0:
                gc.unfreeze()
            gc.collect()
            gc.freeze()

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
