"""Operators' feedback on a live stream: the service raises known alerts, operators judge them
(with `telemon feedback` and raw records, one malformed, one corrected, one long after more alerts
came), and the service's /metrics and the registry show the precision the verdicts give."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.analyze.feedback import Verdict, encode
from monitor.cli.broker import free_port
from monitor.cli.main import main as telemon
from monitor.govern import alerts, registry
from monitor.schema import encode_reading
from monitor.serve.app import build_service
from monitor.serve.service import Service, Totals
from monitor.settings import KafkaSettings, Settings, load_settings
from tests.apache_kafka import ApacheKafka
from tests.conftest import read_topic, scrape, unique_kafka_settings

pytestmark = pytest.mark.integration

KEY = "feedback-test-signing-key-0123456789abcdef"
READINGS = 64  # per device: the pairs' rules are evaluated at the 32nd and 64th


@dataclass
class Stream:
    """Temperature readings of a few devices, each with one integrity fault between its 33rd and
    64th reading, so that each device's rule fires once, at the 64th."""

    settings: Settings
    producer: Producer
    rng: np.random.Generator
    now_ms: int
    sent: int = 0

    def device(self, name: str, fault: str) -> None:
        seqs = list(range(1, READINGS + 1))
        ts = [self.now_ms - 120_000 + s * 1000 for s in seqs]
        values = [21.0 + 0.2 * float(x) for x in self.rng.standard_normal(READINGS)]
        if fault == "duplicate":
            seqs.insert(45, 45)
            ts.insert(45, ts[44])
            values.insert(45, values[44])
        elif fault == "stuck":
            values[36:60] = [values[36]] * 24
        elif fault == "gap":
            ts[45:] = [t + 30_000 for t in ts[45:]]
        elif fault == "backwards":
            seqs[45] = 10
        for s, t, v in zip(seqs, ts, values, strict=True):
            reading = encode_reading(name, "temperature", t, s, {"value": round(v, 3)})
            self.producer.produce(self.settings.kafka.readings_topic, reading, name.encode())
            self.sent += 1
        assert self.producer.flush(30) == 0


@dataclass
class Live:
    settings: Settings
    service: Service
    stream: Stream
    processed: Callable[[int], None]  # waits until the service has processed this many readings


