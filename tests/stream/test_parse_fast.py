"""The wire-format fast path (``stream.fastparse``) gives exactly what the model path gives.

For every payload, a parser with the fast path (the default) and one without
(``EventParser(..., fast=False)``, the model path alone) must return the same
thing: the same record field by field (compared by ``repr``, so ``-0.0`` vs
``0.0`` or ``1`` vs ``1.0`` differ), the same dead-letter reason, or both None.
Generated payloads are valid wire messages and mutations of them (every
field's type swapped, whitespace and odd characters at the ends of ids,
duplicate keys, raw number literals, unknown and nested fields, missing
fields, byte garbage); each edge named in issue #15's brief also has its own case.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import MAX_TIMESTAMP, MIN_TIMESTAMP, _timestamp_from_number, content_id_of
from schemas.mapping import ColumnMapping
from stream import columns, fastparse
from stream.parse import MAX_PAYLOAD_BYTES, EventParser
from stream.sources.base import SourceBatch

MIN_MS = int(MIN_TIMESTAMP.timestamp() * 1000)
MAX_MS = int(MAX_TIMESTAMP.timestamp() * 1000)
NOW = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
WISHLIST = ("view", "cart", "purchase", "wishlist")
FAST = EventParser(ColumnMapping(), lambda: NOW)
MODEL = EventParser(ColumnMapping(), lambda: NOW, fast=False)
FAST_W = EventParser(ColumnMapping(), lambda: NOW, types=WISHLIST)
MODEL_W = EventParser(ColumnMapping(), lambda: NOW, types=WISHLIST, fast=False)
FIELDS = ["user_id", "item_id", "type", "timestamp", "event_id", "quantity", "value"]
CANONICAL = {
    "user_id": "h1234~0",
    "item_id": "1004906",
    "type": "purchase",
    "timestamp": 1_764_633_600_000,
    "event_id": "live-17",
    "quantity": 1.0,
    "value": 2.5,
}


def same(fast: Any, model: Any) -> None:
    assert type(fast) is type(model)
    assert repr(fast) == repr(model)  # field by field, floats by repr (-0.0, 1.0)


def both(payload: Any, fast: EventParser = FAST, model: EventParser = MODEL) -> Any:
    """The result of both parsers on one payload (asserted equal), and the batch path's too."""
    got = fast.check("t/0/1", payload)
    same(got, model.check("t/0/1", payload))
    a = fast.parse_batch(SourceBatch([("t/0/1", payload)], part="t/0"))
    b = model.parse_batch(SourceBatch([("t/0/1", payload)], part="t/0"))
    same(a.records, b.records)
    same(a.dead, b.dead)
    assert (a.dropped, b.dropped) == (0, 0)
    return got


def taken(payload: Any, parser: EventParser = FAST) -> bool:
    """Whether the fast path decided the payload itself."""
    return parser._fast_record("t/0/1", payload) is not None


def wire(pairs: list[tuple[str, str]], ws: str = "") -> str:
    """An object from (key, JSON text of the value) pairs, in order, duplicates kept."""
    return "{" + ws + ("," + ws).join(f"{json.dumps(k)}:{ws}{v}" for k, v in pairs) + ws + "}"


def pairs_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, json.dumps(v)) for k, v in d.items()]


# --- explicit cases ---------------------------------------------------------------------------------------------


def test_canonical_messages_take_the_fast_path_and_give_the_models_record() -> None:
    for d in (CANONICAL, {**CANONICAL, "quantity": 3, "value": -0.07}, {**CANONICAL, "type": "view"}):
        for payload in (json.dumps(d), json.dumps(d, separators=(",", ":")).encode()):
            assert taken(payload)
            rec = both(payload)
            assert rec.user_id == d["user_id"] and rec.ts_ms == d["timestamp"]


