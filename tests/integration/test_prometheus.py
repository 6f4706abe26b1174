"""A real Prometheus scrapes a running monitor and evaluates the shipped rules on a planted drift.

Prometheus runs on a free loopback port with the shipped ``configs/prometheus/prometheus.yml``,
templated only where a test must differ: the scrape target (the monitor's free port), 1 s
scrape and evaluation intervals, the rules by absolute path, no Alertmanager. The shipped rules
are loaded unchanged.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.cli.broker import free_port
from monitor.serve.app import build_service
from monitor.serve.service import Service
from monitor.settings import Settings, load_settings
from producers.scenario import load_scenario
from producers.simulate import SimulationReport, simulate
from tests.apache_kafka import ApacheKafka
from tests.conftest import tool, unique_kafka_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "prometheus"

pytestmark = pytest.mark.integration

SCENARIO = {
    "seed": 5,
    "devices": 4,
    "duration_s": 600,
    "malformed": 6,
    "events": [
        # +25 %RH: a step that clipped learning does not close before score_drift fires, so a retrain is
        # promoted (the model follows a step of +12 %RH by itself, and the retrain leaves it serving)
        {"kind": "abrupt_shift", "device": 2, "sensor": "humidity", "start_s": 280, "magnitude": 25.0},
    ],
}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@dataclass
class Monitor:
    settings: Settings
    service: Service
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics.port}"

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}")
        assert status == 200, (status, body, self.log.read_text())
        return json.loads(body)["data"]

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        alerts = self.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


@pytest.fixture(scope="module")
def monitor(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitor]:
    settings = load_settings(
        ROOT / "configs" / "monitor.yaml",
        kafka=unique_kafka_settings(broker).model_dump(mode="json"),
        metrics={"port": free_port()},
        state_dir=str(tmp_path_factory.mktemp("state")),
        rules_file=str(ROOT / "configs" / "rules.yaml"),
    )
    service = build_service(settings, CollectorRegistry())
    stop = threading.Event()
    m = Monitor(settings, service, stop, threading.Thread())

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # reported by the tests
            m.errors.append(exc)

    m.thread = threading.Thread(target=run, name="monitor", daemon=True)
    m.thread.start()
    yield m
    m.halt()
    assert service.endpoint is not None
    service.endpoint.close()
    assert not m.errors


def prometheus_config(target: str) -> dict[str, Any]:
    """The shipped config, pointed at ``target`` with 1 s intervals and the shipped rules."""
    config: dict[str, Any] = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(SHIPPED / rules) for rules in config["rule_files"]]
    config.pop("alerting")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "telemon"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    return config


@pytest.fixture(scope="module")
def prometheus(monitor: Monitor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(f"127.0.0.1:{monitor.settings.metrics.port}")))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            return http_get(f"{prom.url}/-/ready")[0] == 200

        wait_for(ready, "Prometheus to start")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def drifted(monitor: Monitor, prometheus: Prometheus) -> SimulationReport:
    """Publish the scenario once Prometheus has scraped the idle monitor (counters at 0), and
    wait until the monitor has consumed all of it."""

    def scraped() -> bool:
        targets = prometheus.api("targets")["activeTargets"]
        return any(t["labels"]["job"] == "telemon" and t["health"] == "up" for t in targets)

    wait_for(scraped, "the first successful scrape of the monitor")
    scenario = load_scenario(ROOT / "configs" / "scenarios" / "demo.yaml", **SCENARIO)
    report = simulate(monitor.settings.kafka, scenario)
    positions = monitor.service.totals.positions
    topic = monitor.settings.kafka.readings_topic

    def consumed() -> bool:
        assert not monitor.errors, monitor.errors
        return all(positions.get((topic, p), 0) > off for p, off in report.last_offsets.items())

    wait_for(consumed, "the monitor to consume the scenario")
    return report


def test_prometheus_loads_every_shipped_rule(prometheus: Prometheus) -> None:
    shipped = yaml.safe_load((SHIPPED / "rules" / "telemon.yml").read_text())
    expected = {r["alert"] for g in shipped["groups"] for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = wait_for(evaluated, "the first evaluation of every rule")
    assert {r["name"] for r in rules} == expected
    assert [r for r in rules if r["health"] != "ok"] == []


def test_planted_drift_fires_the_shipped_drift_alert(
    prometheus: Prometheus, drifted: SimulationReport
) -> None:
    alerts = wait_for(lambda: prometheus.firing("TelemonDeviceDrift"), "TelemonDeviceDrift to fire")
    assert {a["labels"]["sensor"] for a in alerts} == {"humidity"}
    (alert,) = alerts
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "humidity scores drifted on some device"


def test_nothing_is_down_or_absent(prometheus: Prometheus, drifted: SimulationReport) -> None:
    active = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}
    assert not active & {"TelemonDown", "TelemonAbsent"}


def test_live_metrics_pass_promtool_and_carry_no_device_id(
    monitor: Monitor, drifted: SimulationReport
) -> None:
    status, text = http_get(f"{monitor.url}/metrics")
    assert status == 200
    assert "dev-" not in text
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


def test_live_metrics_count_the_scenario(monitor: Monitor, drifted: SimulationReport) -> None:
    registry = monitor.service.metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    sent = drifted.readings_sent + drifted.malformed_sent
    assert value("telemon_messages_received_total") == sent
    assert value("telemon_event_lag_seconds_count") == drifted.readings_sent
    assert value("telemon_assigned_partitions") == monitor.settings.kafka.partitions
    partitions = {
        s.labels["partition"]
        for family in registry.collect()
        if family.name == "telemon_consumer_lag"
        for s in family.samples
    }
    assert partitions == {str(p) for p in drifted.last_offsets}
    assert value("telemon_retrains_total", sensor="humidity", outcome="promoted") == 1
    assert value("telemon_model_version_max", sensor="humidity") >= 2  # a rejected candidate counts too
    assert value("telemon_models", sensor="humidity") == SCENARIO["devices"]


def test_probes_report_a_live_ready_consumer(monitor: Monitor, drifted: SimulationReport) -> None:
    status, body = http_get(f"{monitor.url}/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    status, body = http_get(f"{monitor.url}/readyz")
    ready = json.loads(body)
    assert (status, ready["joined"], ready["partitions"]) == (200, True, monitor.settings.kafka.partitions)


def test_a_stopped_monitor_fails_both_probes(monitor: Monitor, drifted: SimulationReport) -> None:
    """Last in the module: stops the monitor."""
    monitor.halt()
    assert not monitor.thread.is_alive()
    assert http_get(f"{monitor.url}/healthz")[0] == 503
    assert http_get(f"{monitor.url}/readyz")[0] == 503
