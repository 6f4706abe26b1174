"""Alerts: the records of an episode's lifecycle, their identity, and storm control.

An episode of a rule on one scope key is ``pending`` (the condition holds, its ``for`` is not met
yet), then ``firing``, then ``resolved``. Every record of one episode carries the same
``alert_id``, a hash of the rule, the scope key and the episode start, so a record re-published
after a restart (at-least-once delivery) has the id of the original and consumers can drop it.

Schema (``schema_version`` 2), one JSON object per Kafka message on the alerts topic, keyed by
``device_id`` (or the sensor name for fleet scope)::

    alert_id        str   stable id: sha256(rule | device_id | sensor | started_at)[:16]; every
                          record of one episode shares it
    rule            str   the rule's name ("alert_storm" for the storm summary)
    status          str   "pending" | "firing" | "resolved"
    severity        str   "info" | "warning" | "critical"
    scope           str   "device" | "fleet"
    device_id       str   the device, or "*" for fleet scope
    sensor          str   the sensor kind ("*" for the storm summary)
    started_at      int   event time (epoch ms) the episode started
    ts              int   event time (epoch ms) of this record
    signals         obj   the signal values at this evaluation (name -> number)
    actions         list  the rule's actions ("alert", "retrain")
    model_version   int   the model version serving the pair when the record was made (0 for fleet)
    cohorts         obj   the cohort labels of the pair (its device's and its channel's; for cohort
                          scope the cohort's one label), {} when none
    explanation     obj   why: per-axis and per-channel contributions, inputs and scores against
                          their reference (:mod:`monitor.analyze.explain`); null when nothing was
                          kept (a firing alert re-posted after a restart)
    schema_version  int   2 (version 1 records, without cohorts and explanation, still decode)

The pipeline emits each record once; :class:`StormControl` caps new firing alerts per window of
event time, with one summary alert per storm. After a crash, the readings re-applied from the last
snapshot up to the committed offset produce no outputs again (they were delivered before the
commit), so duplicates are limited to a batch delivered but not yet committed, with the same ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from monitor.analyze.explain import Explanation
from monitor.govern.rules import Rule, Transition

ALERT_SCHEMA_VERSION = 2
STATUSES = ("pending", "firing", "resolved")
STORM_RULE = "alert_storm"
_V = TypeVar("_V")


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
    cohorts: dict[str, str] = {}
    explanation: Explanation | None = None
    schema_version: int = ALERT_SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return (self.device_id if self.scope == "device" else self.sensor).encode()


def alert_id(rule: str, device_id: str, sensor: str, started_at: int) -> str:
    """The id every record of one episode shares; the same inputs give the same id in every process.

    >>> alert_id("score_drift", "dev-0007", "temperature", 1767225600000)
    '8bc680b8e70b724b'
    """
    return hashlib.sha256(f"{rule}|{device_id}|{sensor}|{started_at}".encode()).hexdigest()[:16]


def from_transition(
    t: Transition,
    model_version: int,
    cohorts: dict[str, str] | None = None,
    explanation: Explanation | None = None,
) -> Alert:
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
        cohorts=cohorts or {},
        explanation=explanation,
    )


_ENCODER = msgspec.json.Encoder()


def encode(alert: Alert) -> bytes:
    return _ENCODER.encode(alert)


def encode_json(obj: object) -> str:
    return _ENCODER.encode(obj).decode()


def decode(raw: bytes) -> Alert:
    return msgspec.json.decode(raw, type=Alert)


# --- rendering for label-based systems (Alertmanager) ---------------------------------------------


def rfc3339(epoch_ms: int) -> str:
    """UTC epoch milliseconds as RFC 3339 with millisecond precision.

    >>> rfc3339(1767225600123)
    '2026-01-01T00:00:00.123Z'
    """
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels_of(alert: Alert) -> dict[str, str]:
    """The identifying labels. ``alert_id`` makes every episode a distinct alert, so the resolved
    record of an episode resolves exactly the alert its firing record raised."""
    return {
        "alertname": alert.rule,
        "severity": alert.severity,
        "scope": alert.scope,
        "device_id": alert.device_id,
        "sensor": alert.sensor,
        "alert_id": alert.alert_id,
    }


def annotations_of(alert: Alert) -> dict[str, str]:
    """Human-readable text; the signals and the explanation as compact JSON (annotations are
    strings)."""
    where = alert.sensor if alert.scope == "fleet" else f"{alert.device_id}/{alert.sensor}"
    why = alert.explanation
    explained = (
        {} if why is None else {"explanation": why.text, "explanation_json": _ENCODER.encode(why).decode()}
    )
    return {
        "summary": f"{alert.rule} on {where}",
        "description": (
            f"telemon rule {alert.rule} ({alert.severity}, {alert.scope} scope) on {where} since "
            f"{rfc3339(alert.started_at)}; actions: {', '.join(alert.actions)}; "
            f"model version {alert.model_version}"
        ),
        "signals": json.dumps(alert.signals, sort_keys=True, separators=(",", ":")),
        **explained,
    }


def _put_bounded(d: dict[str, _V], key: str, value: _V, cap: int) -> None:
    """Insert or update ``key``; evict the oldest keys beyond ``cap`` (dicts keep insertion order)."""
    d[key] = value
    while len(d) > cap:
        del d[next(iter(d))]


# --- storm control --------------------------------------------------------------------------------


@dataclass
class _Storm:
    started_at: int
    suppressed: Counter[str] = field(default_factory=Counter)  # rule -> firing alerts suppressed


class StormControl:
    """A global cap of ``max_alerts`` new firing alerts per window of ``per_seconds`` of event time.

    Windows are aligned to the epoch (window = ts // per_seconds), so an offline replay of the same
    stream makes the same decisions. A record older than the current window counts in the current
    one (event time never goes back). Over the cap a firing alert is suppressed (counted per rule)
    and the first suppression starts a storm: one summary alert (rule ``alert_storm``, fleet scope,
    critical) fires. The storm resolves once a whole window stayed within the cap, with a resolved
    summary stamped at that window's end; both summaries carry the suppressed counts
    (``suppressed``, ``suppressed.<rule>``). Resolved records of suppressed firings are dropped
    (nothing was announced); every other record passes unchanged. Suppressed ids are remembered
    until their resolution, at most ``max_tracked`` of them (beyond that the oldest one's resolved
    record would be delivered without a firing one, which is harmless).

    >>> storm = StormControl(max_alerts=1, per_seconds=60)
    >>> def firing(device: str, ts: int) -> Alert:
    ...     return Alert(alert_id("hot", device, "humidity", ts), "hot", "firing", "warning",
    ...                  "device", device, "humidity", ts, ts, {}, ["alert"], 1)
    >>> [(a.rule, a.status) for a in storm.admit([firing("d1", 0), firing("d2", 1000)])]
    [('hot', 'firing'), ('alert_storm', 'firing')]
    >>> [(a.rule, a.status, a.ts) for a in storm.admit([], now_ms=120_000)]
    [('alert_storm', 'resolved', 120000)]
    """

    def __init__(self, max_alerts: int, per_seconds: float, max_tracked: int = 100_000) -> None:
        if max_alerts < 1 or per_seconds <= 0 or max_tracked < 1:
            raise ValueError("StormControl needs max_alerts >= 1, per_seconds > 0 and max_tracked >= 1")
        self.max_alerts = max_alerts
        self.per_seconds = per_seconds
        self.max_tracked = max_tracked
        self._window_ms = max(int(per_seconds * 1000), 1)
        self._window: int | None = None  # index of the current window
        self._offered = 0  # new firing alerts seen in the current window, suppressed ones included
        self._storm: _Storm | None = None
        self._suppressed: dict[str, None] = {}  # alert ids of suppressed firings, oldest first

    @property
    def storming(self) -> bool:
        return self._storm is not None

    def admit(self, alerts: Iterable[Alert], now_ms: int | None = None) -> list[Alert]:
        """The records to deliver, in event order, summaries included. ``now_ms``, the event time
        the stream has reached (e.g. the batch's latest reading), lets a storm resolve when no
        alert arrives."""
        out: list[Alert] = []
        for a in alerts:
            out.extend(self._advance(a.ts))
            out.extend(self._one(a))
        if now_ms is not None:
            out.extend(self._advance(now_ms))
        return out

    def _one(self, a: Alert) -> list[Alert]:
        if a.status == "resolved" and a.alert_id in self._suppressed:
            del self._suppressed[a.alert_id]
            return []
        if a.status != "firing":
            return [a]
        self._offered += 1
        if self._offered <= self.max_alerts:
            return [a]
        _put_bounded(self._suppressed, a.alert_id, None, self.max_tracked)
        starts = self._storm is None
        storm = self._storm = self._storm or _Storm(a.ts)
        storm.suppressed[a.rule] += 1
        return [self._summary(storm, "firing", a.ts)] if starts else []

    def _advance(self, ts: int) -> list[Alert]:
        """Move to the window of ``ts``; a storm ends when the window just completed, or a whole
        window after it, stayed within the cap."""
        w = ts // self._window_ms
        if self._window is None:
            self._window = w
        if w <= self._window:
            return []
        out: list[Alert] = []
        if self._storm is not None:
            calm = self._window if self._offered <= self.max_alerts else self._window + 1
            if calm < w:
                out.append(self._summary(self._storm, "resolved", (calm + 1) * self._window_ms))
                self._storm = None
        self._window, self._offered = w, 0
        return out

    def _summary(self, storm: _Storm, status: str, ts: int) -> Alert:
        counts = {f"suppressed.{rule}": float(n) for rule, n in sorted(storm.suppressed.items())}
        signals = {
            "suppressed": float(storm.suppressed.total()),
            "max_alerts": float(self.max_alerts),
            "window_s": float(self.per_seconds),
            **counts,
        }
        rules = ", ".join(f"{rule} {n}" for rule, n in storm.suppressed.most_common())
        text = (
            f"{STORM_RULE}: more than {self.max_alerts} new firing alerts in {self.per_seconds:g} s; "
            f"{storm.suppressed.total()} suppressed ({rules})"
        )
        return Alert(
            alert_id=alert_id(STORM_RULE, "*", "*", storm.started_at),
            rule=STORM_RULE,
            status=status,
            severity="critical",
            scope="fleet",
            device_id="*",
            sensor="*",
            started_at=storm.started_at,
            ts=ts,
            signals=signals,
            actions=["alert"],
            model_version=0,
            explanation=Explanation("storm", text),
        )


def restored(episodes: Iterable[Mapping[str, Any]], rule: Callable[[str], Rule | None]) -> list[Alert]:
    """The alerts of the firing episodes in ``episodes`` (restored from a snapshot) whose rule,
    looked up by name with ``rule``, still alerts: re-posted so Alertmanager keeps them open."""
    firing = []
    for e in episodes:
        r = rule(e["rule"])
        if e["firing"] and r is not None and "alert" in r.actions:
            device, sensor, start = e["device_id"], e["sensor"], e["started_at"]
            firing.append(
                Alert(
                    alert_id=alert_id(r.name, device, sensor, start),
                    rule=r.name,
                    status="firing",
                    severity=r.severity,
                    scope=r.scope,
                    device_id=device,
                    sensor=sensor,
                    started_at=start,
                    ts=start,
                    signals={},
                    actions=list(r.actions),
                    model_version=0,
                )
            )
    return firing
