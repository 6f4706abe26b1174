"""A version a running service registered moves to another deployment through the command line:
``telemon registry export`` in deployment A (its registry, its HMAC key, its Kafka topics),
``telemon registry import`` and ``promote`` in deployment B (another registry, another key,
other topics), where B's running service serves it."""

from __future__ import annotations

import logging
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.cli.broker import free_port
from monitor.cli.main import main as telemon
from monitor.govern import bundle, registry
from monitor.govern.registry import ModelRegistry
from monitor.govern.replication import RegistryReplica, topic_configs
from monitor.ingest.kafka import ensure_topics
from monitor.serve.app import build_service
from monitor.serve.service import Service
from monitor.settings import KafkaSettings, RegistrySettings, Settings, load_settings
from tests.apache_kafka import ApacheKafka
from tests.conftest import unique_kafka_settings
from tests.integration.test_governance import ROLLBACK_RULES, _levels, _publish
from tests.unit.test_registry import DEV, SENSOR, _add

pytestmark = pytest.mark.integration

PAIR = ("dev-bx", "temperature")
KEY_A, KEY_B = "plant-a-signing-key-0123456789abcdef", "plant-b-signing-key-0123456789abcdef"


def _settings(broker: ApacheKafka, folder: Path, key: str) -> Settings:
    rules = folder / "rules.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    rules.write_text(ROLLBACK_RULES)
    overrides: dict[str, Any] = {
        "kafka": unique_kafka_settings(broker).model_dump(mode="json"),
        "metrics": {"port": free_port()},
        "state_dir": str(folder / "state"),
        "registry": {"signing_key": key},
        "rules_file": str(rules),
        "consume": {"batch_size": 50},
    }
    return load_settings(Path("configs/monitor.yaml"), **overrides)


def _run(settings: Settings, last_offsets: dict[int, int]) -> Service:
    """The service, run until it has processed every offset up to ``last_offsets``."""
    service = build_service(settings, CollectorRegistry())
    stop = threading.Event()

    def caught_up(_result: object, t: Any) -> None:
        topic = settings.kafka.readings_topic
        if all(t.positions.get((topic, p), 0) > off for p, off in last_offsets.items()):
            stop.set()

    timer = threading.Timer(120, stop.set)  # never hang the suite
    timer.start()
    try:
        service.run(stop, caught_up)
    finally:
        timer.cancel()
        if service.endpoint is not None:
            service.endpoint.close()
    return service


def _cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, key: str, *args: str) -> int:
    with monkeypatch.context() as m:
        m.setenv("TELEMON_STATE_DIR", str(settings.state_dir))
        m.setenv("TELEMON_REGISTRY__SIGNING_KEY", key)
        return telemon(["registry", *args])


def _bits(xs: list[float]) -> list[bytes]:
    return [struct.pack("<d", x) for x in xs]


