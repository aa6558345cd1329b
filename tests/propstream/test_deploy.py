"""docker-compose.yml cannot be run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_of_the_deployment():
    assert set(COMPOSE["services"]) == {
        "kafka",
        "clickhouse",
        "init",
        "collector",
        "stream",
        "trainer",
        "dashboard",
        "grafana",
    }


def test_grafana_is_provisioned_with_the_clickhouse_datasource_and_the_dashboards():
    g = COMPOSE["services"]["grafana"]
    assert g["image"].startswith("grafana/grafana:")
    assert "grafana-clickhouse-datasource" in g["environment"]["GF_INSTALL_PLUGINS"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in g["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/propstream.yaml").read_text())
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "grafana-clickhouse-datasource" and ds["jsonData"]["host"] == "clickhouse"
    assert ds["jsonData"]["username"] == COMPOSE["services"]["clickhouse"]["environment"]["CLICKHOUSE_USER"]
    assert "CLICKHOUSE_PASSWORD" in g["environment"] and "CLICKHOUSE_PASSWORD" in ds["secureJsonData"]["password"]


def test_the_dashboard_service_serves_on_its_published_port():
    d = COMPOSE["services"]["dashboard"]
    cmd = d["command"]
    port = cmd[cmd.index("--port") + 1]
    assert cmd[0] == "dashboard" and cmd[cmd.index("--host") + 1] == "0.0.0.0" and f"{port}:{port}" in d["ports"]


def test_environment_keys_are_settings_the_app_reads(monkeypatch: pytest.MonkeyPatch):
    env = COMPOSE["x-propstream-env"]
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
    s = Settings()  # extra="forbid" rejects unknown nested keys
    assert s.dsn == "http://clickhouse:8123"
    assert s.clickhouse.user == "propstream" and s.clickhouse.password is not None
    assert "propstream" not in repr(s.clickhouse.password)  # a secret stays masked
    assert s.kafka.bootstrap_servers == "kafka:9092" and s.kafka.partitions == 4
    for key in env:
        parts = key.removeprefix("PROPSTREAM_").lower().split("__")
        assert parts[0] in Settings.model_fields, key


def test_services_talk_to_each_other_on_the_published_ports():
    svc = COMPOSE["services"]
    env = COMPOSE["x-propstream-env"]
    assert "9092:9092" in svc["kafka"]["ports"]
    assert svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].endswith(
        env["PROPSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
    )
    assert "8123:8123" in svc["clickhouse"]["ports"]
    assert env["PROPSTREAM_CLICKHOUSE_DSN"].endswith(":8123")
    stream_cmd = svc["stream"]["command"]
    assert stream_cmd[0] == "run" and stream_cmd[stream_cmd.index("--input") + 1].startswith(
        f"kafka://{env['PROPSTREAM_KAFKA__BOOTSTRAP_SERVERS']}/{env['PROPSTREAM_KAFKA__TOPIC']}"
    )
    assert "--recovery-dir" in stream_cmd


def test_the_collector_writes_where_the_stream_reads_and_its_settings_validate(monkeypatch: pytest.MonkeyPatch):
    svc = COMPOSE["services"]
    collect, run = svc["collector"]["command"], svc["stream"]["command"]
    assert collect[0] == "collect" and collect[collect.index("--kafka") + 1] == run[run.index("--input") + 1]
    port = collect[collect.index("--port") + 1]
    assert collect[collect.index("--host") + 1] == "0.0.0.0" and f"{port}:{port}" in svc["collector"]["ports"]
    assert f":{port}/health" in " ".join(svc["collector"]["healthcheck"]["test"])
    for key, value in svc["collector"]["environment"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
    assert Settings().collector.workers == 2  # extra="forbid": a misspelt collector key fails here


def test_image_installs_every_package():
    docker = (ROOT / "Dockerfile").read_text()
    for pkg in ("schemas", "stream", "models", "offline_train", "propstream", "collector", "dashboard"):
        assert f"COPY {pkg} {pkg}" in docker
    assert 'ENTRYPOINT ["propstream"]' in docker


def test_the_image_build_ships_every_module_and_data_file(tmp_path):
    """Build the wheel from exactly what the Dockerfile copies, as its `pip install .` does."""
    docker = (ROOT / "Dockerfile").read_text()
    context = tmp_path / "context"
    context.mkdir()
    for line in docker.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                (shutil.copytree if (ROOT / src).is_dir() else shutil.copy)(ROOT / src, context / src)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(context)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("propstream-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    packages = ("schemas", "stream", "models", "offline_train", "propstream", "collector", "dashboard")
    wanted = {
        p.relative_to(ROOT).as_posix()
        for pkg in packages
        for p in (ROOT / pkg).rglob("*")
        if p.suffix in {".py", ".toml", ".js", ".html"} and "__pycache__" not in p.parts
    }
    assert wanted - shipped == set()
    assert "propstream/data/completejourney_groups.toml" in shipped
    assert "collector/static/propstream.js" in shipped
    assert "dashboard/templates/index.html" in shipped
    assert any(re.fullmatch(r"stream/_cells\.cpython-[^/]+\.so", name) for name in shipped)  # compiled in the build


def test_the_deployed_stream_computes_trending_for_the_dashboards(monkeypatch: pytest.MonkeyPatch):
    env = COMPOSE["services"]["stream"]["environment"]
    assert env["PROPSTREAM_DATA_DIR"] == COMPOSE["x-propstream-env"]["PROPSTREAM_DATA_DIR"]  # the shared keys merged in
    monkeypatch.setenv("PROPSTREAM_TRENDING__ENABLED", env["PROPSTREAM_TRENDING__ENABLED"])
    assert Settings().trending.enabled
    assert not Settings.model_fields["trending"].default.enabled  # off unless a deployment turns it on


def test_the_trainer_is_the_scheduled_training_command():
    from propstream.cli import build_parser, cmd_train
    from propstream.schedule import parse_every

    args = build_parser().parse_args(COMPOSE["services"]["trainer"]["command"])
    assert args.func is cmd_train
    assert parse_every(args.every) == 86_400  # daily look; it trains only when the plan moved
