"""State keys and the workers Bytewax puts them on (stream.placement), checked against Bytewax itself."""

from __future__ import annotations

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.placement import SPREAD, Placement, balanced_key, is_balanced_key, worker_of


class _WhereSink(DynamicSink[str]):
    """Records (worker index, key) of every key that reaches it: a dynamic sink writes on the worker it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[str]:
        seen = self.seen

        class _Part(StatelessSinkPartition[str]):
            def write_batch(self, items: list[str]) -> None:
                seen.extend((worker_index, k) for k in items)

        return _Part()


def _bytewax_workers(keys: list[str], workers: int) -> dict[str, int]:
    """The worker index that holds each key's state in a keyed Bytewax step of ``workers`` workers."""
    flow = Dataflow("placement")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    held = op.stateful_map("hold", keyed, lambda state, k: (state, k))  # runs on the key's worker
    sink = _WhereSink()
    op.output("where", op.map("unkey", held, lambda kv: kv[1]), sink)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    where = dict((k, w) for w, k in sink.seen)
    assert sorted(where) == sorted(keys)
    return {k: where[k] for k in keys}


PLAIN = [str(i) for i in range(16)] + ["topic/0", "topic/1", "events/3", "/data/a.parquet"]


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_bytewax_keeps_each_keys_state_on_the_worker_placement_computes(workers: int):
    keys = PLAIN + [balanced_key(i) for i in range(12)]
    assert _bytewax_workers(keys, workers) == {k: worker_of(k, workers) for k in keys}


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_balanced_shards_lie_evenly_over_the_workers_where_plain_names_do_not(workers: int):
    n = 4 * workers
    where = _bytewax_workers([balanced_key(i) for i in range(n)], workers)
    assert [where[balanced_key(i)] for i in range(n)] == [i % workers for i in range(n)]
    plain = _bytewax_workers([str(i) for i in range(16)], 2)
    assert sorted(list(plain.values()).count(w) for w in (0, 1)) == [6, 10]  # what the plain names did


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=5_000))
def test_a_balanced_key_is_on_worker_i_mod_w_for_every_w_dividing_the_spread(i: int):
    key = balanced_key(i)
    assert key == str(i) or key.startswith(f"{i}~")
    assert all(worker_of(key, w) == i % w for w in range(1, 16) if SPREAD % w == 0)
    assert is_balanced_key(key)
    assert is_balanced_key(str(i)) == (key == str(i))  # a plain name of an earlier store is told apart


def test_a_placement_names_keys_and_reads_the_partitions_it_holds():
    plain = Placement(balanced=False, worker=1, workers=2)
    assert (plain.shard_key(3), plain.partition_key("t/3", 3)) == ("3", "t/3")
    assert all(plain.reads(p) for p in range(8))  # wherever Bytewax assigns them
    mine = [[p for p in range(8) if Placement(True, w, 2).reads(p)] for w in (0, 1)]
    assert mine == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert Placement().shard_key(3) == balanced_key(3) != "3"
    assert Placement().partition_key("p1", None) == "p1"  # a source that does not number its partitions


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_a_process_knows_how_many_shards_it_holds(workers: int):
    for n in (1, workers - 1, workers, 2 * workers + 1):
        held = [Placement(True, w, workers).shards_held(n) for w in range(workers)]
        assert held == [len(range(w, n, workers)) for w in range(workers)]  # shard i on i % workers
    plain = [Placement(False, w, 2).shards_held(16) for w in range(2)]
    assert sorted(plain) == [6, 10]
