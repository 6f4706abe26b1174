"""Tests for monitor.evaluation.quality: every metric against small examples computed by hand.

Percentiles are numpy's linear ones: for n sorted values v[0..n-1] the q-th percentile sits at
rank r = q/100 * (n - 1) and is v[floor(r)] + frac(r) * (v[floor(r) + 1] - v[floor(r)]).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from monitor.evaluation.quality import (
    MS_PER_DAY,
    AnomalyQuality,
    DelaySummary,
    Detection,
    LabelledEvent,
    anomaly_quality,
    drift_quality,
    f1_score,
    observed_device_days,
)

A = ("dev-a", "temperature")
A2 = ("dev-a", "humidity")
B = ("dev-b", "humidity")
C = ("dev-c", "pressure")
HOUR = MS_PER_DAY // 24
END = 10_000  # end of every stream below, for permanent changes


def _ev(key: tuple[str, str], kind: str, start: int, end: int = END) -> LabelledEvent:
    return LabelledEvent(key=key, kind=kind, start_ts=start, end_ts=end)


def _dets(key: tuple[str, str], *ts: int, rule: str = "r") -> list[Detection]:
    return [Detection(key=key, ts=t, rule=rule) for t in ts]


def _summary(s: DelaySummary | None) -> tuple[object, ...]:
    """(count, median, p90), typed loosely so that it compares with pytest.approx."""
    assert s is not None
    return s.count, s.median, s.p90


def _assert_plain_json(value: Any) -> None:
    """Only plain JSON types, recursively: no numpy scalars, tuples or NaN."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for v in value.values():
            _assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_json(v)
    else:
        assert value is None or type(value) in (bool, int, float, str), (value, type(value))
        if type(value) is float:
            assert np.isfinite(value)


# --- DelaySummary and F1 ------------------------------------------------------------------------


def test_delay_summary_linear_percentiles() -> None:
    # sorted [100, 200, 300, 400, 1000], n = 5
    # median: rank 0.5 * 4 = 2 -> 300
    # p90: rank 0.9 * 4 = 3.6 -> 400 + 0.6 * (1000 - 400) = 760
    s = DelaySummary.of([1000, 300, 100, 400, 200])
    assert s.count == 5
    assert s.median == pytest.approx(300.0)
    assert s.p90 == pytest.approx(760.0)
    assert s.to_dict() == {"count": 5, "median": pytest.approx(300.0), "p90": pytest.approx(760.0)}


def test_delay_summary_single_and_empty() -> None:
    assert DelaySummary.of([42]) == DelaySummary(count=1, median=42.0, p90=42.0)
    assert DelaySummary.of([]) == DelaySummary(count=0, median=None, p90=None)
    assert DelaySummary.of([]).to_dict() == {"count": 0, "median": None, "p90": None}


def test_f1_score() -> None:
    # 2 * 0.5 * 1.0 / 1.5 = 2/3
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0  # both zero: defined as 0, not 0/0
    assert f1_score(0.0, 1.0) == 0.0
    assert f1_score(None, 1.0) is None
    assert f1_score(1.0, None) is None


# --- anomaly windows: the worked example --------------------------------------------------------