def test_content_id_uses_the_models_floats() -> None:
    # event_id absent or null: the content id hashes repr(quantity) and repr(value) as the model has them:
    # an integer quantity 1 is the float 1.0 there.
    for extra in ({}, {"event_id": None}):
        d = {k: v for k, v in CANONICAL.items() if k != "event_id"} | {"quantity": 1, "value": 3} | extra
        payload = json.dumps(d)
        assert taken(payload)
        rec = both(payload)
        assert rec.event_id == content_id_of("h1234~0", "1004906", "purchase", d["timestamp"], 1.0, 3.0)
        assert repr(rec.quantity) == "1.0"


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("quantity", "-0.0"),
        ("quantity", "-0"),
        ("value", "-0.0"),
        ("value", "-0"),
        ("value", "1e2"),
        ("value", "1E-2"),
        ("value", "0.1000000000000000055511151231257827021181583404541015625"),
        ("value", "0.005"),
        ("value", "0.015"),
        ("value", "-1000000000"),
        ("value", "1000000000.0000001"),
        ("quantity", "1000000"),
        ("quantity", "1000000.0000000001"),
        ("quantity", "1e400"),
        ("value", "-1e400"),
        ("value", "NaN"),
        ("value", "Infinity"),
        ("quantity", "9" * 400),
        ("timestamp", "9" * 400),
        ("timestamp", str(2**64)),
        ("timestamp", str(MIN_MS - 1)),
        ("timestamp", str(MIN_MS)),
        ("timestamp", str(MAX_MS - 1)),
        ("timestamp", str(MAX_MS)),
        ("timestamp", "1764633600000.0"),
        ("timestamp", "1.7646336e12"),
        ("timestamp", '"2026-12-02T00:00:00Z"'),
        ("timestamp", '"1764633600000"'),
        ("quantity", "true"),
        ("value", "false"),
        ("quantity", "null"),
        ("event_id", "null"),
        ("event_id", '""'),
        ("event_id", "17"),
        ("user_id", "17"),
        ("user_id", "17.0"),
        ("user_id", "true"),
        ("user_id", "null"),
        ("item_id", "[1]"),
        ("type", '"View"'),
        ("type", '"wishlist"'),
        ("type", '" view"'),
    ],
)
def test_each_number_and_type_edge_is_decided_like_the_model(field: str, literal: str) -> None:
    pairs = [(k, v if k != field else literal) for k, v in pairs_of(CANONICAL)]
    for payload in (wire(pairs), wire(pairs).encode()):
        both(payload)
        both(payload, FAST_W, MODEL_W)


@pytest.mark.parametrize(
    "text",
    [
        " u",
        "u ",
        "\tu",
        "u\n",
        "\x1cu",
        "u\x1f",
        "\x85u",
        "\u00a0u",
        "u\u2028",
        "\u3000u",
        "\u200bu",
        "\ufeffu",
        "u\x00",
        "\x00",
        "",
        " ",
        "é",
        "uéu",
        "u u",
        "u\x00u",
        "x" * 128,
        "x" * 129,
        " " + "x" * 128,
        "u\ud800u",
        "😀u",
        "u😀u",
    ],
)
@pytest.mark.parametrize("field", ["user_id", "item_id", "event_id"])
def test_ids_with_odd_ends_or_lengths_are_decided_like_the_model(field: str, text: str) -> None:
    for ensure_ascii in (True, False):
        payload = json.dumps({**CANONICAL, field: text}, ensure_ascii=ensure_ascii)
        both(payload)
        try:
            both(payload.encode())
        except UnicodeEncodeError:  # a lone surrogate in text that Python cannot encode: no bytes to send
            pass
        if text[:1] not in "xu" or text[-1:] not in "xu" or len(text) > 128:
            assert not taken(payload)  # stripping or rejection: the model path decides


def test_duplicate_keys_keep_the_last_value_in_both_paths() -> None:
    base = pairs_of(CANONICAL)
    for dup in (
        [("user_id", '"a"'), ("user_id", '"b"')],
        [("user_id", "true"), ("user_id", '"b"')],
        [("user_id", '"b"'), ("user_id", "true")],
        [("timestamp", '"2026-12-02T00:00:00Z"'), ("timestamp", str(MIN_MS))],
        [("event_id", '"e1"'), ("event_id", "null")],
    ):
        payload = wire([p for p in base if p[0] != dup[0][0]] + dup)
        both(payload)
        both(payload.encode())
    rec = both(wire([*base, ("user_id", '"b"')]))
    assert rec.user_id == "b"


