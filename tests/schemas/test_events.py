"""The event contract (schemas/events.py) and its parser (stream/parse.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import MAX_ID_LENGTH, TYPE_INDEX, Event, EventRecord
from schemas.mapping import ColumnMapping
from stream.parse import FUTURE_TOLERANCE_MS, MAX_PAYLOAD_BYTES, EventParser
from stream.sources.base import SourceBatch

BASE = {"user_id": "u1", "item_id": "i1", "type": "purchase", "timestamp": "2017-03-01T10:00:00Z"}
T0_MS = 1_488_362_400_000  # 2017-03-01T10:00:00Z
MIN_MS = 946_684_800_000  # 2000-01-01
MAX_MS = 4_102_444_800_000  # 2100-01-01


def ev(**kw) -> dict:
    d = {**BASE, **kw}
    return {k: v for k, v in d.items() if v is not ...}


def parse(payload):
    return EventParser(ColumnMapping()).parse_one("src:1", payload)


def reason(payload) -> str:
    r = parse(payload)
    assert isinstance(r, str), f"expected a rejection, got {r!r}"
    assert r.strip()
    return r


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("ts", "iso"),
    [
        ("2017-03-01T10:00:00", "2017-03-01T10:00:00+00:00"),  # naive -> UTC
        ("2017-03-01T10:00:00Z", "2017-03-01T10:00:00+00:00"),
        ("2017-03-01T11:00:00+01:00", "2017-03-01T10:00:00+00:00"),
        ("2017-03-01T05:30:00-04:30", "2017-03-01T10:00:00+00:00"),
        ("2017-03-01 10:00:00.250+00:00", "2017-03-01T10:00:00.250000+00:00"),
        (T0_MS, "2017-03-01T10:00:00+00:00"),  # epoch milliseconds
        (T0_MS + 250, "2017-03-01T10:00:00.250000+00:00"),
        (float(T0_MS), "2017-03-01T10:00:00+00:00"),
        (datetime(2017, 3, 1, 10), "2017-03-01T10:00:00+00:00"),  # noqa: DTZ001  naive on purpose
        (
            datetime(2017, 3, 1, 19, tzinfo=timezone(timedelta(hours=9))),
            "2017-03-01T10:00:00+00:00",
        ),
    ],
)
def test_timestamps_normalise_to_utc(ts, iso):
    e = Event.model_validate(ev(timestamp=ts))
    assert e.timestamp.tzinfo is not None
    assert e.timestamp.utcoffset() == timedelta(0)
    assert e.timestamp.isoformat() == iso


def test_to_record_fields_and_ts_ms():
    r = parse(json.dumps(ev(timestamp="2017-03-01T11:00:00+01:00", value=2.5, quantity=3, event_id="x-1")))
    assert isinstance(r, EventRecord)
    assert r == EventRecord("u1", "i1", TYPE_INDEX["purchase"], T0_MS, "x-1", 3.0, 250, "src:1")


def test_integer_ids_become_strings_and_whitespace_is_stripped():
    r = parse(ev(user_id=42, item_id=7.0, event_id="  e  "))
    assert isinstance(r, EventRecord)
    assert (r.user_id, r.item_id, r.event_id) == ("42", "7", "e")


def test_ts_ms_at_2039_is_exact():
    # 2039-07-06T01:24:33.693Z: a millisecond timestamp inside the accepted range.
    ms = 2_193_528_273_693
    e = Event.model_validate(ev(timestamp=ms))
    assert e.timestamp == datetime(2039, 7, 6, 1, 24, 33, 693_000, tzinfo=UTC)
    assert e.ts_ms == ms


@settings(max_examples=300, deadline=None)
@given(st.integers(MIN_MS, MAX_MS - 1))
def test_epoch_ms_round_trips_through_ts_ms(ms):
    e = Event.model_validate(ev(timestamp=ms))
    assert e.ts_ms == ms
    iso = e.timestamp.isoformat()
    assert Event.model_validate(ev(timestamp=iso)).ts_ms == ms


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("text", ["{bad", '{"user_id": "u1"', "", "not json at all"])
def test_bad_json_text_is_rejected(text):
    assert "JSON" in reason(text)


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "list"), ("42", "int"), ('"a string"', "str"), ("null", "None")])
def test_json_value_that_is_not_an_object_is_rejected(text, kind):
    r = reason(text)
    assert "object" in r
    assert kind in r


@pytest.mark.parametrize("field", ["user_id", "item_id", "type", "timestamp"])
def test_missing_required_field_is_rejected(field):
    r = reason(json.dumps(ev(**{field: ...})))
    assert field in r


def test_empty_object_names_every_required_field():
    r = reason("{}")
    for field in ("user_id", "item_id", "type", "timestamp"):
        assert field in r


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("user_id", {"a": 1}),
        ("user_id", [1]),
        ("user_id", True),
        ("item_id", False),
        ("event_id", True),
        ("user_id", 1.5),
        ("user_id", None),
        ("item_id", None),
        ("user_id", ""),
        ("user_id", "   "),
        ("user_id", "x" * (MAX_ID_LENGTH + 1)),
        ("item_id", "x" * (MAX_ID_LENGTH + 1)),
        ("event_id", "x" * (MAX_ID_LENGTH + 1)),
        ("timestamp", True),
        ("timestamp", None),
        ("timestamp", {"t": 1}),
        ("type", 2),
        ("value", "lots"),
        ("quantity", {"q": 1}),
    ],
)
def test_wrong_types_and_bad_ids_are_rejected_naming_the_field(field, bad):
    assert field in reason(json.dumps(ev(**{field: bad})))


def test_ids_at_max_length_are_accepted():
    r = parse(json.dumps(ev(user_id="u" * MAX_ID_LENGTH, item_id="i" * MAX_ID_LENGTH)))
    assert isinstance(r, EventRecord)
    assert len(r.user_id) == MAX_ID_LENGTH


@pytest.mark.parametrize("field", ["value", "quantity"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(field, literal):
    text = json.dumps(ev())[:-1] + f', "{field}": {literal}}}'
    assert json.loads(text)[field] != 0  # Python's json accepts these literals
    assert field in reason(text)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_finite_timestamp_is_rejected(literal):
    text = json.dumps(ev(timestamp=...))[:-1] + f', "timestamp": {literal}}}'
    assert "timestamp" in reason(text)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("quantity", -1), ("quantity", -0.5), ("quantity", 2e6), ("value", 2e9), ("value", -2e9)],
)
def test_out_of_bounds_numbers_are_rejected(field, bad):
    assert field in reason(json.dumps(ev(**{field: bad})))


@pytest.mark.parametrize("field", ["value", "quantity"])
def test_bool_is_not_accepted_as_a_number(field):
    # The contract rejects bools for ids and timestamps; a JSON `true` value
    # must not silently become a 1.00 sale / quantity 1.
    assert field in reason(json.dumps(ev(**{field: True})))


@pytest.mark.parametrize(
    "ts",
    [
        "yesterday",
        "2017-13-01T00:00:00Z",
        "2017-03-01T25:00:00",
        "01/03/2017",
        "",
        "2017-03-01T10:00:00+25:00",
    ],
)
def test_unparseable_timestamp_is_rejected(ts):
    assert "timestamp" in reason(json.dumps(ev(timestamp=ts)))


@pytest.mark.parametrize(
    "ts",
    [
        "1999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2000-01-01T00:30:00+01:00",  # 1999-12-31T23:30Z
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:00:00-05:00",  # 2100-01-01T04:00Z
        "2500-06-01T00:00:00",
        0,
        MIN_MS - 1,
        MAX_MS,
        -1e20,
        1e300,
    ],
)
def test_timestamp_outside_2000_2100_is_rejected(ts):
    assert "timestamp" in reason(json.dumps(ev(timestamp=ts)))


@pytest.mark.parametrize("ts", ["2000-01-01T00:00:00Z", "2099-12-31T23:59:59.999Z", MIN_MS, MAX_MS - 1])
def test_timestamp_range_bounds_are_inclusive_exclusive(ts):
    assert isinstance(parse(json.dumps(ev(timestamp=ts))), EventRecord)


@pytest.mark.parametrize("t", ["click", "PURCHASE ", "Purchase", "", "buy"])
def test_unknown_event_type_is_rejected(t):
    assert "type" in reason(json.dumps(ev(type=t)))


def test_payload_over_64_kib_is_rejected():
    text = json.dumps(ev(pad="x" * (MAX_PAYLOAD_BYTES + 1)))
    r = reason(text)
    assert "too large" in r


def test_payload_just_under_limit_is_accepted():
    text = json.dumps(ev(pad=""))
    text = json.dumps(ev(pad="x" * (MAX_PAYLOAD_BYTES - len(text))))
    assert len(text.encode()) == MAX_PAYLOAD_BYTES
    assert isinstance(parse(text), EventRecord)


def test_payload_limit_counts_bytes_not_characters():
    # 30 000 euro signs: ~30 KB characters but ~90 KB of UTF-8.
    text = json.dumps(ev(pad="\u20ac" * 30_000), ensure_ascii=False)
    assert len(text) <= MAX_PAYLOAD_BYTES < len(text.encode("utf-8"))
    r = parse(text)
    assert isinstance(r, str) and "too large" in r, f"{len(text.encode())}-byte payload accepted: {r!r}"


# --------------------------------------------------------------------------- ids and cents


def test_content_id_is_deterministic_and_content_sensitive():
    a = Event.model_validate(ev(value=1.5, quantity=2))
    b = Event.model_validate(ev(value=1.5, quantity=2, timestamp="2017-03-01T11:00:00+01:00"))
    assert a.content_id() == b.content_id() == Event.model_validate(a.model_dump()).content_id()
    assert a.content_id().startswith("h:")
    variants = [
        ev(value=1.5, quantity=2, user_id="u2"),
        ev(value=1.5, quantity=2, item_id="i2"),
        ev(value=1.5, quantity=2, type="view"),
        ev(value=1.5, quantity=2, timestamp=T0_MS + 1),
        ev(value=1.5, quantity=3),
        ev(value=1.51, quantity=2),
    ]
    ids = {Event.model_validate(v).content_id() for v in variants}
    assert len(ids) == len(variants)
    assert a.content_id() not in ids


def test_content_id_does_not_collide_across_field_boundaries():
    a = Event.model_validate(ev(user_id="ab", item_id="c"))
    b = Event.model_validate(ev(user_id="a", item_id="bc"))
    assert a.content_id() != b.content_id()


def test_record_event_id_prefers_given_id_else_content_id():
    e = Event.model_validate(ev())
    assert e.to_record("s").event_id == e.content_id()
    assert Event.model_validate(ev(event_id="abc")).to_record("s").event_id == "abc"


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        (0.1 + 0.2, 30),
        (19.99, 1999),
        (1.15, 115),
        (4.35, 435),
        (0.29, 29),
        (-2.5, -250),
        (0, 0),
        (1e9, 100_000_000_000),
        ("2.10", 210),
    ],
)
def test_value_becomes_integer_cents(value, cents):
    r = Event.model_validate(ev(value=value)).to_record("s")
    assert type(r.value_cents) is int
    assert r.value_cents == cents


@settings(max_examples=300, deadline=None)
@given(st.integers(-100_000_000_000, 100_000_000_000))
def test_two_decimal_values_round_trip_to_cents(cents):
    assert Event.model_validate(ev(value=cents / 100)).to_record("s").value_cents == cents


def test_extra_fields_are_ignored_and_event_is_frozen():
    e = Event.model_validate(ev(unknown="x"))
    with pytest.raises(ValidationError):
        e.user_id = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- batches


def test_parse_batch_rejects_events_more_than_a_day_in_the_future():
    now_ms = T0_MS
    p = EventParser(ColumnMapping(), wall_clock=lambda: now_ms / 1000)
    limit = now_ms + FUTURE_TOLERANCE_MS
    batch = [
        ("f:1", json.dumps(ev(timestamp=now_ms - 5_000))),
        ("f:2", json.dumps(ev(timestamp=limit))),  # exactly 24 h ahead: allowed
        ("f:3", json.dumps(ev(timestamp=limit + 1))),  # 1 ms more: rejected
        ("f:4", ev(timestamp=now_ms + 400 * 86_400_000)),  # a dict payload (CSV row)
        ("f:5", "{bad"),
    ]
    out = p.parse_batch(SourceBatch(batch))
    assert out.n_in == 5
    assert [r.source for r in out.records] == ["f:1", "f:2"]
    # The parser moves no clock: the partition's watermark step does, over the accepted records only.
    assert out.tick_ms is None and out.watermark is None
    assert [src for _, _, src in out.dead] == ["f:3", "f:4", "f:5"]
    assert "future" in out.dead[0][0] and "future" in out.dead[1][0]
    assert "JSON" in out.dead[2][0]
    assert out.dead[0][1] == batch[2][1]  # raw text kept as is
    assert json.loads(out.dead[1][1])["user_id"] == "u1"  # dicts serialised to JSON


def test_parse_batch_uses_the_injected_clock_each_call():
    clock = {"now": T0_MS / 1000}
    p = EventParser(ColumnMapping(), wall_clock=lambda: clock["now"])
    payload = json.dumps(ev(timestamp=T0_MS + 2 * 86_400_000))
    assert p.parse_batch(SourceBatch([("a", payload)])).dead
    clock["now"] += 2 * 86_400
    out = p.parse_batch(SourceBatch([("a", payload)]))
    assert not out.dead and [r.ts_ms for r in out.records] == [T0_MS + 2 * 86_400_000]


def test_parse_batch_keeps_the_source_tick_and_never_mixes_event_time_into_it():
    """The wall tick expires windows; event time is the watermark step's business (lateness never sees the tick)."""
    p = EventParser(ColumnMapping(), wall_clock=lambda: T0_MS / 1000)
    payload = json.dumps(ev(timestamp=T0_MS - 60_000))
    assert p.parse_batch(SourceBatch([("a", payload)], tick_ms=T0_MS)).tick_ms == T0_MS
    assert p.parse_batch(SourceBatch([("a", payload)], tick_ms=T0_MS - 3_600_000)).tick_ms == T0_MS - 3_600_000
    assert p.parse_batch(SourceBatch([], tick_ms=T0_MS)).tick_ms == T0_MS
    assert p.parse_batch(SourceBatch([], final=True)).idle  # an ended partition is idle for good


