"""The pair model's trend and clipped learning, and the rate-of-change signal and rule."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detect.model import AdaptiveGaussian, distance_threshold
from monitor.detect.state import DetectState
from monitor.govern.rules import RuleSet, load_rules
from monitor.pipeline import Pipeline
from monitor.settings import DriftSettings, load_settings
from monitor.state.store import DeviceStates
from tests.unit.test_pipeline import RULES, Stream

THRESHOLD = distance_threshold(0.9999, 1)


def _ramp(model: AdaptiveGaussian, slope: float, n: int = 2000, seed: int = 0) -> list[float]:
    """Forecast errors of ``model`` over a noisy ramp (noise 1, ``slope`` per reading)."""
    rng, errors = np.random.default_rng(seed), []
    for i in range(n):
        x = slope * i + float(rng.standard_normal())
        errors.append(x - (model.params()["mean"][0] + model.params()["trend"][0]))
        model.step((x,), THRESHOLD, "learn")
    return errors


def test_the_trend_removes_the_lag_of_a_steady_ramp() -> None:
    """A level alone lags a ramp by slope / fading (here 4 noise sigmas, every reading on the same
    side); with the trend the errors average out."""
    level = np.mean(_ramp(AdaptiveGaussian(1, 0.05, 0.005, 1e-3, trend=0.0), 0.2)[500:])
    holt = np.mean(_ramp(AdaptiveGaussian(1, 0.05, 0.005, 1e-3, trend=0.3), 0.2)[500:])
    assert level == pytest.approx(0.2 * 0.95 / 0.05, rel=0.1)
    assert abs(holt) < 0.2


def test_a_flagged_reading_moves_the_level_by_a_clipped_step_and_nothing_else() -> None:
    m = AdaptiveGaussian.fit([(float(x),) for x in np.random.default_rng(1).normal(10, 1, 200)], trend=0.3)
    before = m.state()
    d2 = m.step((60.0,), THRESHOLD, "clip")
    after, k = m.state(), 1
    assert d2 > THRESHOLD
    assert after[0] == before[0]  # the count,
    assert after[1 + k] == before[1 + k] and after[1 + 2 * k] == before[1 + 2 * k]  # variance, trend
    # the level moved as for a reading on the threshold's boundary
    error = 60.0 - (before[1] + before[1 + 2 * k])
    step = 0.05 * error * np.sqrt(THRESHOLD / d2)
    assert after[1] == pytest.approx(before[1] + before[1 + 2 * k] + step)
    assert step == pytest.approx(0.05 * np.sqrt(THRESHOLD * before[1 + k]))
    skipped = AdaptiveGaussian.load(m.dump())
    skipped.step((60.0,), THRESHOLD, "skip")
    assert skipped.state() == after  # "skip" learns nothing of it


def test_a_step_is_absorbed_in_bounded_steps_and_a_spike_barely_moves_the_level() -> None:
    rng = np.random.default_rng(2)
    m = AdaptiveGaussian.fit([(float(x),) for x in rng.normal(0, 1, 300)], trend=0.3)
    m.step((1000.0,), THRESHOLD, "clip")  # one spike, 1000 sigmas
    assert abs(m.params()["mean"][0]) < 0.5
    flagged = [
        m.step((20.0 + float(rng.standard_normal()),), THRESHOLD, "clip") > THRESHOLD for _ in range(400)
    ]
    assert all(flagged[:50])  # a 20-sigma step stays flagged for a while ...
    assert not any(flagged[-100:])  # ... and is followed in the end, without a retrain


def test_snapshots_from_before_the_trend_load_with_zero_trends() -> None:
    det = DetectState(1, DriftSettings())
    det.grow(2)
    old = DeviceStates(
        ["dev"],
        {
            "model": np.array([[[60.0, 21.0, 0, 0, 0.25, 0, 0]]]),
            "model_params": np.array([[[1, 0.05, 0.005, 0.01]]]),
        },
    )
    assert det.mismatch(old) is None
    det.load([1], old)
    m = det.model_of(1, 0)
    assert m is not None
    assert (m.n, m.params(), m.trend) == (60, {"mean": [21.0], "var": [0.25], "trend": [0.0]}, 0.0)


def _run_ramp(degrees_per_hour: float, hours: float = 2.0) -> list[str]:
    """Temperature readings every 10 s, rising at ``degrees_per_hour``; the rules that fired."""
    p = Pipeline(
        load_settings(None), RuleSet(rules=[r for r in load_rules(RULES).rules if r.name == "rate_of_change"])
    )
    stream, rng, fired = Stream(), np.random.default_rng(3), []
    for i in range(int(hours * 360)):
        value = 21.0 + degrees_per_hour * i * 10 / 3600 + 0.05 * float(rng.standard_normal())
        msg = stream.reading(0, i * 10, value)  # seq i * 10: ts T0 + 10 s per reading
        fired += [a.rule for a in p.process([msg]).alerts if a.status == "firing"]
    return fired


def test_rate_of_change_fires_on_a_fast_ramp_and_not_on_weather() -> None:
    assert _run_ramp(60.0) == ["rate_of_change"]  # 1 degC a minute: a heater, not the weather
    assert _run_ramp(2.0) == []  # a warm afternoon


def test_the_rate_signal_is_the_levels_speed_over_its_window() -> None:
    det = DetectState(1, DriftSettings())
    det.grow(1)
    det.model_params[0, 0] = (1, 0.05, 0.005, 0.01, 0.3)
    det.model[0, 0, 0] = 100  # warmed up
    assert det.level_rate(0, 0, 1_000, 50, 300_000) is None  # opens the first window
    det.model[0, 0, 1] = 3.0
    assert det.level_rate(0, 0, 200_000, 50, 300_000) is None  # not closed yet
    assert det.level_rate(0, 0, 301_000, 50, 300_000) == pytest.approx(0.01)  # 3 units in 300 s
    det.reset_detectors(0, 0)
    assert det.level_rate(0, 0, 400_000, 50, 300_000) is None  # a new model starts again
