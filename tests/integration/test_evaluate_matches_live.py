"""The offline replay of `telemon evaluate` gives exactly the live service's scores and alerts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.evaluation.replay import replay_messages
from monitor.govern.rules import load_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Scored
from monitor.serve import changelog
from monitor.serve.metrics import Metrics
from monitor.serve.service import Service, Totals
from monitor.settings import KafkaSettings, load_settings
from producers.scenario import load_scenario
from producers.simulate import simulate, stream

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("novelty", [False, True], ids=["model", "novelty"])
def test_replay_equals_live_service(kafka_settings: KafkaSettings, tmp_path: Path, novelty: bool) -> None:
    # One partition: the broker then delivers the stream in the order the simulator produced it.
    kafka = kafka_settings.model_copy(update={"partitions": 1})
    settings = load_settings(
        Path("configs/monitor.yaml"),
        kafka=kafka.model_dump(mode="json"),
        metrics={"enabled": False},
        state_dir=str(tmp_path),
        consume={"batch_size": 777},  # live batches differ from the replay's anyway
        novelty={"enabled": novelty, "learning": 100},
    )
    rules = load_rules(Path("configs/rules.yaml"))
    scenario = load_scenario(Path("configs/scenarios/library.yaml"), duration_s=700)
    report = simulate(settings.kafka, scenario)

    live_trace: list[Scored] = []
    live_alerts = []
    stop = threading.Event()

    def collect(result: BatchResult, totals: Totals) -> None:
        live_trace.extend(result.trace)
        live_alerts.extend(result.alerts)
        if totals.positions.get((settings.kafka.readings_topic, 0), 0) > report.last_offsets[0]:
            stop.set()

    changelog.ensure_topic(settings.kafka)  # as build_service does
    service = Service(settings, Pipeline(settings, rules, trace=True), Metrics(CollectorRegistry()))
    timer = threading.Timer(120, stop.set)
    timer.start()
    service.run(stop, collect)
    timer.cancel()

    offline = replay_messages(
        settings.model_copy(update={"consume": settings.consume.model_copy(update={"batch_size": 5000})}),
        rules,
        ((m.key, m.value, m.ts) for m in stream(scenario)),
    )
    # Every reading is scored except the copies of duplicate_messages, which the monitor drops.
    copies = sum(a == b for a, b in zip(stream(scenario), list(stream(scenario))[1:], strict=False))
    assert copies > 0
    assert len(live_trace) == report.readings_sent - copies
    assert offline.trace == live_trace
    assert offline.alerts == live_alerts
    assert any(a.rule == "score_drift" for a in live_alerts)
    if novelty:  # the novelty levels decide the anomalies, live and offline alike
        assert all(s.level is not None for s in live_trace)
        assert any(s.anomalous for s in live_trace)
