"""Cohort bias on a live stream (issue #15, item 2): the service, given a cohorts file and a cohort
rule on ``firmware``, flags the planted cohort that over-alerts (firmware 2.1: four devices with an
outlier now and then, against eight clean devices on 1.0) on the alerts topic and in /metrics, and
exports the precision per cohort of the operators' verdicts on the device alerts, which carry their
cohorts.

The stream is that of tests/unit/test_bias.py: 12 devices at 1 Hz for 20 minutes of event time
(windows of 300 s, closed 60 s of event time after their end), in the past and sped up: each
minute is sent, stamped with its event times, once the service consumed the one before, as a live
fleet's readings are. (A backlog sent at once is read unevenly across partitions, by more than any
lateness a window could wait for: see ``bias.lateness_s``.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from monitor.analyze.feedback import Verdict, VerdictKind, encode
from monitor.cli.broker import free_port
from monitor.govern import alerts
from monitor.serve.app import build_service
from monitor.serve.service import Totals
from monitor.settings import Settings, load_settings
from tests.apache_kafka import ApacheKafka
from tests.conftest import Samples, read_topic, scrape, unique_kafka_settings
from tests.unit.test_bias import NOISY, RULES, readings

pytestmark = pytest.mark.integration

KEY = "cohort-test-signing-key-0123456789abcdef"
DEVICES, MINUTES = 12, 20
FIRMWARE = {f"dev-{d}": "2.1" if f"dev-{d}" in NOISY else "1.0" for d in range(DEVICES)}
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z: a multiple of the window


class Fleet:
    """The stream, device ``dev-<d>`` on partition ``d % partitions``, each reading with its event
    time as its Kafka timestamp; ``minute(m)`` sends the readings of minute ``m``."""

    def __init__(self, settings: Settings, seed: int = 11) -> None:
        self.kafka, self.rng = settings.kafka, np.random.default_rng(seed)
        self.producer = Producer({"bootstrap.servers": self.kafka.bootstrap_servers, "linger.ms": 5})
        self.ends: dict[int, int] = {}  # partition -> next offset

    def minute(self, m: int) -> None:
        topic = self.kafka.readings_topic
        for d, dev, ts, payload in readings(self.rng, m * 60, (m + 1) * 60, T0, DEVICES):
            partition = d % self.kafka.partitions
            self.producer.produce(topic, payload, dev.encode(), partition, timestamp=ts)
            self.ends[partition] = self.ends.get(partition, 0) + 1
        assert self.producer.flush(30) == 0


@dataclass
class Live:
    settings: Settings
    alerts: list[alerts.Alert]  # every record of the alerts topic once the stream was consumed


@pytest.fixture(scope="module")
def live(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The service run on the whole stream, still running (its feedback worker too)."""
    files = tmp_path_factory.mktemp("cohort-files")
    (files / "rules.yaml").write_text(RULES)
    (files / "cohorts.yaml").write_text(yaml.safe_dump({d: {"firmware": fw} for d, fw in FIRMWARE.items()}))
    settings = load_settings(
        Path("configs/monitor.yaml"),
        kafka=unique_kafka_settings(broker).model_dump(mode="json"),
        metrics={"port": free_port()},
        state_dir=str(tmp_path_factory.mktemp("state")),
        registry={"signing_key": KEY},
        rules_file=str(files / "rules.yaml"),
        cohorts_file=str(files / "cohorts.yaml"),
        bias={"window_s": 300, "lateness_s": 60, "min_alerts": 5},
    )
    service = build_service(settings, CollectorRegistry())
    stop, progress = threading.Event(), threading.Condition()

    def on_batch(_result: object, _t: Totals) -> None:
        with progress:
            progress.notify_all()

    thread = threading.Thread(target=service.run, args=(stop, on_batch))
    thread.start()
    try:
        fleet, topic = Fleet(settings), settings.kafka.readings_topic

        def consumed() -> bool:
            return all(service.totals.positions.get((topic, p), 0) >= e for p, e in fleet.ends.items())

        for m in range(MINUTES):
            fleet.minute(m)
            with progress:
                assert progress.wait_for(consumed, timeout=30), f"minute {m}: {service.totals.positions}"
        k = settings.kafka
        yield Live(settings, [alerts.decode(m.value() or b"") for m in read_topic(k, k.alerts_topic)])
    finally:
        stop.set()
        thread.join(30)
        if service.endpoint is not None:
            service.endpoint.close()


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def test_the_planted_cohort_that_over_alerts_is_flagged_and_only_it(live: Live) -> None:
    cohort_alerts = [a for a in live.alerts if a.rule == "cohort_over_alerting"]
    assert {a.device_id for a in cohort_alerts} == {"firmware=2.1"}
    firing = [a for a in cohort_alerts if a.status == "firing"]
    assert firing
    for a in firing:
        assert a.scope == "cohort" and a.cohorts == {"firmware": "2.1"}
        assert a.signals["bias_alert_pvalue"] < 0.01 and a.signals["bias_alert_ratio"] > 2

    samples = scrape(live.settings.metrics.port)
    assert value(samples, "telemon_cohort_bias", cohort="firmware=2.1", sensor="temperature") == 1
    clean = value(samples, "telemon_cohort_bias_alert_ratio", cohort="firmware=1.0", sensor="temperature")
    assert clean is not None and clean < 1


def test_verdicts_give_the_precision_of_each_cohort(live: Live) -> None:
    k = live.settings.kafka
    device = {a.alert_id: a for a in live.alerts if a.rule == "spike" and a.status == "firing"}
    assert all(a.cohorts == {"firmware": FIRMWARE[a.device_id]} for a in device.values())
    noisy = sorted(i for i, a in device.items() if a.cohorts["firmware"] == "2.1")
    clean = sorted(i for i, a in device.items() if a.cohorts["firmware"] == "1.0")
    assert len(noisy) > 2 * len(clean)

    # Operators judge every device alert: on 2.1 one true positive, the rest false; on 1.0 all true.
    kinds: dict[str, VerdictKind] = {i: "false_positive" for i in noisy[1:]}
    kinds |= {i: "true_positive" for i in (noisy[0], *clean)}
    producer, now = Producer({"bootstrap.servers": k.bootstrap_servers}), int(time.time() * 1000)
    for alert_id, kind in kinds.items():
        producer.produce(k.feedback_topic, encode(Verdict(alert_id, kind, now, by="ops")), alert_id.encode())
    assert producer.flush(10) == 0

    expected = {"firmware=2.1": 1 / len(noisy)} | ({"firmware=1.0": 1.0} if clean else {})

    def precision() -> dict[str, float]:
        by_cohort = "telemon_alert_precision_by_cohort"
        return {
            dict(ls)["cohort"]: v
            for (n, ls), v in scrape(live.settings.metrics.port).items()
            if n == by_cohort
        }

    wait_for(lambda: precision() == pytest.approx(expected), f"precision by cohort {expected}")
    samples = scrape(live.settings.metrics.port)
    assert value(samples, "telemon_alert_precision", rule="spike") == pytest.approx(
        (1 + len(clean)) / len(device)
    )
