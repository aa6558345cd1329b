"""Requests to Kafka messages and answers, without Kafka: validation is the stream's own, limits hold."""

from __future__ import annotations

import json
import time

import pytest

from collector.intake import Intake
from schemas.events import TYPE_NAMES, content_id_of
from schemas.mapping import ColumnMapping
from stream.parse import EventParser
from stream.sources.base import SourceBatch
from stream.wire import event_message

NOW_MS = 1_780_000_000_000  # 2026-05-28
DAY_MS = 86_400_000


def make_intake(max_events: int = 50) -> Intake:
    return Intake(EventParser(ColumnMapping(), wall_clock=lambda: NOW_MS / 1000), max_events)


def body(*events) -> bytes:
    return json.dumps(list(events)).encode()


def ev(**kw):
    return {"user_id": "u1", "item_id": "i1", "type": "view", **kw}


def test_an_event_without_a_timestamp_gets_the_receive_time_and_one_without_an_id_the_content_hash():
    got = make_intake().body(body(ev(event_id="e1"), ev(timestamp=NOW_MS - 5000), ev()), "r", NOW_MS)
    assert got.status == 200 and not got.dead
    first, hashed, bare = got.events
    assert (first.event_id, first.ts_ms) == ("e1", NOW_MS)
    assert hashed.event_id == content_id_of("u1", "i1", "view", NOW_MS - 5000, 1.0, 0.0)
    assert bare.ts_ms == NOW_MS and bare.event_id == content_id_of("u1", "i1", "view", NOW_MS, 1.0, 0.0)
    assert [r.event_id for r in got.results] == [first.event_id, hashed.event_id, bare.event_id]


def test_a_retry_of_an_event_with_a_timestamp_has_the_same_id_and_one_without_is_a_new_event():
    intake = make_intake()
    with_ts = body(ev(timestamp="2026-05-28T10:00:00Z", value=2.5))
    assert (
        intake.body(with_ts, "a", NOW_MS).events[0].event_id
        == intake.body(with_ts, "b", NOW_MS + 9000).events[0].event_id
    )
    bare = body(ev())
    assert intake.body(bare, "a", NOW_MS).events[0].event_id != intake.body(bare, "b", NOW_MS + 9000).events[0].event_id


def test_messages_are_canonical_json_keyed_by_user_and_the_stream_reads_them_back_unchanged():
    got = make_intake().body(
        body(ev(user_id="ü-42", type="purchase", quantity=2, value=3.99, event_id="x")), "r", NOW_MS
    )
    key, value = event_message(got.events[0], TYPE_NAMES)
    assert key == "ü-42".encode()
    again = EventParser(ColumnMapping()).check("kafka", value)
    assert again == got.events[0]._replace(source="kafka")


BAD = [
    (ev(type="levitate"), "type"),
    (ev(user_id=["u1"]), "user_id"),
    (ev(user_id=""), "user_id"),
    (ev(user_id="u" * 129), "user_id"),
    (ev(item_id=1.5), "item_id"),
    (ev(quantity="many"), "quantity"),
    (ev(quantity=True), "quantity"),
    (ev(value=1e300), "value"),
    (ev(timestamp="3000-01-01T00:00:00Z"), "timestamp"),
    (ev(timestamp="1999-12-31T23:59:59Z"), "timestamp"),
    (ev(timestamp=-1), "timestamp"),
    (ev(timestamp=10**40), "timestamp"),
    (ev(timestamp="yesterday"), "timestamp"),
    (ev(timestamp=NOW_MS + 2 * DAY_MS), "in the future"),
    ("not an object", "not an object"),
    (None, "not an object"),
    ({"user_id": "u1"}, "item_id"),
]


