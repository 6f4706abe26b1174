"""Governance on a live stream: drift -> alert (Kafka and a real Alertmanager) -> retrain ->
held-out test -> shadow -> promotion with lineage; a worse candidate rejected; hysteresis and
cooldown; a tampered artifact refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from monitor import errors
from monitor.cli.broker import free_port
from monitor.cli.main import main as telemon
from monitor.govern import alerts, registry
from monitor.govern.registry import ModelRegistry, decode_event
from monitor.ingest.kafka import ensure_topics
from monitor.schema import encode_reading
from monitor.serve.app import build_service
from monitor.serve.service import Totals
from monitor.settings import Settings, load_settings
from producers.scenario import load_scenario
from producers.simulate import simulate
from tests.apache_kafka import ApacheKafka
from tests.conftest import AlertmanagerProcess, read_topic, start_alertmanager, unique_kafka_settings

pytestmark = pytest.mark.integration

PAIR = ("dev-0003", "humidity")
T0 = 1_767_225_600_000
KEY = "governance-test-signing-key-0123456789abcdef"


class Webhook(BaseHTTPRequestHandler):
    """Alertmanager's notifications, collected."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerProcess]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = (
        "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n  group_by: [alert_id]\n"
        "receivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{server.server_port}/\n        send_resolved: true\n"
    )
    am = start_alertmanager(tmp_path_factory.mktemp("am"), config_text=config)
    yield am
    am.stop()
    server.shutdown()
    server.server_close()


def run_monitor(settings: Settings, last_offsets: dict[int, int], timeout_s: float = 120) -> Totals:
    """The service, run until it has processed every offset up to ``last_offsets``."""
    service = build_service(settings, CollectorRegistry())
    stop = threading.Event()

    def caught_up(_result: object, t: Totals) -> None:
        topic = settings.kafka.readings_topic
        if all(t.positions.get((topic, p), 0) > off for p, off in last_offsets.items()):
            stop.set()

    timer = threading.Timer(timeout_s, stop.set)  # never hang the suite
    timer.start()
    try:
        return service.run(stop, caught_up)
    finally:
        timer.cancel()
        if service.endpoint is not None:
            service.endpoint.close()


def monitor_settings(broker: ApacheKafka, state: Path, **overrides: Any) -> Settings:
    kafka = unique_kafka_settings(broker)
    return load_settings(
        Path("configs/monitor.yaml"),
        kafka=kafka.model_dump(mode="json"),
        metrics={"port": free_port()},
        state_dir=str(state),
        registry={"signing_key": KEY},
        **overrides,
    )


@dataclass
class Drift:
    settings: Settings
    registry: ModelRegistry


