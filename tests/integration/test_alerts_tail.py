"""``telemon alerts tail`` against a live broker: committed records only, one line each."""

from __future__ import annotations

import json
import signal
import threading

import pytest
from confluent_kafka import Producer

from monitor.cli.main import main
from monitor.govern import alerts
from monitor.ingest.kafka import ensure_topics
from monitor.settings import KafkaSettings
from tests.conftest import telemon_process

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _alert(n: int, status: str = "firing", scope: str = "device") -> alerts.Alert:
    return alerts.Alert(
        alert_id=f"id-{n}",
        rule="drift_alert",
        status=status,
        severity="warning",
        scope=scope,
        device_id=f"dev-{n:04d}",
        sensor="temperature",
        started_at=T0,
        ts=T0 + n * 1000,
        signals={"psi": 0.3125, "ks_p": 0.001},
        actions=["alert"],
        model_version=1,
    )


@pytest.fixture
def published(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    """Three alerts, a record that is no alert, and an aborted transaction's alert on the topic."""
    k = kafka_settings
    ensure_topics(k, [k.alerts_topic])
    producer = Producer({"bootstrap.servers": k.bootstrap_servers})
    for n in range(3):
        producer.produce(k.alerts_topic, key=f"dev-{n}".encode(), value=alerts.encode(_alert(n)))
    producer.produce(k.alerts_topic, key=b"junk", value=b"not json")
    producer.flush(10)
    aborted = Producer({"bootstrap.servers": k.bootstrap_servers, "transactional.id": f"{k.group_id}.tx"})
    aborted.init_transactions(10)
    aborted.begin_transaction()
    aborted.produce(k.alerts_topic, key=b"dev-9", value=alerts.encode(_alert(9)))
    aborted.flush(10)
    aborted.abort_transaction(10)
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", k.bootstrap_servers)
    monkeypatch.setenv("TELEMON_KAFKA__ALERTS_TOPIC", k.alerts_topic)
    monkeypatch.setenv("TELEMON_KAFKA__GROUP_ID", k.group_id)
    return k


def test_tail_once_prints_the_committed_alerts_one_line_each(
    published: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "tail", "--from", "1h", "--once"]) == 0
    out, err = capsys.readouterr()
    lines = sorted(out.splitlines())
    assert lines == [
        f"2026-01-01T00:00:0{n}.000Z  firing    drift_alert  dev-000{n}/temperature  ks_p=0.001 psi=0.3125"
        for n in range(3)
    ]
    assert "not an alert record" in err and "skipped" in err


def test_tail_json_is_one_alert_per_line(
    published: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--log-level", "warning", "alerts", "tail", "--once", "--json", "--from", "1h"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(d["alert_id"] for d in docs) == ["id-0", "id-1", "id-2"]
    assert all(alerts.decode(json.dumps(d).encode()).rule == "drift_alert" for d in docs)


def test_tail_starts_at_the_end(published: KafkaSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "tail", "--once"]) == 0
    assert capsys.readouterr().out == ""


def test_filters_keep_the_matching_records(
    published: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    tail = ["alerts", "tail", "--from", "1h", "--once", "-q"]
    assert main([*tail, "--device", "dev-0001", "--device", "dev-0002", "--state", "firing"]) == 0
    lines = sorted(capsys.readouterr().out.splitlines())
    assert [line.split()[3] for line in lines] == ["dev-0001/temperature", "dev-0002/temperature"]
    assert main([*tail, "--rule", "drift_alert", "--severity", "critical"]) == 0
    assert capsys.readouterr().out == ""  # the records are warnings


def test_a_missing_topic_is_one_line(
    published: KafkaSettings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMON_KAFKA__ALERTS_TOPIC", "no-such-alerts")
    assert main(["alerts", "tail", "--once"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("telemon alerts: topic no-such-alerts does not exist at") and err.count("\n") == 1


def test_tail_follows_new_records_until_sigint(published: KafkaSettings) -> None:
    proc = telemon_process(published, "alerts", "tail", "--from", "1h")
    killer = threading.Timer(60, proc.kill)  # a hung tail fails the test, never the session
    killer.start()
    try:
        assert proc.stdout is not None
        before = [proc.stdout.readline() for _ in range(3)]
        producer = Producer({"bootstrap.servers": published.bootstrap_servers})
        producer.produce(published.alerts_topic, value=alerts.encode(_alert(7, status="resolved")))
        producer.flush(10)
        after = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        killer.cancel()
    assert all("firing" in line for line in before)
    assert "resolved  drift_alert  dev-0007/temperature" in after
    assert proc.returncode == 0, err
