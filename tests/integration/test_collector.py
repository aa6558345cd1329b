"""The HTTP collector against a real Kafka broker, the stream and ClickHouse, and a real browser.

- bad input: clear 4xx per event, a dead letter with its reason for each, and the collector keeps serving;
- broker stopped: POSTs get 503 and nothing is acknowledged; once it is back, a client that retried has
  every event applied exactly once (by event id), and sent = applied + dead letters;
- a shop page with the snippet, in headless Chromium: a view, an add-to-cart and a purchase reach the
  customer's features and scores in ClickHouse (sendBeacon, and the pixel fallback).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import numpy as np
import pytest

from schemas.features import feature_name
from tests.integration.collector_helpers import RunningCollector, read_topic
from tests.integration.conftest import make_settings
from tests.integration.helpers import production_predict, state_config
from tests.integration.kafka_helpers import ROOT, dump_db, new_topic, stream_cmd, stream_env
from tools.kafka.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
SECRET = "secret-customer-7f3a"  # a user id that must never appear in the collector's log


def ev(user: str = SECRET, **kw) -> dict:
    return {"user_id": user, "item_id": "i1", "type": "view", **kw}


def post(url: str, content: bytes | str, **kw) -> httpx2.Response:
    return httpx2.post(f"{url}/events", content=content, timeout=30, **kw)


def run_stream(world, trained_dir: Path, work: Path, bootstrap: str, topic: str) -> tuple[dict, dict]:
    """`propstream run` over the topic until it is idle, then every table (the run's --json summary, the dump)."""
    shutil.copytree(trained_dir / "models", work / "models")
    dsn = f"chdb://{work / 'chdb'}"
    done = subprocess.run(
        [*stream_cmd(work, dsn, topic, bootstrap, world, []), "--json"],
        env=stream_env(world),
        cwd=ROOT,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), dump_db(dsn)


def test_bad_input_gets_a_4xx_per_event_and_dead_letters_with_reasons_and_the_collector_keeps_serving(bootstrap):
    topic = new_topic(bootstrap, 2)
    now = int(time.time() * 1000)
    ten_thousand = json.dumps([ev(event_id=str(i)) for i in range(10_000)])
    cases = [  # body, status, words expected in the reason of each rejected event (or of the request)
        (b'{"user_id": "secret-customer-7f3a", ', 400, ["bad JSON"]),
        (b"\xff\xfe garbage \x00", 400, ["bad JSON"]),
        (b"[" * 50_000 + b"]" * 50_000, 400, ["bad JSON"]),
        (b'"just a string"', 400, ["not an event"]),
        (b"[]", 400, ["empty batch"]),
        (
            json.dumps([ev(user_id=["u"]), ev(quantity="lots"), ev(timestamp=True), ev(value={"x": 1})]),
            400,
            ["user_id", "quantity", "timestamp", "value"],
        ),
        (
            json.dumps(
                [
                    ev(timestamp="3000-01-01T00:00:00Z"),
                    ev(timestamp=-5),
                    ev(timestamp=now + 3 * 86_400_000),
                    ev(timestamp="1999-12-31T23:59:59Z"),
                    ev(timestamp=1e20),
                ]
            ),
            400,
            ["timestamp", "timestamp", "in the future", "timestamp", "timestamp"],
        ),
        (b'[{"user_id": 1' + b"0" * 10_000 + b', "item_id": "i", "type": "view"}]', 400, ["bad JSON"]),
        (
            '[{"user_id": "\\ud800", "item_id": "i", "type": "view"}, {"user_id": "u", "item_id": "\\udfff", '
            '"type": "cart"}, {"user_id": "u", "item_id": "i", "type": "view", "event_id": "' + "\u00e9" * 129 + '"}]',
            400,
            ["user_id", "item_id", "event_id"],
        ),
        (
            json.dumps([ev(event_id="ok-1"), ev(type="levitate"), ev(event_id="ok-2", user_id="\U0001f6d2\u0000x")]),
            207,
            ["type"],
        ),
        (ten_thousand, 413, ["batch too large: 10,000 events > 500"]),
        (b"[" + b" " * 1_200_000 + b"]", 413, ["body too large"]),
    ]
    with RunningCollector(bootstrap, topic) as collector:
        reasons = []
        for content, status, words in cases:
            r = post(collector.url, content)
            assert r.status_code == status, (content[:80], r.text[:300])
            body = r.json()
            got = [x["reason"] for x in body["results"] if x["status"] == "rejected"] or [body["error"]]
            assert len(got) == len(words) and all(w in g for w, g in zip(words, got, strict=True)), got
            reasons += got
            assert httpx2.get(f"{collector.url}/health").status_code == 200  # still serving
        pixel = httpx2.get(f"{collector.url}/pixel.gif", params={"user_id": SECRET, "type": "jump"})
        assert pixel.headers["content-type"] == "image/gif" and pixel.headers["x-propstream-result"] == "rejected"
        reasons.append("pixel")
        ok = post(collector.url, json.dumps([ev(event_id="after"), ev(event_id="after-2", type="purchase")]))
        assert ok.status_code == 200 and ok.json()["accepted"] == 2
        metrics = httpx2.get(f"{collector.url}/metrics").text
        log = collector.stop()
    dead = read_topic(bootstrap, f"{topic}-dead-letters", len(reasons))
    assert len(dead) == len(reasons)
    assert sorted(d["reason"] for _, d in dead if d["source"].startswith("collector/events/")) == sorted(reasons[:-1])
    (pixel_dead,) = [d for _, d in dead if d["source"].startswith("collector/pixel/")]
    assert "type" in pixel_dead["reason"] and json.loads(pixel_dead["payload"])["type"] == "jump"
    assert all(d["received_at"] for _, d in dead)
    events = read_topic(bootstrap, topic, 4)
    assert sorted(v["event_id"] for _, v in events) == ["after", "after-2", "ok-1", "ok-2"]
    assert {k for k, _ in events} == {SECRET.encode(), "\U0001f6d2\u0000x".encode()}  # keyed by user_id
    assert 'propstream_collector_events_rejected_total{reason="batch too large"} 1.0' in metrics
    assert "propstream_collector_events_accepted_total 4.0" in metrics
    assert SECRET not in log and "levitate" not in log and "collect" in log  # no user id, no body in the log


def test_two_workers_share_the_port_and_metrics_count_both(bootstrap):
    topic = new_topic(bootstrap, 2)
    with RunningCollector(bootstrap, topic, workers=2) as collector, ThreadPoolExecutor(8) as pool:
        bodies = [json.dumps(ev(f"w{i % 7}", event_id=f"w{i}")) for i in range(60)]
        assert set(pool.map(lambda b: post(collector.url, b).status_code, bodies)) == {200}
        # Whichever worker answers, /metrics sums both: with per-process counters it would say about 30.
        for _ in range(4):
            assert "propstream_collector_events_accepted_total 60.0" in httpx2.get(f"{collector.url}/metrics").text
    assert sorted(v["event_id"] for _, v in read_topic(bootstrap, topic, 60)) == sorted(f"w{i}" for i in range(60))


def shop_events(users: list[str], per_user: int, now_ms: int) -> list[dict]:
    """Valid events with ids, within the last hour, and one invalid event (with an id) in every 10."""
    out = []
    for n in range(per_user * len(users)):
        user = users[n % len(users)]
        kind = ("view", "cart", "purchase")[n % 3]
        out.append(
            ev(
                user,
                item_id=f"i{n % 40}",
                type=kind,
                event_id=f"e{n}",
                timestamp=now_ms - 3_600_000 + n * 1000,
                value=1.25 if kind == "purchase" else 0,
            )
        )
        if n % 10 == 9:
            out.append(ev(user, type="levitate", event_id=f"bad{n}"))
    return out


def count_of(features: dict, user: str, kind: str) -> float:
    return features[user].get(feature_name("all", kind, "count", "1d"), 0.0)


def test_with_the_broker_stopped_nothing_is_acknowledged_and_a_client_that_retried_has_each_event_applied_once(
    world, trained_dir, tmp_path
):
    users = [f"c{u}" for u in range(12)]
    sent = shop_events(users, 20, int(time.time() * 1000))
    batches = [sent[i : i + 11] for i in range(0, len(sent), 11)]
    statuses: list[int] = []
    with LocalBroker(data_dir=tmp_path / "kafka") as broker:  # our own broker: this test stops it
        topic = new_topic(broker.bootstrap, 2)
        with RunningCollector(broker.bootstrap, topic, ack_timeout_seconds=2, retry_after_seconds=1) as collector:

            def send(batch: list[dict], retry: bool) -> int:
                for _ in range(120):
                    try:
                        r = post(collector.url, json.dumps(batch))
                    except httpx2.TransportError:
                        statuses.append(0)
                    else:
                        statuses.append(r.status_code)
                        if r.status_code != 503:
                            return r.status_code
                        assert int(r.headers["retry-after"]) >= 1 and r.json()["accepted"] == 0
                    if not retry:
                        return 503
                    time.sleep(1)
                raise AssertionError("no answer but 503 for two minutes")

            assert {send(b, retry=False) for b in batches[:8]} == {207}
            broker.stop()
            outage = [send(b, retry=False) for b in batches[8:14]]
            assert outage == [503] * 6  # nothing acknowledged while the broker is down
            assert httpx2.get(f"{collector.url}/health").status_code == 503
            broker.start()
            assert {send(b, retry=True) for b in batches[8:]} == {207}  # the retried ones and the rest
            assert httpx2.get(f"{collector.url}/health").status_code == 200
        dead = read_topic(broker.bootstrap, f"{topic}-dead-letters", 1)
        summary, db = run_stream(world, trained_dir, tmp_path / "run", broker.bootstrap, topic)
    valid = [e for e in sent if e["type"] != "levitate"]
    invalid_ids = {e["event_id"] for e in sent if e["type"] == "levitate"}
    applied_ids = sorted(k.split("|")[2] for k in db["events"])
    assert applied_ids == sorted(e["event_id"] for e in valid)  # every event, once
    assert summary["applied"] == len(valid)  # a copy that reached Kafka from a 503'd attempt was not applied
    assert summary["events_in"] - summary["applied"] == summary["dead_letters"]  # only such duplicates
    assert all(r.startswith("duplicate") for r in {k.split("|", 1)[1] for k in db["dead_letters"]})
    dead_ids = {json.loads(d["payload"])["event_id"] for _, d in dead}
    assert dead_ids == invalid_ids
    assert len(sent) == summary["applied"] + len(dead_ids)  # sent = applied + dead letters
    features = {u: f for u, (_, f) in db["features"].items()}
    for user in users:
        for kind in ("view", "cart", "purchase"):
            assert count_of(features, user, kind) == sum(e["user_id"] == user and e["type"] == kind for e in valid)
    assert 503 in statuses and statuses.count(207) == len(batches)


SHOP = """<!doctype html>
<html><head><title>shop: {item}</title>
<script src="{collector}/propstream.js"></script>
<script>
  var q = new URLSearchParams(location.search);
  propstream.init({{user: q.get("user"), transport: q.get("transport") || "beacon"}});
  propstream.view("{item}");
</script></head>
<body>
  <h1>Coffee beans</h1>
  <button id="add" onclick="propstream.cart('{item}', {{quantity: 2, value: 7.5}})">Add to cart</button>
  <button id="buy" onclick="buy()">Buy</button>
  <p id="done"></p>
<script>
  function buy() {{
    propstream.purchase("{item}", {{quantity: 2, value: 7.5}});
    if (q.get("transport") === "pixel") {{
      propstream.flush();  // pixels may be cancelled by leaving the page: send them, and stay
      document.getElementById("done").textContent = "thanks";
    }} else location.href = "thanks.html";  // leaving the page sends the batch (pagehide -> sendBeacon)
  }}
</script>
</body></html>
"""


@pytest.fixture
def shop(tmp_path):
    """A directory of static pages on a local HTTP server (the shop, not the collector)."""
    root = tmp_path / "shop"
    root.mkdir()
    (root / "thanks.html").write_text("<!doctype html><title>thanks</title><p>Thank you")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.browser
def test_a_shop_page_with_the_snippet_puts_a_view_a_cart_and_a_purchase_into_features_and_scores(
    world, trained_dir, bootstrap, shop, chromium, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, origin = shop
    topic = new_topic(bootstrap, 2)
    item = "i0"  # COFFEE in the synthetic catalog: groups coffee and breakfast
    users = {f"web-{uuid.uuid4().hex[:6]}": "beacon", f"px-{uuid.uuid4().hex[:6]}": "pixel"}
    with RunningCollector(bootstrap, topic, origins=origin) as collector:
        (root / "product.html").write_text(SHOP.format(item=item, collector=collector.url))
        for user, transport in users.items():
            chromium.get(f"{origin}/product.html?user={user}&transport={transport}")
            chromium.find_element(By.ID, "add").click()
            chromium.find_element(By.ID, "buy").click()
            if transport == "beacon":
                WebDriverWait(chromium, 20).until(lambda d: d.title == "thanks")
            else:
                WebDriverWait(chromium, 20).until(lambda d: d.find_element(By.ID, "done").text == "thanks")
        events = read_topic(bootstrap, topic, 6, timeout=30)
        log = collector.stop()
    assert len(events) == 6
    for user in users:
        mine = [v for k, v in events if k == user.encode()]
        assert sorted(e["type"] for e in mine) == ["cart", "purchase", "view"]
        assert all(e["item_id"] == item and e["event_id"].startswith("js:") for e in mine)
        assert len({e["event_id"] for e in mine}) == 3
        assert all(abs(e["timestamp"] - time.time() * 1000) < 600_000 for e in mine)  # stamped by the page
        assert [e["value"] for e in mine if e["type"] != "view"] == [7.5, 7.5]
    assert not any(u in log for u in users)

    summary, db = run_stream(world, trained_dir, tmp_path / "run", bootstrap, topic)
    assert (summary["applied"], summary["dead_letters"]) == (6, 0)
    settings = make_settings(tmp_path / "run", world, "chdb:///unused")
    spec = state_config(settings).spec
    for user in users:
        _, features = db["features"][user]
        for kind in ("view", "cart", "purchase"):
            for group in ("coffee", "breakfast", "all"):
                assert features[feature_name(group, kind, "count", "1d")] == 1.0
            assert feature_name("snacks", kind, "count", "1d") not in features  # the item is not a snack
        assert features[feature_name("coffee", "purchase", "value", "1d")] == 7.5
        row = state_config(settings).new_row()
        for name, value in features.items():
            row[spec.index[name]] = value
        for group in spec.groups:
            expected, model_version = production_predict(settings, group, row[np.newaxis, :])
            _, score, stored_version = db["scores"][f"{user}|{group}"]
            assert (score, stored_version) == (pytest.approx(float(expected[0])), model_version)
