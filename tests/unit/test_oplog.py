"""Tests for monitor.serve.oplog: the decision lines of a batch and the periodic summary line."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest

from monitor.govern.registry import AuditEvent, ModelVersion, TrainingData
from monitor.pipeline import BatchResult
from monitor.records import DeadLetter
from monitor.schema import SENSOR_INDEX, Reason, Rejection
from monitor.serve.oplog import (
    SUMMARY_INTERVAL_S,
    Summary,
    Window,
    decision_lines,
    format_summary,
    log_decisions,
)
from tests.unit.test_metrics import _alert, _Msg

TEMP = SENSOR_INDEX["temperature"]


def _version(version: int, parent: int) -> ModelVersion:
    return ModelVersion(
        device_id="dev-1",
        sensor="temperature",
        version=version,
        parent=parent,
        trained_on=TrainingData("telemon.readings", 3, 100, 611, 512, 1000, 512000),
        params={},
        baseline={},
        trigger_rule="score_drift" if parent else "",
        trigger_alert_id="",
        code_version="0.1.0+test",
        config_hash="abc",
        created_at=512000,
        source="topic" if parent else "",
    )


def _event(kind: str, version: int, previous: int, reason: str = "") -> AuditEvent:
    return AuditEvent(
        kind=kind,  # type: ignore[arg-type]
        device_id="dev-1",
        sensor="temperature",
        version=version,
        previous=previous,
        reason=reason,
    )


def _decided() -> BatchResult:
    r = BatchResult()
    r.versions = [_version(1, 0), _version(3, 2)]  # the online model as v1, then the candidate
    r.audit = [
        _event("rule_fired", 2, 0),
        _event("promoted", 3, 2, "candidate AUC 0.981 > incumbent 0.702 + margin 0.020"),
        _event("rejected", 4, 3, "candidate AUC 0.955 < incumbent 0.981 + margin 0.020"),
        _event("rejected", 3, 3, "training failed: no readings"),
    ]
    return r


def test_decision_lines_name_each_retrain_promotion_and_rejection() -> None:
    assert list(decision_lines(_decided())) == [
        "retrained dev-1/temperature: candidate v3 (serving v2) on 512 readings of telemon.readings/3 "
        "offsets 100-611, rows from the topic; rule score_drift",
        "promoted dev-1/temperature: v3 replaces v2 (candidate AUC 0.981 > incumbent 0.702 + margin 0.020)",
        "rejected dev-1/temperature: candidate v4, v3 keeps serving "
        "(candidate AUC 0.955 < incumbent 0.981 + margin 0.020)",
        "rejected the retrain of dev-1/temperature: v3 keeps serving (training failed: no readings)",
    ]


def test_a_batch_without_decisions_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    r = BatchResult()
    r.versions = [_version(1, 0)]  # the online model registered: not a retrain
    r.audit = [_event("rule_fired", 1, 0)]
    with caplog.at_level(logging.INFO, "monitor.serve.oplog"):
        log_decisions(r)
    assert caplog.records == []


def test_log_decisions_one_info_line_each(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "monitor.serve.oplog"):
        log_decisions(_decided())
    assert [(r.name, r.levelno) for r in caplog.records] == [("monitor.serve.oplog", logging.INFO)] * 4
    assert [r.getMessage() for r in caplog.records] == list(decision_lines(_decided()))


def _busy(valid: int, ts_ms: list[int]) -> BatchResult:
    r = BatchResult()
    r.valid[TEMP] = valid
    r.dead_letters = [DeadLetter(_Msg(), Rejection(Reason.INVALID_JSON, "x"))]
    r.alerts = [_alert("score_drift", "firing")]
    r.event_ts = np.array(ts_ms, np.int64)
    return r


def test_window_counts_what_the_batches_carry() -> None:
    w = Window()
    w.add(_busy(4, [9_000, 10_000, 11_000]), wall_ms=12_000)  # lags 3, 2 and 1 s
    w.add(_decided(), wall_ms=12_000)
    assert (w.batches, w.valid, w.messages, w.dead_letters, w.alerts) == (2, 4, 5, 1, 1)
    assert (w.retrains, w.promoted, w.rejected) == (1, 1, 2)
    assert (w.lag_sum_s, w.lag_count) == (6.0, 3)


def test_a_reading_from_the_future_lags_zero() -> None:
    w = Window()
    w.add(_busy(1, [20_000]), wall_ms=12_000)
    assert (w.lag_sum_s, w.lag_count) == (0.0, 1)


def test_format_summary() -> None:
    w = Window()
    w.add(_busy(600, [9_000, 10_000, 11_000]), wall_ms=12_000)
    w.add(_decided(), wall_ms=12_000)
    assert format_summary(w, 60.0, 1234, degraded=True) == (
        "last 60 s: 10.0 readings/s (600 valid), 10.0 messages/s, 2 batches, 1 dead letters, 1 alerts, "
        "1 retrains (1 promoted, 2 rejected), consumer lag 1234, event lag 2 s, degraded yes"
    )


def test_format_summary_of_an_idle_window() -> None:
    assert format_summary(Window(), 60.0, None, degraded=False) == (
        "last 60 s: 0.0 readings/s (0 valid), 0.0 messages/s, 0 batches, 0 dead letters, 0 alerts, "
        "0 retrains (0 promoted, 0 rejected), consumer lag -, event lag -, degraded no"
    )


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_summary_is_due_every_interval_and_starts_a_new_window() -> None:
    clock = Clock()
    s = Summary(interval_s=60.0, clock=clock)
    s.add(_busy(120, []), lag=50, wall_ms=0)
    clock.now += 59.9
    assert s.due(degraded=False) is None
    clock.now += 0.1
    first = s.due(degraded=False)
    assert first is not None and first.startswith("last 60 s: 2.0 readings/s (120 valid)")
    assert "consumer lag 50," in first
    assert s.due(degraded=False) is None  # the next one is 60 s after this one
    clock.now += 90.0  # a loop turn that came late: the line covers the 90 s
    second = s.due(degraded=True)
    assert second is not None and second.startswith("last 90 s: 0.0 readings/s (0 valid)")
    assert "0 batches" in second and "consumer lag 50," in second and second.endswith("degraded yes")


def test_summary_logs_one_info_line_when_due(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    s = Summary(clock=clock)
    with caplog.at_level(logging.INFO, "monitor.serve.oplog"):
        s.log_if_due(degraded=False)
        clock.now += SUMMARY_INTERVAL_S
        s.log_if_due(degraded=False)
        s.log_if_due(degraded=False)
    assert [r.getMessage()[:10] for r in caplog.records] == ["last 60 s:"]
    assert SUMMARY_INTERVAL_S == 60.0
