"""The HTTP layer with Kafka unreachable (a real producer aimed at a closed port): pixels stay GIFs, POSTs get 503."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from collector.app import PIXEL, create_app
from collector.snippet import snippet_js
from schemas.settings import CollectorSettings, KafkaSettings, Settings
from tools.kafka.broker import free_port

ORIGIN = "https://shop.example"


def unreachable_kafka_client():
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="nowhere"),
        collector=CollectorSettings(
            ack_timeout_seconds=0.5, retry_after_seconds=7, health_timeout_seconds=0.5, allowed_origins=ORIGIN
        ),
    )
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client():
    with unreachable_kafka_client() as c:
        yield c


def gif_1x1_transparent(data: bytes) -> bool:
    """A GIF89a of 1x1 pixels whose graphic control extension marks a transparent colour."""
    width, height, packed = struct.unpack("<HHB", data[6:11])
    gce = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)  # after the global colour table
    return (
        data[:6] == b"GIF89a"
        and (width, height) == (1, 1)
        and data[gce : gce + 3] == b"\x21\xf9\x04"
        and bool(data[gce + 3] & 1)
        and data.endswith(b";")
    )


@pytest.mark.parametrize(
    "query",
    [
        "user_id=u1&item_id=i1&type=view",
        "user_id=u1&item_id=i1&type=levitate&timestamp=99999999999999999999999",
        "",
        "user_id=" + "%F0%9F%9B%92" * 2000 + "&type=view",
        "user_id=%ED%A0%80&item_id=%00&type=cart&value=NaN&quantity=-1",
        "timestamp=1e400&timestamp=[]&event_id=" + "x" * 500,
    ],
    ids=["valid", "absurd", "empty", "long-unicode", "garbage", "repeated"],
)
def test_a_pixel_is_a_transparent_1x1_gif_that_is_never_cached_whatever_happens(client, query):
    r = client.get(f"/pixel.gif?{query}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert "no-store" in r.headers["cache-control"]
    assert r.content == PIXEL and gif_1x1_transparent(r.content)
    assert r.headers["x-propstream-result"] == "unavailable"  # Kafka is down: nothing was accepted


def test_kafka_down_is_503_with_retry_after_and_then_503_at_once_until_retry_after():
    with unreachable_kafka_client() as client:
        _503_then_503_at_once(client)


def _503_then_503_at_once(client):
    event = {"user_id": "u1", "item_id": "i1", "type": "view", "event_id": "e1"}
    t0 = time.monotonic()
    first = client.post("/events", json=[event])
    assert first.status_code == 503 and first.headers["retry-after"] == "7"
    assert first.json()["accepted"] == 0 and "Kafka unavailable" in first.json()["error"]
    t1 = time.monotonic()
    again = client.post("/events", json=event)
    assert again.status_code == 503 and "recent deliveries" in again.json()["error"]
    assert time.monotonic() - t1 < 0.5 <= t1 - t0 + 0.1  # the first waited for the broker, the second did not
    invalid = client.post("/events", content=b"{not json")  # its dead letter cannot be written either
    assert invalid.status_code == 503


def test_health_is_503_and_says_why_while_kafka_is_unreachable(client):
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "unavailable" and r.json()["kafka"]


def test_metrics_count_requests_by_endpoint_and_status(client):
    client.post("/events", json={"user_id": "u"})
    text = client.get("/metrics").text
    assert 'propstream_collector_requests_total{endpoint="events",status="503"}' in text
    assert "propstream_collector_kafka_queue_depth" in text
    assert 'propstream_collector_kafka_delivery_failures_total{error="recent_failure"}' in text


def test_cors_allows_the_configured_origins_only(client):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = client.options("/events", headers={"Origin": ORIGIN, **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    refused = client.options("/events", headers={"Origin": "https://evil.example", **pre})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_the_snippet_is_served_and_printed_alike(client):
    r = client.get("/propstream.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert r.text == snippet_js()
    printed = subprocess.run(
        [sys.executable, "-m", "propstream", "snippet"], capture_output=True, text=True, check=True, timeout=60
    )
    assert printed.stdout == snippet_js()
    for call in ("propstream.init(", "propstream.view(", "propstream.cart(", "propstream.purchase(", "sendBeacon"):
        assert call in printed.stdout


def test_the_snippet_is_valid_javascript(tmp_path):
    import shutil

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node here to check syntax; the browser test runs the snippet")
    path = tmp_path / "propstream.js"
    path.write_text(snippet_js())
    subprocess.run([node, "--check", str(path)], check=True, timeout=60)
