"""Tests for monitor.serve.health: probe verdicts, and the endpoint serving them next to /metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.serve import health as health_module
from monitor.serve.health import Health, HttpEndpoint, make_app
from monitor.serve.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(liveness_timeout_s=60, clock=clock)


def test_live_from_the_start_and_until_the_loop_stalls(health: Health, clock: Clock) -> None:
    assert health.liveness()[0]
    clock.now += 60
    assert health.liveness()[0]
    clock.now += 0.5
    ok, detail = health.liveness()
    assert not ok
    assert detail["loop_age_s"] == 60.5
    health.tick()
    assert health.liveness()[0]


def test_not_live_once_stopped(health: Health) -> None:
    health.stopped = True
    assert health.liveness() == (False, {"loop_age_s": 0.0, "timeout_s": 60, "stopped": True})


def test_ready_only_after_joining_the_group(health: Health) -> None:
    ok, detail = health.readiness()
    assert not ok
    assert detail["joined"] is False
    health.assigned(partitions=0)  # a spare replica: in the group, no partitions
    assert health.readiness()[0]
    health.assigned(partitions=4)
    ok, detail = health.readiness()
    assert ok
    assert detail["partitions"] == 4
    health.revoked()
    assert not health.readiness()[0]


def test_not_ready_while_brokers_are_down_or_after_a_failed_delivery(health: Health) -> None:
    health.assigned(4)
    health.broker_error = "1/1 brokers are down"
    ok, detail = health.readiness()
    assert (ok, detail["broker_error"]) == (False, "1/1 brokers are down")
    health.assigned(4)  # a new assignment means the group coordinator answered
    assert health.readiness()[0]
    health.delivery_error = "3 messages not delivered in 30s"
    assert not health.readiness()[0]


def test_not_ready_when_not_live(health: Health, clock: Clock) -> None:
    health.assigned(4)
    clock.now += 61
    ok, detail = health.readiness()
    assert (ok, detail["live"]) == (False, False)


@pytest.fixture
def endpoint(health: Health) -> Iterator[HttpEndpoint]:
    registry = CollectorRegistry()
    Metrics(registry)
    server = HttpEndpoint("127.0.0.1", 0, make_app(registry, health))
    yield server
    server.close()


def _get(endpoint: HttpEndpoint, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{endpoint.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _json(body: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


def test_endpoint_serves_metrics(endpoint: HttpEndpoint) -> None:
    status, content_type, body = _get(endpoint, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "telemon_build_info" in body


def test_endpoint_probes(endpoint: HttpEndpoint, health: Health, clock: Clock) -> None:
    status, content_type, body = _get(endpoint, "/healthz")
    assert (status, content_type, _json(body)["status"]) == (200, "application/json", "ok")
    status, _, body = _get(endpoint, "/readyz")
    assert (status, _json(body)["status"], _json(body)["joined"]) == (503, "fail", False)
    health.assigned(2)
    status, _, body = _get(endpoint, "/readyz")
    assert (status, _json(body)["partitions"]) == (200, 2)
    clock.now += 120  # the loop stalls
    assert _get(endpoint, "/healthz")[0] == 503
    assert _get(endpoint, "/readyz")[0] == 503


def test_endpoint_unknown_path_is_404(endpoint: HttpEndpoint) -> None:
    status, _, body = _get(endpoint, "/admin")
    assert status == 404
    assert "no such endpoint" in _json(body)["error"]


def test_endpoint_close_frees_the_port(health: Health) -> None:
    server = HttpEndpoint("127.0.0.1", 0, make_app(CollectorRegistry(), health))
    port = server.port
    server.close()
    again = HttpEndpoint("127.0.0.1", port, make_app(CollectorRegistry(), health))
    again.close()


def test_degraded_while_the_loop_is_stalled_before_liveness_fails(health: Health, clock: Clock) -> None:
    health.assigned(4)
    clock.now += 15  # a quarter of the liveness timeout: e.g. a commit waiting on a frozen broker
    assert health.readiness()[0]
    clock.now += 0.5
    ok, detail = health.readiness()
    assert (ok, detail["degraded"], detail["stalled"], detail["live"]) == (False, True, True, True)
    health.tick()
    assert health.readiness()[0]


def test_degraded_after_losing_the_group_until_assigned_again(health: Health) -> None:
    health.assigned(4)
    health.lost()
    health.revoked()
    ok, detail = health.readiness()
    assert (ok, detail["degraded"]) == (False, True)
    assert "group coordinator" in detail["broker_error"]
    health.assigned(2)
    assert health.readiness()[0]


def _threads() -> int:
    return threading.active_count()


def test_trickling_connections_are_bounded_and_cut(
    endpoint: HttpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_module, "REQUEST_DEADLINE_S", 1.5)
    before = _threads()
    clients = []
    for _ in range(health_module.MAX_CONNECTIONS + 36):  # more than the endpoint serves at once
        s = socket.create_connection(("127.0.0.1", endpoint.port), timeout=5)
        s.sendall(b"GET /metr")  # and never the rest of the request line
        clients.append(s)
    time.sleep(0.5)
    assert _threads() - before <= 2 * health_module.MAX_CONNECTIONS  # a handler and a deadline each
    for s in clients[:10]:
        s.sendall(b"i")  # a byte now and then does not keep a connection alive
    time.sleep(2.0)
    for s in clients:  # every connection was closed by the endpoint: past its deadline, or refused
        s.settimeout(2)
        assert s.recv(100) == b""
        s.close()
    assert _get(endpoint, "/healthz")[0] == 200  # and it serves again
    time.sleep(0.2)
    assert _threads() - before <= 2
