"""Replay a recorded or simulated stream through the live pipeline, without a broker.

The replay builds the same :class:`~monitor.pipeline.Pipeline` the service runs (same settings,
same rules) and feeds it messages in stream order. Simulated scenarios go in as the exact bytes
the simulator publishes, so decoding and validation run too; labelled series (NAB files, and the
recorded files of :mod:`monitor.evaluation.recordings`) go in as readings, because their values
are in arbitrary units outside the wire format's physical ranges.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitor.errors import LabelledInputError as InputError
from monitor.govern.alerts import Alert
from monitor.govern.registry import ModelVersion
from monitor.govern.rules import RuleSet
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Scored
from monitor.schema import Reading
from monitor.serve.fleetspan import MergedView
from monitor.settings import Settings

TOPIC = "replay"


class ReplayMessage:
    """A recorded message with the interface of a Kafka message (partition 0, offset = index)."""

    __slots__ = ("_key", "_offset", "_ts", "_value")

    def __init__(self, key: bytes | None, value: bytes | None, ts: int, offset: int) -> None:
        self._key, self._value, self._ts, self._offset = key, value, ts, offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


@dataclass
class Replay:
    """What a replay produced: every alert, model version and scored reading, in stream order."""

    alerts: list[Alert] = field(default_factory=list)
    versions: list[ModelVersion] = field(default_factory=list)
    trace: list[Scored] = field(default_factory=list)
    quarantined: int = 0
    messages: int = 0

    def add(self, result: BatchResult, messages: int) -> None:
        self.alerts.extend(result.alerts)
        self.versions.extend(result.versions)
        self.trace.extend(result.trace)
        self.quarantined += len(result.dead_letters)
        self.messages += messages


def _batches(
    items: Iterable[tuple[bytes | None, bytes | None, int]], size: int
) -> Iterator[list[ReplayMessage]]:
    batch: list[ReplayMessage] = []
    for offset, (key, value, ts) in enumerate(items):
        batch.append(ReplayMessage(key, value, ts, offset))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay_messages(
    settings: Settings, rules: RuleSet, items: Iterable[tuple[bytes | None, bytes | None, int]]
) -> Replay:
    """Feed (key, value, kafka timestamp) messages through a fresh pipeline, batch by batch."""
    pipeline = Pipeline(settings, rules, trace=True)
    merged = _merged_view(settings, rules)
    out = Replay()
    for batch in _batches(items, settings.consume.batch_size):
        out.add(_with_merged(pipeline.process(batch), merged), len(batch))
    return out


def _merged_view(settings: Settings, rules: RuleSet) -> MergedView | None:
    """With ``fleet.span``, the merged view a single replica's partials give (the live leader's)."""
    return MergedView(settings, rules) if settings.fleet.span else None


def _with_merged(result: BatchResult, merged: MergedView | None) -> BatchResult:
    """The batch's result with the fleet and cohort alerts of the windows its partials close."""
    if merged is not None:
        result.alerts += merged.add(result.span)
    return result


@dataclass(frozen=True)
class Series:
    """One labelled univariate series (a NAB file)."""

    name: str
    timestamps: Sequence[int]  # epoch ms
    values: Sequence[float]


def device_id(name: str) -> str:
    """A wire-format device id for a series name.

    >>> device_id("realKnownCause/nyc_taxi.csv")
    'realKnownCause.nyc_taxi'
    """
    stem = re.sub(r"\.csv$", "", name)
    return re.sub(r"[^A-Za-z0-9._:-]", ".", stem).strip(".")[:128] or "series"


def replay_series(settings: Settings, rules: RuleSet, series: Sequence[Series], sensor: str) -> Replay:
    """Feed each series, as readings of ``sensor`` (a single-value sensor of the settings'
    catalog) from one device, through one pipeline."""
    catalog = settings.channels.catalog()
    spec = catalog.by_name.get(sensor)
    if spec is None:
        raise InputError(
            f"sensor {sensor!r} is not monitored (known: {', '.join(catalog.names)}); declare it as "
            "a channel under channels.declare in the config"
        )
    if spec.keys != ("value",):
        single = ", ".join(s.name for s in catalog.specs if s.keys == ("value",))
        raise InputError(
            f"sensor {sensor!r} has the axes {', '.join(spec.keys)}: a series is one column, scored as "
            f"a single-value sensor ({single})"
        )
    pipeline = Pipeline(settings, rules, trace=True)
    merged = _merged_view(settings, rules)
    out = Replay()
    for s in series:
        dev = device_id(s.name)
        items = [
            (Reading(dev, sensor, ts, seq, {"value": v}, "", 1), ReplayMessage(dev.encode(), None, ts, seq))
            for seq, (ts, v) in enumerate(zip(s.timestamps, s.values, strict=True))
        ]
        size = settings.consume.batch_size
        for i in range(0, len(items), size):
            result = pipeline.process_readings(items[i : i + size])
            out.add(_with_merged(result, merged), len(items[i : i + size]))
    return out


def parse_time(text: str) -> int:
    """Epoch ms from ISO-8601 text (naive times are UTC) or from a number of seconds or ms."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    return int(number if number > 1e11 else number * 1000)