@pytest.mark.parametrize(("event", "word"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_each_bad_event_is_rejected_with_its_reason_and_a_dead_letter(event, word):
    got = make_intake().body(body(ev(event_id="ok"), event), "r9", NOW_MS)
    assert got.status == 207
    assert [r.event_id for r in got.results] == ["ok", None]
    reason = got.results[1].reason
    assert word in reason
    (dead,) = got.dead
    assert (dead.reason, dead.source, json.loads(dead.payload)) == (reason, "collector/events/r9#1", event)
    assert got.as_json()["rejected"] == 1 and got.as_json()["accepted"] == 1


def test_the_collector_refuses_what_the_stream_dead_letters_in_the_same_words():
    """One validator: the stream's parser, fed the same JSON lines, gives the same reasons."""
    stream = EventParser(ColumnMapping(), wall_clock=lambda: NOW_MS / 1000)
    events = [e for e, _ in BAD if isinstance(e, dict) and "timestamp" in e] + [ev(timestamp=NOW_MS, event_id="v")]
    lines = [("line", json.dumps(e)) for e in events]
    parsed = stream.parse_batch(SourceBatch(records=lines, part="f"))
    got = make_intake().body(body(*events), "r", NOW_MS)
    assert [d.reason for d in parsed.dead] == [d.reason for d in got.dead]
    assert [r.event_id for r in parsed.records] == [r.event_id for r in got.events] == ["v"]


def test_unicode_garbage_in_ids_is_rejected_and_valid_unicode_is_kept():
    raw = (
        b'[{"user_id": "\\ud800", "item_id": "i", "type": "view"},'
        b' {"user_id": "u", "item_id": "\\udfff\\ud800", "type": "cart"},'
        b' {"user_id": "u", "item_id": "i", "type": "view", "event_id": "\\ud83d"},'
        b' {"user_id": "\xf0\x9f\x9b\x92 caf\xc3\xa9", "item_id": "i", "type": "view"}]'
    )
    got = make_intake().body(raw, "r", NOW_MS)
    assert got.status == 207
    assert [r.reason is None for r in got.results] == [False, False, False, True]
    assert "user_id" in got.results[0].reason and "item_id" in got.results[1].reason
    assert "event_id" in got.results[2].reason
    assert got.events[0].user_id == "\U0001f6d2 café"
    assert all(json.loads(d.payload) for d in got.dead)  # dead letters hold the raw event


@pytest.mark.parametrize(
    ("raw", "status", "word"),
    [
        (b"{not json", 400, "bad JSON"),
        (b"\xff\xfe\x00", 400, "bad JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "bad JSON"),
        (b'{"user_id": 1' + b"0" * 5000 + b"}", 400, "bad JSON"),
        (b"42", 400, "not an event"),
        (b"[]", 400, "empty batch"),
        (json.dumps([ev()] * 51).encode(), 413, "batch too large"),
    ],
    ids=["syntax", "not-utf8", "deep", "long-number", "scalar", "empty", "too-many"],
)
def test_a_request_refused_as_a_whole_is_one_dead_letter_with_its_body(raw, status, word):
    got = make_intake(max_events=50).body(raw, "r1", NOW_MS)
    assert (got.status, got.events, got.results) == (status, [], [])
    assert word in got.error
    (dead,) = got.dead
    assert dead.reason == got.error and dead.source == "collector/events/r1"
    assert len(dead.payload) >= min(len(raw), 3) // 2


def test_ten_thousand_events_are_refused_without_validating_each():
    raw = json.dumps([ev(event_id=str(i)) for i in range(10_000)]).encode()
    t0 = time.perf_counter()
    got = make_intake(max_events=500).body(raw, "r", NOW_MS)
    assert got.status == 413 and "10,000 events > 500" in got.error
    assert time.perf_counter() - t0 < 1.0


def test_all_invalid_is_400_with_a_reason_for_each():
    got = make_intake().body(body(ev(type="x"), ev(user_id=None)), "r", NOW_MS)
    assert got.status == 400 and len(got.dead) == 2
    assert got.as_json() == {
        "accepted": 0,
        "rejected": 2,
        "results": [{"index": i, "status": "rejected", "reason": d.reason} for i, d in enumerate(got.dead)],
    }


def test_a_single_object_is_one_event():
    got = make_intake().body(json.dumps(ev(event_id="e")).encode(), "r", NOW_MS)
    assert got.status == 200 and got.as_json()["results"] == [{"index": 0, "status": "accepted", "event_id": "e"}]


def test_pixel_query_strings_use_the_contract_names_and_digits_are_epoch_milliseconds():
    intake = make_intake()
    q = {
        "user_id": "u1",
        "item_id": "i1",
        "type": "cart",
        "timestamp": str(NOW_MS - 1000),
        "quantity": "2",
        "value": "4.5",
    }
    (rec,) = intake.query(q, "p", NOW_MS).events
    assert (rec.ts_ms, rec.quantity, rec.value_cents) == (NOW_MS - 1000, 2.0, 450)
    assert intake.query({**q, "timestamp": ""}, "p", NOW_MS).events[0].ts_ms == NOW_MS
    bad = intake.query({"user_id": "u1", "type": "view"}, "p", NOW_MS)
    assert bad.status == 400 and "item_id" in bad.dead[0].reason
