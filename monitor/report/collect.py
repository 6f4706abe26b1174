"""The collect step: a deployment's topics and registry over a time range, as plain records.

Two passes over Kafka (no consumer group; nothing committed): first the small topics (alerts,
model versions, audit, feedback), which choose the devices to show, then the readings topic,
which gives the fleet's reading counts and the chosen devices' readings (kept as bytes, by key,
without decoding the others). The chosen devices' readings of the range are then replayed for
their scores (:mod:`.scores`).
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np
from confluent_kafka import Message

from monitor.errors import InvalidInput
from monitor.evaluation.harness import drift_rules
from monitor.govern.rules import RuleSet
from monitor.report import scores, tables, topics
from monitor.report.records import Channel, Episode, Json, ReportData, episodes, rank_devices
from monitor.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """What to report on: the event-time range (``None``: from the first / to the last reading),
    how many devices and channels per device get timelines."""

    since: int | None = None
    until: int | None = None
    devices: int = 8
    channels: int = 3
    idle_s: float = 2.0  # a topic has ended when nothing new came for this long
    title: str = "telemon report"


class _Stamp(msgspec.Struct):
    device_id: str
    sensor: str
    ts: int


_STAMP = msgspec.json.Decoder(_Stamp)


@dataclass
class _Readings:
    """The readings pass: every reading's time and sensor, the chosen devices' messages, and the
    ``fill`` smallest device ids of the others' (when fewer devices have alerts than asked for)."""

    chosen: set[bytes]
    fill: int
    known: frozenset[str] | None  # the catalog's sensors, others not counted (None: channels register)
    ts: array[int] = field(default_factory=lambda: array("q"))
    sensor: array[int] = field(default_factory=lambda: array("h"))
    sensors: dict[str, int] = field(default_factory=dict)
    devices: Counter[str] = field(default_factory=Counter)
    kept: dict[bytes, list[scores.Raw]] = field(default_factory=dict)
    others: dict[bytes, list[scores.Raw]] = field(default_factory=dict)

    def __call__(self, m: Message) -> None:
        value, key = m.value(), m.key()
        try:
            stamp = _STAMP.decode(value) if value is not None else None
        except msgspec.MsgspecError:
            stamp = None  # malformed: the dead-letter topic has it
        if stamp is not None and (self.known is None or stamp.sensor in self.known):
            self.ts.append(stamp.ts)
            self.sensor.append(self.sensors.setdefault(stamp.sensor, len(self.sensors)))
            self.devices[stamp.device_id] += 1
        if key is None:
            return
        raw = scores.Raw(m.partition() or 0, m.offset() or 0, m.timestamp()[1], key, value)
        if key in self.chosen:
            self.kept.setdefault(key, []).append(raw)
        elif key in self.others or self._room_for(key):
            self.others.setdefault(key, []).append(raw)

    def _room_for(self, key: bytes) -> bool:
        if len(self.others) < self.fill:
            return True
        largest = max(self.others, default=b"")
        if self.fill and key < largest:
            del self.others[largest]
            return True
        return False


def read_small_topics(settings: Settings, idle_s: float) -> dict[str, list[Json]]:
    """Every record of the alerts, models, audit and feedback topics, as JSON objects."""
    names = small_names(settings)
    out: dict[str, list[Json]] = {n: [] for n in names}

    def keep(m: Message) -> None:
        try:
            record = msgspec.json.decode(m.value() or b"")
        except msgspec.MsgspecError:
            return
        if isinstance(record, dict):
            out[str(m.topic())].append(record)

    topics.read(settings.kafka, names, keep, idle_s)
    return out


def small_names(settings: Settings) -> list[str]:
    k = settings.kafka
    return [k.alerts_topic, k.models_topic, k.audit_topic, k.feedback_topic]