@pytest.mark.parametrize(
    "payload",
    [
        "\ufeff" + json.dumps(CANONICAL),
        b"\xef\xbb\xbf" + json.dumps(CANONICAL).encode(),
        json.dumps(CANONICAL) + " \n\t\r",
        "\n " + json.dumps(CANONICAL),
        json.dumps(CANONICAL) + " x",
        json.dumps(CANONICAL) + "\x00",
        json.dumps(CANONICAL)[:-1],
        json.dumps([CANONICAL]),
        json.dumps(CANONICAL)[:40],
        "",
        b"",
        "null",
        "1",
        '"text"',
        b"\xff\xfe{}",
        json.dumps(CANONICAL).encode()[:-3] + b'\xff"}',
        json.dumps({**CANONICAL, "user_id": "a\udc80"}, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        json.dumps({**CANONICAL, "extra": 1}),
        json.dumps({**CANONICAL, "extra": "[" * 100}),
        json.dumps(CANONICAL)[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",
        json.dumps(CANONICAL)[:-1] + ', "deep": ' + "[" * 300 + "]" * 300 + "}",
        json.dumps(CANONICAL)[:-1] + ', "pad": "' + "x" * (MAX_PAYLOAD_BYTES // 4) + '"}',
        json.dumps(CANONICAL)[:-1] + ', "pad": "' + "x" * MAX_PAYLOAD_BYTES + '"}',
        json.dumps({k: v for k, v in CANONICAL.items() if k != "timestamp"}),
        json.dumps({k: v for k, v in CANONICAL.items() if k != "type"}),
        json.dumps({**CANONICAL, "timestamp": int(NOW * 1000) + 25 * 3_600_000}),  # more than a day ahead
    ],
)
def test_framing_edges_are_decided_like_the_model(payload: str | bytes) -> None:
    both(payload)


def test_oversize_and_unknown_fields_leave_the_fast_path() -> None:
    assert not taken(json.dumps(CANONICAL)[:-1] + ', "pad": "' + "x" * (MAX_PAYLOAD_BYTES // 4) + '"}')
    assert not taken(json.dumps({**CANONICAL, "extra": 1}))
    assert not taken(json.dumps({**CANONICAL, "timestamp": float(CANONICAL["timestamp"])}))
    assert not taken("\ufeff" + json.dumps(CANONICAL))


def test_future_events_found_by_the_fast_path_are_dead_letters_with_the_same_reason() -> None:
    payload = json.dumps({**CANONICAL, "timestamp": int(NOW * 1000) + 25 * 3_600_000})
    assert taken(payload)
    reason = both(payload)
    assert isinstance(reason, str) and "in the future" in reason


def test_dicts_and_mapped_exports_never_take_the_fast_path() -> None:
    assert not taken(CANONICAL)
    mapped = EventParser(ColumnMapping(timestamp_unit="ms"), lambda: NOW)
    assert mapped._fast is None
    assert not taken(json.dumps(CANONICAL), mapped)


def test_a_parser_with_the_fast_path_pickles_and_keeps_it() -> None:
    # As on main, where a parser of the default vocabulary pickles (a configured one's model does not).
    parser = pickle.loads(pickle.dumps(EventParser(ColumnMapping())))
    payload = json.dumps(CANONICAL)
    assert taken(payload, parser)
    same(parser.check("t/0/1", payload), MODEL.check("t/0/1", payload))


def test_epoch_ms_read_as_the_model_reads_it_is_the_same_integer() -> None:
    # The fast path keeps the integer; the model goes through datetime.fromtimestamp(ms / 1e3). The docstring of
    # stream.fastparse argues they agree for every ms in range; here: both ends, second boundaries, and a sample.
    rng = random.Random(15)
    sample = [MIN_MS, MIN_MS + 1, MAX_MS - 1, MAX_MS - 999, MAX_MS - 1000, MAX_MS - 500]
    sample += [rng.randrange(MIN_MS, MAX_MS) for _ in range(100_000)]
    sample += [rng.randrange(MIN_MS // 1000, MAX_MS // 1000) * 1000 + d for d in (0, 1, 499, 500, 501, 999)]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ms in sample:
        assert (_timestamp_from_number(float(ms), "ms") - epoch) // timedelta(milliseconds=1) == ms, ms


def test_plain_characters_are_those_of_the_columnar_fast_path() -> None:
    plain = {chr(c) for c in range(0x10000) if re.fullmatch(columns._PLAIN, chr(c))}
    assert plain == fastparse._PLAIN


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["quantity", "value"]),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,9})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,2})?\Z"),
)
def test_long_decimal_literals_read_as_the_same_float(field: str, literal: str) -> None:
    # Both JSON readers must round every decimal to the same float (and the same cents, content id).
    for eid in ('"e1"', "null"):
        pairs = [(k, v) for k, v in pairs_of(CANONICAL) if k not in (field, "event_id")]
        pairs += [(field, literal), ("event_id", eid)]
        both(wire(pairs))


# --- generated payloads -------------------------------------------------------------------------------------------

plain_ids = st.text("abcxyzAZ09_-.:@/+#~ é", min_size=1, max_size=12)
odd_ids = st.text(min_size=0, max_size=12) | st.sampled_from(["\x1c1", "1\x1f", "\u00a01", "1\u2029", "\u200b1"])
ids = plain_ids | odd_ids | st.integers(-(2**70), 2**70)
numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(-2e9, 2e9)
    | st.integers(-(10**12), 10**12)
    | st.sampled_from([0.0, -0.0, 0, 1, 1e6, 1e9, -1e9, 0.005, 0.015, 1e-320])
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
literals = st.sampled_from(
    ["NaN", "-Infinity", "1e400", "-0", "-0.0", "1E2", "1.5e12", "9" * 310, str(2**63), "00", "1.", ".5", "+1"]
) | st.sampled_from(['"\\ud800"', '"a\\udc00b"', '"\\ud83d\\ude00"'])  # lone surrogates, and a pair
valid_wire = st.fixed_dictionaries(
    {
        "user_id": plain_ids,
        "item_id": plain_ids,
        "type": st.sampled_from(WISHLIST),
        "timestamp": st.integers(MIN_MS, int(NOW * 1000))
        | st.sampled_from([MIN_MS - 1, MIN_MS, MAX_MS - 1, MAX_MS, int(NOW * 1000) + 86_400_001]),
    },
    optional={
        "event_id": plain_ids | st.none(),
        "quantity": st.floats(0, 1e6) | st.integers(0, 10**6) | numbers,
        "value": st.floats(-1e9, 1e9) | st.integers(-(10**9), 10**9) | numbers,
    },
)


@st.composite
def wire_payloads(draw: st.DrawFn) -> str | bytes:
    """A valid wire message, or one mutated in one or a few ways, as text or bytes."""
    pairs = pairs_of(draw(valid_wire))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):  # a good share unmutated, so acceptance is tested
        i = draw(st.integers(0, len(pairs) - 1))
        key = pairs[i][0]
        how = draw(st.sampled_from(["swap", "literal", "id", "drop", "dup", "extra", "escape"]))
        if how == "swap":
            pairs[i] = (key, json.dumps(draw(json_values | ids | numbers)))
        elif how == "literal":
            pairs[i] = (key, draw(literals))
        elif how == "id":
            pairs[i] = (key, json.dumps(draw(ids), ensure_ascii=draw(st.booleans())))
        elif how == "drop":
            del pairs[i]
            if not pairs:
                break
        elif how == "dup":
            pairs.insert(draw(st.integers(0, len(pairs))), (key, json.dumps(draw(json_values | ids | numbers))))
        elif how == "extra":
            pairs.append((draw(st.sampled_from([*FIELDS, "x", "User_id", "type "])), json.dumps(draw(json_values))))
        else:
            pairs[i] = (key, json.dumps(draw(st.text(max_size=6)), ensure_ascii=True).replace("\\u", "\\uD800\\u"))
    text = wire(pairs, draw(st.sampled_from(["", " ", "\n"])))
    before = draw(st.sampled_from(["", "", "", " ", "\ufeff", "\t"]))
    text = before + text + draw(st.sampled_from(["", "", " \n", "x", ","]))
    if draw(st.booleans()):
        data = text.encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 19)) == 0:  # a damaged byte
            j = draw(st.integers(0, len(data) - 1))
            data = data[:j] + bytes([draw(st.integers(0, 255))]) + data[j + 1 :]
        return data
    return text