@pytest.fixture(scope="module")
def drift(
    broker: ApacheKafka, alertmanager: AlertmanagerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Drift:
    settings = monitor_settings(
        broker, tmp_path_factory.mktemp("state"), alerts={"alertmanager_url": alertmanager.url}
    )
    scenario = load_scenario(
        Path("configs/scenarios/demo.yaml"),
        seed=11,
        devices=6,
        duration_s=600,
        malformed=0,
        events=[
            # +25 %RH: a step that clipped learning does not close before score_drift fires, so a retrain is
            # promoted (the model follows a step of +12 %RH by itself, and the retrain leaves it serving)
            {"kind": "abrupt_shift", "device": 3, "sensor": "humidity", "start_s": 300, "magnitude": 25.0}
        ],
    )
    report = simulate(settings.kafka, scenario)
    run_monitor(settings, report.last_offsets)
    return Drift(settings, registry.open_registry(settings))


def _audit(settings: Settings) -> list[registry.AuditEvent]:
    return [decode_event(m.value()) for m in read_topic(settings.kafka, settings.kafka.audit_topic)]


def test_planted_drift_alerts_on_kafka_and_alertmanager(drift: Drift) -> None:
    records = [
        alerts.decode(m.value()) for m in read_topic(drift.settings.kafka, drift.settings.kafka.alerts_topic)
    ]
    fired = [a for a in records if a.rule == "score_drift" and a.status == "firing"]
    assert [(a.device_id, a.sensor) for a in fired] == [PAIR]
    notified = [
        (a["labels"]["alertname"], a["labels"]["device_id"], a["status"])
        for n in Webhook.received
        for a in n["alerts"]
    ]
    assert ("score_drift", PAIR[0], "firing") in notified
    assert ("score_drift", PAIR[0], "resolved") in notified  # the retrained model cleared it


def test_retrain_is_tested_shadowed_and_promoted_with_lineage(drift: Drift) -> None:
    # A candidate trained on the first readings after the step may be rejected; a retry then
    # trains on the new level.
    reg = drift.registry
    serving = reg.serving(*PAIR)
    assert serving >= 2
    (promoted, v1) = reg.lineage(*PAIR, serving)
    m, parent = promoted.model, v1.model
    assert (m.version, m.parent, parent.version) == (serving, 1, 1)
    t, test = m.trained_on, m.test_data
    # Trained on the pair's history re-read from the topic (up to retrain.history_readings), longer
    # than the ring's window, up to readings after the step.
    assert t.topic == drift.settings.kafka.readings_topic and m.source == "topic", m.source_note
    assert drift.settings.model.retrain_window < t.readings <= drift.settings.retrain.history_readings
    assert test is not None and t.first_offset < test.first_offset <= test.last_offset == t.last_offset
    assert t.last_ts >= T0 + 300_000  # trained on the shifted readings
    assert m.trigger_rule in ("anomaly_burst", "score_drift") and m.code_version and m.config_hash
    assert m.metrics["candidate_metric"] > m.metrics["incumbent_metric"] + m.metrics["margin"] or (
        m.metrics["incumbent_alarm_rate"] > 0.5  # a broken incumbent: see promotion.BROKEN_ALARM_RATE
    )
    assert m.metrics["shadow_readings"] == drift.settings.retrain.shadow_readings
    assert set(m.params) >= {"fading", "var_fading", "resolution"}


def test_audit_trail_explains_why_v2_serves(
    drift: Drift, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = [(e.kind, e.action) for e in _audit(drift.settings) if (e.device_id, e.sensor) == PAIR]
    assert (
        kinds.index(("rule_fired", "")) < kinds.index(("action", "retrain")) < kinds.index(("promoted", ""))
    )
    local = [e.kind for e in reg_events(drift.registry) if (e.device_id, e.sensor) == PAIR]
    assert {"rule_fired", "action", "registered", "promoted"} <= set(local)
    monkeypatch.setenv("TELEMON_STATE_DIR", str(drift.settings.state_dir))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY)
    code = telemon(["registry", "show", *PAIR])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "score_drift" in out and "candidate AUC" in out


def reg_events(reg: ModelRegistry) -> list[registry.AuditEvent]:
    return reg.events()[0]


def test_tampered_artifact_is_refused_and_the_current_model_keeps_serving(drift: Drift) -> None:
    reg = drift.registry
    artifact = reg.path(*PAIR, 1) / "model.json"
    data = bytearray(artifact.read_bytes())
    data[-5] ^= 0x01
    artifact.write_bytes(bytes(data))
    serving = reg.serving(*PAIR)
    with pytest.raises(errors.ArtifactError):
        reg.rollback(*PAIR, reason="test", actor="cli:test")
    assert reg.serving(*PAIR) == serving >= 2
    assert reg.events()[0][-1].kind == "rejected"


def test_a_worse_candidate_is_rejected(broker: ApacheKafka, tmp_path: Path) -> None:
    """A rule that retrains clean pairs: their candidates do not beat the incumbent by the margin."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: retrain_anyway\n    scope: device\n"
        "    when: {signal: readings, op: '>=', value: 1}\n    for: 3\n    cooldown_s: 100000\n"
        "    actions: [retrain]\n"
    )
    settings = monitor_settings(
        broker,
        tmp_path / "state",
        rules_file=str(rules),
        retrain={"max_attempts": 1},  # no retries
    )
    scenario = load_scenario(
        Path("configs/scenarios/demo.yaml"), seed=5, devices=2, duration_s=300, malformed=0, events=[]
    )
    report = simulate(settings.kafka, scenario)
    run_monitor(settings, report.last_offsets)
    events = _audit(settings)
    rejected = [e for e in events if e.kind == "rejected"]
    assert rejected, [e.kind for e in events]
    reg = registry.open_registry(settings)
    for e in rejected:
        assert "candidate" in e.reason and "incumbent" in e.reason
        assert reg.serving(e.device_id, e.sensor) == e.previous  # the incumbent kept serving
        assert reg.manifest(e.device_id, e.sensor, e.version).model.version == e.version  # kept, inspectable


def _publish(settings: Settings, device: str, values: list[float], start: int = 0) -> dict[int, int]:
    ensure_topics(settings.kafka, [settings.kafka.readings_topic])
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    offsets: dict[int, int] = {}

    def delivered(err: object, msg: Any) -> None:
        offsets[msg.partition()] = max(offsets.get(msg.partition(), -1), msg.offset())

    for i, v in enumerate(values, start):
        raw = encode_reading(device, "temperature", T0 + i * 1000, i, {"value": round(float(v), 3)})
        p.produce(
            settings.kafka.readings_topic,
            raw,
            device.encode(),
            on_delivery=delivered,
            timestamp=T0 + i * 1000,
        )
    p.flush(30)
    return offsets


def test_hysteresis_and_cooldown_keep_an_oscillating_signal_to_one_episode(
    broker: ApacheKafka, tmp_path: Path
) -> None:
    """The anomaly rate swings around 0.3 for 20 evaluations, then drops: one firing, one resolved
    (and one quarantine, released when the episode resolves)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: noisy\n    scope: device\n"
        "    when: {signal: anomaly_rate, op: '>', value: 0.3}\n"
        "    clear: {signal: anomaly_rate, op: '<', value: 0.05}\n"
        "    cooldown_s: 600\n    actions: [alert, quarantine]\n"
    )
    settings = monitor_settings(broker, tmp_path / "state", rules_file=str(rules))
    rng = np.random.default_rng(1)
    n = settings.drift.check_every
    values = list(20 + 0.1 * rng.standard_normal(200))  # warm-up and a clean stretch
    for i in range(20):  # intervals alternating 40 % and 20 % spikes
        interval = 20 + 0.1 * rng.standard_normal(n)
        interval[: int(n * (0.4 if i % 2 == 0 else 0.2))] += 50
        values += list(interval)
    values += list(20 + 0.1 * rng.standard_normal(10 * n))  # calm
    run_monitor(settings, _publish(settings, "dev-osc", values))
    records = [alerts.decode(m.value()) for m in read_topic(settings.kafka, settings.kafka.alerts_topic)]
    statuses = [a.status for a in records if a.rule == "noisy" and a.status != "pending"]
    assert statuses == ["firing", "resolved"]
    actions = [e.action for e in _audit(settings) if e.kind == "action"]
    assert actions == ["quarantine", "release"]  # the device learned nothing while it was noisy