def test_parse_one_takes_kafka_bytes():
    p = EventParser(ColumnMapping(), wall_clock=lambda: T0_MS / 1000)
    rec = p.parse_one("kafka:t/0/5", json.dumps(ev(timestamp=T0_MS)).encode())
    assert not isinstance(rec, str) and rec.source == "kafka:t/0/5"
    assert "UTF-8" in p.parse_one("k", b"\xff\xfe{")
    assert "too large" in p.parse_one("k", b"x" * (MAX_PAYLOAD_BYTES + 1))


def test_parse_batch_empty():
    out = EventParser(ColumnMapping(), wall_clock=lambda: 0.0).parse_batch(SourceBatch([]))
    assert out.records == [] and out.dead == [] and out.tick_ms is None and out.n_in == 0


def test_parse_one_accepts_dict_rows_with_mapping():
    m = ColumnMapping(
        user_id="hh",
        item_id="prod",
        timestamp="ts",
        timestamp_unit="s",
        type_value="purchase",
        value="sales",
    )
    r = EventParser(m).parse_one("f.csv:2", {"hh": "7", "prod": "9", "ts": "1488362400", "sales": "3.99"})
    assert r == EventRecord("7", "9", TYPE_INDEX["purchase"], T0_MS, r.event_id, 1.0, 399, "f.csv:2")