clean_wire = valid_wire.map(json.dumps) | valid_wire.map(lambda d: json.dumps(d, separators=(",", ":")).encode())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire_payloads() | clean_wire)
def test_generated_payloads_give_the_same_result_with_and_without_the_fast_path(payload: str | bytes) -> None:
    both(payload)
    both(payload, FAST_W, MODEL_W)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_garbage_gives_the_same_result_with_and_without_the_fast_path(payload: str | bytes) -> None:
    both(payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_payloads() | clean_wire, min_size=1, max_size=20))
def test_batches_give_the_same_records_and_dead_letters(items: list[str | bytes]) -> None:
    batch = SourceBatch([(f"t/0/{i}", p) for i, p in enumerate(items)], part="t/0")
    a, b = FAST.parse_batch(batch), MODEL.parse_batch(batch)
    same(a.records, b.records)
    same(a.dead, b.dead)
    assert len(a.records) + len(a.dead) == len(items)


def test_generated_valid_messages_mostly_take_the_fast_path() -> None:
    # A guard on the point of it all: canonical messages of any content take the fast path.
    rng = random.Random(7)
    for _ in range(2000):
        d = {
            **CANONICAL,
            "timestamp": rng.randrange(MIN_MS, int(NOW * 1000)),
            "quantity": rng.choice([1, 1.0, rng.uniform(0, 1e6)]),
            "value": round(rng.uniform(-1e9, 1e9), rng.randrange(0, 4)),
            "user_id": f"h{rng.randrange(10**6)}~{rng.randrange(40)}",
        }
        if rng.random() < 0.3:
            del d["event_id"]
        payload = json.dumps(d)
        assert taken(payload), payload
        same(FAST._fast_record("t/0/1", payload), MODEL.check("t/0/1", payload))
