"""The category scope of trending takes each item's category from the catalog column named by a setting."""

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
