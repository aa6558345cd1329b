"""The default training plan follows the data's time range; no test-period data trains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from propstream.app import AppError, default_plan


def test_complete_journey_range_gives_the_documented_plan():
    plan = default_plan(datetime(2017, 1, 1, 11, 53, tzinfo=UTC), datetime(2018, 1, 1, 4, 1, tzinfo=UTC))
    assert plan.train[0] == datetime(2017, 2, 1, tzinfo=UTC)
    assert plan.train[-1] == datetime(2017, 10, 1, tzinfo=UTC)
    assert len(plan.train) == 17  # the 1st and the 15th
    assert plan.calibrate == (datetime(2017, 11, 1, tzinfo=UTC),)
    assert plan.test == datetime(2017, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("days", [160, 200, 400])
def test_labels_never_overlap_the_next_slice(days):
    first = datetime(2019, 3, 7, tzinfo=UTC)
    plan = default_plan(first, first + timedelta(days=days))
    horizon = timedelta(days=30)
    assert all(t + horizon <= plan.calibrate[0] for t in plan.train)
    assert plan.calibrate[0] + horizon <= plan.test
    assert plan.test + horizon <= first + timedelta(days=days)
    assert plan.train[0] >= first + timedelta(days=28)


def test_too_little_history_is_a_clear_error():
    with pytest.raises(AppError, match="too short to train"):
        default_plan(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 3, 1, tzinfo=UTC))
