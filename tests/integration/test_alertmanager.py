"""The Alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager).

Alertmanager runs on a free loopback port with clustering off and a minimal config (one receiver
without integrations). Firing alerts are read back with ``GET /api/v2/alerts``; that list holds
only active alerts, so a resolved alert is one that left it while its neighbour stayed. Every
test uses its own device ids, so the tests share one Alertmanager.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.analyze import explain
from monitor.errors import SinkUnavailable
from monitor.govern.alerts import Alert, alert_id, annotations_of, labels_of
from monitor.serve.sinks import VALIDITY_FACTOR, AlertmanagerSink
from tests.conftest import AlertmanagerProcess, start_alertmanager

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-pw"  # Alertmanager without a web config ignores the Basic header the URL makes


def _alert(device: str, status: str, started_at: int, ts: int, scope: str = "device") -> Alert:
    sensor = "temperature"
    return Alert(
        alert_id=alert_id("score_drift", device, sensor, started_at),
        rule="score_drift",
        status=status,
        severity="critical" if scope == "fleet" else "warning",
        scope=scope,
        device_id=device,
        sensor=sensor,
        started_at=started_at,
        ts=ts,
        signals={"ks_stat": 0.41, "psi": 0.93},
        actions=["alert", "retrain"],
        model_version=2,
        explanation=explain.Explanation(
            "drift",
            "score_drift: scores KS 0.41 (p 1e-09), PSI 0.93, median 0.49 -> 0.97",
            scores=explain.ScoreShift(0.41, 1e-9, 0.93, explain.Quantiles([0.1] * 5, [0.9] * 5)),
        ),
    )


_OPEN: list[AlertmanagerSink] = []


@pytest.fixture(autouse=True)
def _close_sinks() -> Iterator[None]:
    """Close the sinks' kept-alive connections after each test."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _sink(am: AlertmanagerProcess, **kwargs: Any) -> AlertmanagerSink:
    url = am.url.replace("http://", f"http://telemon:{SECRET}@")
    sink = AlertmanagerSink(url, **{"timeout_s": 5.0, "resend_interval_s": 60.0, **kwargs})
    _OPEN.append(sink)
    return sink


def _active(am: AlertmanagerProcess, *ids: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's active alerts among ``ids``, by alert_id."""
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as resp:
        listed: list[dict[str, Any]] = json.loads(resp.read())
    return {a["labels"]["alert_id"]: a for a in listed if a["labels"].get("alert_id") in ids}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_firing_alerts_are_active_with_their_labels_annotations_and_start(
    alertmanager: AlertmanagerProcess,
) -> None:
    start = _now_ms() - 120_000
    device = _alert("am-firing-1", "firing", start, start + 30_000)
    fleet = _alert("*", "firing", start + 1, start + 30_000, scope="fleet")
    pending = _alert("am-pending-1", "pending", start, start)
    sink = _sink(alertmanager, generator_url="http://telemon.example:9464/")
    assert sink.send([pending, device, fleet]) == 2

    active = _active(alertmanager, device.alert_id, fleet.alert_id, pending.alert_id)
    assert set(active) == {device.alert_id, fleet.alert_id}  # pending records are not alerts yet
    for sent in (device, fleet):
        got = active[sent.alert_id]
        assert got["labels"] == labels_of(sent)
        assert got["annotations"] == annotations_of(sent)
        assert json.loads(got["annotations"]["signals"]) == sent.signals
        assert got["annotations"]["explanation"].startswith("score_drift: scores KS 0.41")
        assert _time(got["startsAt"]) == _ms(sent.started_at)
        assert _time(got["endsAt"]) > _ms(_now_ms())
        assert got["status"]["state"] == "active"
        assert got["generatorURL"] == "http://telemon.example:9464/"


def test_resolved_alerts_leave_the_active_list(alertmanager: AlertmanagerProcess) -> None:
    start = _now_ms() - 120_000
    a, b = (_alert(f"am-resolve-{x}", "firing", start, start + 10_000) for x in "ab")
    sink = _sink(alertmanager)
    sink.send([a, b])
    assert set(_active(alertmanager, a.alert_id, b.alert_id)) == {a.alert_id, b.alert_id}

    resolved = _alert("am-resolve-a", "resolved", start, start + 60_000)
    assert resolved.alert_id == a.alert_id
    assert sink.send([resolved]) == 1
    assert set(_active(alertmanager, a.alert_id, b.alert_id)) == {b.alert_id}
    assert [x.alert_id for x in sink.firing] == [b.alert_id]


def test_heartbeat_extends_firing_alerts(alertmanager: AlertmanagerProcess) -> None:
    now_s = time.time()
    start = int(now_s * 1000) - 60_000
    firing = _alert("am-heartbeat-1", "firing", start, start)
    sink = _sink(alertmanager, resend_interval_s=30.0, clock=lambda: now_s)
    sink.send([firing])
    first = _time(_active(alertmanager, firing.alert_id)[firing.alert_id]["endsAt"])
    assert sink.heartbeat(now_s + 30) == 1
    got = _active(alertmanager, firing.alert_id)[firing.alert_id]
    assert (_time(got["endsAt"]) - first).total_seconds() == pytest.approx(30, abs=0.002)
    assert (_time(got["endsAt"]) - _time(got["startsAt"])).total_seconds() == pytest.approx(
        60 + 30 + VALIDITY_FACTOR * 30, abs=0.002
    )


def test_a_stopped_alertmanager_makes_send_raise(tmp_path: Path) -> None:
    am = start_alertmanager(tmp_path)
    try:
        sink = _sink(am, timeout_s=1.0, resend_interval_s=1.0)
        start = _now_ms() - 1000
        before = _alert("am-stop-1", "firing", start, start)
        assert sink.send([before]) == 1
    finally:
        am.stop()
    after = _alert("am-stop-2", "firing", start + 1, start + 1)
    with pytest.raises(SinkUnavailable, match=r"did not accept 1 alert\(s\)") as exc:
        sink.send([after])
    assert SECRET not in str(exc.value) and "telemon:" not in str(exc.value)
    assert [a.alert_id for a in sink.firing] == [before.alert_id]  # the undelivered one is not kept
    with pytest.raises(SinkUnavailable):
        sink.heartbeat(time.time() + 5)
