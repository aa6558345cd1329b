"""The model registry: artifacts on disk, one production model per group.

Layout under the registry root::

    <group>/<version>/model.ubj     XGBoost booster (UBJSON)
    <group>/<version>/card.json     ModelCard
    <group>/PRODUCTION              the production version number

Promotion rewrites ``PRODUCTION`` atomically (write + rename), which is what a
running stream polls to hot-swap models.
"""

from __future__ import annotations

import os
from pathlib import Path

import xgboost as xgb

from models.artifact import ModelArtifact, ModelError
from schemas.cards import ModelCard, Stage


class RegistryError(ModelError):
    """The registry has no such model, or its files are unreadable."""


class ModelRegistry:
    """Files-backed registry of per-group model versions."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, group: str, version: int) -> Path:
        return self.root / group / f"{version:05d}"

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

    def promote(self, group: str, version: int) -> None:
        """Make ``version`` the production model of ``group`` (atomic)."""
        if version not in self.versions(group):
            msg = f"cannot promote {group} v{version}: not registered under {self.root / group}"
            raise RegistryError(msg)
        pointer = self.root / group / "PRODUCTION"
        tmp = pointer.with_name(f"PRODUCTION.{os.getpid()}.tmp")
        tmp.write_text(f"{version}\n")
        tmp.replace(pointer)

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
        """Production if it is the pointer's version, archived if older, else candidate."""
        prod = self.production_version(group)
        if prod == version:
            return Stage.PRODUCTION
        return Stage.ARCHIVED if prod is not None and version < prod else Stage.CANDIDATE