# grace 500 ms.
#   e1  A  spike_burst [1000, 2000] -> window [1000, 2500]
#   e2  A  stuck_at    [5000, 6000] -> window [5000, 6500]
#   e3  B  spike_burst [1000, 1000] -> window [1000, 1500]
# detections:
#   A: 1200 (e1), 1800 (e1), 2500 (e1, exactly on end + grace), 3000 (outside), 7000 (outside)
#   B: 900 (outside, before the start), 1500 (e3, exactly on end + grace)
EVENTS = [
    _ev(A, "spike_burst", 1000, 2000),
    _ev(A, "stuck_at", 5000, 6000),
    _ev(B, "spike_burst", 1000, 1000),
]
DETECTIONS = _dets(A, 3000, 1200, 7000, 1800, 2500) + _dets(B, 1500, 900)
# device-days: dev-a keys A [0, 1 day] and A2 [0.5 day, 1.5 days] -> union [0, 1.5 days] = 1.5
#              dev-b key B [0, 0.5 day] = 0.5                      -> total 2.0 device-days
SPANS = {A: (0, MS_PER_DAY), A2: (MS_PER_DAY // 2, 3 * MS_PER_DAY // 2), B: (0, MS_PER_DAY // 2)}
# readings: A every 100 ms; B at irregular times
READINGS = {
    A: np.arange(0, END + 1, 100, dtype=np.int64),
    B: np.array([500, 1000, 1100, 1250, 1400, 1500], dtype=np.int64),
}


def _worked(readings: bool = True) -> AnomalyQuality:
    return anomaly_quality(
        EVENTS, DETECTIONS, grace_ms=500, stream_span=SPANS, readings_index=READINGS if readings else None
    )


def test_precision_recall_f1() -> None:
    q = _worked()
    # windows 3, detected e1 and e3 -> recall 2/3
    assert (q.n_windows, q.n_detected) == (3, 2)
    assert q.recall == pytest.approx(2 / 3)
    # detections 7, inside 1200, 1800, 2500, 1500 = 4 -> precision 4/7; false alarms 7 - 4 = 3
    assert (q.n_detections, q.n_inside, q.n_false_alarms) == (7, 4, 3)
    assert q.precision == pytest.approx(4 / 7)
    # F1 = 2 * 4/7 * 2/3 / (4/7 + 2/3) = (16/21) / (26/21) = 8/13
    assert q.f1 == pytest.approx(8 / 13)


def test_window_outcomes_and_delays_in_ms() -> None:
    q = _worked()
    e1, e2, e3 = q.windows
    # e1: 1200, 1800, 2500 in [1000, 2500]; first 1200 -> delay 1200 - 1000 = 200 ms
    assert (e1.detected, e1.n_detections, e1.first_detection_ts, e1.delay_ms) == (True, 3, 1200, 200)
    assert e1.window_end == 2500
    # e2: nothing in [5000, 6500] (3000 and 7000 are outside) -> missed, no delay
    assert (e2.detected, e2.n_detections, e2.first_detection_ts, e2.delay_ms) == (False, 0, None, None)
    assert e2.delay_readings is None
    # e3: 1500 in [1000, 1500] -> delay 500 ms
    assert (e3.detected, e3.n_detections, e3.first_detection_ts, e3.delay_ms) == (True, 1, 1500, 500)
    # delays [200, 500]: median rank 0.5 -> 200 + 0.5 * 300 = 350; p90 rank 0.9 -> 200 + 0.9 * 300 = 470
    assert q.delay_ms.count == 2
    assert q.delay_ms.median == pytest.approx(350.0)
    assert q.delay_ms.p90 == pytest.approx(470.0)


def test_delays_in_readings() -> None:
    q = _worked()
    e1, _, e3 = q.windows
    # e1: A readings in [1000, 1200) = 1000, 1100 -> 2
    assert e1.delay_readings == 2
    # e3: B readings in [1000, 1500) = 1000, 1100, 1250, 1400 -> 4
    assert e3.delay_readings == 4
    # [2, 4]: median 2 + 0.5 * 2 = 3; p90 2 + 0.9 * 2 = 3.8
    assert _summary(q.delay_readings) == (2, pytest.approx(3.0), pytest.approx(3.8))


def test_without_readings_index_there_are_no_reading_delays() -> None:
    q = _worked(readings=False)
    assert q.delay_readings is None
    assert all(w.delay_readings is None for w in q.windows)
    assert all(k.delay_readings is None for k in q.by_kind.values())
    assert q.delay_ms.median == pytest.approx(350.0)  # unchanged


def test_false_alarms_per_device_day_two_devices_different_spans() -> None:
    q = _worked()
    # 1.5 device-days (dev-a, union of two overlapping sensor spans) + 0.5 (dev-b) = 2.0
    assert q.device_days == pytest.approx(2.0)
    # 3 false alarms / 2.0 device-days = 1.5
    assert q.false_alarms_per_device_day == pytest.approx(1.5)


def test_per_kind_breakdown() -> None:
    q = _worked()
    assert list(q.by_kind) == ["spike_burst", "stuck_at"]
    spike, stuck = q.by_kind["spike_burst"], q.by_kind["stuck_at"]
    # spike_burst: e1 and e3, both detected -> recall 2/2; delays [200, 500] ms and [2, 4] readings
    assert (spike.n_windows, spike.n_detected, spike.recall) == (2, 2, 1.0)
    assert _summary(spike.delay_ms) == (2, pytest.approx(350.0), pytest.approx(470.0))
    assert _summary(spike.delay_readings) == (2, pytest.approx(3.0), pytest.approx(3.8))
    # stuck_at: e2 only, missed -> recall 0/1, no delays
    assert (stuck.n_windows, stuck.n_detected, stuck.recall) == (1, 0, 0.0)
    assert _summary(stuck.delay_ms) == (0, None, None)
    assert _summary(stuck.delay_readings) == (0, None, None)


def test_anomaly_to_dict_is_plain_json() -> None:
    d = _worked().to_dict()
    _assert_plain_json(d)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["recall"] == pytest.approx(2 / 3)
    assert d["n_false_alarms"] == 3
    assert d["delay_readings"] == {"count": 2, "median": pytest.approx(3.0), "p90": pytest.approx(3.8)}
    assert d["by_kind"]["stuck_at"]["delay_ms"] == {"count": 0, "median": None, "p90": None}
    assert d["windows"][1] == {
        "event": {
            "device_id": "dev-a",
            "sensor": "temperature",
            "kind": "stuck_at",
            "start_ts": 5000,
            "end_ts": 6000,
        },
        "window_end": 6500,
        "detected": False,
        "n_detections": 0,
        "first_detection_ts": None,
        "delay_ms": None,
        "delay_readings": None,
    }


# --- anomaly windows: edge cases ----------------------------------------------------------------

SPAN_A = {A: (0, MS_PER_DAY)}


def test_no_events_recall_undefined() -> None:
    q = anomaly_quality([], _dets(A, 100, 200), grace_ms=0, stream_span=SPAN_A)
    assert q.recall is None
    assert q.f1 is None
    # no windows -> both detections outside -> precision 0/2, 2 false alarms / 1 device-day
    assert q.precision == 0.0
    assert q.n_false_alarms == 2
    assert q.false_alarms_per_device_day == pytest.approx(2.0)
    assert _summary(q.delay_ms) == (0, None, None)
    assert dict(q.by_kind) == {}
    assert q.windows == ()
    d = q.to_dict()
    assert (d["recall"], d["f1"], d["by_kind"], d["windows"]) == (None, None, {}, [])


def test_no_detections_precision_undefined() -> None:
    q = anomaly_quality([_ev(A, "spike_burst", 100, 200)], [], grace_ms=0, stream_span=SPAN_A)
    assert q.precision is None
    assert q.f1 is None
    assert q.recall == 0.0  # 0 of 1 windows
    assert (q.n_detections, q.n_inside, q.n_false_alarms) == (0, 0, 0)
    assert q.false_alarms_per_device_day == 0.0
    assert q.to_dict()["precision"] is None


def test_nothing_at_all() -> None:
    q = anomaly_quality([], [], grace_ms=0, stream_span={})
    assert (q.recall, q.precision, q.f1) == (None, None, None)
    assert q.device_days == 0.0
    assert q.false_alarms_per_device_day is None  # 0 false alarms over 0 device-days
    _assert_plain_json(q.to_dict())


def test_window_boundaries_are_inclusive() -> None:
    # window [1000, 2000 + 100] = [1000, 2100]
    event = _ev(A, "spike_burst", 1000, 2000)
    for ts, inside in [(999, False), (1000, True), (2100, True), (2101, False)]:
        q = anomaly_quality([event], _dets(A, ts), grace_ms=100, stream_span=SPAN_A)
        assert q.n_detected == int(inside), ts
        assert q.n_inside == int(inside), ts
    # detection exactly at start_ts: delay 0 ms and 0 readings (no reading in [1000, 1000))
    q = anomaly_quality(
        [event],
        _dets(A, 1000),
        grace_ms=100,
        stream_span=SPAN_A,
        readings_index={A: np.array([900, 1000, 1100])},
    )
    assert (q.windows[0].delay_ms, q.windows[0].delay_readings) == (0, 0)


def test_detection_in_grace_period_after_the_event() -> None:
    # window [1000, 1000 + 250]: 1200 is after the event ended but within the grace -> delay 200 ms
    q = anomaly_quality([_ev(A, "spike_burst", 1000, 1000)], _dets(A, 1200), grace_ms=250, stream_span=SPAN_A)
    assert q.windows[0].delay_ms == 200
    assert q.recall == 1.0


def test_multiple_detections_in_one_window() -> None:
    # window [1000, 2000]; detections 1100, 1100 (duplicate), 1500, 2000
    q = anomaly_quality(
        [_ev(A, "stuck_at", 1000, 2000)], _dets(A, 1500, 1100, 2000, 1100), grace_ms=0, stream_span=SPAN_A
    )
    # recall: the window counts once -> 1/1
    assert (q.n_windows, q.n_detected, q.recall) == (1, 1, 1.0)
    # precision: all 4 detections inside -> 4/4
    assert (q.n_inside, q.precision) == (4, 1.0)
    # delay from the earliest: 1100 - 1000 = 100
    assert (q.windows[0].n_detections, q.windows[0].delay_ms) == (4, 100)


def test_overlapping_windows_on_one_key() -> None:
    # e1 [1000, 2000], e2 [1500, 3000], grace 0; detections 1600 (in both), 2500 (e2 only), 3500 (none)
    events = [_ev(A, "spike_burst", 1000, 2000), _ev(A, "variance_increase", 1500, 3000)]
    q = anomaly_quality(events, _dets(A, 1600, 2500, 3500), grace_ms=0, stream_span=SPAN_A)
    e1, e2 = q.windows
    # each window scored on its own: e1 first 1600 -> 600 ms; e2 first 1600 -> 100 ms
    assert (e1.n_detections, e1.delay_ms) == (1, 600)
    assert (e2.n_detections, e2.delay_ms) == (2, 100)
    assert q.recall == 1.0
    # 1600 is inside two windows but is one detection: inside = {1600, 2500} = 2 of 3
    assert (q.n_inside, q.n_false_alarms) == (2, 1)
    assert q.precision == pytest.approx(2 / 3)


def test_detections_on_other_keys_do_not_hit_a_window() -> None:
    # the window is on A; a detection on A2 (same device, other sensor) at the same time is a false alarm
    spans = {A: (0, MS_PER_DAY), A2: (0, MS_PER_DAY)}
    q = anomaly_quality([_ev(A, "spike_burst", 1000, 2000)], _dets(A2, 1500), grace_ms=0, stream_span=spans)
    assert (q.n_detected, q.n_inside, q.n_false_alarms) == (0, 0, 1)
    # one device observed for 1 day (its two sensors share the span) -> 1 false alarm per device-day
    assert q.false_alarms_per_device_day == pytest.approx(1.0)


# --- observed device-days -----------------------------------------------------------------------


def test_observed_device_days_union_per_device() -> None:
    spans = {
        # dev-a: [0, 10 h] and [20 h, 30 h] are disjoint -> 20 h (the 10 h gap is not observed)
        ("dev-a", "temperature"): (0, 10 * HOUR),
        ("dev-a", "humidity"): (20 * HOUR, 30 * HOUR),
        # dev-a: [5 h, 8 h] lies inside [0, 10 h] -> adds nothing
        ("dev-a", "pressure"): (5 * HOUR, 8 * HOUR),
        # dev-b: [0, 12 h] and [12 h, 18 h] touch -> 18 h
        ("dev-b", "temperature"): (0, 12 * HOUR),
        ("dev-b", "humidity"): (12 * HOUR, 18 * HOUR),
        # dev-c: one reading only -> 0 h
        ("dev-c", "temperature"): (7 * HOUR, 7 * HOUR),
    }
    # (20 + 18 + 0) h / 24 h
    assert observed_device_days(spans) == pytest.approx(38 / 24)
    assert observed_device_days({}) == 0.0


# --- validation ---------------------------------------------------------------------------------


def test_invalid_inputs_raise() -> None:
    event = _ev(A, "spike_burst", 1000, 2000)
    with pytest.raises(ValueError, match="end_ts"):
        LabelledEvent(key=A, kind="spike_burst", start_ts=2000, end_ts=1000)
    with pytest.raises(ValueError, match="grace_ms"):
        anomaly_quality([event], [], grace_ms=-1, stream_span=SPAN_A)
    with pytest.raises(ValueError, match="stream_span lacks"):
        anomaly_quality([event], _dets(B, 1500), grace_ms=0, stream_span=SPAN_A)
    with pytest.raises(ValueError, match="last_ts"):
        anomaly_quality([event], [], grace_ms=0, stream_span={A: (10, 5)})
    with pytest.raises(ValueError, match="readings_index has no"):
        anomaly_quality([event], _dets(A, 1500), grace_ms=0, stream_span=SPAN_A, readings_index={})
    with pytest.raises(ValueError, match="sorted"):
        anomaly_quality([event], [], grace_ms=0, stream_span=SPAN_A, readings_index={A: np.array([3, 1, 2])})
    with pytest.raises(ValueError, match="horizon_ms"):
        drift_quality([event], [], horizon_ms=-1)


# --- drift: the worked example ------------------------------------------------------------------

# changes (end_ts = END, not used):
#   c1  A gradual_drift at 1000
#   c2  A abrupt_shift  at 5000
#   c3  B abrupt_shift  at 2000
# detections:
#   A: 500 (before A's first change: false), 1400, 3000, 5000 (exactly at c2's start)
#   B: 1999 (before B's first change: false)
#   C: 100, 200 (no change on C: false)
CHANGES = [_ev(A, "gradual_drift", 1000), _ev(A, "abrupt_shift", 5000), _ev(B, "abrupt_shift", 2000)]
DRIFT_DETECTIONS = _dets(A, 5000, 500, 3000, 1400) + _dets(B, 1999) + _dets(C, 200, 100)


def test_drift_without_horizon() -> None:
    q = drift_quality(CHANGES, DRIFT_DETECTIONS, horizon_ms=None)
    c1, c2, c3 = q.changes
    # c1 searches [1000, 5000): 1400, 3000 -> first 1400, delay 400 (5000 belongs to c2)
    assert (c1.detected, c1.n_detections, c1.first_detection_ts, c1.delay_ms) == (True, 2, 1400, 400)
    # c2 searches [5000, end): 5000 -> delay 0
    assert (c2.detected, c2.n_detections, c2.delay_ms) == (True, 1, 0)
    # c3 searches [2000, end) on B: nothing (1999 is before) -> missed
    assert (c3.detected, c3.n_detections, c3.first_detection_ts, c3.delay_ms) == (False, 0, None, None)
    # detected 2 of 3, missed 1
    assert (q.n_changes, q.n_detected, q.n_missed) == (3, 2, 1)
    assert q.detection_rate == pytest.approx(2 / 3)
    # delays [0, 400]: median 0 + 0.5 * 400 = 200; p90 0 + 0.9 * 400 = 360
    assert _summary(q.delay_ms) == (2, pytest.approx(200.0), pytest.approx(360.0))
    # false: A 500 + B 1999 + C 100, 200 = 4 of 7; every later detection is in a search interval
    assert (q.n_detections, q.n_false_detections, q.n_unattributed) == (7, 4, 0)


def test_drift_with_horizon() -> None:
    q = drift_quality(CHANGES, DRIFT_DETECTIONS, horizon_ms=300)
    c1, c2, c3 = q.changes
    # c1 searches [1000, 1300]: nothing (1400 is too late) -> missed
    assert (c1.detected, c1.delay_ms) == (False, None)
    # c2 searches [5000, 5300]: 5000 -> delay 0
    assert (c2.detected, c2.delay_ms) == (True, 0)
    assert not c3.detected
    assert (q.n_detected, q.n_missed) == (1, 2)
    assert q.detection_rate == pytest.approx(1 / 3)
    # false detections do not depend on the horizon: still 4
    # unattributed: A detections at or after 1000 in no search interval: 1400, 3000 -> 2
    assert (q.n_false_detections, q.n_unattributed) == (4, 2)


def test_drift_horizon_end_is_inclusive() -> None:
    # c1 searches [1000, 1000 + 400] = [1000, 1400]: 1400 is on the boundary -> delay 400
    q = drift_quality(CHANGES, DRIFT_DETECTIONS, horizon_ms=400)
    assert q.changes[0].delay_ms == 400


def test_drift_per_kind_breakdown() -> None:
    q = drift_quality(CHANGES, DRIFT_DETECTIONS, horizon_ms=None)
    assert list(q.by_kind) == ["abrupt_shift", "gradual_drift"]
    abrupt, gradual = q.by_kind["abrupt_shift"], q.by_kind["gradual_drift"]
    # abrupt_shift: c2 detected (0 ms), c3 missed -> 1/2
    assert (abrupt.n_changes, abrupt.n_detected, abrupt.n_missed, abrupt.detection_rate) == (2, 1, 1, 0.5)
    assert _summary(abrupt.delay_ms) == (1, 0.0, 0.0)
    # gradual_drift: c1 detected (400 ms) -> 1/1
    assert (gradual.n_changes, gradual.n_detected, gradual.n_missed, gradual.detection_rate) == (1, 1, 0, 1.0)
    assert _summary(gradual.delay_ms) == (1, 400.0, 400.0)


def test_drift_to_dict_is_plain_json() -> None:
    d = drift_quality(CHANGES, DRIFT_DETECTIONS, horizon_ms=None).to_dict()
    _assert_plain_json(d)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["n_false_detections"] == 4
    assert d["by_kind"]["gradual_drift"]["delay_ms"] == {"count": 1, "median": 400.0, "p90": 400.0}
    assert d["changes"][2] == {
        "event": {
            "device_id": "dev-b",
            "sensor": "humidity",
            "kind": "abrupt_shift",
            "start_ts": 2000,
            "end_ts": END,
        },
        "detected": False,
        "n_detections": 0,
        "first_detection_ts": None,
        "delay_ms": None,
    }


# --- drift: edge cases --------------------------------------------------------------------------


def test_drift_false_detections_stop_at_the_first_change_start() -> None:
    # change at 1000: 999 is before it (false); 1000 is at its start (detected at delay 0, not false)
    q = drift_quality([_ev(A, "abrupt_shift", 1000)], _dets(A, 999, 1000), horizon_ms=0)
    assert q.changes[0].delay_ms == 0
    assert (q.n_false_detections, q.n_unattributed) == (1, 0)


def test_drift_detection_at_next_change_start_belongs_to_the_next_change() -> None:
    # without a horizon c1 searches [1000, 2000) and c2 [2000, end): 2000 is c2's, at delay 0
    changes = [_ev(A, "abrupt_shift", 1000), _ev(A, "abrupt_shift", 2000)]
    q = drift_quality(changes, _dets(A, 2000), horizon_ms=None)
    assert [c.delay_ms for c in q.changes] == [None, 0]
    assert (q.n_missed, q.n_false_detections) == (1, 0)


def test_drift_horizon_may_reach_past_the_next_change() -> None:
    changes = [_ev(A, "abrupt_shift", 1000), _ev(A, "abrupt_shift", 1200)]
    # horizon 1000: c1 searches [1000, 2000], c2 [1200, 2200]; 1500 is in both -> 500 and 300 ms
    q = drift_quality(changes, _dets(A, 1500), horizon_ms=1000)
    assert [c.delay_ms for c in q.changes] == [500, 300]
    # without a horizon c1 stops at 1200 -> missed; c2 gets 1500 at 300 ms
    q = drift_quality(changes, _dets(A, 1500), horizon_ms=None)
    assert [c.delay_ms for c in q.changes] == [None, 300]


def test_drift_changes_starting_together_share_their_interval() -> None:
    # both start at 1000; "next change" means the next strictly later start, so both search [1000, end)
    changes = [_ev(A, "abrupt_shift", 1000), _ev(A, "variance_increase", 1000)]
    q = drift_quality(changes, _dets(A, 1100), horizon_ms=None)
    assert [c.delay_ms for c in q.changes] == [100, 100]


def test_drift_outcomes_keep_input_order() -> None:
    changes = [_ev(A, "abrupt_shift", 5000), _ev(B, "abrupt_shift", 100), _ev(A, "gradual_drift", 1000)]
    # A: c@1000 searches [1000, 5000) -> 1200 at 200 ms; c@5000 searches [5000, end) -> 6000 at 1000 ms
    q = drift_quality(changes, _dets(A, 6000, 1200) + _dets(B, 150), horizon_ms=None)
    assert [c.event for c in q.changes] == changes
    assert [c.delay_ms for c in q.changes] == [1000, 50, 200]


def test_drift_no_changes() -> None:
    q = drift_quality([], _dets(A, 1, 2), horizon_ms=None)
    assert q.detection_rate is None
    assert (q.n_changes, q.n_detected, q.n_missed) == (0, 0, 0)
    # no change anywhere: every detection is false
    assert (q.n_detections, q.n_false_detections, q.n_unattributed) == (2, 2, 0)
    assert _summary(q.delay_ms) == (0, None, None)
    assert q.to_dict()["detection_rate"] is None
    assert q.to_dict()["by_kind"] == {}


def test_drift_no_detections() -> None:
    q = drift_quality(CHANGES, [], horizon_ms=1000)
    assert q.detection_rate == 0.0
    assert (q.n_detected, q.n_missed, q.n_false_detections, q.n_unattributed) == (0, 3, 0, 0)
    assert q.delay_ms.median is None
    assert q.by_kind["gradual_drift"].detection_rate == 0.0
