"""Trending under faults through Kafka: kill -9 + resume, and two processes, write the rows of one clean process.

The trending table is compared whole (every window end, scope, type and key:
count, forecast, surge and both ranks), read back like every other table
(``tests.integration.dump``). Trend shards (3) and customer shards (16) spread
over the processes; windows of 1h/30m and 24h/6h over ten days of events keep
the run short. Run alone with ``pytest -m chaos tests/integration/test_trending_chaos.py``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from propstream import app
from stream.recovery import MARKER
from tests.integration.conftest import make_settings
from tests.integration.dump import merge, values
from tests.integration.kafka_helpers import (
    ROOT,
    dump_db,
    free_addresses,
    stream_cmd,
    stream_env,
    topic_with,
    wait_started,
)
from tests.synthetic import make_world

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.chaos]
TRENDING = {
    "PROPSTREAM_TRENDING__ENABLED": "true",
    "PROPSTREAM_TRENDING__WINDOWS": '["1h/30m", "24h/6h"]',
    "PROPSTREAM_TRENDING__TOP_N": "5",
    "PROPSTREAM_TRENDING__SHARDS": "3",
    "PROPSTREAM_TRENDING__MIN_SUPPORT": "2",
}


@pytest.fixture(scope="module")
def trend_world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("trend-chaos"), n_users=300, n_events=12_000, days=10, seed=21)


@pytest.fixture(scope="module")
def trend_topic(trend_world, bootstrap, tmp_path_factory):
    return topic_with(trend_world.events, bootstrap, tmp_path_factory.mktemp("tt"))


def start(cmd: list[str], world) -> subprocess.Popen:
    env = stream_env(world, **TRENDING)
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]


def trending_rows(dsns: list[str]) -> dict:
    return values(merge([dump_db(d) for d in dsns]))["trending"]


@pytest.fixture(scope="module")
def clean(trend_world, trend_topic, bootstrap, tmp_path_factory) -> dict:
    """One process, no recovery, from the start of the topic to its end (features only: no models)."""
    work = tmp_path_factory.mktemp("trend-clean")
    dsn = f"chdb://{work / 'chdb'}"
    finish(start(stream_cmd(work, dsn, trend_topic, bootstrap, trend_world, []), trend_world))
    rows = trending_rows([dsn])
    scopes = {k.split("|")[1] for k in rows}
    windows = {k.split("|")[0] for k in rows}
    assert scopes == {"item", "group", "category"} and windows == {"1h", "24h"}
    assert len(rows) > 1_000 and any(r[4] for r in rows.values())  # some surge ranks too
    return rows


def test_kill_9_at_random_moments_then_resume_writes_the_trending_rows_of_a_clean_run(
    trend_world, trend_topic, bootstrap, tmp_path, clean
):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    recovery = ["--recovery-dir", str(tmp_path / "recovery"), "--snapshot-seconds", "1"]
    cmd = stream_cmd(tmp_path, dsn, trend_topic, bootstrap, trend_world, recovery)
    rng = random.Random(12)
    kills = 0
    while kills < 5:
        fresh = [] if (tmp_path / "recovery" / MARKER).exists() else ["--fresh"]
        proc = start(cmd + fresh, trend_world)
        started = wait_started(proc)
        time.sleep(rng.uniform(1.0, 4.0))
        if not started or proc.poll() is not None:  # finished before the kill
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    finish(start(cmd, trend_world))
    assert kills >= 2
    assert trending_rows([dsn]) == clean


def test_two_processes_write_the_trending_rows_of_one(trend_world, trend_topic, bootstrap, tmp_path, clean):
    store = tmp_path / "recovery"
    app.init_recovery(make_settings(tmp_path, trend_world, "chdb:///unused"), store)
    addresses = free_addresses(2)
    dsns, procs = [], []
    for i in range(2):
        d: Path = tmp_path / f"p{i}"
        dsns.append(f"chdb://{d / 'chdb'}")
        extra = ["--recovery-dir", str(store), "--process-id", str(i), "--addresses", addresses]
        procs.append(start(stream_cmd(d, dsns[-1], trend_topic, bootstrap, trend_world, extra), trend_world))
    for p in procs:
        finish(p)
    assert trending_rows(dsns) == clean