def test_content_ids_of_events_one_ms_apart_differ():
    # 2004-10-05T07:03:32.615Z and .616Z are different events.
    a = Event.model_validate(ev(timestamp=1_096_959_812_615))
    b = Event.model_validate(ev(timestamp=1_096_959_812_616))
    assert a.timestamp != b.timestamp
    assert a.content_id() != b.content_id()


WIRE_PAYLOADS = [
    json.dumps({"user_id": "u1", "item_id": 7, "type": "cart", "timestamp": T0_MS, "value": 1.25}),
    json.dumps({"user_id": 12, "item_id": "i", "type": "purchase", "timestamp": "2017-03-01T10:00:00+01:00"}),
    json.dumps({"user_id": "u1", "item_id": "i", "type": "view", "timestamp": "2017-03-01T10:00:00", "extra": 1}),
    json.dumps({"user_id": 1.5, "item_id": "i", "type": "view", "timestamp": T0_MS}),
    json.dumps({"user_id": "u1", "item_id": "i", "type": "view", "timestamp": T0_MS, "value": True}),
    '{"user_id": "u1", "item_id": "i", "type": "view", "timestamp": 1, "value": NaN}',
    json.dumps({"user_id": "u1", "item_id": "i", "type": "fly", "timestamp": T0_MS}),
    json.dumps([1, 2]),
    "{oops",
    json.dumps({"user_id": "", "item_id": "i", "type": "view", "timestamp": T0_MS}),
]


@pytest.mark.parametrize("payload", WIRE_PAYLOADS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_wire_format_fast_path_agrees_with_the_general_path(payload, as_bytes):
    fast = EventParser(ColumnMapping(), wall_clock=lambda: T0_MS / 1000)
    general = EventParser(ColumnMapping(), wall_clock=lambda: T0_MS / 1000)
    general._wire_format = False
    raw = payload.encode() if as_bytes else payload
    assert fast.parse_one("s", raw) == general.parse_one("s", raw)