def collect(settings: Settings, rules: RuleSet, req: Request, now_ms: Callable[[], int]) -> ReportData:
    """The report's records; raises :class:`InvalidInput` for an empty range."""
    k = settings.kafka
    small = read_small_topics(settings, req.idle_s)
    eps = episodes(small[k.alerts_topic], drift_rules(rules))
    lo, hi = req.since or 0, req.until or 2**62
    alerted = rank_devices([e for e in eps if _overlaps(e.start, e.end, lo, hi)], {}, req.devices)
    catalog = settings.channels.catalog()
    known = None if catalog.spare else frozenset(catalog.names)
    readings = _Readings({d.encode() for d in alerted}, req.devices - len(alerted), known)
    found = topics.read(k, [k.readings_topic], readings, req.idle_s)
    if not found:
        raise InvalidInput(f"topic {k.readings_topic} does not exist at {k.bootstrap_servers}: no report")
    ts = np.frombuffer(readings.ts, np.int64)
    since, until = _range(req, ts, k.readings_topic)
    inside = (ts >= since) & (ts <= until)
    data = ReportData(
        title=req.title,
        source=f"{k.bootstrap_servers}: " + ", ".join([*small_names(settings)[:-1], k.readings_topic]),
        since=since,
        until=until,
        readings_ts=ts[inside],
        readings_sensor=np.frombuffer(readings.sensor, np.int16)[inside],
        sensor_names=list(readings.sensors),
        devices_seen=len(readings.devices),
    )
    _add_outputs(data, small, eps, settings)
    _add_timelines(data, settings, rules, req, readings)
    data.lineage = tables.lineage(settings, data.versions, small[k.audit_topic])
    data.cohorts = tables.cohorts(settings, data.episodes, readings.devices, since, until)
    data.precision, data.breakdown = tables.feedback(data.episodes, data.feedback)
    data.notes.append(f"generated at {tables.iso(now_ms())} from {data.source}")
    return data


def _range(req: Request, ts: np.ndarray, topic: str) -> tuple[int, int]:
    if not len(ts):
        raise InvalidInput(f"topic {topic} holds no readings: nothing to report")
    since = int(ts.min()) if req.since is None else req.since
    until = int(ts.max()) if req.until is None else req.until
    if until < since or not np.any((ts >= since) & (ts <= until)):
        raise InvalidInput(
            f"no readings from {tables.iso(since)} to {tables.iso(until)} (topic {topic} holds {len(ts):,} "
            f"readings from {tables.iso(int(ts.min()))} to {tables.iso(int(ts.max()))}); choose --since "
            "and --until within that"
        )
    return since, until


def _overlaps(start: int, end: int | None, lo: int, hi: int) -> bool:
    return start <= hi and (end is None or end >= lo)


def _event_ts(e: Json) -> int:
    return int(e.get("event_ts") or e.get("wall_ts") or 0)


def _add_outputs(
    data: ReportData, small: dict[str, list[Json]], eps: list[Episode], settings: Settings
) -> None:
    k, lo, hi = settings.kafka, data.since, data.until
    data.alerts = [a for a in small[k.alerts_topic] if lo <= int(a.get("ts", 0)) <= hi]
    data.episodes = [e for e in eps if _overlaps(e.start, e.end, lo, hi)]
    data.versions = [v for v in small[k.models_topic] if lo <= int(v.get("created_at", 0)) <= hi]
    data.audit = sorted((e for e in small[k.audit_topic] if lo <= _event_ts(e) <= hi), key=_event_ts)
    ids = {e.alert_id for e in data.episodes}
    data.feedback = [f for f in small[settings.kafka.feedback_topic] if f.get("alert_id") in ids]


def _add_timelines(
    data: ReportData, settings: Settings, rules: RuleSet, req: Request, readings: _Readings
) -> None:
    kept = readings.kept | readings.others
    data.devices = rank_devices(data.episodes, {d.decode(): 1 for d in kept}, req.devices)
    messages = scores.stream_order(m for d in data.devices for m in kept.get(d.encode(), []))
    if not messages:
        return
    replayed = scores.replay(settings, rules, messages, data.since, data.until)
    for device in data.devices:
        mine = [c for c in replayed.channels.values() if c.device_id == device]
        data.channels += _pick(data, mine, req.channels)
    if replayed.earlier is not None:
        data.notes.append(
            f"scores replayed from the range's start ({tables.iso(data.since)}): the devices have "
            f"readings from {tables.iso(replayed.earlier)} on, so their models warmed up from the range's "
            "start and the first scores can differ from the service's"
        )


def _pick(data: ReportData, found: list[Channel], n: int) -> list[Channel]:
    """The device's channels with the most alert episodes, then the most anomalous scores."""

    def rank(c: Channel) -> tuple[int, int, str]:
        alerts = sum(e.sensor == c.sensor for e in data.episodes_of(*c.key))
        over = int(np.sum(c.score > c.threshold))
        return (-alerts, -over, c.sensor)

    return sorted(found, key=rank)[:n]
