"""Feature naming/layout (schemas/features.py) and product groups (schemas/groups.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import EVENT_TYPES
from schemas.features import (
    DEFAULT_RECENCY_EDGES,
    DEFAULT_WINDOWS,
    STATS,
    FeatureSpec,
    Window,
    feature_name,
)
from schemas.groups import ALL_GROUP, GroupCatalog, GroupsFileError, ProductGroup, load_groups

GROUPS_FILE = Path(__file__).resolve().parents[2] / "propstream" / "data" / "completejourney_groups.toml"

SPECS = [
    FeatureSpec(groups=("coffee_tea",)),
    FeatureSpec(groups=("a", "b", "c")),
    FeatureSpec(groups=()),
    FeatureSpec(
        groups=("x", "y"),
        types=("view", "purchase"),
        windows=(
            Window(name="2h", bucket_seconds=3600, n_buckets=2),
            Window(name="3d", bucket_seconds=86400, n_buckets=3),
        ),
        recency_edges_days=(0, 2, 4),
    ),
]


# --------------------------------------------------------------------------- FeatureSpec


@pytest.mark.parametrize("spec", SPECS)
def test_names_unique_and_index_matches(spec):
    assert len(set(spec.names)) == len(spec.names)
    n_groups = len(spec.groups) + 1
    assert len(spec.names) == n_groups * len(spec.types) * len(spec.windows) * len(STATS) + n_groups + 1
    assert spec.index == {n: i for i, n in enumerate(spec.names)}
    for i, n in enumerate(spec.names):
        assert spec.index[n] == i


@pytest.mark.parametrize("spec", SPECS)
def test_counter_index_layout_matches_names(spec):
    seen = set()
    for gi, g in enumerate(spec.all_groups):
        for ti, t in enumerate(spec.types):
            for wi, w in enumerate(spec.windows):
                base = spec.counter_index(gi, ti, wi)
                for s, stat in enumerate(STATS):
                    assert spec.names[base + s] == feature_name(g, t, stat, w.name)
                    seen.add(base + s)
    assert seen == set(range(spec.recency_offset))
    for gi, g in enumerate(spec.all_groups):
        assert spec.names[spec.recency_offset + gi] == spec.recency_name(g) == f"grp={g}|stat=recency_days"
    assert spec.names[-1] == spec.history_name == "grp=all|stat=history_days"
    assert len(spec.names) == spec.recency_offset + len(spec.all_groups) + 1


def test_default_spec_shape_and_names():
    spec = FeatureSpec(groups=("coffee_tea",))
    assert spec.types == tuple(t.value for t in EVENT_TYPES) == ("view", "cart", "purchase")
    assert spec.windows == DEFAULT_WINDOWS
    assert spec.all_groups == ("coffee_tea", ALL_GROUP)
    assert spec.names[0] == "grp=coffee_tea|type=view|stat=count|win=1d"
    assert spec.names[1] == "grp=coffee_tea|type=view|stat=value|win=1d"
    assert spec.names[3] == "grp=coffee_tea|type=view|stat=count|win=7d"
    assert spec.names[-2] == "grp=all|stat=recency_days"
    assert spec.names[-1] == "grp=all|stat=history_days"
    assert spec.windows[spec.history_window].name == "365d"
    # 2 groups x 3 types x 6 windows x 3 stats + 2 recency features + history
    assert len(spec.names) == 2 * 3 * 6 * 3 + 2 + 1 == 111
    assert spec.recency_cap_days == DEFAULT_RECENCY_EDGES[-1] == 365


@pytest.mark.parametrize("spec", SPECS)
def test_group_of_feature(spec):
    for gi, g in enumerate(spec.all_groups):
        assert spec.group_of_feature(spec.recency_name(g)) == g
        for ti in range(len(spec.types)):
            assert spec.group_of_feature(spec.names[spec.counter_index(gi, ti, 0)]) == g
    assert spec.group_of_feature(spec.history_name) == ALL_GROUP


def test_group_of_feature_with_prefix_sharing_names():
    spec = FeatureSpec(groups=("tea", "tea_bags", "tea_b"))
    inputs = spec.default_inputs("tea")
    assert all(spec.group_of_feature(n) in ("tea", ALL_GROUP) for n in inputs)
    assert not any(n.startswith("grp=tea_") for n in inputs)


@pytest.mark.parametrize("spec", SPECS[:2] + SPECS[3:])
def test_default_inputs_only_own_group_and_all(spec):
    per_group = len(spec.types) * len(spec.windows) * len(STATS) + 1
    for g in spec.groups:
        inputs = spec.default_inputs(g)
        assert {spec.group_of_feature(n) for n in inputs} == {g, ALL_GROUP}
        assert len(inputs) == 2 * per_group + 1  # and history_days
        assert spec.recency_name(g) in inputs and spec.recency_name(ALL_GROUP) in inputs
        assert spec.history_name in inputs
        # in vector order
        assert [spec.index[n] for n in inputs] == sorted(spec.index[n] for n in inputs)
        for other in spec.groups:
            if other != g:
                assert not any(spec.group_of_feature(n) == other for n in inputs)


@pytest.mark.parametrize(
    "kw",
    [
        {"groups": ("a", "a")},
        {"groups": ("a", ALL_GROUP)},
        {"groups": ("a",), "recency_edges_days": ()},
        {"groups": ("a",), "recency_edges_days": (1, 2)},
        {"groups": ("a",), "recency_edges_days": (0, 2, 2)},
        {"groups": ("a",), "recency_edges_days": (0, 5, 3)},
        {"groups": ("a",), "unexpected": 1},
    ],
)
def test_invalid_specs_are_rejected(kw):
    with pytest.raises(ValidationError):
        FeatureSpec(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"bucket_seconds": 0, "n_buckets": 1},
        {"bucket_seconds": 60, "n_buckets": 0},
        {"bucket_seconds": 60, "n_buckets": 10_001},
    ],
)
def test_invalid_windows_are_rejected(kw):
    with pytest.raises(ValidationError):
        Window(name="w", **kw)


def test_window_span():
    assert [w.span_ms for w in DEFAULT_WINDOWS] == [
        86_400_000,
        7 * 86_400_000,
        30 * 86_400_000,
        90 * 86_400_000,
        180 * 86_400_000,
        365 * 86_400_000,
    ]


# --------------------------------------------------------------------------- ProductGroup


ROW = {
    "item_id": 1001,
    "department": "GROCERY",
    "product_category": "COFFEE",
    "product_type": "GROUND COFFEE",
    "brand": "National",
}


@pytest.mark.parametrize(
    ("kw", "row", "expected"),
    [
        ({"departments": ["GROCERY"]}, ROW, True),
        ({"departments": ["MEAT"]}, ROW, False),
        ({"categories": ["COFFEE"]}, ROW, True),
        ({"categories": ["TEA"]}, ROW, False),
        ({"product_types": ["GROUND COFFEE"]}, ROW, True),
        ({"product_types": ["INSTANT COFFEE"]}, ROW, False),
        ({"items": ["1001"]}, ROW, True),  # item ids compare as text
        ({"items": ["1001"]}, {**ROW, "item_id": "1001"}, True),
        ({"items": ["1002"]}, ROW, False),
        ({"departments": ["MEAT"], "categories": ["COFFEE"]}, ROW, True),  # any rule
        ({"categories": ["COFFEE"], "brand": "National"}, ROW, True),
        ({"categories": ["COFFEE"], "brand": ["Private", "National"]}, ROW, True),
        ({"categories": ["COFFEE"], "brand": "Private"}, ROW, False),  # brand restricts
        ({"categories": ["COFFEE"], "brand": "National"}, {**ROW, "brand": None}, False),
        ({"categories": ["COFFEE"]}, {"item_id": 5}, False),
        ({}, ROW, False),
        ({"categories": ["coffee"]}, ROW, False),  # exact, case-sensitive
    ],
)
def test_product_group_matches(kw, row, expected):
    assert ProductGroup(name="g", **kw).matches(row) is expected


def test_brand_string_becomes_tuple():
    assert ProductGroup(name="g", brand="National").brand == ("National",)


@pytest.mark.parametrize("name", ["all", "Coffee", "1abc", "", "a-b", "a b", "a" * 64, "_x"])
def test_invalid_group_names(name):
    with pytest.raises(ValidationError):
        ProductGroup(name=name)


@pytest.mark.parametrize("name", ["a", "coffee_tea", "a" * 63, "x9_"])
def test_valid_group_names(name):
    assert ProductGroup(name=name).name == name


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_base_rate_bounds(rate):
    with pytest.raises(ValidationError):
        ProductGroup(name="g", base_rate_30d=rate)


# --------------------------------------------------------------------------- load_groups


def test_load_groups_reads_tables_in_file_order(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(
        '[groups.zeta]\ncategories = ["COFFEE"]\nbrand = "National"\n\n'
        '[groups.alpha]\ndepartments = ["MEAT"]\nbase_rate_30d = 0.25\n'
    )
    gs = load_groups(p)
    assert [g.name for g in gs] == ["zeta", "alpha"]
    assert gs[0].categories == ("COFFEE",) and gs[0].brand == ("National",)
    assert gs[1].base_rate_30d == 0.25
    assert load_groups(str(p)) == gs


@pytest.mark.parametrize(
    "text",
    [
        None,  # missing file
        "",  # empty
        "# only a comment\n",
        "[other]\nx = 1\n",
        "groups = 3\n",
        "[groups]\n",
        "[groups.Bad-Name]\ncategories = []\n",
        "[groups.all]\ncategories = []\n",
        '[groups.ok]\ncategory = ["typo"]\n',  # unknown key
        "[groups.ok]\nbase_rate_30d = 2.0\n",
        "[groups]\nok = 5\n",  # a group that is not a table
        "[groups.ok\n",  # invalid TOML
    ],
)
def test_load_groups_errors_name_the_file(tmp_path, text):
    p = tmp_path / "my_groups.toml"
    if text is not None:
        p.write_text(text)
    with pytest.raises(GroupsFileError) as ei:
        load_groups(p)
    assert str(p) in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_bundled_completejourney_groups():
    gs = load_groups(GROUPS_FILE)
    assert len(gs) == 25
    names = [g.name for g in gs]
    assert len(set(names)) == 25
    assert ALL_GROUP not in names
    assert all(g.departments or g.categories or g.product_types or g.items for g in gs)
    assert all(g.base_rate_30d is None or 0 <= g.base_rate_30d <= 1 for g in gs)
    FeatureSpec(groups=tuple(names))  # a valid feature spec


# --------------------------------------------------------------------------- GroupCatalog


def test_group_catalog_groups_of():
    groups = (
        ProductGroup(name="coffee", categories=["COFFEE"]),
        ProductGroup(name="national", departments=["GROCERY"], brand="National"),
        ProductGroup(name="meat", departments=["MEAT"]),
    )
    products = [
        {"item_id": 1, "department": "GROCERY", "product_category": "COFFEE", "brand": "National"},
        {"item_id": "2", "department": "GROCERY", "product_category": "COFFEE", "brand": "Private"},
        {"item_id": 3, "department": "MEAT", "product_category": "BEEF", "brand": "Private"},
        {"item_id": 4, "department": "DRUG GM", "product_category": "SOAP", "brand": "National"},
    ]
    cat = GroupCatalog.build(groups, products)
    assert cat.all_index == 3
    assert cat.names == ("coffee", "national", "meat")
    assert cat.groups_of("1") == (0, 1, 3)
    assert cat.groups_of("2") == (0, 3)
    assert cat.groups_of("3") == (2, 3)
    assert cat.groups_of("4") == (3,)  # in the catalog but in no group
    assert cat.groups_of("999") == (3,)  # unknown item
    assert cat.groups_of("") == (3,)
    assert len(cat) == 3
    for item in ("1", "2", "3", "4", "999"):
        assert cat.groups_of(item)[-1] == cat.all_index


_VALUES = st.sampled_from(["A", "B", 1, 1.0, " 1", None])  # few values: catalog rows share column combinations
_RULE = st.lists(st.sampled_from(["A", "B", "1"]), max_size=2)


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(
        st.fixed_dictionaries(
            {
                "departments": _RULE,
                "categories": _RULE,
                "product_types": _RULE,
                "items": st.lists(st.integers(0, 9).map(str), max_size=2),
                "brand": _RULE,
            }
        ),
        max_size=4,
    ),
    rows=st.lists(
        st.fixed_dictionaries(
            {"item_id": st.integers(0, 9), "department": _VALUES, "product_category": _VALUES},
            optional={"product_type": _VALUES, "brand": _VALUES},
        ),
        max_size=30,
    ),
)
def test_catalog_build_equals_every_row_matched_on_its_own(rules, rows):
    """Rows agreeing on the matched columns share one evaluation; items listed by a rule are never shared."""
    groups = tuple(ProductGroup(name=f"g{i}", **r) for i, r in enumerate(rules))
    cat = GroupCatalog.build(groups, rows)
    expected: dict[str, tuple[int, ...]] = {}
    for row in rows:  # the last row of an item decides, as in build
        member = tuple(i for i, g in enumerate(groups) if g.matches(row))
        if member:
            expected[str(row["item_id"])] = (*member, len(groups))
    for item in map(str, range(10)):
        assert cat.groups_of(item) == expected.get(item, (len(groups),))


def test_empty_catalog():
    cat = GroupCatalog.build((), [])
    assert cat.all_index == 0
    assert cat.groups_of("x") == (0,)
    assert len(cat) == 0