@pytest.fixture(scope="module")
def live(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    settings = load_settings(
        Path("configs/monitor.yaml"),
        kafka=unique_kafka_settings(broker).model_dump(mode="json"),
        metrics={"port": free_port()},
        state_dir=str(tmp_path_factory.mktemp("state")),
        registry={"signing_key": KEY},
        state={"snapshot_interval_s": 0},
    )
    service = build_service(settings, CollectorRegistry())
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    stream = Stream(settings, producer, np.random.default_rng(5), int(time.time() * 1000))
    stop, progress = threading.Event(), threading.Condition()

    def on_batch(_result: object, _t: Totals) -> None:
        with progress:
            progress.notify_all()

    def processed(n: int) -> None:
        with progress:
            assert progress.wait_for(lambda: service.totals.messages >= n, timeout=30), service.totals

    thread = threading.Thread(target=service.run, args=(stop, on_batch))
    thread.start()
    try:
        yield Live(settings, service, stream, processed)
    finally:
        stop.set()
        thread.join(30)
        if service.endpoint is not None:
            service.endpoint.close()


class Firing:
    """The firing alerts published so far, by device (read as they come, from the beginning)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "feedback-test"})
        self.consumer.assign(
            [TopicPartition(kafka.alerts_topic, p, OFFSET_BEGINNING) for p in range(kafka.partitions)]
        )
        self.alerts: dict[str, alerts.Alert] = {}

    def __call__(self) -> dict[str, alerts.Alert]:
        for m in self.consumer.consume(1000, 0.5):
            a = alerts.decode(m.value() or b"") if m.error() is None else None
            if a is not None and a.status == "firing":
                self.alerts[a.device_id] = a
        return self.alerts


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def test_verdicts_give_the_expected_precision_table(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    firing = Firing(live.settings.kafka)
    try:
        judge(live, firing, monkeypatch)
    finally:
        firing.consumer.close()


def judge(live: Live, firing: Firing, monkeypatch: pytest.MonkeyPatch) -> None:
    s, k = live.settings, live.settings.kafka
    for name, fault in (("dev-a", "duplicate"), ("dev-b", "stuck"), ("dev-c", "gap"), ("dev-d", "backwards")):
        live.stream.device(name, fault)
    live.processed(live.stream.sent)
    wait_for(lambda: len(firing()) >= 4, "four alerts")
    fired = firing()
    rule_of = {device: a.rule for device, a in fired.items()}
    assert rule_of == {
        "dev-a": "duplicate_messages",
        "dev-b": "sensor_stuck",
        "dev-c": "data_gap",
        "dev-d": "sequence_backwards",
    }
    ids = {device: a.alert_id for device, a in fired.items()}

    # Operators judge: with the command line, and raw records from another tool.
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", k.bootstrap_servers)
    monkeypatch.setenv("TELEMON_KAFKA__FEEDBACK_TOPIC", k.feedback_topic)
    assert telemon(["feedback", ids["dev-a"], "--verdict", "tp", "--by", "alice"]) == 0
    raw = Producer({"bootstrap.servers": k.bootstrap_servers})
    now = int(time.time() * 1000)
    for device, kind in (("dev-b", "false_positive"), ("dev-c", "false_positive")):
        raw.produce(k.feedback_topic, encode(Verdict(ids[device], kind, now, by="bob")), ids[device].encode())
    malformed = json.dumps({"alert_id": ids["dev-c"], "verdict": "maybe", "ts": now}).encode()
    raw.produce(k.feedback_topic, malformed, ids["dev-c"].encode())
    assert raw.flush(10) == 0

    # More alerts come; then the rest of the verdicts, dev-d's hours late in the field, and a
    # correction of dev-b's.
    live.stream.device("dev-e", "duplicate")
    live.processed(live.stream.sent)
    wait_for(lambda: "dev-e" in firing(), "dev-e's alert")
    ids["dev-e"] = firing()["dev-e"].alert_id
    late = int(time.time() * 1000)
    for device, kind in (("dev-d", "expected_maintenance"), ("dev-e", "false_positive")):
        raw.produce(k.feedback_topic, encode(Verdict(ids[device], kind, late)), ids[device].encode())
    assert raw.flush(10) == 0
    assert telemon(["feedback", ids["dev-b"], "--verdict", "true_positive", "--note", "it was stuck"]) == 0

    def precision() -> dict[str, float]:
        samples = scrape(s.metrics.port)
        return {dict(ls)["rule"]: v for (n, ls), v in samples.items() if n == "telemon_alert_precision"}

    expected = {
        "duplicate_messages": 0.5,
        "sensor_stuck": 1.0,
        "data_gap": 0.0,
    }  # backwards: maintenance only
    wait_for(lambda: precision() == expected, f"precision {expected}")
    samples = scrape(s.metrics.port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("telemon_alert_precision_by_sensor", sensor="temperature") == 0.5  # TP a, b; FP c, e
    verdicts = {(r, v): value("telemon_alert_verdicts", rule=r, verdict=v) for r in rule_of.values() for v in
                ("true_positive", "false_positive", "expected_maintenance")}  # fmt: skip
    assert {key: n for key, n in verdicts.items() if n} == {
        ("duplicate_messages", "true_positive"): 1,
        ("duplicate_messages", "false_positive"): 1,
        ("sensor_stuck", "true_positive"): 1,
        ("data_gap", "false_positive"): 1,
        ("sequence_backwards", "expected_maintenance"): 1,
    }
    assert value("telemon_feedback_verdicts_total", verdict="true_positive") == 2
    assert value("telemon_feedback_verdicts_total", verdict="false_positive") == 3  # dev-b's among them
    assert value("telemon_feedback_invalid_total", reason="bad_verdict") == 1
    assert value("telemon_feedback_alerts") == 5 and value("telemon_feedback_waiting") == 0

    [dead] = [m for m in read_topic(k, k.dead_letter_topic) if m.topic() == k.dead_letter_topic]
    headers = {name: v.decode() for name, v in dead.headers() or []}
    assert (dead.key(), dead.value()) == (ids["dev-c"].encode(), malformed)
    assert headers["telemon.reason"] == "bad_verdict" and headers["telemon.topic"] == k.feedback_topic

    # The registry's view of each pair's version: the verdict that counts, once.
    reg = registry.open_registry(s)
    wait_for(lambda: len(registry.feedback(reg.events()[0])) == 5, "five verdicts in the registry")
    judged = {ref.device_id: fb for ref, fb in registry.feedback(reg.events()[0]).items()}
    assert judged == {
        "dev-a": registry.Feedback(true_positive=1),
        "dev-b": registry.Feedback(true_positive=1),
        "dev-c": registry.Feedback(false_positive=1),
        "dev-d": registry.Feedback(maintenance=1),
        "dev-e": registry.Feedback(false_positive=1),
    }
