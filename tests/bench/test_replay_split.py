"""bench/replay.py's input files: the file's first events, whole or split by customer as a partitioned archive."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.replay import input_files
from stream.shard import shard_of


@settings(deadline=None, max_examples=30)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=80),  # households, in file order
    st.integers(0, 90),  # --limit (0: all)
    st.integers(1, 4),  # --split
)
def test_the_first_events_go_to_one_file_each_by_their_customers_shard_in_file_order(
    tmp_path_factory, households, limit, split
):
    d: Path = tmp_path_factory.mktemp("replay-input")
    events = d / "transactions.parquet"
    pq.write_table(pa.table({"household_id": households, "row": list(range(len(households)))}), events)
    paths = input_files(events, limit, split, write=True)
    assert input_files(events, limit, split, write=False) == paths  # the processes find the parent's files
    kept = households[:limit] if limit else households
    assert len(paths) == max(split, 1)
    rows = [pq.read_table(p).to_pylist() for p in paths]
    assert sorted(r["row"] for part in rows for r in part) == list(range(len(kept)))  # each event once
    for k, part in enumerate(rows):
        assert [r["row"] for r in part] == sorted(r["row"] for r in part)  # in the file's order
        if split > 1:
            assert {shard_of(str(r["household_id"]), split) for r in part} <= {k}  # one customer, one file
