"""Settings: the TOML file named by PROPSTREAM_CONFIG, environment variables above it."""

from __future__ import annotations

import pytest

from schemas.settings import KafkaSettings, Settings, SettingsFileError
from stream.sinks.clickhouse import ClickHouseUnavailableError, open_client


def test_the_file_sets_values_and_the_environment_overrides_them(tmp_path, monkeypatch):
    config = tmp_path / "propstream.toml"
    config.write_text('data_dir = "/srv/propstream"\n[stream]\nn_shards = 8\nbatch_size = 1000\n')
    monkeypatch.setenv("PROPSTREAM_CONFIG", str(config))
    monkeypatch.setenv("PROPSTREAM_STREAM__BATCH_SIZE", "2000")
    s = Settings()
    assert (str(s.data_dir), s.stream.n_shards, s.stream.batch_size) == ("/srv/propstream", 8, 2000)


def test_a_missing_or_broken_file_is_an_error_not_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("PROPSTREAM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsFileError, match=r"missing\.toml, which is not a file"):
        Settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("[stream\nn_shards = 8\n")
    monkeypatch.setenv("PROPSTREAM_CONFIG", str(broken))
    with pytest.raises(SettingsFileError, match=r"broken\.toml \(PROPSTREAM_CONFIG\) is not valid TOML"):
        Settings()


def test_secrets_never_show_in_reprs_wherever_they_are_given(monkeypatch):
    monkeypatch.setenv("PROPSTREAM_KAFKA__CONFIG", '{"ssl.key.password": "hunter2", "security.protocol": "SSL"}')
    monkeypatch.setenv("PROPSTREAM_KAFKA__SASL_PASSWORD", "sasl-pw")
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__PASSWORD", "ch-pw")
    s = Settings()
    text = repr(s) + str(s) + repr(s.kafka)
    for secret in ("hunter2", "sasl-pw", "ch-pw"):
        assert secret not in text
    cfg = s.kafka.client_config()  # the client still gets them
    assert cfg["ssl.key.password"] == "hunter2" and cfg["sasl.password"] == "sasl-pw"
    assert cfg["security.protocol"] == "SSL"
    given = KafkaSettings(config={"sasl.oauthbearer.client.secret": "oauth-pw", "acks": "all"})
    assert "oauth-pw" not in repr(given) and given.client_config()["sasl.oauthbearer.client.secret"] == "oauth-pw"


def test_the_dead_letter_topic_follows_the_input_topic_unless_set():
    assert KafkaSettings(topic="orders").dead_letters_topic == "orders-dead-letters"
    assert KafkaSettings(topic="orders", dead_letter_topic="dlq").dead_letters_topic == "dlq"


def test_a_password_in_a_clickhouse_url_is_not_echoed_in_the_error():
    with pytest.raises(ClickHouseUnavailableError) as info:
        open_client("http://default:hunter2@127.0.0.1:9/")  # nothing listens on port 9
    assert "hunter2" not in str(info.value) and "default:***@127.0.0.1:9" in str(info.value)


def test_every_run_option_is_a_setting_and_a_flag_given_wins(tmp_path, monkeypatch):
    from propstream.cli import _settings, build_parser

    config = tmp_path / "propstream.toml"
    config.write_text(
        'input = "kafka://broker:9092/orders"\nrecovery_dir = "/srv/recovery"\nsnapshot_seconds = 2.5\n'
        'addresses = "h0:2101,h1:2101"\nprocess_id = 1\n[kafka]\nclock = "event"\n'
    )
    monkeypatch.setenv("PROPSTREAM_CONFIG", str(config))
    monkeypatch.setenv("PROPSTREAM_SNAPSHOT_SECONDS", "4")
    s = _settings(build_parser().parse_args(["run"]))
    assert (s.input, str(s.recovery_dir), s.snapshot_seconds) == ("kafka://broker:9092/orders", "/srv/recovery", 4.0)
    assert (s.addresses, s.process_id, s.kafka.clock) == ("h0:2101,h1:2101", 1, "event")
    flags = ["run", "--input", "a.csv", "--snapshot-seconds", "1", "--clock", "wall", "--process-id", "0"]
    s = _settings(build_parser().parse_args(flags))
    assert (s.input, s.snapshot_seconds, s.kafka.clock, s.process_id) == ("a.csv", 1.0, "wall", 0)
    assert str(s.recovery_dir) == "/srv/recovery"  # not given: the file's


def test_a_freshness_target_sets_the_waits_it_can_afford_and_a_wait_set_explicitly_wins(tmp_path, monkeypatch):
    """``stream.freshness_seconds``: the source's and the sink's waits follow it (from the file or the environment)
    and add up to under half of it; one given explicitly keeps its value; unset, every default stays."""
    from propstream.app import build_source
    from schemas.settings import Latency

    defaults = Settings().latency()
    assert defaults == Latency(0.2, 2.0, 0.1, 0.5, 0.1)  # the fields' own defaults
    for target in (0.5, 5.0, 60.0, 600.0, 3600.0):
        lat = Settings(stream={"freshness_seconds": target}).latency()
        assert lat.sink_flush_seconds + lat.batch_wait_seconds + lat.fetch_wait_seconds < target / 2
        assert lat.batch_wait_seconds <= lat.poll_max_seconds
        assert lat.sink_archive_flush_seconds >= lat.sink_flush_seconds
    slow, fast = (
        Settings(stream={"freshness_seconds": 60}).latency(),
        Settings(stream={"freshness_seconds": 1}).latency(),
    )
    assert all(s >= f for s, f in zip(slow, fast, strict=True)) and slow != fast
    assert (
        slow.sink_flush_seconds > defaults.sink_flush_seconds and slow.batch_wait_seconds > defaults.batch_wait_seconds
    )
    config = tmp_path / "propstream.toml"
    config.write_text("[stream]\nfreshness_seconds = 60\n[kafka]\nbatch_wait_seconds = 0.3\n")
    monkeypatch.setenv("PROPSTREAM_CONFIG", str(config))
    monkeypatch.setenv("PROPSTREAM_STREAM__SINK_FLUSH_SECONDS", "1.5")
    settings = Settings()
    assert settings.latency() == slow._replace(sink_flush_seconds=1.5, batch_wait_seconds=0.3)
    source = build_source(settings, None)  # the run's Kafka source takes them (no broker is contacted)
    assert (source.batch_wait_seconds, source.poll_max_seconds) == (0.3, slow.poll_max_seconds)
    assert source.config["fetch.wait.max.ms"] == round(slow.fetch_wait_seconds * 1000)


def test_the_start_line_says_what_a_freshness_target_set():
    from propstream.app import freshness_note

    assert freshness_note(Settings(), recovery=False) == ""
    note = freshness_note(Settings(stream={"freshness_seconds": 60, "sink_archive_flush_seconds": 30}), False)
    assert note == (
        ", freshness target 60 s (a busy poll waits 5 s, a fetch 1 s; scores written every 20 s, "
        "the archive tables every 30 s)"
    )
    assert freshness_note(Settings(stream={"freshness_seconds": 60}), recovery=True) == (
        ", freshness target 60 s (a busy poll waits 5 s, a fetch 1 s; every table written with every batch "
        "(a recovery store))"
    )
