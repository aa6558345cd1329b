"""Garbage collection on a timer (stream/gcpolicy.py): cycles are still collected, frozen ones too."""

from __future__ import annotations

import gc
import time
import weakref

from stream.gcpolicy import collected_every


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def wait_until_freed(ref: weakref.ref, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


def test_cycles_are_collected_on_the_timer_and_gc_is_restored():
    assert gc.isenabled()
    with collected_every(0.02):
        assert not gc.isenabled()
        ref = weakref.ref(Node())
        assert wait_until_freed(ref)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_cycles_among_frozen_survivors_are_collected_by_the_periodic_thaw():
    with collected_every(0.02, full_every=3):
        node = Node()
        ref = weakref.ref(node)
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the node survives a collection and is frozen
        assert gc.get_freeze_count() > 0
        del node
        assert wait_until_freed(ref)


def test_zero_leaves_the_collector_alone():
    with collected_every(0):
        assert gc.isenabled()
