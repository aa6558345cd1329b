"""Holdout flags: the configured share, stable within a campaign, independent between campaigns."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from propstream.campaigns import holdout_flag, parse_window

# As many customers as The Complete Journey's households (2,469), five campaigns.
HOUSEHOLDS = [str(h) for h in range(1, 2470)]
CAMPAIGNS = ["spring-coffee", "summer-grilling", "game-day", "back-to-school", "holiday-baking"]
SHARE = 0.1


def flags(campaign: str, share: float = SHARE) -> np.ndarray:
    return np.array([holdout_flag(campaign, h, share) for h in HOUSEHOLDS])


def test_holdout_share_is_the_configured_share():
    per = {c: flags(c).mean() for c in CAMPAIGNS}
    pooled = float(np.mean(list(per.values())))
    assert abs(pooled - SHARE) <= 0.01, per  # 12,345 flags: ±1 % is about 3.7 standard errors
    assert all(abs(s - SHARE) <= 0.02 for s in per.values()), per  # each campaign alone: ±3.3 standard errors
    for share in (0.05, 0.2, 0.5):
        assert abs(np.mean([flags(c, share).mean() for c in CAMPAIGNS]) - share) <= 0.01


def test_flags_are_stable_and_nested_by_share():
    for c in CAMPAIGNS:
        assert (flags(c) == flags(c)).all()
        assert not (flags(c, 0.1) & ~flags(c, 0.2)).any()  # a larger share only adds customers to the holdout


def test_campaigns_hold_out_independent_sets():
    expected = SHARE**2 + (1 - SHARE) ** 2  # agreement of two independent flags
    for a, b in combinations(CAMPAIGNS, 2):
        fa, fb = flags(a), flags(b)
        agreement = float((fa == fb).mean())
        assert abs(agreement - expected) <= 0.03, (a, b, agreement)  # ~4 standard errors
        both = float((fa & fb).mean())
        assert both <= 0.03, (a, b, both)  # the unsalted hash held out the same 10 % (both = 0.1)


def test_window_parsing():
    assert parse_window("7d").days == 7
