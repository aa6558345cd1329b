"""A configured event-type vocabulary: features, parsing, dead letters, names back from indexes, fingerprints."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from offline_train.dataset import build_examples
from schemas.events import TYPE_NAMES, EventRecord, Vocabulary, event_json_schema
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from schemas.mapping import ColumnMapping, MappingTypesError
from schemas.settings import Settings
from stream.apply import apply_events, item_rows
from stream.parse import EventParser
from stream.shard import ShardOutput, state_layout
from stream.sinks.base import table_rows
from stream.sources.base import SourceBatch
from stream.state import CustomerState, StateConfig

FIVE = ("view", "cart", "purchase", "wishlist", "click")
T0 = datetime(2024, 3, 4, 12, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
GROUPS = (ProductGroup(name="coffee", items=("c1",)),)
CATALOG = GroupCatalog(GROUPS, {"c1": (0, 1)})


def spec(types: tuple[str, ...] = FIVE) -> FeatureSpec:
    return FeatureSpec(groups=("coffee",), types=types)


def event(type_: str, i: int = 0, user: str = "u1", item: str = "c1") -> dict:
    return {"user_id": user, "item_id": item, "type": type_, "timestamp": T0_MS + i * 60_000, "event_id": f"e{i}"}


def parser(types=FIVE, mapping: ColumnMapping | None = None) -> EventParser:
    return EventParser(mapping or ColumnMapping(), wall_clock=lambda: T0.timestamp(), types=types)


def test_features_follow_the_configured_types_by_the_one_naming_rule():
    names = spec().names
    for t in FIVE:
        for g in ("coffee", "all"):
            assert f"grp={g}|type={t}|stat=count|win=7d" in names
    assert not [n for n in names if "type=fav" in n or "type=like" in n]  # no feature of a type not configured
    typed = [n for n in names if "|type=" in n]
    assert {n.split("|")[1] for n in typed} == {f"type={t}" for t in FIVE}
    assert len(typed) == 2 * len(FIVE) * len(spec().windows) * 3  # (coffee, all) x types x windows x stats
    default = spec(TYPE_NAMES).names
    assert [n for n in names if "wishlist" not in n and "click" not in n] == list(default)  # same order otherwise


def test_the_default_vocabulary_keeps_every_name_and_index():
    assert FeatureSpec(groups=("coffee",)).names == spec(("view", "cart", "purchase")).names
    assert Vocabulary().index == {"view": 0, "cart": 1, "purchase": 2}
    assert Settings().events.types == ("view", "cart", "purchase")


def test_wishlist_events_parse_and_count_in_their_own_features():
    p = parser()
    raw = [event("wishlist", 0), event("view", 1), event("wishlist", 2)]
    wire = json.dumps(event("wishlist", 3)).encode()  # the wire-format fast path too
    recs = [p.check("f:1", r) for r in raw] + [p.check("k:1", wire)]
    assert all(isinstance(r, EventRecord) for r in recs)
    assert [r.type_index for r in recs] == [3, 0, 3, 3]
    cfg = StateConfig.build(spec())
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    batch = apply_events(cfg, CATALOG, customers, items, recs, None)
    row = cfg.new_row()
    customers["u1"].write_features(cfg, row)
    at = cfg.spec.index
    assert row[at["grp=coffee|type=wishlist|stat=count|win=1d"]] == 3
    assert row[at["grp=all|type=view|stat=count|win=1d"]] == 1
    assert row[at["grp=all|type=click|stat=count|win=1d"]] == 0
    assert sorted(r.type for r in item_rows(batch.items, 0, cfg.type_names)) == ["view", "wishlist"]
    tables = table_rows([ShardOutput(shard=0, applied=batch.applied)], cfg.type_names)
    assert sorted(tables["events"]["type"]) == ["view", "wishlist", "wishlist", "wishlist"]
    again = p.check("k:2", recs[0].to_json(p.types.names))  # the wire format reads back as the same record
    assert again == recs[0]._replace(source="k:2")


def test_an_unknown_type_is_a_dead_letter_listing_the_configured_types():
    reason = parser().check("f:1", event("fav"))
    assert reason == "invalid event: type: Input should be 'view', 'cart', 'purchase', 'wishlist' or 'click'"
    assert parser().check("k:1", json.dumps(event("fav"))) == reason
    dead = parser().parse_batch(SourceBatch([("f:1", event("fav")), ("f:2", event("click"))])).dead
    assert [(d.reason, d.source) for d in dead] == [(reason, "f:1")]
    default = parser(TYPE_NAMES).check("f:1", event("wishlist"))
    assert default == "invalid event: type: Input should be 'view', 'cart' or 'purchase'"  # as before


def test_the_columnar_fast_path_reads_the_configured_types():
    table = pa.RecordBatch.from_pylist([event(t, i, user=f"u{i}") for i, t in enumerate([*FIVE, "fav"])])
    out = parser().parse_batch(SourceBatch([], part="f.parquet", columns=table, first_row=1))
    assert [r.type_index for r in out.records] == [0, 1, 2, 3, 4]
    assert [d.reason.split(": ", 2)[-1] for d in out.dead] == [
        "Input should be 'view', 'cart', 'purchase', 'wishlist' or 'click'"
    ]


def test_a_mapping_must_map_into_the_vocabulary():
    mapping = ColumnMapping(type_values={"fav": "wishlist", "pv": "view"})
    with pytest.raises(MappingTypesError, match=r"map to \['wishlist'\], which are not event types"):
        parser(TYPE_NAMES, mapping)
    got = parser(FIVE, mapping).check("f:1", event("fav"))
    assert isinstance(got, EventRecord) and got.type_index == FIVE.index("wishlist")


@pytest.mark.parametrize(
    "types",
    [(), ("view", "view"), ("View",), ("a-b",), ("1st",), ("x" * 33,)],
)
def test_a_vocabulary_is_unique_non_empty_names_fit_for_feature_names(types, monkeypatch):
    with pytest.raises(ValidationError):
        Settings(events={"types": types})
    with pytest.raises(ValueError):
        Vocabulary(types)
    monkeypatch.setenv("PROPSTREAM_EVENTS__TYPES", json.dumps(list(types)))
    with pytest.raises(ValidationError):
        Settings()


def test_settings_read_the_vocabulary_from_the_environment_and_check_label_types(monkeypatch):
    monkeypatch.setenv("PROPSTREAM_EVENTS__TYPES", json.dumps(list(FIVE)))
    assert Settings().events.types == FIVE
    assert Settings(train={"label_types": ("purchase", "wishlist")}).train.label_types == ("purchase", "wishlist")
    monkeypatch.delenv("PROPSTREAM_EVENTS__TYPES")
    with pytest.raises(ValidationError, match=r"train\.label_types \['wishlist'\] are not event types"):
        Settings(train={"label_types": ("wishlist",)})


def test_the_schema_enumerates_the_vocabulary():
    schema = event_json_schema(Vocabulary(FIVE))
    assert schema["$defs"]["EventType"]["enum"] == list(FIVE)
    assert event_json_schema()["$defs"]["EventType"]["enum"] == list(TYPE_NAMES)


def test_the_snapshot_layout_changes_with_the_vocabulary():
    default = state_layout(StateConfig.build(spec(TYPE_NAMES)), GROUPS)
    assert state_layout(StateConfig.build(spec()), GROUPS) != default
    assert state_layout(StateConfig.build(spec(("view", "purchase", "cart"))), GROUPS) != default  # order matters
    assert state_layout(StateConfig.build(spec(TYPE_NAMES)), GROUPS) == default


def test_labels_count_the_configured_label_types():
    cfg = StateConfig.build(spec())
    day = 86_400_000
    recs = [
        EventRecord("u1", "c1", 0, T0_MS, "a", 1.0, 0, "s"),
        EventRecord("u2", "c1", 0, T0_MS, "b", 1.0, 0, "s"),
        EventRecord("u1", "c1", 3, T0_MS + 2 * day, "c", 1.0, 0, "s"),  # wishlist
        EventRecord("u2", "c1", 2, T0_MS + 3 * day, "d", 1.0, 0, "s"),  # purchase
    ]
    cut = [datetime.fromtimestamp((T0_MS + day) / 1000, tz=UTC)]
    wish = build_examples(recs, cfg, CATALOG, cut, 7, ("wishlist",))
    buy = build_examples(recs, cfg, CATALOG, cut, 7, ("purchase",))
    assert wish.users == buy.users == ["u1", "u2"]
    assert np.array_equal(wish.labels[:, 0], [True, False]) and np.array_equal(buy.labels[:, 0], [False, True])
    with pytest.raises(ValueError, match=r"label types \['fav'\] are not event types"):
        build_examples(recs, cfg, CATALOG, cut, 7, ("fav",))