ROLLBACK_RULES = """
rules:
  - name: score_drift
    scope: device
    when: {all: [{signal: ks_drift, op: "==", value: 1}, {signal: psi_drift, op: "==", value: 1}]}
    for: 2
    cooldown_s: 60
    actions: [alert, retrain]
  - name: regression
    scope: device
    when: {signal: anomaly_rate, op: ">", value: 0.5}
    actions: [alert, rollback]
"""


def _levels(*levels: float, n: int = 600, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for level in levels for v in level + 0.1 * rng.standard_normal(n)]


def _rollback_run(broker: ApacheKafka, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ROLLBACK_RULES)
    # Small batches: a rollback is carried out after its batch, before a retrain can supersede it.
    return monitor_settings(broker, tmp_path / "state", rules_file=str(rules), consume={"batch_size": 50})


def test_rollback_action_serves_the_parent_again(broker: ApacheKafka, tmp_path: Path) -> None:
    """20 -> 25 (retrained: v2 serves) -> 20 again: v2 raises alarms, the rule rolls back to v1."""
    settings = _rollback_run(broker, tmp_path)
    run_monitor(settings, _publish(settings, "dev-rb", _levels(20, 25, 20)))
    reg = registry.open_registry(settings)
    kinds = [(e.kind, e.version) for e in reg.history("dev-rb", "temperature") if e.kind != "rule_fired"]
    assert ("promoted", 2) in kinds
    assert kinds.index(("promoted", 2)) < kinds.index(("rolled_back", 1))
    assert reg.serving("dev-rb", "temperature") == 1


