"""The groups file as the one owner of the catalog: edits by command, and what the stream's models read from it."""

from __future__ import annotations

import json
import os
import time

import pytest

from propstream.cli import main
from propstream.groups import add_group, set_active
from schemas.groups import GroupsFileError, GroupsFileWatch, ProductGroup, load_groups
from tests.synthetic import GROUPS_TOML

COMMENTED = "# our groups\n" + GROUPS_TOML.replace("[groups.snacks]\n", "[groups.snacks]  # crisps too\n")


@pytest.fixture
def groups_file(tmp_path):
    path = tmp_path / "groups.toml"
    path.write_text(COMMENTED)
    return path


def test_deactivate_and_activate_edit_only_that_group_and_keep_comments(groups_file):
    before = load_groups(groups_file)
    assert set_active(groups_file, "snacks", False)
    assert not set_active(groups_file, "snacks", False)  # already inactive: nothing written
    after = load_groups(groups_file)
    assert [g.name for g in after if not g.active] == ["snacks"]
    assert [g.model_copy(update={"active": True}) for g in after] == list(before)
    text = groups_file.read_text()
    assert "# our groups" in text and "# crisps too" in text
    assert set_active(groups_file, "snacks", True)
    assert load_groups(groups_file) == before


def test_add_appends_a_group_and_refuses_a_name_twice(groups_file):
    tea = ProductGroup(name="tea", categories=["TEA", 'GREEN "TEA"'], base_rate_30d=0.25)
    add_group(groups_file, tea)
    assert load_groups(groups_file)[-1] == tea
    with pytest.raises(GroupsFileError, match="exists already"):
        add_group(groups_file, tea)
    with pytest.raises(GroupsFileError, match="no group 'cake'"):
        set_active(groups_file, "cake", False)


def test_the_watch_sees_a_deactivation_and_keeps_the_last_good_file(groups_file):
    watch = GroupsFileWatch(groups_file, load_groups(groups_file))
    assert watch.inactive() == frozenset()
    set_active(groups_file, "coffee", False)
    assert watch.inactive() == {"coffee"}
    groups_file.write_text("[groups.coffee\n")  # half written
    os.utime(groups_file, ns=(1, 1))
    assert watch.inactive() == {"coffee"}


def test_cli_deactivate_then_list(groups_file, tmp_path, capsys):
    common = ["--data-dir", str(tmp_path), "--groups", str(groups_file)]
    assert main(["groups", "deactivate", "coffee", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"group": "coffee", "active": False, "changed": True}
    assert main(["groups", *common, "list", "--json"]) == 0  # flags before the subcommand count too
    rows = {r["group"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["coffee"]["active"] is False and rows["snacks"]["active"] is True
    assert (
        main(["groups", "add", "coffee", *common, "--category", "COFFEE", "--no-train"]) == 2
    )  # exists: a groups-file error
    assert main(["groups", "add", "tea", *common, "--no-train"]) == 2  # no rule
    assert main(["groups", "add", "tea", *common, "--category", "TEA", "--no-train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"group": "tea", "production_version": None}
    assert load_groups(groups_file)[-1] == ProductGroup(name="tea", categories=["TEA"])


def test_the_watch_says_when_groups_were_added_and_a_resume_is_needed(groups_file, caplog):
    watch = GroupsFileWatch(groups_file, load_groups(groups_file))
    set_active(groups_file, "coffee", False)
    watch.inactive()
    assert not watch.layout_changed  # deactivating changes no counter
    add_group(groups_file, ProductGroup(name="tea", categories=["TEA"]))
    with caplog.at_level("WARNING"):
        assert watch.inactive() == {"coffee"}
    assert watch.layout_changed
    assert "run it again with the same --recovery-dir" in caplog.text


def test_a_one_process_kafka_run_with_a_recovery_store_reloads_groups_by_default_and_a_cluster_does_not(
    groups_file, tmp_path
):
    """`stream.reload_groups` arms the source's stop only where one process owns the whole run.

    The processes of a cluster would each stop, train the added group into one
    models directory and resume on their own poll: they log and go on.
    """
    from propstream.app import Execution, _groups_watch
    from schemas.settings import Settings
    from stream.sources.kafka import KafkaSource

    settings = Settings(data_dir=tmp_path, groups_file=groups_file, stream={"model_poll_seconds": 0.2})
    assert settings.stream.reload_groups  # the default: an added group is scored without a restart
    one = Execution(recovery_dir=tmp_path / "rec")
    cluster = Execution(recovery_dir=tmp_path / "rec", process_id=0, addresses=("127.0.0.1:2101", "127.0.0.1:2102"))
    cases = [
        (settings, one, True),
        (settings, Execution(), False),  # no recovery store: nothing to resume from
        (settings, cluster, False),
        (
            settings.model_copy(update={"stream": settings.stream.model_copy(update={"reload_groups": False})}),
            one,
            False,
        ),
    ]
    for s, execution, armed in cases:
        source = KafkaSource("127.0.0.1:9", "events")  # no connection until a partition is built
        watch = _groups_watch(s, source, execution)
        assert watch is not None
        assert (source.stop is not None) is armed, execution
        if armed:
            assert source.stop() is False  # the file has not changed
            add_group(groups_file, ProductGroup(name="tea", categories=["TEA"]))
            os.utime(groups_file, ns=(1, 1))  # a new stamp even within the clock's resolution
            assert source.stop() is False  # polled at most every stream.model_poll_seconds
            time.sleep(s.stream.model_poll_seconds)
            assert source.stop() is True  # the source ends where it stands; the run resumes with tea
