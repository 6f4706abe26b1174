"""Tests for monitor.govern.alerts and monitor.serve.sinks: identity, schema, storm control with
hand-computed cases, the Alertmanager payload, and the sink against a loopback HTTP stub."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import monitor.govern.alerts
from monitor.cli.broker import free_port
from monitor.errors import SinkRejected, SinkUnavailable
from monitor.govern.alerts import (
    Alert,
    StormControl,
    alert_id,
    annotations_of,
    decode,
    encode,
    from_transition,
    labels_of,
    rfc3339,
)
from monitor.govern.rules import Evaluation, Rule, Transition
from monitor.serve import sinks
from monitor.serve.sinks import AlertmanagerSink, postable

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SECRET = "s3cr3t-pw"


def _alert(
    status: str = "firing",
    device: str = "dev-1",
    rule: str = "hot",
    started_at: int = T0,
    ts: int | None = None,
    sensor: str = "humidity",
) -> Alert:
    return Alert(
        alert_id=alert_id(rule, device, sensor, started_at),
        rule=rule,
        status=status,
        severity="warning",
        scope="device",
        device_id=device,
        sensor=sensor,
        started_at=started_at,
        ts=started_at if ts is None else ts,
        signals={"psi": 0.75, "ks_stat": 0.5},
        actions=["alert", "retrain"],
        model_version=3,
    )


def _brief(alerts: list[Alert]) -> list[tuple[str, str, str, int]]:
    return [(a.rule, a.device_id, a.status, a.ts) for a in alerts]


# --- records ----------------------------------------------------------------------------------------


def test_alert_id_is_stable_and_shared_by_every_record_of_an_episode() -> None:
    assert alert_id("score_drift", "dev-0007", "temperature", T0) == "8bc680b8e70b724b"
    records = [_alert(s, ts=T0 + i) for i, s in enumerate(("pending", "firing", "resolved"))]
    assert len({a.alert_id for a in records}) == 1
    assert alert_id("hot", "dev-1", "humidity", T0 + 1) != records[0].alert_id  # another episode


@pytest.mark.parametrize("status", ["pending", "firing", "resolved"])
def test_from_transition_and_json_round_trip(status: str) -> None:
    rule = Rule.model_validate(
        {"name": "hot", "scope": "device", "when": {"signal": "psi", "op": ">", "value": 1}}
    )
    ev = Evaluation("device", "dev-1", "humidity", {"psi": 1.23456789}, T0 + 5000)
    a = from_transition(Transition(rule, ev, status, T0), model_version=2)  # type: ignore[arg-type]
    assert (a.status, a.started_at, a.ts, a.signals) == (status, T0, T0 + 5000, {"psi": 1.234568})
    assert a.alert_id == alert_id("hot", "dev-1", "humidity", T0)
    assert decode(encode(a)) == a
    assert json.loads(encode(a))["schema_version"] == 2


def test_schema_documents_pending() -> None:
    assert '"pending" | "firing" | "resolved"' in (monitor.govern.alerts.__doc__ or "")


def test_labels_and_annotations_for_alertmanager() -> None:
    a = _alert(ts=T0 + 60_000)
    assert labels_of(a) == {
        "alertname": "hot",
        "severity": "warning",
        "scope": "device",
        "device_id": "dev-1",
        "sensor": "humidity",
        "alert_id": a.alert_id,
    }
    notes = annotations_of(a)
    assert notes["summary"] == "hot on dev-1/humidity"
    assert notes["description"] == (
        "telemon rule hot (warning, device scope) on dev-1/humidity since 2026-01-01T00:00:00.000Z; "
        "actions: alert, retrain; model version 3"
    )
    assert notes["signals"] == '{"ks_stat":0.5,"psi":0.75}'


def test_rfc3339_keeps_milliseconds() -> None:
    assert rfc3339(T0 + 1) == "2026-01-01T00:00:00.001Z"


# --- storm control -----------------------------------------------------------------------------------

W = 10_000  # the window of the storm cases below: 10 s


def _firing(device: str, ts: int, rule: str = "hot") -> Alert:
    return _alert("firing", device=device, rule=rule, started_at=ts)


def _resolved(firing: Alert, ts: int) -> Alert:
    return _alert("resolved", device=firing.device_id, rule=firing.rule, started_at=firing.started_at, ts=ts)


def test_storm_suppresses_over_the_cap_with_one_summary_and_resolves_after_a_calm_window() -> None:
    storm = StormControl(max_alerts=2, per_seconds=10)
    a, b = _firing("a", T0), _firing("b", T0 + 1000)
    c, d = _firing("c", T0 + 2000, rule="cold"), _firing("d", T0 + 3000)
    out = storm.admit([a, b, c, d])
    assert _brief(out) == [
        ("hot", "a", "firing", T0),
        ("hot", "b", "firing", T0 + 1000),
        ("alert_storm", "*", "firing", T0 + 2000),  # at the first suppression; d adds no summary
    ]
    summary = out[2]
    assert (summary.scope, summary.severity, summary.sensor, summary.started_at) == (
        "fleet",
        "critical",
        "*",
        T0 + 2000,
    )
    assert summary.alert_id == alert_id("alert_storm", "*", "*", T0 + 2000)
    assert summary.signals == {"suppressed": 1.0, "suppressed.cold": 1.0, "max_alerts": 2.0, "window_s": 10.0}
    assert storm.storming

    # Resolved records: of a suppressed firing dropped, of a delivered one passed.
    assert storm.admit([_resolved(c, T0 + 4000), _resolved(a, T0 + 5000)]) == [_resolved(a, T0 + 5000)]

    # The next window is within the cap (its first 2 firings are delivered though the storm lasts);
    # the storm resolves when event time leaves it, stamped at its end.
    e = _firing("e", T0 + W + 1000)
    assert storm.admit([e]) == [e]
    (end,) = storm.admit([], now_ms=T0 + 2 * W)
    assert _brief([end]) == [("alert_storm", "*", "resolved", T0 + 2 * W)]
    assert end.alert_id == summary.alert_id
    assert end.signals == {
        "suppressed": 2.0,
        "suppressed.cold": 1.0,
        "suppressed.hot": 1.0,
        "max_alerts": 2.0,
        "window_s": 10.0,
    }
    assert not storm.storming
    assert storm.admit([_resolved(d, T0 + 2 * W + 1)]) == []  # d was suppressed: nothing announced


def test_storm_lasting_several_windows_has_one_summary() -> None:
    storm = StormControl(max_alerts=1, per_seconds=10)
    fired = [_firing(f"w{w}-{i}", T0 + w * W + i) for w in range(3) for i in range(2)]  # 2 per window
    out = storm.admit(fired)
    assert _brief(out) == [
        ("hot", "w0-0", "firing", T0),
        ("alert_storm", "*", "firing", T0 + 1),
        ("hot", "w1-0", "firing", T0 + W),
        ("hot", "w2-0", "firing", T0 + 2 * W),
    ]
    calm = _firing("w3-0", T0 + 3 * W)
    assert _brief(storm.admit([calm, _firing("w4-0", T0 + 4 * W)])) == [
        ("hot", "w3-0", "firing", T0 + 3 * W),
        ("alert_storm", "*", "resolved", T0 + 4 * W),  # window 3 stayed within the cap
        ("hot", "w4-0", "firing", T0 + 4 * W),
    ]


def test_storm_resolves_at_the_end_of_an_empty_window_after_a_jump() -> None:
    storm = StormControl(max_alerts=1, per_seconds=10)
    storm.admit([_firing("a", T0), _firing("b", T0 + 1)])
    late = _firing("c", T0 + 5 * W)
    out = storm.admit([late])
    assert _brief(out) == [("alert_storm", "*", "resolved", T0 + 2 * W), ("hot", "c", "firing", T0 + 5 * W)]


def test_storm_counts_only_firing_and_late_records_in_the_current_window() -> None:
    storm = StormControl(max_alerts=1, per_seconds=10)
    pending = _alert("pending", device="p", started_at=T0)
    first = _firing("a", T0 + W)
    late = _firing("b", T0 + 5)  # from a slower partition: counted in the current window
    out = storm.admit([pending, first, late])
    assert _brief(out) == [
        ("hot", "p", "pending", T0),
        ("hot", "a", "firing", T0 + W),
        ("alert_storm", "*", "firing", T0 + 5),
    ]


def test_a_second_storm_has_a_new_id() -> None:
    storm = StormControl(max_alerts=1, per_seconds=10)
    first = storm.admit([_firing("a", T0), _firing("b", T0 + 1)], now_ms=T0 + 2 * W)
    second = storm.admit([_firing("c", T0 + 3 * W), _firing("d", T0 + 3 * W + 1)])
    ids = {a.alert_id for a in first + second if a.rule == "alert_storm"}
    assert len(ids) == 2


def test_storm_decisions_do_not_depend_on_batch_boundaries() -> None:
    stream = [_firing(f"d{i}", T0 + i * 700) for i in range(40)]
    stream += [_resolved(a, T0 + 30_000 + i) for i, a in enumerate(stream[:40:3])]
    whole = StormControl(3, 10).admit(stream, now_ms=T0 + 60_000)
    one_by_one = StormControl(3, 10)
    split = [x for a in stream for x in one_by_one.admit([a])] + one_by_one.admit([], now_ms=T0 + 60_000)
    assert whole == split
    assert [a.status for a in whole if a.rule == "alert_storm"] == ["firing", "resolved"]


def test_storm_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_alerts >= 1"):
        StormControl(0, 60)


# --- the Alertmanager payload ------------------------------------------------------------------------

NOW_S = (T0 + 3_600_000) / 1000  # an hour after T0


def test_postable_firing_alert() -> None:
    a = _alert(ts=T0 + 60_000)
    body = postable(a, NOW_S, valid_for_s=240, generator_url="http://telemon:9464/")
    assert body == {
        "labels": labels_of(a),
        "annotations": annotations_of(a),
        "startsAt": "2026-01-01T00:00:00.000Z",
        "endsAt": "2026-01-01T01:04:00.000Z",  # now + validity
        "generatorURL": "http://telemon:9464/",
    }


def test_postable_resolved_alert_ends_at_its_time() -> None:
    body = postable(_alert("resolved", ts=T0 + 90_500), NOW_S, valid_for_s=240)
    assert (body["startsAt"], body["endsAt"]) == ("2026-01-01T00:00:00.000Z", "2026-01-01T00:01:30.500Z")
    assert "generatorURL" not in body


def test_postable_clamps_device_clocks_ahead_of_the_wall_clock() -> None:
    ahead = T0 + 7_200_000  # two hours: later than NOW_S
    firing = postable(_alert(started_at=ahead), NOW_S, valid_for_s=240)
    assert (firing["startsAt"], firing["endsAt"]) == ("2026-01-01T01:00:00.000Z", "2026-01-01T01:04:00.000Z")
    resolved = postable(_alert("resolved", started_at=T0, ts=ahead), NOW_S, valid_for_s=240)
    assert resolved["endsAt"] == "2026-01-01T01:00:00.000Z"  # resolved now, not in the future


# --- the sink against a loopback stub ----------------------------------------------------------------


@dataclass
class Stub:
    """A loopback HTTP server that answers POSTs with scripted statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://alice:{SECRET}@127.0.0.1:{self.port}/am"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [a for _path, _headers, body in self.requests for a in body]


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, dict(self.headers), body))
            status = state.statuses.pop(0) if state.statuses else 200
            answer = b"bad alert: start time must be before end time" if status == 400 else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_send_posts_firing_and_resolved_with_basic_auth(stub: Stub) -> None:
    sink = AlertmanagerSink(stub.url, timeout_s=2, resend_interval_s=60, clock=Clock(NOW_S))
    a, b = _alert(device="a"), _alert(device="b")
    assert sink.send([_alert("pending", device="p"), a, b, _resolved(b, T0 + 5000)]) == 3
    ((path, headers, body),) = stub.requests
    assert path == "/am/api/v2/alerts"
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert headers["Content-Type"] == "application/json"
    assert body == [postable(x, NOW_S, 240) for x in (a, b, _resolved(b, T0 + 5000))]
    assert sink.firing == [a]
    assert sink.url == f"http://127.0.0.1:{stub.port}/am"