def test_a_version_registered_live_is_exported_imported_and_served_elsewhere(
    broker: ApacheKafka,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Deployment A: the level moves from 20 to 25; score_drift retrains, v2 is promoted.
    a = _settings(broker, tmp_path / "a", KEY_A)
    _run(a, _publish(a, PAIR[0], _levels(20, 25)))
    reg_a = registry.open_registry(a)
    version = reg_a.serving(*PAIR)
    assert version >= 2, [(e.kind, e.version) for e in reg_a.history(*PAIR)]
    assert (reg_a.path(*PAIR, version) / "model.json").is_file()

    private, public = _write_keys(Ed25519PrivateKey.generate(), tmp_path / "a")
    path = tmp_path / f"{PAIR[0]}-{PAIR[1]}-v{version}.bundle"
    args = ["export", *PAIR, str(version), "--output", str(path), "--key", str(private)]
    assert _cli(monkeypatch, a, KEY_A, *args) == 0

    # Deployment B: the same device at 25 from the start (its online model v1), on its own topics.
    b = _settings(broker, tmp_path / "b", KEY_B)
    first = _levels(25, n=600, seed=1)
    _run(b, _publish(b, PAIR[0], first))
    assert _cli(monkeypatch, b, KEY_B, "import", str(path), "--trust-key", str(public)) == 0
    assert "imported from" in capsys.readouterr().out
    reg_b = registry.open_registry(b)
    imported, original = reg_b.load(*PAIR, version), reg_a.load(*PAIR, version)
    assert _bits(imported.state()) == _bits(original.state())
    assert reg_b.manifest(*PAIR, version).model == reg_a.manifest(*PAIR, version).model
    promote = ["promote", *PAIR, str(version), "--reason", "validated at plant A"]
    assert _cli(monkeypatch, b, KEY_B, *promote) == 0

    # B's service, restarted, serves the imported version as its audit trail says.
    more = _levels(25, n=300, seed=2)
    with caplog.at_level(logging.INFO, logger="monitor.serve.service"):
        service = _run(b, _publish(b, PAIR[0], more, start=len(first)))
    assert f"{PAIR[0]}/{PAIR[1]} now serves v{version}" in caplog.text
    assert service.pipeline.serving(*PAIR) in (version, None)  # None: the partition released at the stop
    kinds = [(e.kind, e.version, e.actor.split(":")[0]) for e in reg_b.history(*PAIR)]
    assert ("registered", version, "cli") in kinds and ("promoted", version, "cli") in kinds
    assert not [k for k in kinds if k[0] == "rejected"]


def test_a_bundle_imported_into_a_shared_registry_reaches_every_replica(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Imported with ``registry.shared``: the version and its event go to the registry's topics,
    and another replica of deployment B installs it, verified with B's key."""
    k = kafka_settings
    ensure_topics(k, [k.artifacts_topic, k.audit_topic], configs=topic_configs(k))
    a = ModelRegistry(tmp_path / "a" / "registry", KEY_A.encode())
    _add(a, 2, 1)
    key = Ed25519PrivateKey.generate()
    private, public = _write_keys(key, tmp_path)
    path = tmp_path / "v2.bundle"
    with monkeypatch.context() as m:
        m.setenv("TELEMON_STATE_DIR", str(tmp_path / "a"))
        m.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY_A)
        assert telemon(["registry", "export", DEV, SENSOR, "2", "-o", str(path), "--key", str(private)]) == 0
    environ = {
        "KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "KAFKA__GROUP_ID": k.group_id,
        "KAFKA__AUDIT_TOPIC": k.audit_topic,
        "KAFKA__ARTIFACTS_TOPIC": k.artifacts_topic,
        "STATE_DIR": str(tmp_path / "b-operator"),
        "REGISTRY__SHARED": "true",
        "REGISTRY__SIGNING_KEY": KEY_B,
    }
    with monkeypatch.context() as m:
        for name, value in environ.items():
            m.setenv(f"TELEMON_{name}", value)
        assert telemon(["registry", "import", str(path), "--trust-key", str(public), "--actor", "ops"]) == 0
    settings = Settings(
        kafka=k,
        state_dir=tmp_path / "b-replica",
        registry=RegistrySettings(shared=True, signing_key=SecretStr(KEY_B), generate_key=False),
    )
    replica = RegistryReplica(settings, ModelRegistry(tmp_path / "b-replica" / "registry", KEY_B.encode()))
    try:
        replica.catch_up()
        assert replica.installed == 1 and replica.refused == 0
        loaded = replica.registry.load(DEV, SENSOR, 2)
        assert _bits(loaded.state()) == _bits(a.load(DEV, SENSOR, 2).state())
        (event,) = replica.registry.history(DEV, SENSOR)
        assert (event.kind, event.actor) == ("registered", "ops") and "v2.bundle" in event.reason
    finally:
        replica.close()


def _write_keys(key: Ed25519PrivateKey, folder: Path) -> tuple[Path, Path]:
    private, public = folder / "bundle.key", folder / "bundle.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(bundle.public_pem(key))
    return private, public
