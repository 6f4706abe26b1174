"""End to end over loopback: simulator -> real broker -> monitor -> alerts, dead letters, models, /metrics."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.cli.broker import free_port
from monitor.govern import alerts, registry
from monitor.serve import oplog
from monitor.serve.app import build_service
from monitor.serve.service import Totals
from monitor.settings import Settings, load_settings
from producers.scenario import load_scenario
from producers.simulate import SimulationReport, simulate
from tests.brokers import Broker
from tests.conftest import read_topic, unique_kafka_settings

pytestmark = [pytest.mark.integration, pytest.mark.quick]  # quick: passes on the embedded broker too

DRIFT_PAIR = ("dev-0003", "humidity")
SCENARIO = {
    "seed": 11,
    "devices": 8,
    "duration_s": 720,
    "malformed": 12,
    "events": [
        # +25 %RH: a step that clipped learning does not close before score_drift fires, so a retrain is
        # promoted (the model follows a step of +12 %RH by itself, and the retrain leaves it serving)
        {"kind": "abrupt_shift", "device": 3, "sensor": "humidity", "start_s": 300, "magnitude": 25.0},
    ],
}


@dataclass
class Run:
    settings: Settings
    report: SimulationReport
    totals: Totals
    metrics_text: str
    logged: list[str]  # monitor.serve.oplog's INFO lines


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def run(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    kafka = unique_kafka_settings(broker)
    state = tmp_path_factory.mktemp("state")
    settings = load_settings(
        Path("configs/monitor.yaml"),
        kafka=kafka.model_dump(mode="json"),
        metrics={"port": free_port()},
        state_dir=str(state),
    )
    scenario = load_scenario(Path("configs/scenarios/demo.yaml"), **SCENARIO)
    service = build_service(settings, CollectorRegistry())
    report = simulate(settings.kafka, scenario)
    stop = threading.Event()

    def caught_up(_result: object, t: Totals) -> None:
        topic = settings.kafka.readings_topic
        if all(t.positions.get((topic, p), 0) > off for p, off in report.last_offsets.items()):
            stop.set()

    timer = threading.Timer(120, stop.set)  # never hang the suite
    timer.start()
    lines, logger = _Lines(), logging.getLogger(oplog.__name__)
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        totals = service.run(stop, caught_up)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    timer.cancel()
    url = f"http://127.0.0.1:{settings.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    yield Run(settings, report, totals, text, lines.lines)


def test_every_message_is_processed_and_committed(run: Run) -> None:
    sent = run.report.readings_sent + run.report.malformed_sent
    assert run.totals.messages == sent
    assert run.totals.valid == run.report.readings_sent
    c = Consumer(
        {"bootstrap.servers": run.settings.kafka.bootstrap_servers, "group.id": run.settings.kafka.group_id}
    )
    topic = run.settings.kafka.readings_topic
    committed = c.committed([TopicPartition(topic, p) for p in run.report.last_offsets], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == {
        p: o + 1 for p, o in run.report.last_offsets.items()
    }


def test_planted_drift_alerts_exactly_that_pair(run: Run) -> None:
    messages = read_topic(run.settings.kafka, run.settings.kafka.alerts_topic)
    records = [(m.key(), alerts.decode(m.value())) for m in messages]
    drift = [(key, a) for key, a in records if a.rule == "score_drift" and a.status == "firing"]
    assert {(a.device_id, a.sensor) for _, a in drift} == {DRIFT_PAIR}
    key, fired = drift[0]
    assert key == fired.device_id.encode()
    assert fired.signals["ks_pvalue"] < run.settings.drift.ks_alpha
    assert fired.signals["psi"] > run.settings.drift.psi_threshold
    assert fired.ts >= 1_767_225_600_000 + 300_000  # not before the shift was planted


def test_retrain_recorded_with_offsets(run: Run) -> None:
    published = [
        registry.decode(m.value()) for m in read_topic(run.settings.kafka, run.settings.kafka.models_topic)
    ]
    reg = registry.open_registry(run.settings)
    local = sorted((reg.manifest(*ref).model for ref in reg.versions()), key=lambda v: v.version)
    assert published == local
    # The online model, then the retrains of the step (a first candidate trained on the readings
    # around it may be rejected; the promoted one serves), each a child of the online model.
    assert [(v.device_id, v.sensor, v.version, v.parent) for v in local] == [
        (*DRIFT_PAIR, 1, 0),
        *((*DRIFT_PAIR, n, 1) for n in range(2, len(local) + 1)),
    ]
    assert reg.serving(*DRIFT_PAIR) == len(local) >= 2
    data = local[-1].trained_on
    assert data.topic == run.settings.kafka.readings_topic
    assert 0 <= data.first_offset <= data.last_offset <= run.report.last_offsets[data.partition]
    # The pair's history re-read from the topic: longer than the ring's window, up to shifted data.
    assert local[-1].source == "topic", local[-1].source_note
    assert run.settings.model.retrain_window < data.readings <= run.settings.retrain.history_readings
    assert data.last_ts >= 1_767_225_600_000 + 300_000  # trained on the shifted data


def test_each_retrain_and_decision_is_logged_once(run: Run) -> None:
    retrains = [v for v in run.totals.versions if v.parent]
    expected = [oplog.retrain_line(v) for v in retrains] + [
        oplog.decision_line(e) for e in run.totals.decisions
    ]
    assert retrains and run.totals.decisions
    decisions = [
        line for line in run.logged if not line.startswith("last ")
    ]  # a summary line, if one was due
    assert sorted(decisions) == sorted(expected)


def test_malformed_messages_are_dead_lettered_with_reasons(run: Run) -> None:
    dead = read_topic(run.settings.kafka, run.settings.kafka.dead_letter_topic)
    assert len(dead) == run.report.malformed_sent == 12
    reasons = sorted({dict(m.headers())["telemon.reason"].decode() for m in dead})
    assert reasons == [
        "invalid_json",
        "missing_field",
        "non_finite",
        "out_of_range",
        "unknown_sensor",
        "wrong_unit",
    ]
    for m in dead:
        headers = dict(m.headers())
        assert headers["telemon.topic"].decode() == run.settings.kafka.readings_topic
        assert int(headers["telemon.partition"]) in run.report.last_offsets
        assert int(headers["telemon.offset"]) >= 0


def test_metrics_endpoint_exposes_documented_metrics(run: Run) -> None:
    text = run.metrics_text
    for name in (
        "telemon_readings_total",
        "telemon_messages_quarantined_total",
        "telemon_anomalies_total",
        "telemon_anomaly_score_bucket",
        "telemon_drift_detections_total",
        "telemon_alerts_total",
        "telemon_retrains_total",
        "telemon_batch_duration_seconds_bucket",
        "telemon_devices",
        "telemon_build_info",
    ):
        assert name in text, name
    assert 'telemon_retrains_total{outcome="promoted",sensor="humidity"} 1.0' in text
    assert "dev-" not in text  # no device ids in labels
