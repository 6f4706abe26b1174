"""Service pieces that need no broker: restored firing alerts are kept alive in Alertmanager; a
commit that fails on an unreachable broker or a rebalance does not stop the service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from monitor.govern import alerts
from monitor.govern.registry import AuditEvent
from monitor.govern.rules import load_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.serve.metrics import Metrics
from monitor.serve.service import Service
from monitor.settings import load_settings
from monitor.state.store import PartitionState
from tests.unit.test_pipeline import RULES


def test_restored_firing_episodes_are_adopted_by_the_alertmanager_sink(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        alerts={"alertmanager_url": "http://127.0.0.1:1"},
        state_dir=str(tmp_path),
        rules_file=str(RULES),
    )
    rules = load_rules(RULES)
    service = Service(settings, Pipeline(settings, rules), Metrics(CollectorRegistry()))
    episode = {"rule": "score_drift", "scope": "device", "device_id": "dev-1", "sensor": "humidity"}
    episodes = [
        episode | {"streak": 3, "started_at": 1000, "pending": False, "firing": True, "quiet_until": 0},
        episode | {"sensor": "pressure", "streak": 1, "started_at": 2000, "pending": True, "firing": False},
    ]
    service._adopt(PartitionState(service.pipeline.store.export([]), episodes))
    assert service.sink is not None
    (firing,) = service.sink.firing
    assert firing.alert_id == alerts.alert_id("score_drift", "dev-1", "humidity", 1000)
    assert (firing.status, firing.severity, firing.started_at) == ("firing", "warning", 1000)
    service.consumer.close()


class _RefusingConsumer:
    """Stands in for the consumer: every commit fails with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def commit(self, **_: object) -> None:
        raise KafkaException(KafkaError(self.code, "Commit failed"))


@pytest.mark.parametrize(
    ("code", "fatal"),
    [
        (KafkaError._WAIT_COORD, False),  # the broker went away mid-commit
        (KafkaError.COORDINATOR_NOT_AVAILABLE, False),
        (KafkaError.UNKNOWN_MEMBER_ID, False),  # a rebalance
        (KafkaError.GROUP_AUTHORIZATION_FAILED, True),
    ],
)
def test_a_commit_failing_on_an_unreachable_broker_or_a_rebalance_is_not_fatal(
    tmp_path: Path, code: int, fatal: bool
) -> None:
    settings = load_settings(
        None, kafka={"bootstrap_servers": "127.0.0.1:1"}, state_dir=str(tmp_path), rules_file=str(RULES)
    )
    service = Service(settings, Pipeline(settings, load_rules(RULES)), Metrics(CollectorRegistry()))
    service.consumer.close()
    service.consumer = cast(Consumer, _RefusingConsumer(code))
    result = BatchResult(offsets={("t.readings", 0): 42})
    if fatal:
        with pytest.raises(KafkaException):
            service._commit(result)
    else:
        service._commit(result)


class _AcceptingConsumer:
    def commit(self, **_: object) -> None:
        pass


def test_the_service_logs_its_decisions_and_counts_batches_for_the_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        None, kafka={"bootstrap_servers": "127.0.0.1:1"}, state_dir=str(tmp_path), rules_file=str(RULES)
    )
    service = Service(settings, Pipeline(settings, load_rules(RULES)), Metrics(CollectorRegistry()))
    service.consumer.close()
    service.consumer = cast(Consumer, _AcceptingConsumer())
    rejected = AuditEvent(
        kind="rejected",
        device_id="dev-1",
        sensor="humidity",
        version=2,
        previous=2,
        reason="too few readings",
    )
    result = BatchResult(audit=[rejected])
    with caplog.at_level(logging.INFO, "monitor.serve.oplog"):
        service._checkpoint(result)
        service._record(result, 0.01)
    assert [r.getMessage() for r in caplog.records if r.name == "monitor.serve.oplog"] == [
        "rejected the retrain of dev-1/humidity: v2 keeps serving (too few readings)"
    ]
    assert (service.summary.window.batches, service.summary.window.rejected) == (1, 1)
    assert service.summary.lag is None  # no partition assigned: no lag known
