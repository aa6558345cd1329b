"""Grafana dashboard JSON as SQL: every panel's query with the ClickHouse plugin's macros and variables expanded.

Used by tests/integration/test_grafana.py to run each query against the embedded store, so that a dashboard
under deploy/grafana cannot break silently. Macros are those of grafana-clickhouse-datasource; an unknown one
is an error here (it would reach ClickHouse as text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    kind: str
    sql: str  # raw, as in the JSON
    columns: tuple[str, ...]  # the columns the panel uses: its field overrides by name, and its x field


def panel_queries() -> Iterator[PanelQuery]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            names = [
                o["matcher"]["options"]
                for o in panel.get("fieldConfig", {}).get("overrides", [])
                if o["matcher"]["id"] == "byName"
            ]
            if panel.get("options", {}).get("xField"):
                names.append(panel["options"]["xField"])
            for target in panel["targets"]:
                columns = tuple(dict.fromkeys(names))
                yield PanelQuery(path.stem, panel["title"], panel["type"], target["rawSql"], columns)


def variables(path_stem: str) -> list[dict]:
    return json.loads((DASHBOARDS / f"{path_stem}.json").read_text())["templating"]["list"]


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_s: int

    @property
    def s(self) -> tuple[int, int]:
        return int(self.start.timestamp()), int(self.end.timestamp())


def _args(text: str, start: int) -> tuple[str, int]:
    """The text between the parenthesis at ``start`` and its match, and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise ValueError(f"unbalanced parentheses after {text[:start]!r}")


def expand(sql: str, values: dict[str, str], tr: TimeRange) -> str:
    """``sql`` with the plugin's macros and the template variables ``values`` replaced."""
    f, t = tr.s
    plain: dict[str, str] = {
        "fromTime": f"toDateTime({f})",
        "toTime": f"toDateTime({t})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({f * 1000})",
        "toTime_ms": f"fromUnixTimestamp64Milli({t * 1000})",
        "interval_s": str(tr.interval_s),
    }
    with_args: dict[str, Callable[[str], str]] = {
        "timeFilter": lambda c: f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})",
        "timeFilter_ms": lambda c: (
            f"{c} >= fromUnixTimestamp64Milli({f * 1000}) AND {c} <= fromUnixTimestamp64Milli({t * 1000})"
        ),
        "dateFilter": lambda c: f"{c} >= toDate({f}) AND {c} <= toDate({t})",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {tr.interval_s} second)",
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {tr.interval_s} second)",
    }
    out, i = [], 0
    for m in re.finditer(r"\$__(\w+)", sql):
        if m.start() < i:
            continue
        name = m.group(1)
        out.append(sql[i : m.start()])
        if name in with_args and m.end() < len(sql) and sql[m.end()] == "(":
            inner, i = _args(sql, m.end())
            out.append(with_args[name](inner.strip()))
        elif name in plain:
            out.append(plain[name])
            i = m.end()
        else:
            raise ValueError(f"unknown Grafana macro $__{name} in {sql!r}")
    out.append(sql[i:])
    text = "".join(out)

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise ValueError(f"template variable ${name} has no value")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", var, text)
