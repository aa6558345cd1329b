"""One root exception: every error the packages define is a PropstreamError, which the CLI prints in one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from schemas.errors import PropstreamError

PACKAGES = ["schemas", "stream", "models", "offline_train", "propstream", "dashboard"]


def defined_exceptions() -> list[type]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            module = importlib.import_module(info.name)
            found += [
                obj
                for _, obj in inspect.getmembers(module, inspect.isclass)
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__
            ]
    return found


def test_every_error_of_the_packages_has_the_one_root():
    errors = defined_exceptions()
    assert len(errors) >= 10  # the walk found them
    assert [e.__qualname__ for e in errors if not issubclass(e, PropstreamError)] == []


def test_the_cli_prints_any_of_them_in_one_line_with_status_1_or_2_for_configuration(tmp_path, capsys, monkeypatch):
    from propstream.cli import main

    train = ["train", "--data-dir", str(tmp_path), "--input"]
    assert main([*train, str(tmp_path / "none.jsonl")]) == 1  # a missing input file: SourceError
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id": "u", "item_id": "i", "type": "view", "timestamp": "2017-01-01T00:00:00Z"}\n')
    monkeypatch.setenv("PROPSTREAM_GROUPS_FILE", str(tmp_path / "no-groups.toml"))
    assert main([*train, str(events)]) == 2  # a missing groups file: ConfigError
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("propstream")] == ["propstream train"] * 2
    assert "none.jsonl does not exist" in lines[0] and "no-groups.toml" in lines[-1]
    assert not any("Traceback" in line for line in lines)
