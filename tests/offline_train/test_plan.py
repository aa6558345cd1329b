"""The default training plan follows the data's time range; no test-period data trains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from offline_train.train import TrainError, TrainPlan
from schemas.settings import TrainSettings


def test_complete_journey_range_gives_the_documented_plan():
    plan = TrainPlan.fit(datetime(2017, 1, 1, 11, 53, tzinfo=UTC), datetime(2018, 1, 1, 4, 1, tzinfo=UTC))
    assert plan.train[0] == datetime(2017, 2, 1, tzinfo=UTC)
    assert plan.train[-1] == datetime(2017, 10, 1, tzinfo=UTC)
    assert len(plan.train) == 17  # the 1st and the 15th
    assert plan.calibrate == (datetime(2017, 11, 1, tzinfo=UTC),)
    assert plan.test == datetime(2017, 12, 1, tzinfo=UTC)


def test_one_calibration_cutoff_is_the_month_start_before_the_test_in_31_day_months_too():
    plan = TrainPlan.fit(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 8, 31, tzinfo=UTC))
    assert (plan.calibrate, plan.test) == ((datetime(2017, 7, 1, tzinfo=UTC),), datetime(2017, 8, 1, tzinfo=UTC))


def test_pooled_calibration_takes_weekly_slices_after_the_training_cutoffs():
    plan = TrainPlan.fit(
        datetime(2017, 1, 1, 11, 53, tzinfo=UTC),
        datetime(2018, 1, 1, 4, 1, tzinfo=UTC),
        TrainSettings(calibration_cutoffs=4),
    )
    # One horizon before the test cutoff, then whole weeks before it; the training cutoffs do not move.
    assert plan.calibrate == tuple(datetime(2017, m, d, tzinfo=UTC) for m, d in ((10, 13), (10, 20), (10, 27), (11, 1)))
    assert len(plan.train) == 17 and plan.train[-1] == datetime(2017, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize("n_cal", [1, 4])
@pytest.mark.parametrize("days", [160, 200, 400])
def test_labels_never_overlap_the_next_slice(days, n_cal):
    first = datetime(2019, 3, 7, tzinfo=UTC)
    plan = TrainPlan.fit(first, first + timedelta(days=days), TrainSettings(calibration_cutoffs=n_cal))
    horizon = timedelta(days=30)
    assert all(t + horizon <= plan.calibrate[-1] for t in plan.train)  # training labels close before calibration's
    assert all(t < plan.calibrate[0] for t in plan.train)  # calibration slices come after every training slice
    assert plan.calibrate[-1] + horizon <= plan.test
    assert plan.test + horizon <= first + timedelta(days=days)
    assert plan.train[0] >= first + timedelta(days=28)


def test_too_little_history_is_a_clear_error():
    with pytest.raises(TrainError, match="too short to train"):
        TrainPlan.fit(datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 3, 1, tzinfo=UTC))


@pytest.mark.parametrize("n_cal", [1, 4])
@pytest.mark.parametrize(("horizon", "every", "weeks"), [(7, 7, 6), (14, 7, 10), (7, 1, 5)])
def test_a_few_weeks_train_with_a_short_horizon_and_a_cadence_in_days(horizon, every, weeks, n_cal):
    first = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
    last = first + timedelta(weeks=weeks)
    t = TrainSettings(label_horizon_days=horizon, cutoff_every_days=every, history_days=7, calibration_cutoffs=n_cal)
    plan = TrainPlan.fit(first, last, t)
    h = timedelta(days=horizon)
    assert plan.train and all(b - a == timedelta(days=every) for a, b in zip(plan.train, plan.train[1:], strict=False))
    assert plan.train[0] >= first + timedelta(days=7)  # the history before the first cutoff
    assert all(c + h <= plan.calibrate[-1] for c in plan.train)  # training labels close before calibration's
    assert all(c < plan.calibrate[0] for c in plan.train)  # calibration slices come after every training slice
    assert plan.calibrate[-1] + h <= plan.test and plan.test + h <= last
    assert all(c == c.replace(hour=0, minute=0) for c in plan.all_cutoffs())


def test_a_too_short_export_names_the_settings_that_would_fit_it():
    first = datetime(2024, 5, 6, tzinfo=UTC)
    with pytest.raises(TrainError, match=r"train\.label_horizon_days"):
        TrainPlan.fit(first, first + timedelta(days=20), TrainSettings(label_horizon_days=7, cutoff_every_days=7))
