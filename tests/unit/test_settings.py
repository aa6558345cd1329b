"""Settings: the TOML file named by PROPSTREAM_CONFIG, environment variables above it."""

from __future__ import annotations

import pytest

from schemas.settings import Settings, SettingsFileError


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