def test_only_pending_posts_nothing(stub: Stub) -> None:
    sink = AlertmanagerSink(stub.url)
    assert sink.send([_alert("pending")]) == 0
    assert stub.requests == []


def test_send_retries_server_errors_within_the_timeout(stub: Stub) -> None:
    stub.statuses = [503, 500]
    sink = AlertmanagerSink(stub.url, timeout_s=5)
    assert sink.send([_alert()]) == 1
    assert len(stub.requests) == 3


def test_send_raises_when_errors_outlast_the_timeout(stub: Stub) -> None:
    stub.statuses = [503] * 100
    sink = AlertmanagerSink(stub.url, timeout_s=0.3)
    with pytest.raises(SinkUnavailable, match=r"did not accept 1 alert\(s\): HTTP 503") as exc:
        sink.send([_alert()])
    assert SECRET not in str(exc.value)
    assert sink.firing == []  # not delivered, not kept alive


def test_a_refused_request_is_not_retried(stub: Stub) -> None:
    stub.statuses = [400]
    sink = AlertmanagerSink(stub.url, timeout_s=5)
    with pytest.raises(SinkRejected, match="HTTP 400: bad alert: start time must be before end time") as exc:
        sink.send([_alert()])
    assert len(stub.requests) == 1
    assert SECRET not in str(exc.value)


