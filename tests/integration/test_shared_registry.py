"""The shared registry (``registry.shared``) against a real broker: replicas on separate disks see
each other's versions, every event once, a command's promotion, and refuse another key's versions."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
from pydantic import SecretStr

from monitor.cli.main import main
from monitor.detect.model import AdaptiveGaussian
from monitor.govern.registry import ModelRegistry, ModelVersion, TrainingData, VersionRef
from monitor.govern.replication import RegistryReplica, topic_configs
from monitor.ingest.kafka import ensure_topics
from monitor.settings import KafkaSettings, RegistrySettings, Settings

KEY = "k" * 32
DEV, SENSOR = "dev-0007", "temperature"
T0 = 1_767_225_600_000


def _settings(kafka: KafkaSettings, state_dir: Path, key: str = KEY) -> Settings:
    return Settings(
        kafka=kafka,
        state_dir=state_dir,
        registry=RegistrySettings(shared=True, signing_key=SecretStr(key), generate_key=False),
    )


def _replica(kafka: KafkaSettings, state_dir: Path, key: str = KEY) -> RegistryReplica:
    s = _settings(kafka, state_dir, key)
    return RegistryReplica(s, ModelRegistry(state_dir / "registry", key.encode()))


def _register(reg: ModelRegistry, v: int) -> None:
    model = AdaptiveGaussian.fit([(20.0 + v,), (20.5 + v,), (19.75 + v,)], resolution=0.01)
    data = TrainingData("telemon.readings", 3, 1000 * v, 1000 * v + 31, 32, T0, T0 + 31_000)
    version = ModelVersion(
        device_id=DEV,
        sensor=SENSOR,
        version=v,
        parent=v - 1 if v > 2 else 1,
        trained_on=data,
        params={"fading": 0.05, "var_fading": 0.005},
        baseline=model.params(),
        trigger_rule="score_drift",
        trigger_alert_id=f"{v:016x}",
        code_version="0.1.0+test",
        config_hash="cfg1",
        created_at=T0 + v * 60_000,
    )
    reg.register(version, model)


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> KafkaSettings:
    """The registry's topics as telemon creates them, the artifacts topic with Kafka's default
    record limit (the test broker's is higher)."""
    k = kafka_settings
    configs = topic_configs(k)
    configs[k.artifacts_topic]["max.message.bytes"] = "1048588"
    ensure_topics(k, [k.artifacts_topic, k.audit_topic], configs=configs)
    return k


def test_a_version_registered_by_one_replica_loads_on_another_disk(
    topics: KafkaSettings, tmp_path: Path
) -> None:
    a = _replica(topics, tmp_path / "a")
    _register(a.registry, 2)
    _register(a.registry, 2)  # a batch processed again: published again, recorded once
    a.flush()
    b = _replica(topics, tmp_path / "b")
    b.catch_up()
    assert b.installed == 1
    assert b.registry.load(DEV, SENSOR, 2).params() == a.registry.load(DEV, SENSOR, 2).params()
    assert [e.kind for e in b.registry.history(DEV, SENSOR)] == ["registered"]
    again = _replica(topics, tmp_path / "b")  # a restart reads both topics again: nothing new
    again.catch_up()
    assert again.installed == 0
    assert b.registry.history(DEV, SENSOR) == again.registry.history(DEV, SENSOR)
    assert len(again.registry.history(DEV, SENSOR)) == 1
    for r in (a, b, again):
        r.close()


def test_a_command_promotion_reaches_every_replica(
    topics: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _replica(topics, tmp_path / "a")
    _register(a.registry, 2)
    _register(a.registry, 3)
    a.flush()
    b = _replica(topics, tmp_path / "b")
    b.start()  # following, as a running service's replica does
    for key, value in {
        "KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap_servers,
        "KAFKA__GROUP_ID": topics.group_id,
        "KAFKA__AUDIT_TOPIC": topics.audit_topic,
        "KAFKA__ARTIFACTS_TOPIC": topics.artifacts_topic,
        "STATE_DIR": str(tmp_path / "operator"),
        "REGISTRY__SHARED": "true",
        "REGISTRY__SIGNING_KEY": KEY,
    }.items():
        monkeypatch.setenv(f"TELEMON_{key}", value)
    assert main(["registry", "promote", DEV, SENSOR, "3", "--reason", "validated", "--actor", "ops"]) == 0
    a.catch_up()
    assert a.registry.serving(DEV, SENSOR) == 3
    promoted = [e for e in a.registry.history(DEV, SENSOR) if e.kind == "promoted"]
    assert len(promoted) == 1 and promoted[0].actor == "ops" and promoted[0].id
    b.close()  # the follower stops after its current poll; what it read is in b's directory
    b2 = _replica(topics, tmp_path / "b")
    b2.catch_up()
    assert b2.registry.serving(DEV, SENSOR) == 3
    assert b2.registry.history(DEV, SENSOR) == a.registry.history(DEV, SENSOR)
    a.close()
    b2.close()


def test_a_replica_with_another_key_refuses_the_versions_and_says_why(
    topics: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _replica(topics, tmp_path / "a")
    _register(a.registry, 2)
    a.flush()
    other = _replica(topics, tmp_path / "other", key="x" * 32)
    with caplog.at_level(logging.ERROR, logger="monitor.govern.replication"):
        other.catch_up()
    assert other.refused == 1 and other.registry.versions() == []
    assert "need the same registry.signing_key" in caplog.text
    a.close()
    other.close()


def test_an_artifact_larger_than_a_record_goes_in_chunks(topics: KafkaSettings, tmp_path: Path) -> None:
    """A 1.2 MB artifact (a model with River tiers) passes a broker limit of 1 MB per record."""
    a = _replica(topics, tmp_path / "a")
    _register(a.registry, 2)
    files = a.registry.version_files(DEV, SENSOR, 2)
    big = files | {"padding": bytes(1_200_000)}  # unknown files are carried, not stored
    a.publish_version(VersionRef(DEV, SENSOR, 2), big)
    a.flush()
    b = _replica(topics, tmp_path / "b")
    b.catch_up()
    assert b.installed == 1 and b.registry.versions() == [VersionRef(DEV, SENSOR, 2)]
    assert (
        msgspec.json.decode(b.registry.version_files(DEV, SENSOR, 2)["manifest.json"])["model"]["version"]
        == 2
    )
    a.close()
    b.close()


def test_versions_stored_before_sharing_are_published_once(topics: KafkaSettings, tmp_path: Path) -> None:
    """A directory's versions the topic lacks (registered before registry.shared, or by a replica
    that stopped before Kafka acknowledged them) are published when it starts sharing."""
    local = ModelRegistry(tmp_path / "a" / "registry", KEY.encode())
    _register(local, 2)  # no publisher: only in this directory
    a = _replica(topics, tmp_path / "a")
    a.catch_up()
    assert a.publish_missing() == [VersionRef(DEV, SENSOR, 2)]
    a.flush()
    again = _replica(topics, tmp_path / "a")
    again.catch_up()
    assert again.publish_missing() == []
    b = _replica(topics, tmp_path / "b")
    b.catch_up()
    assert b.registry.versions() == [VersionRef(DEV, SENSOR, 2)]
    for r in (a, again, b):
        r.close()


def test_the_settings_and_rules_a_version_names_reach_every_replica(
    topics: KafkaSettings, tmp_path: Path
) -> None:
    a = _replica(topics, tmp_path / "a")
    settings, rules = a.registry.put_blob(b'{"retrain": {}}'), a.registry.put_blob(b"rules: []\n")
    model = AdaptiveGaussian.fit([(20.0,), (20.5,), (19.75,)], resolution=0.01)
    data = TrainingData("telemon.readings", 3, 1000, 1031, 32, T0, T0 + 31_000)
    version = ModelVersion(
        device_id=DEV, sensor=SENSOR, version=2, parent=1, trained_on=data, params={},
        baseline=model.params(), trigger_rule="score_drift", trigger_alert_id="0" * 16,
        code_version="0.1.0+test", config_hash="cfg1", created_at=T0, source="topic",
        settings_sha256=settings, rules_sha256=rules,
    )  # fmt: skip
    a.registry.register(version, model)
    a.flush()
    b = _replica(topics, tmp_path / "b")
    b.catch_up()
    assert b.installed == 1
    assert (b.registry.blob(settings), b.registry.blob(rules)) == (b'{"retrain": {}}', b"rules: []\n")
    for r in (a, b):
        r.close()
