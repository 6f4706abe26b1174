"""The plain records a report is rendered from: nothing here talks to Kafka or draws.

Alerts, model versions, audit events and feedback stay the JSON objects their topics carry
(``dict``), so a field added to a topic's schema later (an alert's ``explanation`` or ``cohorts``)
reaches the renderer without a change here, and a record without it renders too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Json = dict[str, Any]
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Episode:
    """One alert episode (every record sharing an ``alert_id``): pending from ``start``, firing
    from ``fired`` (``None``: never fired), resolved at ``end`` (``None``: still open)."""

    alert_id: str
    rule: str
    severity: str
    scope: str
    device_id: str
    sensor: str
    start: int
    fired: int | None
    end: int | None
    drift: bool  # the rule watches drift detectors
    last: Json  # the episode's latest firing record (else its latest record): signals, explanation

    @property
    def label(self) -> str:
        return f"{self.rule} {self.device_id}/{self.sensor}"


def episodes(alerts: Iterable[Json], drift_rules: frozenset[str]) -> list[Episode]:
    """The episodes of alert records, in order of start."""
    by_id: defaultdict[str, list[Json]] = defaultdict(list)
    for a in alerts:
        by_id[str(a.get("alert_id", ""))].append(a)
    out = []
    for alert_id, records in by_id.items():
        records.sort(key=lambda a: int(a.get("ts", 0)))
        firing = [a for a in records if a.get("status") == "firing"]
        resolved = [a for a in records if a.get("status") == "resolved"]
        first = records[0]
        out.append(
            Episode(
                alert_id=alert_id,
                rule=str(first.get("rule", "?")),
                severity=str(first.get("severity", "info")),
                scope=str(first.get("scope", "device")),
                device_id=str(first.get("device_id", "*")),
                sensor=str(first.get("sensor", "*")),
                start=int(first.get("started_at") or first.get("ts") or 0),
                fired=int(firing[0].get("ts", 0)) if firing else None,
                end=int(resolved[-1].get("ts", 0)) if resolved else None,
                drift=str(first.get("rule")) in drift_rules,
                last=firing[-1] if firing else records[-1],
            )
        )
    return sorted(out, key=lambda e: (e.start, e.rule, e.device_id, e.sensor))


@dataclass(frozen=True)
class Channel:
    """One (device, channel) over the range: its readings and the replayed scores.

    ``score`` is on the scale the threshold is drawn on (the surprise ``-log10(1 - score)`` of the
    pair model, or the novelty level); NaN while the model warms up."""

    device_id: str
    sensor: str
    axes: tuple[str, ...]
    unit: str
    ts: NDArray[np.int64]
    values: NDArray[np.float64]  # (readings, axes)
    score_ts: NDArray[np.int64]
    score: NDArray[np.float64]
    threshold: float
    score_label: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.device_id, self.sensor)


@dataclass(frozen=True)
class Table:
    """A generic table of a section: column names and rows of cells (numbers or text)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    note: str = ""


@dataclass
class ReportData:
    """Everything the live-deployment report shows, for the range ``[since, until]`` (epoch ms,
    event time)."""

    title: str
    source: str  # where it was read from: the brokers and topics
    since: int
    until: int
    readings_ts: NDArray[np.int64]  # event time of every valid reading in range (fleet counts)
    readings_sensor: NDArray[np.int16]  # the sensor of each, an index of sensor_names
    sensor_names: list[str]
    devices_seen: int
    alerts: list[Json] = field(default_factory=list)  # alert records in range
    episodes: list[Episode] = field(default_factory=list)  # episodes overlapping the range
    versions: list[Json] = field(default_factory=list)  # model versions created in range
    audit: list[Json] = field(default_factory=list)  # audit events in range
    devices: list[str] = field(default_factory=list)  # the devices with timelines
    channels: list[Channel] = field(default_factory=list)
    lineage: list[Json] = field(default_factory=list)  # per version: manifest fields + events
    feedback: list[Json] = field(default_factory=list)  # verdicts on alerts
    precision: list[Table] = field(default_factory=list)  # feedback precision, by rule, sensor, ...
    breakdown: list[Table] = field(default_factory=list)  # false alarms, by rule, sensor, hour, ...
    cohorts: Table | None = None  # cohort comparison
    notes: list[str] = field(default_factory=list)

    def episodes_of(self, device_id: str, sensor: str) -> list[Episode]:
        return [e for e in self.episodes if e.device_id == device_id and e.sensor in (sensor, "*")]

    def events_of(self, device_id: str, sensor: str) -> list[Json]:
        """Audit events about the pair's model versions (registered, promoted, rolled back,
        rejected), in time order."""
        kinds = {"registered", "promoted", "rolled_back", "rejected"}
        return [
            e
            for e in self.audit
            if e.get("kind") in kinds and (e.get("device_id"), e.get("sensor")) == (device_id, sensor)
        ]


def rank_devices(episodes: Iterable[Episode], seen: Mapping[str, int], n: int) -> list[str]:
    """Up to ``n`` devices: those with the most firing device-scope episodes first (more severe
    first among equals), then the others by id."""
    score: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in episodes:
        if e.scope == "device" and e.fired is not None:
            score[e.device_id][0] -= 1
            score[e.device_id][1] -= 3 - SEVERITY_RANK.get(e.severity, 2)
    alerted = sorted(score, key=lambda d: (*score[d], d))
    rest = sorted(d for d in seen if d not in score)
    return (alerted + rest)[:n]
