"""Service pieces that need no broker: restored firing alerts are kept alive in Alertmanager."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor import alerts
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.rules import load_rules
from monitor.service import Service
from monitor.settings import load_settings
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
    service._adopt(episodes)
    assert service.sink is not None
    (firing,) = service.sink.firing
    assert firing.alert_id == alerts.alert_id("score_drift", "dev-1", "humidity", 1000)
    assert (firing.status, firing.severity, firing.started_at) == ("firing", "warning", 1000)
    service.consumer.close()