def test_unreachable_alertmanager_raises_without_credentials() -> None:
    url = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"
    with pytest.raises(SinkUnavailable, match="check that it is running and reachable") as exc:
        AlertmanagerSink(url, timeout_s=0.3).send([_alert()])
    assert SECRET not in str(exc.value)
    assert "alice" not in str(exc.value)


def test_heartbeat_reposts_firing_alerts_when_due(stub: Stub) -> None:
    clock = Clock(NOW_S)
    sink = AlertmanagerSink(stub.url, resend_interval_s=60, clock=clock)
    a, b = _alert(device="a"), _alert(device="b")
    sink.send([a, b])
    assert sink.heartbeat(NOW_S + 59) == 0
    assert sink.heartbeat(NOW_S + 60) == 2
    assert stub.alerts[-2:] == [postable(x, NOW_S + 60, 240) for x in (a, b)]
    sink.send([_resolved(a, T0 + 1)])
    assert sink.heartbeat(NOW_S + 119) == 0
    assert sink.heartbeat(NOW_S + 120) == 1
    assert stub.alerts[-1] == postable(b, NOW_S + 120, 240)
    assert len(stub.requests) == 4


def test_heartbeat_with_nothing_firing_posts_nothing(stub: Stub) -> None:
    sink = AlertmanagerSink(stub.url, resend_interval_s=1, clock=Clock(NOW_S))
    assert sink.heartbeat(NOW_S + 10) == 0
    assert stub.requests == []


