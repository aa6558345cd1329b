"""Column mappings (schemas/mapping.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.events import Event
from schemas.mapping import ColumnMapping, MappingFileError, load_mapping

T0 = datetime(2017, 3, 1, 10, 0, tzinfo=UTC)
T0_S = 1_488_362_400


def test_identity_mapping_passes_fields_through():
    row = {
        "user_id": "u",
        "item_id": "i",
        "type": "view",
        "timestamp": "2017-03-01T10:00:00Z",
        "event_id": "e1",
        "quantity": 2,
        "value": 1.5,
        "other": "ignored",
    }
    out = ColumnMapping().apply(row)
    assert out == {
        "user_id": "u",
        "item_id": "i",
        "type": "view",
        "timestamp": "2017-03-01T10:00:00Z",
        "event_id": "e1",
        "quantity": 2,
        "value": 1.5,
    }


def test_renamed_columns():
    m = ColumnMapping(
        user_id="household_key",
        item_id="PRODUCT_ID",
        type="kind",
        timestamp="when",
        event_id="txn",
        quantity="QTY",
        value="SALES_VALUE",
    )
    row = {
        "household_key": 7,
        "PRODUCT_ID": 9,
        "kind": "cart",
        "when": "2017-03-01",
        "txn": "t1",
        "QTY": "3",
        "SALES_VALUE": "4.99",
        "user_id": "wrong",
        "item_id": "wrong",
        "type": "view",
    }
    out = m.apply(row)
    assert out == {
        "user_id": 7,
        "item_id": 9,
        "type": "cart",
        "timestamp": "2017-03-01",
        "event_id": "t1",
        "quantity": "3",
        "value": "4.99",
    }
    e = Event.model_validate(out)
    assert (e.user_id, e.item_id, e.quantity, e.value) == ("7", "9", 3.0, 4.99)


def test_missing_required_columns_become_none():
    out = ColumnMapping(user_id="hh").apply({"user_id": "ignored"})
    assert out["user_id"] is None and out["item_id"] is None and out["timestamp"] is None
    assert "event_id" not in out and "quantity" not in out and "value" not in out


@pytest.mark.parametrize("blank", [None, ""])
def test_blank_optional_columns_are_omitted(blank):
    out = ColumnMapping().apply({"event_id": blank, "quantity": blank, "value": blank})
    assert "event_id" not in out and "quantity" not in out and "value" not in out


def test_optional_columns_can_be_disabled():
    m = ColumnMapping(event_id=None, quantity=None, value=None)
    out = m.apply({"event_id": "e", "quantity": 1, "value": 2})
    assert set(out) == {"user_id", "item_id", "type", "timestamp"}


def test_zero_values_are_kept():
    out = ColumnMapping().apply({"quantity": 0, "value": 0})
    assert out["quantity"] == 0 and out["value"] == 0


def test_constant_type_value_overrides_type_column():
    m = ColumnMapping(type_value="purchase")
    assert m.apply({"type": "view"})["type"] == "purchase"
    assert ColumnMapping(type=None, type_value="cart").apply({})["type"] == "cart"


def test_mapping_needs_a_type_source():
    with pytest.raises(ValidationError, match="type"):
        ColumnMapping(type=None)


def test_unknown_mapping_field_is_rejected():
    with pytest.raises(ValidationError):
        ColumnMapping(users="x")  # type: ignore[call-arg]


def test_composite_event_id_joins_columns():
    m = ColumnMapping(event_id=("basket_id", "product_id", "line"))
    out = m.apply({"basket_id": 123, "product_id": "p9", "line": 0})
    assert out["event_id"] == "123:p9:0"


@pytest.mark.parametrize("missing", [None, ""])
def test_composite_event_id_omitted_when_a_part_is_missing(missing):
    m = ColumnMapping(event_id=("basket_id", "product_id"))
    assert "event_id" not in m.apply({"basket_id": 1, "product_id": missing})
    assert "event_id" not in m.apply({"basket_id": 1})


def test_single_column_event_id_tuple():
    assert ColumnMapping(event_id=("txn",)).apply({"txn": 5})["event_id"] == "5"


@pytest.mark.parametrize(
    ("unit", "value"),
    [
        ("s", T0_S),
        ("s", float(T0_S)),
        ("s", str(T0_S)),
        ("ms", T0_S * 1000),
        ("ms", str(T0_S * 1000)),
        ("us", T0_S * 10**6),
        ("ns", T0_S * 10**9),
        ("ns", str(T0_S * 10**9)),
    ],
)
def test_timestamp_units(unit, value):
    out = ColumnMapping(timestamp_unit=unit).apply({"timestamp": value})
    assert out["timestamp"] == T0
    assert out["timestamp"].tzinfo is not None
    assert Event.model_validate({**out, "user_id": "u", "item_id": "i", "type": "view"}).timestamp == T0


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [
        ("s", T0_S + 0.5, datetime(2017, 3, 1, 10, 0, 0, 500_000, tzinfo=UTC)),
        ("ms", T0_S * 1000 + 123, datetime(2017, 3, 1, 10, 0, 0, 123_000, tzinfo=UTC)),
        ("us", T0_S * 10**6 + 123_456, datetime(2017, 3, 1, 10, 0, 0, 123_456, tzinfo=UTC)),
        ("ns", T0_S * 10**9 + 123_000_000, datetime(2017, 3, 1, 10, 0, 0, 123_000, tzinfo=UTC)),
    ],
)
def test_timestamp_units_subsecond(unit, value, expected):
    assert ColumnMapping(timestamp_unit=unit).apply({"timestamp": value})["timestamp"] == expected


def test_iso_unit_and_datetimes_pass_through():
    assert ColumnMapping().apply({"timestamp": "2017-03-01T10:00:00"})["timestamp"] == "2017-03-01T10:00:00"
    assert ColumnMapping(timestamp_unit="ms").apply({"timestamp": T0})["timestamp"] is T0
    assert ColumnMapping(timestamp_unit="ms").apply({})["timestamp"] is None


@pytest.mark.parametrize("bad", ["yesterday", "12abc"])
def test_unparseable_number_left_for_contract(bad):
    out = ColumnMapping(timestamp_unit="s").apply({"timestamp": bad})
    assert out["timestamp"] == bad
    with pytest.raises(ValidationError, match="timestamp"):
        Event.model_validate({**out, "user_id": "u", "item_id": "i", "type": "view"})


@pytest.mark.parametrize("bad", [1e30, float("nan"), float("inf"), "1e30"])
def test_out_of_range_number_becomes_a_rejectable_string(bad):
    out = ColumnMapping(timestamp_unit="ms").apply({"timestamp": bad})
    assert isinstance(out["timestamp"], str) and "out of range" in out["timestamp"]
    with pytest.raises(ValidationError, match="timestamp"):
        Event.model_validate({**out, "user_id": "u", "item_id": "i", "type": "view"})


# --------------------------------------------------------------------------- load_mapping


def test_load_mapping(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text(
        'user_id = "household_key"\nitem_id = "product_id"\ntimestamp = "ts"\n'
        'timestamp_unit = "s"\ntype_value = "purchase"\nevent_id = ["basket_id", "product_id"]\n'
    )
    m = load_mapping(p)
    assert m == ColumnMapping(
        user_id="household_key",
        item_id="product_id",
        timestamp="ts",
        timestamp_unit="s",
        type_value="purchase",
        event_id=("basket_id", "product_id"),
    )
    out = m.apply({"household_key": 1, "product_id": 2, "ts": T0_S, "basket_id": 3})
    assert out["event_id"] == "3:2" and out["timestamp"] == T0 and out["type"] == "purchase"
    assert load_mapping(str(p)) == m


def test_empty_mapping_file_is_identity(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("")
    assert load_mapping(p) == ColumnMapping()


@pytest.mark.parametrize(
    "text",
    [
        None,  # missing file
        "user_id = \n",  # invalid TOML
        'timestamp_unit = "minutes"\n',
        'users = "x"\n',  # unknown key
        "type = false\n",
        'type = "t"\ntype_value = 3\n',
        "user_id = [1, 2]\n",
    ],
)
def test_load_mapping_errors_name_the_file(tmp_path, text):
    p = tmp_path / "bad_mapping.toml"
    if text is not None:
        p.write_text(text)
    with pytest.raises(MappingFileError) as ei:
        load_mapping(p)
    assert str(p) in str(ei.value)
    assert isinstance(ei.value, ValueError)
