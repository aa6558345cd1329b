"""Every SQL query of the Grafana dashboards (deploy/grafana/dashboards) runs on a real run's store.

The store is ``dashboard_run``'s (trending on, a known surge, dead letters, production models). Each
panel's query has the plugin's macros expanded over a time range covering the run (event time in 2017,
write time today; for trending, ending at the surge) and its variables set (query variables by running
their own query, custom ones at their current value, text boxes to the surging item); it must run,
return every column the panel uses, and return rows: the run has data for every panel.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from propstream import app
from schemas.tables import TABLES
from tests.integration.dashboard_helpers import SURGE_END, SURGE_ITEM
from tests.integration.grafana import TimeRange, expand, panel_queries, variables

pytestmark = pytest.mark.integration
QUERIES = list(panel_queries())
RANGE = TimeRange(datetime(2017, 1, 1, tzinfo=UTC), datetime.now(tz=UTC) + timedelta(days=1), 3600)
# Trending tables show the last window end in the range: a person looking at the surge picks a range ending there.
RANGES = {"trending": TimeRange(RANGE.start, SURGE_END, 900)}
TEXTBOXES = {"item": SURGE_ITEM}


def in_database(sql: str, database: str) -> str:
    """``propstream.<table>`` in the test's own database; a table the schema does not declare fails here."""

    def table(m: re.Match) -> str:
        assert m.group(1) in TABLES, f"a query reads propstream.{m.group(1)}: not declared in schemas/tables.py"
        return f"{database}.{m.group(1)}"

    return re.sub(r"\bpropstream\.(\w+)", table, sql)


def values_of(stem: str, client, database: str) -> dict[str, str]:
    out = {}
    for v in variables(stem):
        if v["type"] == "query":
            rows = client.query(in_database(expand(v["query"], {}, RANGE), database)).result_rows
            assert rows, f"variable ${v['name']} of {stem} has no values"
            out[v["name"]] = str(rows[0][0])
        elif v["type"] == "textbox":
            out[v["name"]] = TEXTBOXES[v["name"]]
        else:
            out[v["name"]] = str(v["current"]["value"])
    return out


def test_the_dashboards_have_the_three_topics_and_panels_with_queries():
    assert {q.dashboard for q in QUERIES} == {"trending", "scores", "pipeline-health"}
    assert all(q.columns for q in QUERIES)  # each panel names the columns it shows


@pytest.mark.parametrize("q", QUERIES, ids=[f"{q.dashboard}:{q.panel}" for q in QUERIES])
def test_every_panel_query_runs_and_returns_the_columns_the_panel_uses(dashboard_run, q):
    settings = dashboard_run.settings
    client = app.client_for(settings)
    db = settings.clickhouse.database
    sql = in_database(expand(q.sql, values_of(q.dashboard, client, db), RANGES.get(q.dashboard, RANGE)), db)
    result = client.query(sql)
    assert set(q.columns) <= set(result.column_names), (q.columns, result.column_names)
    if q.kind == "timeseries":
        assert "time" in result.column_names
    assert result.result_rows, f"no rows: {sql}"


def test_macro_expansion():
    tr = TimeRange(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 1, 2, tzinfo=UTC), 60)
    sql = "SELECT $__timeInterval(ts) t FROM x WHERE $__timeFilter(toDate(ts)) AND k = '${item}' AND w = '$window'"
    assert expand(sql, {"item": "i5", "window": "1h"}, tr) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) t FROM x WHERE toDate(ts) >= "
        "toDateTime(1483228800) AND toDate(ts) <= toDateTime(1483315200) AND k = 'i5' AND w = '1h'"
    )
    with pytest.raises(ValueError, match="unknown Grafana macro"):
        expand("SELECT $__nope(x)", {}, tr)
    with pytest.raises(ValueError, match="no value"):
        expand("SELECT '$missing'", {}, tr)
