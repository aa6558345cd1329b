"""One place documents the settings: the model; `--help`, `propstream settings` and README are generated from it."""

from __future__ import annotations

import re
from pathlib import Path

from propstream.cli import FLAG_SETTINGS, _settings, build_parser, main, settings_table
from schemas.settings import setting_docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_and_every_flag_names_a_setting():
    docs = {d.key: d for d in setting_docs()}
    assert all(d.description for d in docs.values()), [k for k, d in docs.items() if not d.description]
    assert set(FLAG_SETTINGS.values()) <= docs.keys()


def test_readme_shows_the_generated_settings_table():
    text = README.read_text()
    block = re.search(r"<!-- settings:begin[^\n]*-->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert block is not None, "README lacks the settings block"
    assert block.group(1) == settings_table(), "README's settings table is stale: run tools/readme_settings.py"


def test_every_flag_has_help_and_a_setting_flag_names_its_variable():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sp in subparsers.items():
        for action in sp._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            if action.dest in FLAG_SETTINGS:
                env = next(d.env for d in setting_docs() if d.key == FLAG_SETTINGS[action.dest])
                assert f"env {env}" in action.help, (name, action.option_strings)


def test_a_nested_flag_overrides_its_setting_and_keeps_the_rest_of_the_section(monkeypatch):
    monkeypatch.setenv("PROPSTREAM_KAFKA__TOPIC", "clicks")
    monkeypatch.setenv("PROPSTREAM_KAFKA__CLOCK", "wall")
    args = build_parser().parse_args(["run", "--clock", "event", "--input", "x.jsonl"])
    s = _settings(args)
    assert (s.kafka.clock, s.kafka.topic, s.input) == ("event", "clicks", "x.jsonl")
    args = build_parser().parse_args(["run", "--input", "x.jsonl"])
    assert _settings(args).kafka.clock == "wall"  # no flag: the variable stands


def test_the_log_level_is_a_setting(monkeypatch):
    monkeypatch.setenv("PROPSTREAM_LOG_LEVEL", "DEBUG")
    assert _settings(build_parser().parse_args(["rescore"])).log_level == "DEBUG"
    monkeypatch.setenv("PROPSTREAM_LOG_LEVEL", "LOUD")
    assert main(["rescore"]) == 2  # an invalid setting is a one-line error


def test_a_reader_that_goes_away_is_not_an_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m propstream settings | head -1", shell=True, capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("| setting |") and "Traceback" not in proc.stderr


def test_an_unreadable_time_flag_is_a_one_line_usage_error(tmp_path, capsys):
    # trending --at and segment --as-of read times the same way (schemas.events.iso_utc), before opening any store
    common = ["--data-dir", str(tmp_path), "--clickhouse", f"chdb://{tmp_path / 'db'}"]
    assert main(["trending", "--at", "soon", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "propstream trending: --at 'soon' is not an ISO time such as 2017-06-01T12:00"
    assert main(["segment", "--group", "coffee", "--top", "5", "--as-of", "later", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "propstream segment: --as-of 'later' is not an ISO time such as 2017-06-01T12:00"
    assert not (tmp_path / "db").exists()  # refused before a store was opened
