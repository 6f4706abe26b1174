"""The running service follows the registry: a promotion or rollback made with ``telemon registry``
is applied to the pair it owns, after verifying the artifact; a tampered one is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.cli.main import main as telemon
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.schema import SENSOR_INDEX, encode_reading
from monitor.serve.metrics import Metrics
from monitor.serve.service import Service
from monitor.settings import load_settings
from tests.unit.test_pipeline import RULES, T0, FakeMessage
from tests.unit.test_registry import DEV, SENSOR, _add

KEY = "service-registry-test-key-0123456789abcdef"


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("TELEMON_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY)
    settings = load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:1"}, rules_file=str(RULES))
    svc = Service(settings, Pipeline(settings, load_rules(RULES)), Metrics(CollectorRegistry()))
    readings = [
        encode_reading(DEV, SENSOR, T0 + i * 1000, i, {"value": 21.0 + 0.1 * (i % 3)}) for i in range(60)
    ]
    svc.pipeline.process([FakeMessage(r, DEV.encode(), 0, i, T0 + i * 1000) for i, r in enumerate(readings)])
    for v, parent in ((1, 0), (2, 1)):
        _add(svc.registry, v, parent)
    yield svc
    svc.consumer.close()


def test_a_promotion_from_the_command_line_is_applied(service: Service) -> None:
    assert service.pipeline.serving(DEV, SENSOR) == 1
    assert telemon(["registry", "promote", DEV, SENSOR, "2", "--reason", "reviewed"]) == 0
    service._follow_registry()
    assert service.pipeline.serving(DEV, SENSOR) == 2
    slot = service.pipeline.store.slots[DEV]
    model = service.pipeline.detect_state.model_of(slot, SENSOR_INDEX[SENSOR])
    assert model is not None and model.params() == service.registry.load(DEV, SENSOR, 2).params()


def test_an_artifact_tampered_after_the_command_is_refused_by_the_service(service: Service) -> None:
    assert telemon(["registry", "promote", DEV, SENSOR, "2", "--reason", "reviewed"]) == 0
    artifact = service.registry.path(DEV, SENSOR, 2) / "model.json"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    service._follow_registry()
    assert service.pipeline.serving(DEV, SENSOR) == 1  # the current model keeps serving
