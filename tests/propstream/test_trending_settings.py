"""Trending settings that reach the stream: the category column of the catalog, a half-life per window."""

from __future__ import annotations

import pytest

from propstream import app
from propstream.app import AppError
from schemas.settings import Settings, TrendingSettings
from tests.synthetic import make_world


def test_categories_come_from_the_configured_catalog_column(tmp_path):
    w = make_world(tmp_path, n_users=3, n_events=5)
    s = Settings(data_dir=tmp_path, catalog_file=w.catalog_file, trending=TrendingSettings(enabled=True))
    by_category = app.item_categories(s)
    assert by_category and set(by_category.values()) >= {"COFFEE", "SOAP"}
    cfg = app.trend_config(s)
    assert cfg is not None and dict(cfg.categories) == by_category
    brands = app.item_categories(s.model_copy(update={"trending": TrendingSettings(category_column="brand")}))
    assert brands.keys() == by_category.keys() and brands != by_category
    assert app.item_categories(s.model_copy(update={"trending": TrendingSettings(category_column="")})) == {}
    with pytest.raises(AppError, match=r"no column 'commodity' for trending\.category_column"):
        app.item_categories(s.model_copy(update={"trending": TrendingSettings(category_column="commodity")}))


def test_each_window_may_have_its_own_half_life():
    s = Settings(trending=TrendingSettings(enabled=True, half_life_hours=6, half_lives={"1h": 1}))
    cfg = app.trend_config(s)
    assert cfg is not None
    hour, day = cfg.windows
    assert cfg.fading(hour) == 1 - 0.5 ** (5 / 60) and cfg.fading(day) == 1 - 0.5 ** (1 / 6)
    with pytest.raises(ValueError, match=r"trending\.half_lives: '2h' is not a window name"):
        TrendingSettings(half_lives={"2h": 1})
    with pytest.raises(ValueError, match="must be positive"):
        TrendingSettings(half_lives={"1h": 0})
    assert TrendingSettings(windows=("2h/10m",)).half_lives == {"1h": 1.0}  # the default names no window: harmless
