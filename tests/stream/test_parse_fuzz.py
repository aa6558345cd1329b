"""Fuzzing the parser and the event contract: no input may raise out of them.

A message that raises in the dataflow stops it, and on every restart the
same message stops it again. Whatever arrives (random bytes, deep nesting,
numbers of hundreds of digits, odd unicode, values of the wrong type, rows of
a mapped export), ``EventParser.parse_batch`` returns every input either as a
record or as a dead letter with a reason.

``pytest tests/stream/test_parse_fuzz.py -s`` prints how many inputs were tried.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import MAX_TIMESTAMP, MIN_TIMESTAMP
from schemas.mapping import ColumnMapping
from stream.parse import EventParser
from stream.sources.base import SourceBatch

FIELDS = ["user_id", "item_id", "type", "timestamp", "event_id", "quantity", "value"]
MIN_MS = int(MIN_TIMESTAMP.timestamp() * 1000)
MAX_MS = int(MAX_TIMESTAMP.timestamp() * 1000)

huge_ints = (
    st.integers(min_value=-(10**500), max_value=10**500)
    | st.integers(min_value=300, max_value=4400).map(lambda n: -(10**n) if n % 2 else 10**n)
    | st.sampled_from([2**63, -1, 0])
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["view", "cart", "purchase", "2017-03-01T10:00:00Z", "2017-03-01", "\x00", "\ud7ff\u202e", " "])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Objects shaped like events, each field of any type.
event_like = st.fixed_dictionaries({}, optional={f: values for f in FIELDS})


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + closer * depth


def _json_text(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, allow_nan=True)
    except ValueError:  # an integer past Python's digit limit for str()
        return '{"timestamp": ' + "9" * 5000 + "}"


# Events that keep the contract, with odd but legal values, so that acceptance is exercised too.
valid_events = st.fixed_dictionaries(
    {
        "user_id": st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc"]), min_size=1, max_size=20)
        | st.integers(min_value=0, max_value=2**62),
        "item_id": st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc"]), min_size=1, max_size=20),
        "type": st.sampled_from(["view", "cart", "purchase"]),
        "timestamp": st.integers(min_value=MIN_MS, max_value=MAX_MS - 1),
    },
    optional={
        "quantity": st.floats(0, 1e6),
        "value": st.floats(-1e9, 1e9),
        "event_id": st.text(min_size=1, max_size=10),
    },
)

payloads = st.one_of(
    valid_events.map(_json_text),
    st.binary(max_size=300),
    st.text(max_size=300),
    values.map(_json_text),
    event_like.map(_json_text),
    event_like.map(lambda d: _json_text(d).encode("utf-8", errors="surrogatepass")),
    st.builds(_deep, st.integers(min_value=1, max_value=5000), st.sampled_from(["[", "{"])),
    event_like,  # rows handed over as dicts (CSV / Parquet readers)
)
batches = st.lists(payloads, min_size=1, max_size=8)

PARSERS = {
    "wire format": EventParser(ColumnMapping()),
    "mapped export": EventParser(
        ColumnMapping(
            user_id="user_id", item_id="item_id", timestamp="timestamp", timestamp_unit="s", type_value="view"
        )
    ),
}
tried = {"inputs": 0, "records": 0, "dead letters": 0}


def check_batch(parser: EventParser, items: list[Any]) -> None:
    batch = SourceBatch([(f"fuzz:{i}", p) for i, p in enumerate(items)], part="fuzz")
    out = parser.parse_batch(batch)  # must not raise
    assert out.n_in == len(items)
    assert len(out.records) + len(out.dead) == len(items)  # conservation: each input once
    for rec in out.records:
        assert MIN_MS <= rec.ts_ms < MAX_MS
        assert 1 <= len(rec.user_id) <= 128 and 1 <= len(rec.item_id) <= 128
    for reason, payload, source in out.dead:
        assert isinstance(reason, str) and reason
        assert isinstance(payload, str)
        assert source.startswith("fuzz:")
    tried["inputs"] += len(items)
    tried["records"] += len(out.records)
    tried["dead letters"] += len(out.dead)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(PARSERS)), batches)
def _fuzz(name: str, items: list[Any]) -> None:
    check_batch(PARSERS[name], items)


def test_no_input_raises_out_of_the_parser():
    _fuzz()
    print(f"\nparser fuzz: {tried}")
    assert tried["inputs"] >= 1000  # every example ran through the parser
    assert tried["dead letters"] > 0 and tried["records"] > 0


def test_the_two_messages_that_crash_looped_the_flow_are_dead_letters():
    deep = b"[" * 1500 + b"]" * 1500  # RecursionError inside json
    digits = b'{"user_id":"u","item_id":"i","type":"view","timestamp":' + b"9" * 401 + b"}"  # OverflowError
    out = EventParser(ColumnMapping()).parse_batch(SourceBatch([("k:0/1", deep), ("k:0/2", digits)]))
    reasons = [r for r, _, _ in out.dead]
    assert len(reasons) == 2 and not out.records
    assert reasons[0].startswith("unparseable: RecursionError")
    assert "timestamp" in reasons[1] and "out of range" in reasons[1]