def test_adopted_alerts_are_posted_at_the_next_heartbeat(stub: Stub) -> None:
    sink = AlertmanagerSink(stub.url, resend_interval_s=60, clock=Clock(NOW_S))
    a = _alert()
    sink.adopt([a, _alert("pending", device="p")])
    assert sink.heartbeat() == 1
    assert stub.alerts == [postable(a, NOW_S, 240)]


def test_large_posts_are_split(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "MAX_PER_REQUEST", 2)
    sink = AlertmanagerSink(stub.url, clock=Clock(NOW_S))
    fired = [_alert(device=f"d{i}") for i in range(5)]
    assert sink.send(fired) == 5
    assert [len(body) for _path, _headers, body in stub.requests] == [2, 2, 1]
    assert stub.alerts == [postable(a, NOW_S, 240) for a in fired]


@pytest.mark.parametrize(
    "url",
    ["alertmanager:9093", "ftp://host", "http://", "http://host:99999", f"http://u:{SECRET}@h/?x=1"],
)
def test_bad_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="must look like http") as exc:
        AlertmanagerSink(url)
    assert SECRET not in str(exc.value)


def test_timeouts_and_throttling_are_retried_and_redirects_not_followed(stub: Stub) -> None:
    stub.statuses = [408, 429, 307]
    sink = AlertmanagerSink(stub.url, timeout_s=5)
    assert sink.send([_alert()]) == 1
    assert len(stub.requests) == 4
    sink.close()
