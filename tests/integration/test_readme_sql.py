"""README's "Trending for merchandisers" SQL, run verbatim on a real run's store (``dashboard_run``).

Only the database name (``propstream.`` becomes the test's) and the example item id (a Complete Journey
product in the README, the synthetic world's surging item here) are replaced.
"""

from __future__ import annotations

import re

import pytest

from propstream import app
from tests.integration.dashboard_helpers import STEADY_ITEM, SURGE_END, SURGE_ITEM
from tests.integration.grafana import ROOT

pytestmark = pytest.mark.integration
README_ITEM = "1082185"


def merchandiser_queries() -> dict[str, str]:
    """The section's statements by their comment line."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Trending for merchandisers", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sql\n(.*?)```", section, re.S)
    out = {}
    for statement in filter(str.strip, block.split(";")):
        comment, _, sql = statement.strip().partition("\n")
        assert comment.startswith("-- "), statement
        out[comment.removeprefix("-- ")] = sql
    return out


QUERIES = merchandiser_queries()


def run(settings, question: str) -> list[dict]:
    (key,) = [k for k in QUERIES if k.startswith(question)]
    sql = QUERIES[key].replace("propstream.", f"{settings.clickhouse.database}.").replace(README_ITEM, SURGE_ITEM)
    result = app.client_for(settings).query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_the_section_asks_the_questions():
    assert len(QUERIES) == 5


def test_top_items_by_views_in_the_last_hour(dashboard_run):
    rows = run(dashboard_run.settings, "top 10 items by views")
    assert rows[0]["item"] == STEADY_ITEM and rows[0]["views"] == 30  # a view every 2 minutes
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))


def test_what_is_surging_now_and_at_a_past_moment(dashboard_run):
    now = run(dashboard_run.settings, "what is surging now")
    assert SURGE_ITEM not in [r["item"] for r in now]  # days after its hour, the item is quiet again
    assert SURGE_END.strftime("%Y-%m-%d %H:%M:%S") in QUERIES[next(k for k in QUERIES if "past moment" in k)]
    then = run(dashboard_run.settings, "what was surging at a past moment")
    assert then[0]["item"] == SURGE_ITEM and then[0]["count"] >= 60 and then[0]["forecast"] < then[0]["count"] / 3


def test_an_items_views_against_their_forecast(dashboard_run):
    rows = run(dashboard_run.settings, "an item's views against their forecast")
    at_surge = [r for r in rows if r["window_end"].strftime("%Y-%m-%d %H:%M") == SURGE_END.strftime("%Y-%m-%d %H:%M")]
    assert len(at_surge) == 1 and at_surge[0]["views"] >= 60 and at_surge[0]["surge_rank"] == 1
    assert len(rows) > 1  # the windows before it, up to the surge, are on the same rows


def test_top_groups_by_purchases_over_24_hours(dashboard_run):
    rows = run(dashboard_run.settings, "top 10 product groups by purchases")
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["purchases"] >= rows[-1]["purchases"] for r in rows)
