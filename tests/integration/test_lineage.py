"""Lineage that reproduces, on Apache Kafka: the service retrains a drifted pair on its history
re-read from the readings topic, registers the versions with what rebuilds them, and
`telemon registry reproduce` rebuilds each from Kafka into a byte-identical artifact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from monitor.cli.main import main as telemon
from monitor.govern import registry
from monitor.govern.registry import ModelRegistry, ModelVersion, VersionRef
from monitor.ingest.kafka import client_config
from monitor.settings import Settings, load_settings
from producers.scenario import load_scenario
from producers.simulate import simulate
from tests.brokers import Broker
from tests.conftest import unique_kafka_settings
from tests.integration.test_governance import run_monitor

pytestmark = pytest.mark.integration

PAIR = ("dev-0003", "humidity")
KEY = "lineage-test-signing-key-0123456789abcdef"
HISTORY = 256


@dataclass
class Retrained:
    settings: Settings
    registry: ModelRegistry

    def versions(self) -> list[ModelVersion]:
        """The pair's candidates (v2, v3, ...)."""
        refs = [r for r in self.registry.versions(*PAIR) if r.version > 1]
        return [self.registry.manifest(*r).model for r in refs]


@pytest.fixture(scope="module")
def retrained(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    settings = load_settings(
        Path("configs/monitor.yaml"),
        kafka=unique_kafka_settings(broker).model_dump(mode="json"),
        metrics={"enabled": False},
        state_dir=str(tmp_path_factory.mktemp("state")),
        registry={"signing_key": KEY},
        retrain={"history_readings": HISTORY},
    )
    scenario = load_scenario(
        Path("configs/scenarios/demo.yaml"),
        seed=11,
        devices=6,
        duration_s=900,
        malformed=0,
        events=[
            {"kind": "abrupt_shift", "device": 3, "sensor": "humidity", "start_s": 300, "magnitude": 25.0}
        ],
    )
    report = simulate(settings.kafka, scenario)
    run_monitor(settings, report.last_offsets, timeout_s=180)
    return Retrained(settings, registry.open_registry(settings))


def test_retrains_train_on_the_topic_history(retrained: Retrained) -> None:
    versions = retrained.versions()
    assert versions, "no retrain registered"
    for v in versions:
        assert v.source == "topic", v.source_note
        assert retrained.settings.model.retrain_window < v.trained_on.readings <= HISTORY
        assert v.test_data is not None and v.test_data.last_offset == v.trained_on.last_offset
        assert v.seed is not None and v.settings_sha256 and v.rules_sha256 and v.dependencies


def test_registry_reproduce_rebuilds_each_version_byte_for_byte(
    retrained: Retrained, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = retrained.settings
    monkeypatch.setenv("TELEMON_STATE_DIR", str(s.state_dir))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY)
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", s.kafka.bootstrap_servers)
    shadowed = 0
    for v in retrained.versions():
        code = telemon(["registry", "reproduce", *PAIR, str(v.version), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, out + err
        doc = json.loads(out)
        assert doc["reproduced"] and doc["registered"] == doc["rebuilt"]
        artifact = retrained.registry.version_files(*VersionRef(*PAIR, v.version))[registry.ARTIFACT]
        assert doc["registered"]["bytes"] == len(artifact)
        shadowed += v.shadow_data is not None
    assert shadowed, "no candidate reached its shadow run"
    code = telemon(["registry", "reproduce", *PAIR, "1"])
    _, err = capsys.readouterr()
    assert code == 1 and "online model" in err and err.count("\n") == 1


def test_reproduce_says_when_retention_took_the_readings(
    retrained: Retrained, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last: it deletes the start of the pair's partition, as retention would."""
    s = retrained.settings
    v = retrained.versions()[0]
    t = v.trained_on
    admin = AdminClient(client_config(s.kafka))
    (done,) = admin.delete_records([TopicPartition(t.topic, t.partition, t.first_offset + 1)]).values()
    done.result(30)
    monkeypatch.setenv("TELEMON_STATE_DIR", str(s.state_dir))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY)
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", s.kafka.bootstrap_servers)
    code = telemon(["registry", "reproduce", *PAIR, str(v.version)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert f"are gone from the topic, which now starts at offset {t.first_offset + 1} (retention)" in err
