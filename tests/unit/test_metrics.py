"""Tests for monitor.serve.metrics: what one recorded batch does to the Prometheus samples."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, enable_created_metrics, generate_latest

import monitor
from monitor.analyze.feedback import Verdict, VerdictKind
from monitor.analyze.ledger import AlertRecord, Ledger
from monitor.govern.alerts import Alert
from monitor.govern.registry import AuditEvent, ModelVersion, TrainingData
from monitor.govern.rules import Evaluation, RuleEngine, RuleSet
from monitor.pipeline import BatchResult
from monitor.records import DeadLetter
from monitor.schema import SENSOR_INDEX, SENSOR_NAMES, Reason, Rejection
from monitor.serve.metrics import LAG_BUCKETS, SCORE_BUCKETS, BatchHistogram, Metrics
from monitor.serve.service import partition_lag
from monitor.state.store import CHECKS, N_CHECKS

N_SENSORS = len(SENSOR_NAMES)

DEVICE = "secret-device-4711"
TEMP = SENSOR_INDEX["temperature"]
ACCEL = SENSOR_INDEX["accelerometer"]


class _Msg:
    def value(self) -> bytes | None:
        return b"{"

    def key(self) -> bytes | None:
        return DEVICE.encode()

    def topic(self) -> str | None:
        return "telemon.readings"

    def partition(self) -> int | None:
        return 0

    def offset(self) -> int | None:
        return 1

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def _alert(rule: str, status: str, severity: str = "warning") -> Alert:
    return Alert(
        alert_id="0123456789abcdef",
        rule=rule,
        status=status,
        severity=severity,
        scope="device",
        device_id=DEVICE,
        sensor="temperature",
        started_at=1,
        ts=2,
        signals={"psi": 1.0},
        actions=["alert", "retrain"],
        model_version=1,
    )


def _decision(kind: str, sensor: str, version: int, previous: int, device: str = "dev-1") -> AuditEvent:
    return AuditEvent(kind=kind, device_id=device, sensor=sensor, version=version, previous=previous)  # type: ignore[arg-type]


def _version(sensor: str) -> ModelVersion:
    return ModelVersion(
        device_id=DEVICE,
        sensor=sensor,
        version=2,
        parent=1,
        trained_on=TrainingData("telemon.readings", 0, 10, 41, 32, 1000, 32000),
        params={"fading": 0.05},
        baseline={"mean": [21.0], "var": [0.25]},
        trigger_rule="score_drift",
        trigger_alert_id="0123456789abcdef",
        code_version="0.1.0+test",
        config_hash="abc",
        created_at=32000,
    )


def _result() -> BatchResult:
    r = BatchResult()
    r.valid[TEMP] = 7
    r.valid[ACCEL] = 3
    r.anomalies[TEMP] = 2
    r.scores = {TEMP: np.array([0.1, 0.5, 0.95, 0.99995, 1.0]), ACCEL: np.array([0.3])}
    r.dead_letters = [
        DeadLetter(_Msg(), Rejection(Reason.INVALID_JSON, "x")),
        DeadLetter(_Msg(), Rejection(Reason.INVALID_JSON, "y")),
        DeadLetter(_Msg(), Rejection(Reason.OUT_OF_RANGE, "z")),
    ]
    r.alerts = [
        _alert("score_drift", "firing"),
        _alert("score_drift", "resolved"),
        _alert("anomaly_burst", "firing"),
    ]
    r.audit = [_decision("promoted", "temperature", 2, 1), _decision("rejected", "humidity", 2, 1)]
    r.drift[("ks", "device", "temperature")] += 2
    r.drift[("psi", "device", "temperature")] += 0
    r.drift[("input", "device", "pressure")] += 1
    r.drift[("peer", "device", "pressure")] += 3
    r.fleet_stats["temperature"] = (0.25, 0.75)
    return r


def _integrity() -> np.ndarray:
    events = np.zeros((N_SENSORS, N_CHECKS), np.int64)
    events[TEMP, CHECKS.index("stuck_at")] = 1
    events[ACCEL, CHECKS.index("duplicate")] = 4
    return events


@pytest.fixture
def recorded() -> CollectorRegistry:
    registry = CollectorRegistry()
    Metrics(registry).record_batch(_result(), _integrity(), 0.02)
    return registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_readings_counted_per_sensor(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_readings_total", sensor="temperature") == 7
    assert _value(recorded, "telemon_readings_total", sensor="accelerometer") == 3
    assert _value(recorded, "telemon_readings_total", sensor="humidity") == 0  # pre-created child


def test_quarantined_counted_per_reason(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_messages_quarantined_total", reason="invalid_json") == 2
    assert _value(recorded, "telemon_messages_quarantined_total", reason="out_of_range") == 1
    assert _value(recorded, "telemon_messages_quarantined_total", reason="oversize") == 0  # pre-created
    for reason in Reason:
        assert _value(recorded, "telemon_messages_quarantined_total", reason=reason.value) is not None


def test_anomalies_and_integrity_events(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_anomalies_total", sensor="temperature") == 2
    assert _value(recorded, "telemon_integrity_events_total", sensor="temperature", check="stuck_at") == 1
    assert _value(recorded, "telemon_integrity_events_total", sensor="accelerometer", check="duplicate") == 4
    assert _value(recorded, "telemon_integrity_events_total", sensor="temperature", check="gap") == 0


def test_score_histogram_buckets_are_cumulative(recorded: CollectorRegistry) -> None:
    def bucket(le: str, sensor: str = "temperature") -> float | None:
        return _value(recorded, "telemon_anomaly_score_bucket", sensor=sensor, le=le)

    # temperature scores: 0.1, 0.5, 0.95, 0.99995, 1.0
    assert [bucket(f"{e:g}") for e in SCORE_BUCKETS] == [2, 2, 3, 3, 3, 4, 5]
    assert bucket("+Inf") == 5
    assert _value(recorded, "telemon_anomaly_score_count", sensor="temperature") == 5
    assert _value(recorded, "telemon_anomaly_score_sum", sensor="temperature") == pytest.approx(3.54995)
    assert bucket("0.5", "accelerometer") == 1
    assert bucket("+Inf", "gyroscope") == 0


def test_histogram_accumulates_over_batches() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(3):
        metrics.record_batch(_result(), _integrity(), 0.01)
    assert _value(registry, "telemon_anomaly_score_bucket", sensor="temperature", le="+Inf") == 15
    assert _value(registry, "telemon_readings_total", sensor="temperature") == 21
    assert _value(registry, "telemon_batch_duration_seconds_count") == 3


def test_alerts_counted_per_rule_severity_status(recorded: CollectorRegistry) -> None:
    name = "telemon_alerts_total"
    assert _value(recorded, name, rule="score_drift", severity="warning", status="firing") == 1
    assert _value(recorded, name, rule="score_drift", severity="warning", status="resolved") == 1
    assert _value(recorded, name, rule="anomaly_burst", severity="warning", status="firing") == 1


def test_retrains_counted_per_sensor(recorded: CollectorRegistry) -> None:
    name = "telemon_retrains_total"
    assert _value(recorded, name, sensor="temperature", outcome="promoted") == 1
    assert _value(recorded, name, sensor="humidity", outcome="rejected") == 1
    assert _value(recorded, name, sensor="humidity", outcome="promoted") == 0
    assert _value(recorded, name, sensor="accelerometer", outcome="promoted") == 0


def test_drift_and_fleet_gauges(recorded: CollectorRegistry) -> None:
    name = "telemon_drift_detections_total"
    assert _value(recorded, name, detector="ks", scope="device", sensor="temperature") == 2
    assert _value(recorded, name, detector="input", scope="device", sensor="pressure") == 1
    assert _value(recorded, name, detector="peer", scope="device", sensor="pressure") == 3
    assert _value(recorded, name, detector="psi", scope="device", sensor="temperature") == 0
    assert _value(recorded, name, detector="adwin", scope="fleet", sensor="humidity") == 0  # pre-created
    assert _value(recorded, "telemon_fleet_ks_statistic", sensor="temperature") == 0.25
    assert _value(recorded, "telemon_fleet_psi", sensor="temperature") == 0.75


def test_batch_duration_observed(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_batch_duration_seconds_count") == 1
    assert _value(recorded, "telemon_batch_duration_seconds_bucket", le="0.025") == 1
    assert _value(recorded, "telemon_batch_duration_seconds_bucket", le="0.01") == 0


def test_record_state() -> None:
    registry = CollectorRegistry()
    Metrics(registry).record_state(12, 34_000)
    assert _value(registry, "telemon_devices") == 12
    assert _value(registry, "telemon_state_bytes") == 34_000


def test_build_info_present(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_build_info", version=monitor.__version__) == 1


def test_exposition_has_no_device_id(recorded: CollectorRegistry) -> None:
    text = generate_latest(recorded).decode()
    assert "telemon_build_info" in text
    assert DEVICE not in text
    assert "device_id=" not in text
    assert 'device="' not in text
    for name in SENSOR_NAMES:
        assert f'telemon_readings_total{{sensor="{name}"}}' in text


def test_exposition_has_no_created_series() -> None:
    enable_created_metrics()  # prometheus_client's default, as in a new process
    registry = CollectorRegistry()
    Metrics(registry).record_batch(_result(), _integrity(), 0.01)
    names = [s.name for family in registry.collect() for s in family.samples]
    assert "telemon_readings_total" in names and "telemon_batch_duration_seconds_count" in names
    assert not [n for n in names if n.endswith("_created")]
    assert "_created" not in generate_latest(registry).decode()


def test_label_names_are_from_fixed_sets(recorded: CollectorRegistry) -> None:
    allowed = {
        "sensor",
        "reason",
        "check",
        "detector",
        "scope",
        "rule",
        "severity",
        "status",
        "version",
        "outcome",
        "topic",
        "partition",
        "verdict",  # true_positive, false_positive, expected_maintenance
        "le",
    }
    labels = {k for family in recorded.collect() for s in family.samples for k in s.labels}
    assert labels <= allowed


def test_fresh_registries_are_independent() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).record_batch(_result(), _integrity(), 0.01)
    Metrics(b)
    assert _value(a, "telemon_readings_total", sensor="temperature") == 7
    assert _value(b, "telemon_readings_total", sensor="temperature") == 0


def test_messages_received_counts_valid_and_quarantined(recorded: CollectorRegistry) -> None:
    assert _value(recorded, "telemon_messages_received_total") == 10 + 3


def test_event_lag_observed_per_batch_and_never_negative() -> None:
    registry = CollectorRegistry()
    r = BatchResult()
    now = 1_800_000_000.0
    # lags: 0.05 s, 1 s, 45 s, 2 h, and a reading 3 s in the future (counted as 0)
    r.event_ts = (now * 1000 - np.array([50, 1_000, 45_000, 7_200_000, -3_000])).astype(np.int64)
    Metrics(registry).record_batch(r, _integrity(), 0.01, now=now)

    def bucket(le: str) -> float | None:
        return _value(registry, "telemon_event_lag_seconds_bucket", le=le)

    assert [bucket(le) for le in ("0.1", "1", "30", "60", "3600", "21600", "86400", "+Inf")] == [
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        5,
    ]
    assert _value(registry, "telemon_event_lag_seconds_count") == 5
    assert _value(registry, "telemon_event_lag_seconds_sum") == pytest.approx(0.05 + 1 + 45 + 7200)
    assert len(LAG_BUCKETS) == 14


def test_event_lag_untouched_by_a_batch_without_readings() -> None:
    registry = CollectorRegistry()
    Metrics(registry).record_batch(BatchResult(), _integrity(), 0.01, now=1.0)
    assert _value(registry, "telemon_event_lag_seconds_count") == 0


def test_batch_histogram_puts_an_edge_value_in_its_own_bucket() -> None:
    h = BatchHistogram("x_seconds", "x", (1.0, 2.0))
    h.observe(np.array([1.0, 2.0, 2.5]))
    (family,) = h.collect()
    assert [(s.labels["le"], s.value) for s in family.samples if s.name == "x_seconds_bucket"] == [
        ("1", 1),
        ("2", 2),
        ("+Inf", 3),
    ]


def test_rule_children_precreated_and_firing_recorded() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, {"score_drift": "warning", "sensor_stuck": "critical"})
    name = "telemon_alerts_total"
    assert _value(registry, name, rule="sensor_stuck", severity="critical", status="firing") == 0
    assert _value(registry, name, rule="score_drift", severity="warning", status="resolved") == 0
    assert _value(registry, "telemon_alerts_firing", rule="score_drift", severity="warning") == 0
    metrics.record_firing({"score_drift": 3, "sensor_stuck": 0})
    assert _value(registry, "telemon_alerts_firing", rule="score_drift", severity="warning") == 3
    metrics.record_firing({"score_drift": 1, "sensor_stuck": 2})
    assert _value(registry, "telemon_alerts_firing", rule="score_drift", severity="warning") == 1
    assert _value(registry, "telemon_alerts_firing", rule="sensor_stuck", severity="critical") == 2


def test_retrain_attempts_by_outcome(recorded: CollectorRegistry) -> None:
    name = "telemon_retrains_total"
    assert _value(recorded, name, sensor="temperature", outcome="promoted") == 1
    assert _value(recorded, name, sensor="temperature", outcome="skipped") == 0
    registry = CollectorRegistry()
    r = BatchResult()
    r.retrains_skipped["humidity"] += 2
    Metrics(registry).record_batch(r, _integrity(), 0.01)
    assert _value(registry, name, sensor="humidity", outcome="skipped") == 2
    assert _value(registry, name, sensor="humidity", outcome="promoted") == 0


def test_model_versions_per_sensor() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = np.zeros(N_SENSORS, np.int64)
    models[TEMP], models[ACCEL] = 4, 4
    metrics.record_state(4, 4000, models)
    assert _value(registry, "telemon_model_version_max", sensor="temperature") == 1
    assert _value(registry, "telemon_model_version_mean", sensor="temperature") == 1
    assert _value(registry, "telemon_models", sensor="temperature") == 4
    assert _value(registry, "telemon_model_version_max", sensor="humidity") == 0  # no models yet
    r = BatchResult()
    r.audit = [
        _decision("promoted", "temperature", 2, 1),  # one pair: v2,
        _decision("rejected", "temperature", 3, 2),  # a rejected v3 (v2 keeps serving),
        _decision("promoted", "temperature", 4, 2),  # then v4
        _decision("promoted", "temperature", 2, 1, device="dev-2"),  # another pair: v2
    ]
    metrics.record_batch(r, _integrity(), 0.01)
    metrics.record_state(4, 4000, models)
    assert _value(registry, "telemon_model_version_max", sensor="temperature") == 4
    assert _value(registry, "telemon_model_version_mean", sensor="temperature") == (4 + 2 + 1 + 1) / 4
    assert _value(registry, "telemon_model_version_mean", sensor="accelerometer") == 1


def test_consumer_lag_per_partition_and_removed_when_gone() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.record_consumer({("readings", 0): 120, ("readings", 3): 0}, assigned=2)
    assert _value(registry, "telemon_consumer_lag", topic="readings", partition="0") == 120
    assert _value(registry, "telemon_consumer_lag", topic="readings", partition="3") == 0
    assert _value(registry, "telemon_assigned_partitions") == 2
    metrics.record_consumer({("readings", 3): 7}, assigned=1)  # partition 0 was revoked
    assert _value(registry, "telemon_consumer_lag", topic="readings", partition="0") is None
    assert _value(registry, "telemon_consumer_lag", topic="readings", partition="3") == 7


@pytest.mark.parametrize(
    ("high", "next_offset", "lag"),
    [
        (1_000, 400, 600),  # 600 messages not consumed yet
        (1_000, 1_000, 0),  # caught up: the next offset is the high watermark
        (0, 0, 0),  # empty partition
        (990, 1_000, 0),  # cached watermark older than the position: caught up, never negative
        (-1001, 400, None),  # no fetch response yet (OFFSET_INVALID)
        (1_000, None, None),  # nothing consumed from the partition yet
        (1_000, -1001, None),
    ],
)
def test_partition_lag_arithmetic(high: int, next_offset: int | None, lag: int | None) -> None:
    assert partition_lag(high, next_offset) == lag


def test_rule_engine_counts_firing_episodes_per_rule() -> None:
    rules = RuleSet.model_validate(
        {
            "rules": [
                {
                    "name": "hot",
                    "scope": "device",
                    "when": {"signal": "anomaly_rate", "op": ">", "value": 0.5},
                },
                {
                    "name": "cold",
                    "scope": "device",
                    "when": {"signal": "anomaly_rate", "op": "<", "value": 0},
                },
            ]
        }
    )
    engine = RuleEngine(rules)
    assert engine.firing_by_rule() == {"hot": 0, "cold": 0}
    hot = {"anomaly_rate": 0.9}
    engine.evaluate([Evaluation("device", d, "temperature", hot, 1000) for d in ("d1", "d2")])
    assert engine.firing_by_rule() == {"hot": 2, "cold": 0}
    engine.evaluate([Evaluation("device", "d1", "temperature", {"anomaly_rate": 0.0}, 2000)])
    assert engine.firing_by_rule() == {"hot": 1, "cold": 0}


def test_service_doctests() -> None:
    import doctest

    import monitor.serve.service

    result = doctest.testmod(monitor.serve.service, raise_on_error=False)
    assert (result.failed, result.attempted > 0) == (0, True)


# --- operators' feedback ---------------------------------------------------------------------------


def _judged_ledger() -> Ledger:
    def alert(n: int, rule: str, sensor: str, site: str) -> AlertRecord:
        return AlertRecord(f"{n:016x}", rule, "firing", "device", f"dev-{n}", sensor, 1_767_225_600_000,
                           {}, ["alert"], 1, {"site": site, "serial": f"s{n}"})  # fmt: skip

    alerts = [
        alert(1, "r1", "temperature", "a"),
        alert(2, "r1", "temperature", "b"),
        alert(3, "r1", "humidity", "a"),
        alert(4, "r2", "humidity", "a"),
        alert(5, "unknown_rule", "humidity", "a"),
    ]
    kinds: list[VerdictKind] = ["true_positive", "false_positive", "true_positive", "expected_maintenance"]
    return Ledger.from_records(alerts, [Verdict(f"{n:016x}", k, 1) for n, k in enumerate(kinds, 1)])


def test_precision_gauges_per_rule_sensor_and_configured_cohort() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, {"r1": "warning", "r2": "info"}, cohorts=["site=a", "site=b"])
    m.record_ledger(_judged_ledger())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("telemon_alert_precision", rule="r1") == pytest.approx(2 / 3)
    assert value("telemon_alert_precision", rule="r2") is None  # maintenance only: no precision
    assert value("telemon_alert_precision", rule="unknown_rule") is None  # not a rule of the rules file
    assert value("telemon_alert_precision_by_sensor", sensor="temperature") == 0.5
    assert value("telemon_alert_precision_by_sensor", sensor="humidity") == 1.0
    assert value("telemon_alert_precision_by_cohort", cohort="site=a") == 1.0
    assert value("telemon_alert_precision_by_cohort", cohort="site=b") == 0.0
    assert value("telemon_alert_precision_by_cohort", cohort="serial=s1") is None  # not configured
    assert value("telemon_alert_verdicts", rule="r1", verdict="true_positive") == 2
    assert value("telemon_alert_verdicts", rule="r1", verdict="false_positive") == 1
    assert value("telemon_alert_verdicts", rule="r2", verdict="expected_maintenance") == 1
    assert value("telemon_alert_verdicts", rule="r2", verdict="false_positive") == 0
    assert value("telemon_feedback_alerts") == 5 and value("telemon_feedback_waiting") == 0

    m.record_ledger(Ledger())  # every verdict gone (evicted): the precision children go too
    assert value("telemon_alert_precision", rule="r1") is None
    assert value("telemon_alert_verdicts", rule="r1", verdict="true_positive") == 0


def test_feedback_counters_exist_from_the_start() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, {"r1": "warning"})
    assert registry.get_sample_value("telemon_feedback_verdicts_total", {"verdict": "false_positive"}) == 0
    assert registry.get_sample_value("telemon_feedback_invalid_total", {"reason": "bad_verdict"}) == 0
    m.record_feedback({"false_positive": 2}, {"bad_alert_id": 1})
    assert registry.get_sample_value("telemon_feedback_verdicts_total", {"verdict": "false_positive"}) == 2
    assert registry.get_sample_value("telemon_feedback_invalid_total", {"reason": "bad_alert_id"}) == 1
