"""Alerts: the JSON records published to the alerts topic when a rule fires or resolves.

Schema (``schema_version`` 1), one JSON object per Kafka message, keyed by ``device_id`` (or the
sensor name for fleet scope)::

    alert_id        str   stable id: sha256(rule | scope key | episode start)[:16]; the firing and
                          the resolved record of one episode share it
    rule            str   the rule's name
    status          str   "firing" | "resolved"
    severity        str   "info" | "warning" | "critical"
    scope           str   "device" | "fleet"
    device_id       str   the device, or "*" for fleet scope
    sensor          str   the sensor kind
    started_at      int   event time (epoch ms) the episode started
    ts              int   event time (epoch ms) of this record
    signals         obj   the signal values at this evaluation (name -> number)
    actions         list  the rule's actions ("alert", "retrain")
    model_version   int   the model version serving the pair when the record was made (0 for fleet)
    schema_version  int   1
"""

from __future__ import annotations

import hashlib

import msgspec

from monitor.rules import Transition

ALERT_SCHEMA_VERSION = 1


class Alert(msgspec.Struct, frozen=True):
    alert_id: str
    rule: str
    status: str
    severity: str
    scope: str
    device_id: str
    sensor: str
    started_at: int
    ts: int
    signals: dict[str, float]
    actions: list[str]
    model_version: int
    schema_version: int = ALERT_SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return (self.device_id if self.scope == "device" else self.sensor).encode()


def alert_id(rule: str, device_id: str, sensor: str, started_at: int) -> str:
    return hashlib.sha256(f"{rule}|{device_id}|{sensor}|{started_at}".encode()).hexdigest()[:16]


def from_transition(t: Transition, model_version: int) -> Alert:
    ev = t.evaluation
    return Alert(
        alert_id=alert_id(t.rule.name, ev.device_id, ev.sensor, t.started_at),
        rule=t.rule.name,
        status=t.status,
        severity=t.rule.severity,
        scope=ev.scope,
        device_id=ev.device_id,
        sensor=ev.sensor,
        started_at=t.started_at,
        ts=ev.ts,
        signals={k: round(float(v), 6) for k, v in ev.signals.items()},
        actions=list(t.rule.actions),
        model_version=model_version,
    )


_ENCODER = msgspec.json.Encoder()


def encode(alert: Alert) -> bytes:
    return _ENCODER.encode(alert)


def decode(raw: bytes) -> Alert:
    return msgspec.json.decode(raw, type=Alert)