def test_a_tampered_rollback_target_is_refused_on_the_live_path(broker: ApacheKafka, tmp_path: Path) -> None:
    """As above, but v1's artifact is tampered with between two runs of the service: the rollback
    is refused with a recorded reason and v2 keeps serving (its state restored from snapshots) until
    the drift rule's own retrain replaces it."""
    settings = _rollback_run(broker, tmp_path)
    values = _levels(20, 25, 20)
    first = _publish(settings, "dev-rb", values[:1200])
    run_monitor(settings, first)
    reg = registry.open_registry(settings)
    assert reg.serving("dev-rb", "temperature") == 2, [
        (e.kind, e.version, e.reason[:60]) for e in reg.history("dev-rb", "temperature")
    ]
    artifact = reg.path("dev-rb", "temperature", 1) / "model.json"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    second = _publish(settings, "dev-rb", values[1200:], start=1200)
    run_monitor(settings, second)
    events = reg.history("dev-rb", "temperature")
    refused = [e for e in events if e.kind == "rejected" and "rollback refused" in e.reason]
    assert refused and "tampered" in refused[0].reason
    assert refused[0].previous == 2  # v2 kept serving ...
    assert not [e for e in events if e.kind == "rolled_back"]
    later = [e for e in events[events.index(refused[0]) :] if e.kind == "promoted"]
    assert all(e.previous == 2 for e in later[:1])  # ... until a retrain replaced it, if one did


def test_storm_control_caps_a_fleet_wide_burst_with_one_summary(broker: ApacheKafka, tmp_path: Path) -> None:
    """Ten devices go bad at once: three firing alerts get through, then one alert_storm summary."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: bad\n    scope: device\n"
        "    when: {signal: anomaly_rate, op: '>', value: 0.5}\n    actions: [alert]\n"
    )
    settings = monitor_settings(
        broker,
        tmp_path / "state",
        rules_file=str(rules),
        alerts={"storm_max_alerts": 3, "storm_window_s": 600},
    )
    offsets: dict[int, int] = {}
    for d in range(10):
        values = _levels(20, 40, n=150, seed=d)
        for p, o in _publish(settings, f"dev-s{d}", values).items():
            offsets[p] = max(offsets.get(p, -1), o)
    run_monitor(settings, offsets)
    records = [alerts.decode(m.value()) for m in read_topic(settings.kafka, settings.kafka.alerts_topic)]
    firing = [a for a in records if a.rule == "bad" and a.status == "firing"]
    (storm,) = [a for a in records if a.rule == alerts.STORM_RULE and a.status == "firing"]
    assert len(firing) == 3
    assert storm.signals["suppressed"] >= 1 and storm.severity == "critical"  # counted when it started
    assert len({a.device_id for a in firing}) == 3  # the other seven were suppressed, not delivered
