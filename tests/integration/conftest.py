"""Integration fixtures: one embedded chDB per test session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from offline_train.train import TrainPlan
from propstream import app
from schemas.settings import Settings, StreamSettings, TrainSettings
from tests.synthetic import World, make_world

PLAN = TrainPlan(
    train=(datetime(2017, 2, 1, tzinfo=UTC), datetime(2017, 2, 15, tzinfo=UTC), datetime(2017, 3, 1, tzinfo=UTC)),
    calibrate=(datetime(2017, 4, 1, tzinfo=UTC),),
    test=datetime(2017, 5, 1, tzinfo=UTC),
)


# The synthetic world has a few hundred training rows: let trees split on them.
SMALL_DATA_PARAMS: dict[str, float | int | str] = {"min_child_weight": 1, "max_depth": 4}


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Only one chDB path may be open per process: every test shares it."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A running Kafka broker: KAFKA_BOOTSTRAP, or a local KRaft node started here (started only when asked for)."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield None, os.environ["KAFKA_BOOTSTRAP"]
        return
    from tools.kafka.broker import LocalBroker

    with LocalBroker(data_dir=tmp_path_factory.mktemp("kafka")) as b:
        yield b, b.bootstrap


@pytest.fixture(scope="session")
def bootstrap(broker) -> str:
    return broker[1]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, world: World, chdb_dsn: str) -> Path:
    """A data dir whose registry holds production models for every synthetic group."""
    data_dir = tmp_path_factory.mktemp("trained")
    settings = make_settings(data_dir, world, chdb_dsn)
    records, rejected = app.read_file_records([write_events(data_dir / "train.jsonl", world.events)], _mapping())
    assert rejected == 0
    app.train(settings, records, plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS)
    return data_dir


def _mapping():
    from schemas.mapping import ColumnMapping

    return ColumnMapping()


def write_events(path: Path, rows: list) -> Path:
    from tests.synthetic import write_jsonl

    return write_jsonl(path, rows)


def make_settings(data_dir: Path, world: World, dsn: str, **stream: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        clickhouse_dsn=dsn,
        groups_file=world.groups_file,
        catalog_file=world.catalog_file,
        stream=StreamSettings(**{"batch_size": 500, "n_shards": 3, "progress_seconds": 3600, **stream}),
        # 60 test customers: one synthetic group ranks near chance (ROC AUC ~0.52), and tests force flat
        # models. These tests are about serving and the comparison with production; the floor that keeps
        # useless models out is tested in tests/offline_train/test_promotion.py.
        train=TrainSettings(min_auc=0.0, min_distinct_predictions=1),
        clickhouse={"database": f"t_{uuid.uuid4().hex[:10]}"},
    )


@pytest.fixture
def chromium():
    """Headless Chromium from Debian's packages (chromium + chromium-driver), driven by selenium."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver_path, "chromium and chromium-driver are missing: run tools/browser/install.sh"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.binary_location = browser
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def dashboard_run(tmp_path_factory, world, trained_dir, chdb_dsn):
    """A real run with trending on, a known surge and dead letters, its dashboard served mid-run (dashboard_helpers)."""
    from tests.integration.dashboard_helpers import run_with_dashboard

    return run_with_dashboard(world, trained_dir, tmp_path_factory.mktemp("dashboard"), chdb_dsn)
