"""Product groups added and deactivated without a full replay (issue #14).

The groups file (setting ``groups_file``) is the one owner of the catalog.
These commands edit it in place (comments and layout kept; every write is
checked by reading it back, and lands with one rename):

- ``add``: appends ``[groups.NAME]``; trains the group's model from the events
  archive (``train --group NAME``) and promotes it when the gate lets it
  through (no bulk rescore: stored features have no counters of the group yet).
  A stream resumed from its recovery store with the new file migrates its
  snapshot: the group's counters are computed from the archive through the
  customer state machine (``stream.regroup``), with no full replay, and every
  customer is scored with the new model.
- ``deactivate`` / ``activate``: sets ``active = false`` / ``true``. A running
  stream polls the file with its models (``stream.model_poll_seconds``): a
  deactivated group is no longer scored, its rows in ``scores`` and
  ``score_history`` stay; its counters are kept, so activating it again rescores
  every customer with nothing to backfill.

A running Kafka stream with a recovery store and ``stream.reload_groups``
applies an added group by itself: its source ends where it stands, the run
trains the group when it has no model (``resume_with_new_groups``; an embedded
store is the run's own) and resumes from its snapshot with the group
backfilled (``propstream.app.run_stream``).

The archive reader used by the migration (``archive_reader``) lives here too:
it is the stream's only read of the events archive.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.registry import ModelRegistry
from schemas.cards import ModelCard
from schemas.events import Vocabulary
from schemas.groups import GroupCatalog, GroupsFileError, GroupsFileWatch, ProductGroup, load_groups
from schemas.settings import Settings
from schemas.tables import EVENTS
from stream.regroup import ArchivedEvent, GroupArchive

Progress = Callable[[str], Any]
_RULE_FIELDS = ("departments", "categories", "product_types", "items", "brand")


def groups_path(settings: Settings) -> Path:
    """The groups file the commands edit; the packaged Complete Journey groups are not edited in place."""
    from propstream.app import AppError

    if settings.groups_file is None:
        msg = (
            "groups add/deactivate/activate edit a groups file: set groups_file (--groups, PROPSTREAM_GROUPS_FILE); "
            "to start from the packaged groups, copy propstream/data/completejourney_groups.toml"
        )
        raise AppError(msg)
    return Path(settings.groups_file)


def group_table(group: ProductGroup) -> str:
    """A group as a TOML table (strings JSON-quoted: valid TOML basic strings).

    >>> print(group_table(ProductGroup(name="tea", categories=["TEA"], active=False)), end="")
    [groups.tea]
    categories = ["TEA"]
    active = false
    """
    lines = [f"[groups.{group.name}]"]
    for name in _RULE_FIELDS:
        values = getattr(group, name)
        if values:
            lines.append(f"{name} = [{', '.join(json.dumps(v) for v in values)}]")
    if group.base_rate_30d is not None:
        lines.append(f"base_rate_30d = {group.base_rate_30d!r}")
    if not group.active:
        lines.append("active = false")
    return "\n".join(lines) + "\n"


def _write_checked(path: Path, text: str, check: Callable[[tuple[ProductGroup, ...]], bool]) -> None:
    """Write ``text`` to ``path`` in one rename, once it reads back as groups that pass ``check``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".toml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if not check(load_groups(tmp)):
            msg = f"{path}: the edit did not read back as intended; file left unchanged"
            raise GroupsFileError(msg)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def add_group(path: Path, group: ProductGroup) -> None:
    """Append ``group`` to the groups file; refuse a name that is already there."""
    current = load_groups(path)
    if any(g.name == group.name for g in current):
        msg = f"{path}: group {group.name!r} exists already (`groups activate` brings back a deactivated one)"
        raise GroupsFileError(msg)
    text = path.read_text()
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    want = (*current, group)
    _write_checked(path, text + sep + group_table(group), lambda got: got == want)


def set_active(path: Path, name: str, active: bool) -> bool:
    """Mark group ``name`` active or not in the groups file; False when it already was."""
    current = load_groups(path)
    if name not in {g.name for g in current}:
        msg = f"{path}: no group {name!r}; groups are {[g.name for g in current]}"
        raise GroupsFileError(msg)
    if next(g for g in current if g.name == name).active == active:
        return False
    lines = Path(path).read_text().splitlines(keepends=True)
    header = re.compile(rf"^\s*\[\s*groups\.{re.escape(name)}\s*\]\s*(#.*)?$")
    start = next(i for i, line in enumerate(lines) if header.match(line))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    value = f"active = {'true' if active else 'false'}\n"
    at = next((i for i in range(start + 1, end) if re.match(r"^\s*active\s*=", lines[i])), None)
    if at is None:
        lines.insert(start + 1, value)
    else:
        lines[at] = value
    want = tuple(g.model_copy(update={"active": active}) if g.name == name else g for g in current)
    _write_checked(path, "".join(lines), lambda got: got == want)
    return True


