"""The model registry: artifacts on disk, one production model per group.

Layout under the registry root::

    <group>/<version>/model.ubj     XGBoost booster (UBJSON)
    <group>/<version>/card.json     ModelCard
    <group>/PRODUCTION              the production version number
    actions.jsonl                   append-only log: who moved which pointer, when and why

Promotion rewrites ``PRODUCTION`` atomically (write + rename), which is what a
running stream polls to hot-swap models; a group without the file is not
served. Every move of a pointer (``promote``, ``rollback``) is appended to
``actions.jsonl`` after the pointer moved. The log lives beside the models, not
only in ClickHouse, because an embedded store is held by the running stream:
the ``models`` table is synced from the log by the next command that can open
the store (``propstream models list``, or the stream at its start).
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.artifact import ModelArtifact, ModelError
from schemas.cards import ModelCard, Stage


class RegistryError(ModelError):
    """The registry has no such model, or its files are unreadable."""


ACTIONS_FILE = "actions.jsonl"


def current_user() -> str:
    """The OS user running this process (who is recorded for a promotion when ``--by`` is not given)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with a numeric uid)
        return f"uid={os.getuid()}"


@dataclass(frozen=True)
class RegistryAction:
    """One move of a group's production pointer, as appended to ``actions.jsonl``.

    >>> a = RegistryAction("coffee", "rollback", 1, 2, "ann", "v2 over-selects", "2026-01-01T00:00:00+00:00")
    >>> RegistryAction.from_json(a.to_json()) == a
    True
    """

    group_id: str
    action: str  # promote | rollback
    version: int  # production after the action
    previous: int | None  # production before it
    by: str
    reason: str
    at: str  # ISO time, UTC

    def to_json(self) -> str:
        """One line of the log."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> RegistryAction:
        """Parse one line of the log."""
        return cls(**json.loads(line))


class ModelRegistry:
    """Files-backed registry of per-group model versions."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, group: str, version: int) -> Path:
        return self.root / group / f"{version:05d}"

    def folder(self, group: str, version: int) -> Path:
        """The folder of one version (its booster, card and files kept with it, e.g. its test slice)."""
        return self._dir(group, version)

    def versions(self, group: str) -> list[int]:
        """Registered versions of a group, oldest first."""
        d = self.root / group
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def next_version(self, group: str) -> int:
        """The version number the next registered model of ``group`` gets."""
        vs = self.versions(group)
        return (vs[-1] + 1) if vs else 1

    def register(self, artifact: ModelArtifact) -> Path:
        """Write an artifact (its card carries group and version); returns its folder."""
        card = artifact.card
        d = self._dir(card.group_id, card.version)
        if d.exists():
            msg = f"model {card.group_id} v{card.version} is already registered at {d}"
            raise RegistryError(msg)
        tmp = d.with_name(d.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        artifact.booster.save_model(str(tmp / "model.ubj"))
        (tmp / "card.json").write_text(card.model_dump_json(indent=2))
        tmp.rename(d)
        return d

    def load(self, group: str, version: int) -> ModelArtifact:
        """Read one artifact."""
        import xgboost as xgb  # here, not at import: xgboost imports scikit-learn (~1.5 s per command)

        d = self._dir(group, version)
        try:
            card = ModelCard.model_validate_json((d / "card.json").read_text())
            booster = xgb.Booster()
            booster.load_model(str(d / "model.ubj"))
        except (OSError, ValueError, xgb.core.XGBoostError) as exc:
            msg = f"cannot load model {group} v{version} from {d}: {exc}"
            raise RegistryError(msg) from exc
        booster.set_param({"nthread": 1})
        return ModelArtifact(card=card, booster=booster)

    def card(self, group: str, version: int) -> ModelCard:
        """Read one model card."""
        return ModelCard.model_validate_json((self._dir(group, version) / "card.json").read_text())

    def promote(
        self, group: str, version: int, by: str | None = None, reason: str = "", action: str = "promote"
    ) -> RegistryAction:
        """Make ``version`` the production model of ``group`` (atomic) and log who did it and why."""
        if version not in self.versions(group):
            msg = f"cannot {action} {group} to v{version}: not registered under {self.root / group}"
            raise RegistryError(msg)
        previous = self.production_version(group)
        pointer = self.root / group / "PRODUCTION"
        tmp = pointer.with_name(f"PRODUCTION.{os.getpid()}.tmp")
        tmp.write_text(f"{version}\n")
        tmp.replace(pointer)
        done = RegistryAction(
            group, action, version, previous, by or current_user(), reason, datetime.now(tz=UTC).isoformat()
        )
        self._append(done)
        return done

    def actions(self, group: str | None = None) -> list[RegistryAction]:
        """The log of pointer moves (of ``group``, or all), oldest first."""
        try:
            lines = (self.root / ACTIONS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            try:
                a = RegistryAction.from_json(line)
            except (ValueError, TypeError) as exc:
                msg = f"{self.root / ACTIONS_FILE} line {n} is not a registry action: {exc}"
                raise RegistryError(msg) from exc
            if group is None or a.group_id == group:
                out.append(a)
        return out

    def production_history(self, group: str) -> list[int]:
        """The group's production versions as a stack: a promotion pushes, a rollback pops.

        >>> import tempfile
        >>> r = ModelRegistry(tempfile.mkdtemp())
        >>> r._append(RegistryAction("g", "promote", 1, None, "a", "", ""))
        >>> r._append(RegistryAction("g", "promote", 2, 1, "a", "", ""))
        >>> r._append(RegistryAction("g", "promote", 3, 2, "a", "", ""))
        >>> r._append(RegistryAction("g", "rollback", 2, 3, "a", "", ""))
        >>> r.production_history("g")
        [1, 2]
        """
        stack: list[int] = []
        for a in self.actions(group):
            if a.action == "rollback" and stack:
                stack.pop()
            if not stack or stack[-1] != a.version:
                stack.append(a.version)
        return stack

    def _append(self, a: RegistryAction) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # One short line per append (O_APPEND): two processes logging at once do not interleave.
        with (self.root / ACTIONS_FILE).open("a") as f:
            f.write(a.to_json() + "\n")

    def rollback(self, group: str, by: str | None = None, reason: str = "") -> RegistryAction:
        """Make the previous production version of ``group`` production again (as the log records it)."""
        current = self.production_version(group)
        if current is None:
            msg = f"cannot roll back {group}: it has no production model ({self.root / group / 'PRODUCTION'})"
            raise RegistryError(msg)
        stack = self.production_history(group)
        if not stack or stack[-1] != current or len(stack) < 2:
            msg = (
                f"cannot roll back {group}: {self.root / ACTIONS_FILE} records no production version before "
                f"v{current}; name one with `propstream models promote {group} VERSION`"
            )
            raise RegistryError(msg)
        return self.promote(group, stack[-2], by, reason, action="rollback")

    def production_version(self, group: str) -> int | None:
        """The production version of a group, or None when it has none."""
        try:
            return int((self.root / group / "PRODUCTION").read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            msg = f"{self.root / group / 'PRODUCTION'} does not hold a version number"
            raise RegistryError(msg) from exc

    def stage(self, group: str, version: int) -> Stage:
        """Production if it is the pointer's version; archived if older or once production; else candidate."""
        prod = self.production_version(group)
        if prod == version:
            return Stage.PRODUCTION
        if prod is not None and version < prod:
            return Stage.ARCHIVED
        served = any(a.version == version for a in self.actions(group))
        return Stage.ARCHIVED if served else Stage.CANDIDATE

    def last_action(self, group: str, version: int) -> RegistryAction | None:
        """The latest logged action that made ``version`` production or took it out of production."""
        found = None
        for a in self.actions(group):
            if version in (a.version, a.previous):
                found = a
        return found
