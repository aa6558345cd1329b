"""The web dashboard over a real run's store (``dashboard_run``: trending on, a known surge, dead letters).

- the running stream serves it from its own process while it writes, and stops serving when it ends;
- in headless Chromium, what a person sees equals the store: the surging item first in the surge table,
  counts and forecasts as in ``trending``, a histogram per group, segment sizes equal to a SQL count,
  dead-letter reasons, model versions; a screenshot is kept at ``test-artifacts/dashboard.png``;
- ``propstream dashboard`` serves a stopped stream's store from its own process; a second one on the same
  embedded store fails in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx2
import pytest

from tests.integration.dashboard_helpers import BAD_LINES, SURGE_END, SURGE_ITEM, query
from tests.integration.kafka_helpers import ROOT
from tests.synthetic import make_world, write_jsonl
from tools.kafka.broker import free_port

pytestmark = pytest.mark.integration
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
AT = SURGE_END.strftime("%Y-%m-%dT%H:%M")


def test_a_running_stream_serves_the_dashboard_while_it_writes_and_stops_with_it(dashboard_run):
    assert dashboard_run.url.startswith("http://127.0.0.1:")
    during = dashboard_run.during
    print(f"{len(during)} pages mid-run, after {[a for *_, a in during]} of {dashboard_run.stats.applied} events")
    assert during and all(status == 200 for status, _, _ in during)
    assert all("propstream dashboard" in body and "Pipeline health" in body for _, body, _ in during)
    assert during[0][2] < dashboard_run.stats.applied  # read while the stream still had events to write
    with pytest.raises(httpx2.TransportError):
        httpx2.get(dashboard_run.url + "/health", timeout=5)


def trend_rows(settings, scope: str, rank: str, end: str, type_: str = "view") -> list[tuple]:
    return query(
        settings,
        "SELECT key, count, round(expected, 1) FROM {db}.trending FINAL "
        "WHERE window = '1h' AND scope = {s:String} AND type = {t:String} AND window_end = {e:DateTime('UTC')} "
        f"AND {rank} BETWEEN 1 AND 10 ORDER BY {rank}",
        s=scope,
        t=type_,
        e=end,
    )


def table_rows(driver, table_id: str, type_: str = "view") -> list[tuple[str, int, float]]:
    from selenium.webdriver.common.by import By

    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr[data-type='{type_}']"):
        key, count, expected = (tr.find_element(By.CSS_SELECTOR, f"td.{c}").text for c in ("key", "count", "expected"))
        out.append((key, int(count), float(expected)))
    return out


@pytest.mark.browser
def test_the_dashboard_shows_in_a_browser_what_the_store_holds(dashboard_run, chromium):
    from selenium.webdriver.common.by import By

    settings = dashboard_run.settings
    from dashboard import DashboardThread
    from propstream import app

    with DashboardThread(settings, app.client_for(settings)) as board:
        chromium.set_window_size(1400, 1000)
        chromium.get(f"{board.url}/?window=1h&at={AT}")
        assert chromium.title == "propstream dashboard"
        end = chromium.find_element(By.ID, "window-end").text
        assert end == SURGE_END.strftime("%Y-%m-%d %H:%M")
        end_sql = end + ":00"

        # Trending: the surging item first, every row as the table has it.
        surging = table_rows(chromium, "surge-items")
        assert surging[0][0] == SURGE_ITEM
        assert surging == [(k, c, e) for k, c, e in trend_rows(settings, "item", "surge_rank", end_sql)]
        # 60 extra views, far above the forecast (a 1 h half-life partly caught up in the surge's first steps)
        assert surging[0][1] >= 60 and surging[0][2] < surging[0][1] / 3
        popular = table_rows(chromium, "top-items")
        assert popular == [(k, c, e) for k, c, e in trend_rows(settings, "item", "rank", end_sql)]
        groups = table_rows(chromium, "surge-groups")
        assert groups and groups[0][0] in ("coffee", "breakfast")  # the surging item's groups
        assert groups == [(k, c, e) for k, c, e in trend_rows(settings, "group", "surge_rank", end_sql)]
        categories = table_rows(chromium, "top-categories")
        assert categories and categories == [(k, c, e) for k, c, e in trend_rows(settings, "category", "rank", end_sql)]
        chart = chromium.find_element(By.CSS_SELECTOR, f"figure.series-chart[data-key='{SURGE_ITEM}']")
        assert chart.find_elements(By.CSS_SELECTOR, "svg path.line")  # count and forecast drawn

        # Scores: one histogram per group with scores, its bars summing to the group's customers.
        scored = dict(query(settings, "SELECT group_id, count() FROM {db}.scores FINAL GROUP BY group_id"))
        figures = chromium.find_elements(By.CSS_SELECTOR, "#histograms figure.histogram")
        assert sorted(f.get_attribute("data-group") for f in figures) == sorted(scored)
        for f in figures:
            bars = f.find_elements(By.CSS_SELECTOR, "svg rect.rect")
            assert len(bars) == settings.dashboard.histogram_bins
            values = [d.get_attribute("textContent") for d in f.find_elements(By.CSS_SELECTOR, "svg desc.value")]
            assert sum(int(v) for v in values) == scored[f.get_attribute("data-group")]
        # Segment sizes: the cell at 0.5 is the SQL count of customers scoring at least 0.5.
        for group in scored:
            row = chromium.find_element(By.CSS_SELECTOR, f"#segments tr[data-group='{group}']")
            cell = row.find_element(By.CSS_SELECTOR, "td[data-threshold='0.5']")
            [(n,)] = query(
                settings, "SELECT count() FROM {db}.scores FINAL WHERE group_id = {g:String} AND score >= 0.5", g=group
            )
            assert int(cell.text) == n

        # Pipeline health: dead letters by reason, freshness and models per group, the rate charts.
        reasons = [td.text for td in chromium.find_elements(By.CSS_SELECTOR, "#dead-letters td.reason")]
        stored = query(settings, "SELECT DISTINCT splitByChar(':', reason)[1] FROM {db}.dead_letters FINAL")
        assert sorted(reasons) == sorted(r for (r,) in stored)
        assert {"bad JSON", "not an object"} <= set(reasons)
        counts = [int(td.text) for td in chromium.find_elements(By.CSS_SELECTOR, "#dead-letters td.num")]
        assert sum(counts) == len(BAD_LINES)
        fresh = [tr.text.split()[0] for tr in chromium.find_elements(By.CSS_SELECTOR, "#freshness tbody tr")]
        assert sorted(fresh) == sorted(scored)
        production = chromium.find_elements(By.CSS_SELECTOR, "#models tbody tr.production")
        assert sorted(tr.text.split()[0] for tr in production) == sorted(scored)
        assert chromium.find_elements(By.CSS_SELECTOR, "#events-rate svg")
        assert chromium.find_elements(By.CSS_SELECTOR, "#writes-rate svg")

        height = chromium.execute_script("return document.body.scrollHeight")
        chromium.set_window_size(1400, min(int(height) + 100, 8000))
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert chromium.save_screenshot(str(SCREENSHOT))
        print(f"dashboard screenshot: {SCREENSHOT}")

        # One series' page: its count-vs-forecast history over the last window ends, as the table holds it.
        chromium.find_element(By.CSS_SELECTOR, f"#surge-items tr[data-key='{SURGE_ITEM}'] td.key a").click()
        rows = [tr.text.split() for tr in chromium.find_elements(By.CSS_SELECTOR, "#series tbody tr")]
        history = query(
            settings,
            "SELECT formatDateTime(window_end, '%Y-%m-%d %H:%i', 'UTC'), count, round(expected, 1) "
            "FROM {db}.trending FINAL WHERE window = '1h' AND scope = 'item' AND type = 'view' AND key = {k:String} "
            "AND window_end <= {e:DateTime('UTC')} "
            "AND window_end >= (SELECT min(w) FROM (SELECT DISTINCT window_end AS w FROM {db}.trending "
            "WHERE window = '1h' AND window_end <= {e:DateTime('UTC')} ORDER BY w DESC "
            "LIMIT {n:UInt32}))",
            k=SURGE_ITEM,
            e=end_sql,
            n=settings.dashboard.history_windows,
        )
        shown = [(f"{d} {t}", int(c), float(e)) for d, t, c, e in rows]
        assert shown[-1][0] == end and shown == sorted((str(a), int(b), float(c)) for a, b, c in history)
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_propstream_dashboard_serves_a_stopped_streams_store(tmp_path):
    world = make_world(tmp_path / "world", n_events=2000)
    events = write_jsonl(tmp_path / "events.jsonl", [*world.events, "{not json"])
    dsn = f"chdb://{tmp_path / 'chdb'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROPSTREAM_TRENDING__ENABLED": "true",
        "PROPSTREAM_GROUPS_FILE": str(world.groups_file),
        "PROPSTREAM_CATALOG_FILE": str(world.catalog_file),
    }
    common = ["--data-dir", str(tmp_path), "--clickhouse", dsn]
    run = subprocess.run(
        [sys.executable, "-m", "propstream", "run", "--input", str(events), *common, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1])["dead_letters"] == 1
    port = free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "propstream", "dashboard", *common, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        page = _get_when_up(f"http://127.0.0.1:{port}/", board)
        assert page.status_code == 200
        assert "propstream dashboard" in page.text and "bad JSON" in page.text
        assert 'id="top-items"' in page.text and "<svg" in page.text  # trending rows and charts
        second = subprocess.run(  # the store is held by the first: our one-line error, exit 1
            [sys.executable, "-m", "propstream", "dashboard", *common, "--port", str(free_port())],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ours = second.stderr.strip().splitlines()[-1]  # (chDB's engine prints its own line before it)
        assert second.returncode == 1 and ours.startswith("propstream dashboard: cannot open embedded ClickHouse")
        assert "only one process may open a chDB path" in ours
    finally:
        board.terminate()
        board.wait(30)
    assert f"dashboard on http://127.0.0.1:{port}" in board.stderr.read()


def _get_when_up(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> httpx2.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"propstream dashboard exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            return httpx2.get(url, timeout=60)
        except httpx2.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"propstream dashboard did not answer in {timeout} s")


def test_screenshot_path_is_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SCREENSHOT)], cwd=ROOT)
    assert ignored.returncode == 0