@dataclass
class GroupRow:
    """One group as ``groups list`` shows it."""

    group: str
    active: bool
    items: int
    production_version: int | None


def list_groups(settings: Settings) -> list[GroupRow]:
    """Every group of the catalog: active or not, catalog items, the production model version."""
    from propstream import app

    catalog = app.load_catalog(settings)
    counts = catalog.member_counts()
    registry = ModelRegistry(settings.models_dir)
    return [GroupRow(g.name, g.active, counts[g.name], registry.production_version(g.name)) for g in catalog.groups]


@dataclass
class Added:
    """What ``add`` did."""

    group: str
    cards: list[ModelCard] = field(default_factory=list)
    production_version: int | None = None
    notes: list[str] = field(default_factory=list)


def add(settings: Settings, group: ProductGroup, train: bool = True, progress: Progress = print) -> Added:
    """Add ``group`` to the catalog, then train and promote its model from the events archive."""
    from propstream import app
    from propstream.schedule import TrainerLock
    from stream.sinks.clickhouse import ClickHouseUnavailableError

    path = groups_path(settings)
    add_group(path, group)
    done = Added(group.name)
    counts = app.load_catalog(settings).member_counts()
    if counts[group.name] == 0:
        done.notes.append(f"{group.name} matches no item of the catalog: its features will stay empty")
    if not train:
        done.notes.append(f"not trained: `propstream train --group {group.name}` trains and promotes its model")
        return done
    try:
        app.client_for(settings)
    except ClickHouseUnavailableError as exc:
        done.notes.append(
            f"the store cannot be opened ({exc}): a running stream with stream.reload_groups trains the group and "
            f"resumes with it; otherwise train it once the store opens, `propstream train --group {group.name}`"
        )
        return done
    with TrainerLock(settings.data_dir):
        records = app.read_archive(settings)
        if not records:
            done.notes.append("the events archive is empty: nothing to train on yet")
            return done
        progress(f"training {group.name} on {len(records):,} archived events")
        # No bulk rescore: the stored features have no counters of the group until a stream backfills them.
        done.cards = app.train(settings, records, [group.name], progress=progress, rescore_after=False)
    done.production_version = ModelRegistry(settings.models_dir).production_version(group.name)
    return done


def resume_with_new_groups(settings: Settings, watch: GroupsFileWatch, progress: Progress) -> None:
    """Between two dataflows of one run (``stream.reload_groups``): train added groups that have no model.

    The store is this process's (an embedded one cannot be opened by a
    command meanwhile), so the run trains them itself, from the events archive,
    without a bulk rescore: the resumed dataflow backfills their counters and
    scores every customer with the new model.
    """
    from propstream import app
    from schemas.errors import PropstreamError

    now = load_groups(groups_path(settings))
    registry = ModelRegistry(settings.models_dir)
    added = [g.name for g in now if g.rules_key() not in watch.started_with]
    progress(f"product groups changed (added or redefined: {', '.join(added) or 'none'}): resuming with them")
    untrained = [name for name in added if registry.production_version(name) is None]
    if not untrained:
        return
    try:
        records = app.read_archive(settings)
        app.train(settings, records, untrained, progress=progress, rescore_after=False)
    except PropstreamError as exc:
        progress(f"{', '.join(untrained)} not trained ({exc}): counted, not scored until a model is promoted")


def archive_reader(client: Any, database: str, catalog: GroupCatalog, types: tuple[str, ...]) -> GroupArchive:
    """A group's applied events from the events archive, by customer (for ``stream.regroup``)."""
    index = Vocabulary(types).index

    def read(group: str) -> Mapping[str, list[ArchivedEvent]]:
        items = catalog.items_of(group)
        if not items:
            return {}
        rows = client.query(
            f"SELECT user_id, toUnixTimestamp64Milli(ts), type, value, event_id FROM {EVENTS.at(database)} FINAL "
            "WHERE item_id IN {items:Array(String)}",
            parameters={"items": items},
        ).result_rows
        out: dict[str, list[ArchivedEvent]] = {}
        for user, ts, type_, value, event_id in rows:
            t = index.get(type_)
            if t is not None:  # a type outside the vocabulary was never applied
                out.setdefault(user, []).append((int(ts), t, round(value * 100), event_id))
        return out

    return read
