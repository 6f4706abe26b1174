"""Recorded sensor files through the live pipeline, as a user evaluates their own data.

A *recording* is one delimited text file: one device, a row per instant, value columns that are
axes of sensors (``--value ax=accelerometer.x``), or channels of their own (``--value co2``), an
optional label column. Each row gives one reading per sensor, all at the row's time, so event time
never restarts between the columns of a file; the readings of several files are merged in time
order, as a live fleet's would arrive. A column mapped to no sensor becomes a channel named after
it, whose resolution (the model's noise floor) is the smallest step between its first
:data:`RESOLUTION_ROWS` distinct values.

Labels are anomaly windows (runs of non-zero rows), onsets (each non-zero row starts a change) or
change points (each row whose label differs from the row before, e.g. an activity id).

:func:`evaluate_recordings` returns the quality report and, per file, a row table
(:class:`RowOutput`): the device-level anomaly score of each row (the largest over its readings),
whether a reading of it was flagged, and whether a device-scope alert of its device was firing.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import heapq
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from monitor.errors import LabelledInputError as InputError
from monitor.evaluation import baselines
from monitor.evaluation.harness import surprise
from monitor.evaluation.quality import (
    AnomalyQuality,
    Detection,
    LabelledEvent,
    anomaly_quality,
    drift_quality,
)
from monitor.evaluation.replay import ReplayMessage, device_id, parse_time
from monitor.govern.alerts import Alert
from monitor.govern.rules import RuleSet
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Scored
from monitor.schema import Catalog, Reading
from monitor.settings import ChannelSettings, ChannelsSettings, Settings

LabelKind = Literal["anomaly", "onset", "change"]
#: A column's resolution is estimated from this many of its first distinct values.
RESOLUTION_ROWS: Final = 1000
#: Index time (no timestamp column): row ``i`` is at this epoch plus ``i`` periods.
INDEX_EPOCH_MS: Final = 1_577_836_800_000  # 2020-01-01T00:00:00Z
#: Device-level key of the quality report: every channel of a file is one device.
DEVICE: Final = "*"
#: An anomaly window also counts detections this long after its end (as for scenarios).
GRACE_MS: Final = 60_000
_MISSING: Final = frozenset({"", "nan", "NaN", "NA", "null", "None"})


@dataclass(frozen=True)
class ValueColumn:
    """``COLUMN[=SENSOR[.AXIS]]``: a value column, the sensor it is an axis of (None: a channel
    of its own, or the sensor of its name) and the axis (None: the sensor's only one)."""

    column: str
    sensor: str | None = None
    axis: str | None = None

    @classmethod
    def parse(cls, text: str) -> ValueColumn:
        column, _, target = text.partition("=")
        sensor, _, axis = target.partition(".")
        if not column or ("=" in text and not sensor):
            raise InputError(f"--value {text!r}: COLUMN or COLUMN=SENSOR or COLUMN=SENSOR.AXIS")
        return cls(column, sensor or None, axis or None)


@dataclass(frozen=True)
class CsvFormat:
    """How the files are laid out (the same for all of them)."""

    timestamp: str | None = "timestamp"  # None: index time, row i at INDEX_EPOCH_MS + i * period_ms
    period_ms: int = 1000
    delimiter: str = ","
    names: tuple[str, ...] | None = None  # the column names (instead of the header row's)
    header: bool = True  # the first row names the columns (replaced by ``names`` if given)
    label: str | None = None
    label_kind: LabelKind = "anomaly"


@dataclass
class Recording:
    """One file's rows: times, raw timestamp text, value columns (NaN: missing) and labels."""

    path: Path
    device_id: str
    ts: NDArray[np.int64]
    stamps: list[str]  # the timestamp cell of each row (its index under index time)
    values: dict[str, NDArray[np.float64]]
    labels: NDArray[np.float64] | None


@dataclass
class RowOutput:
    """Per row of a recording: ``timestamp,label,anomaly_score,anomalous,alerting``."""

    recording: Recording
    score: NDArray[np.float64]
    anomalous: NDArray[np.int8]
    alerting: NDArray[np.int8]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = self.recording.labels
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(("timestamp", "label", "anomaly_score", "anomalous", "alerting"))
            for i, stamp in enumerate(self.recording.stamps):
                label = "" if labels is None else _label_text(float(labels[i]))
                w.writerow((stamp, label, f"{self.score[i]:.6g}", self.anomalous[i], self.alerting[i]))


@dataclass
class Evaluation:
    report: dict[str, Any]
    rows: list[RowOutput] = field(default_factory=list)
    baseline_rows: dict[str, list[RowOutput]] = field(default_factory=dict)


def read_recording(path: Path, fmt: CsvFormat, columns: Sequence[str]) -> Recording:
    """The rows of one file; :class:`~monitor.errors.LabelledInputError` names the file, line and
    column of anything that does not parse."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=fmt.delimiter)
            header = next(reader, []) if fmt.header else []
            header = list(fmt.names) if fmt.names is not None else header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: {exc}") from exc
    if not header:
        raise InputError(f"{path}: no column names (a file without a header row needs --columns)")
    first = 1 if fmt.header else 0  # the line number of rows[0], less one
    wanted = [*columns, *([fmt.timestamp] if fmt.timestamp else []), *([fmt.label] if fmt.label else [])]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise InputError(f"{path}: no column(s) {missing}; columns are {header}")
    if not rows:
        raise InputError(f"{path}: no data rows")
    at = {name: i for i, name in enumerate(header)}
    for line, row in enumerate(rows, start=first + 1):
        if len(row) != len(header):
            raise InputError(
                f"{path}, line {line}: {len(row)} fields for {len(header)} columns ({', '.join(header)}); "
                "name every field with --columns"
            )
    if fmt.timestamp is None:
        ts = INDEX_EPOCH_MS + fmt.period_ms * np.arange(len(rows), dtype=np.int64)
        stamps = [str(i) for i in range(len(rows))]
    else:
        stamps = [row[at[fmt.timestamp]] for row in rows]
        ts = np.array(_parsed(path, first, fmt.timestamp, stamps, parse_time), np.int64)
    values = {c: np.array(_parsed(path, first, c, [r[at[c]] for r in rows], _number)) for c in columns}
    labels = None
    if fmt.label:
        labels = np.array(_parsed(path, first, fmt.label, [r[at[fmt.label]] for r in rows], float))
    return Recording(path, device_id(path.name), ts, stamps, values, labels)


def _number(text: str) -> float:
    return float("nan") if text.strip() in _MISSING else float(text)


def _parsed(path: Path, first: int, column: str, cells: list[str], parse: Any) -> list[Any]:
    out = []
    for line, cell in enumerate(cells, start=first + 1):
        try:
            out.append(parse(cell))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}, line {line}, column {column!r}: {cell!r} ({exc})") from exc
    return out


def _label_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def channel_name(column: str) -> str:
    """The channel a column without a sensor becomes (the name, made a valid sensor name).

    >>> channel_name("Pressure 1 (bar)")
    'pressure_1_bar'
    """
    name = re.sub(r"[^a-z0-9_]+", "_", column.lower()).strip("_")
    name = name if name and name[0].isalpha() else f"c_{name}"
    return name[:64]


def resolution_of(values: NDArray[np.float64]) -> float:
    """The smallest step between the first :data:`RESOLUTION_ROWS` distinct finite values (the
    quantisation of the recording), or a millionth of their spread if finer; 1e-9 for a
    constant column."""
    distinct = np.unique(values[np.isfinite(values)])[:RESOLUTION_ROWS]
    if len(distinct) < 2:
        return 1e-9
    step = float(np.diff(distinct).min())
    return max(step, float(distinct[-1] - distinct[0]) * 1e-6, 1e-12)


def plan(
    settings: Settings, columns: Sequence[ValueColumn], recordings: Sequence[Recording]
) -> tuple[Settings, list[tuple[str, dict[str, str]]]]:
    """The settings with a channel for every column that names none, and the sensors a row gives
    as ``(sensor, {axis: column})`` in the order of the columns."""
    catalog = settings.channels.catalog()
    declared: dict[str, ChannelSettings] = {}
    sensors: dict[str, dict[str, str]] = {}
    for c in columns:
        sensor = _sensor_of(c, catalog, declared, recordings)
        keys = catalog.by_name[sensor].keys if sensor in catalog.by_name else ("value",)
        axis = c.axis or (keys[0] if len(keys) == 1 else None)
        if axis not in keys:
            raise InputError(
                f"--value {c.column}: {sensor} has the axes {', '.join(keys)}: say which (=SENSOR.AXIS)"
            )
        axes = sensors.setdefault(sensor, {})
        if axis in axes:
            raise InputError(f"--value {c.column}: {sensor}.{axis} is already column {axes[axis]!r}")
        axes[axis] = c.column
        if len(axes) == len(keys):
            sensors[sensor] = {k: axes[k] for k in keys}  # in the sensor's key order
    for sensor, axes in sensors.items():
        keys = catalog.by_name[sensor].keys if sensor in catalog.by_name else ("value",)
        if len(axes) != len(keys):
            raise InputError(
                f"sensor {sensor}: no column for its axes {', '.join(k for k in keys if k not in axes)}"
            )
    if declared:
        channels = ChannelsSettings(
            builtin=settings.channels.builtin, declare=(*settings.channels.declare, *declared.values())
        )
        settings = settings.model_copy(update={"channels": channels})
    return settings, list(sensors.items())


def _sensor_of(
    c: ValueColumn, catalog: Catalog, declared: dict[str, ChannelSettings], recordings: Sequence[Recording]
) -> str:
    """The sensor a column is an axis of: the one it names, else the sensor of its name, else a
    new channel named after it (added to ``declared``)."""
    if c.sensor is not None:
        if c.sensor not in catalog.by_name:
            raise InputError(
                f"--value {c.column}={c.sensor}: sensor {c.sensor!r} is not monitored (known: "
                f"{', '.join(catalog.names)}); declare it under channels.declare, or give the column alone"
            )
        return c.sensor
    if c.column in catalog.by_name:
        return c.column
    name = channel_name(c.column)
    if name not in catalog.by_name and name not in declared:
        step = min(resolution_of(r.values[c.column]) for r in recordings)
        declared[name] = ChannelSettings(name=name, unit="1", low=-1e300, high=1e300, resolution=step)
    return name


def _readings(
    recordings: Sequence[Recording], sensors: list[tuple[str, dict[str, str]]]
) -> Iterator[tuple[int, int, Reading, ReplayMessage]]:
    """``(file, row, reading, message)`` of every file, merged in time order (a file's rows in
    file order); a reading with a missing value is not sent."""

    def one(f: int, rec: Recording) -> Iterator[tuple[int, int, int, Reading, ReplayMessage]]:
        seq, key = 0, rec.device_id.encode()
        columns = [(s, [(k, rec.values[c]) for k, c in axes.items()]) for s, axes in sensors]
        for i, ts in enumerate(rec.ts.tolist()):
            for sensor, axes in columns:
                values = {k: float(v[i]) for k, v in axes}
                if any(x != x for x in values.values()):  # NaN: missing
                    continue
                seq += 1
                yield (
                    ts,
                    f,
                    i,
                    Reading(rec.device_id, sensor, ts, seq, values, "", 1),
                    ReplayMessage(key, None, ts, seq),
                )

    for _, f, i, r, m in heapq.merge(*(one(f, rec) for f, rec in enumerate(recordings)), key=lambda x: x[0]):
        yield f, i, r, m


@dataclass(frozen=True)
class TimedEvent:
    """``[KIND=]FROM/TO``: a known event of unlabelled recordings (every file's device), its times
    ISO-8601 (naive: UTC) or epoch s or ms; scored as an anomaly window of that kind."""

    kind: str
    start_ts: int
    end_ts: int

    @classmethod
    def parse(cls, text: str) -> TimedEvent:
        kind, _, span = text.rpartition("=") if "=" in text else ("event", "", text)
        start, sep, end = span.partition("/")
        try:
            lo, hi = parse_time(start), parse_time(end)
        except ValueError as exc:
            raise InputError(f"--event {text!r}: FROM/TO must be ISO-8601 or epoch times ({exc})") from exc
        if not sep or not kind or hi < lo:
            raise InputError(f"--event {text!r}: [KIND=]FROM/TO, FROM <= TO")
        return cls(kind, lo, hi)


@dataclass(frozen=True)
class Scoring:
    """What the detections are scored against besides the labels: known events in time, and the
    horizon within which a change point (onset or change label) counts as detected."""

    events: tuple[TimedEvent, ...] = ()
    horizon_ms: int = GRACE_MS


@dataclass
class _Run:
    """One detector over the readings: per reading (``fed``: its file and row) its score and flag;
    its detections (device level) and, per device, the spans in which it was alerting."""

    detector: str
    fed: list[tuple[int, int]]
    scores: NDArray[np.float64]
    flagged: NDArray[np.bool_]
    found: list[Detection]
    spans: dict[str, list[tuple[int, float]]]
    channels: list[baselines.Channel] = field(default_factory=list)


def evaluate_recordings(
    settings: Settings,
    rules: RuleSet,
    paths: Sequence[Path],
    fmt: CsvFormat,
    columns: Sequence[ValueColumn],
    scoring: Scoring | None = None,
    compare: Sequence[baselines.Name] = (),
) -> Evaluation:
    """Replay the files through one pipeline; the quality report (device level) and the rows.
    With ``compare``, the baselines read the same readings; their reports go under
    ``report["baselines"]`` and their rows to :attr:`Evaluation.baseline_rows`."""
    scoring = scoring or Scoring()
    recordings = _distinct_devices([read_recording(p, fmt, [c.column for c in columns]) for p in paths])
    settings, sensors = plan(settings, columns, recordings)
    run = _telemon(settings, rules, recordings, sensors)
    report = _report(recordings, fmt, scoring, run)
    report["sensors"] = {s: axes for s, axes in sensors}
    result = Evaluation(report, _rows(recordings, run))
    rate = _primary(report)["false_alarms_per_device_day"]
    for name in compare:
        other = _baseline(name, recordings, sensors)
        b = _report(recordings, fmt, scoring, other)
        if rate is not None:
            quality = _quality_of(recordings, fmt, scoring, other)
            point = baselines.recall_at_rate(other.channels, name, quality, rate)
            b["at_equal_false_alarms"] = {"rate": rate, **dataclasses.asdict(point)}
        report.setdefault("baselines", {})[name] = b
        result.baseline_rows[name] = _rows(recordings, other)
    return result


def _telemon(
    settings: Settings,
    rules: RuleSet,
    recordings: Sequence[Recording],
    sensors: list[tuple[str, dict[str, str]]],
) -> _Run:
    pipeline = Pipeline(settings, rules, trace=True)
    fed: list[tuple[int, int]] = []
    trace: list[Scored] = []
    found: list[Alert] = []
    batch: list[tuple[Reading, ReplayMessage]] = []

    def flush() -> None:
        result: BatchResult = pipeline.process_readings(batch)
        trace.extend(result.trace)
        found.extend(result.alerts)
        batch.clear()

    for f, i, r, m in _readings(recordings, sensors):
        fed.append((f, i))
        batch.append((r, m))
        if len(batch) == settings.consume.batch_size:
            flush()
    flush()
    if len(trace) != len(fed):
        raise AssertionError(f"{len(fed)} readings fed, {len(trace)} applied")
    firings = [a for a in found if a.status == "firing" and a.scope == "device"]
    return _Run(
        detector="telemon",
        fed=fed,
        scores=_scores(settings, trace),
        flagged=np.array([s.anomalous or s.joint_anomalous for s in trace], np.bool_),
        found=[Detection((a.device_id, DEVICE), a.ts, a.rule) for a in firings],
        spans=_firing_spans(found),
    )


def _baseline(
    name: baselines.Name, recordings: Sequence[Recording], sensors: list[tuple[str, dict[str, str]]]
) -> _Run:
    """The baseline on every channel (a sensor of a file), fed the readings telemon was fed."""
    fed: list[tuple[int, int]] = []
    by_channel: dict[tuple[int, str], list[int]] = {}
    values: list[tuple[float, ...]] = []
    for f, i, r, _ in _readings(recordings, sensors):
        by_channel.setdefault((f, r.sensor), []).append(len(fed))
        fed.append((f, i))
        values.append(tuple(r.values.values()))
    scores, flagged = np.zeros(len(fed)), np.zeros(len(fed), np.bool_)
    channels: list[baselines.Channel] = []
    axes = dict(sensors)
    for (f, sensor), index in by_channel.items():
        at = np.asarray(index, np.intp)
        rec = recordings[f]
        ts = rec.ts[[fed[j][1] for j in index]]
        scores[at], flagged[at] = baselines.run(
            name, np.asarray([values[j] for j in index]), list(axes[sensor])
        )
        channels.append(baselines.Channel((rec.device_id, DEVICE), sensor, ts, scores[at], flagged[at]))
    found = baselines.detections(channels, name)
    return _Run(name, fed, scores, flagged, found, _run_spans(channels), channels)


def _run_spans(channels: Sequence[baselines.Channel]) -> dict[str, list[tuple[int, float]]]:
    """Per device, ``[first, last]`` flag of each run of a baseline's flags (its alerting spans)."""
    spans: dict[str, list[tuple[int, float]]] = {}
    for c in channels:
        flagged = np.flatnonzero(c.flags)
        if not len(flagged):
            continue
        first = np.searchsorted(flagged, baselines.episode_starts(c.ts, c.flags))
        last = np.r_[first[1:] - 1, len(flagged) - 1]
        for lo, hi in zip(flagged[first].tolist(), flagged[last].tolist(), strict=True):
            spans.setdefault(c.key[0], []).append((int(c.ts[lo]), float(c.ts[hi]) + 1))
    return spans


def _distinct_devices(recordings: list[Recording]) -> list[Recording]:
    """Files of the same name (in other folders) get distinct device ids."""
    seen: dict[str, int] = {}
    for r in recordings:
        n = seen.get(r.device_id, 0)
        seen[r.device_id] = n + 1
        if n:
            r.device_id = f"{r.device_id}.{n + 1}"
    return recordings


def _scores(settings: Settings, trace: list[Scored]) -> NDArray[np.float64]:
    """Each reading's score: the surprise of its distance (NAB's per-row score, which unlike the
    [0, 1] score does not round to 1 for every strong outlier), or of its device's joint model's
    when the reading closed a frame, whichever is larger; or its novelty level; 0 while the models
    warm up."""
    if settings.novelty.enabled:
        return np.array([0.0 if s.level is None else s.level for s in trace])
    catalog = settings.channels.catalog()
    k = np.array([len(catalog.by_name[s.sensor].keys) for s in trace], np.int64)
    d2 = np.array([np.nan if s.distance is None else s.distance for s in trace])
    return np.maximum(_surprise(d2, k), _joint_scores(trace))


def _joint_scores(trace: list[Scored]) -> NDArray[np.float64]:
    """The surprise of the device's joint model at each reading that closed one of its frames."""
    dims = np.array([s.joint_dims for s in trace], np.int64)
    t2 = np.array([np.nan if s.joint_distance is None else s.joint_distance for s in trace])
    return _surprise(t2, dims)


def _surprise(d2: NDArray[np.float64], k: NDArray[np.int64]) -> NDArray[np.float64]:
    """:func:`~monitor.evaluation.harness.surprise` of each distance with its own degrees of
    freedom (0 where the distance is NaN)."""
    out = np.zeros(len(d2))
    for n in np.unique(k[~np.isnan(d2)]).tolist():
        pick = (k == n) & ~np.isnan(d2)
        out[pick] = surprise(d2[pick], n)
    return out


def _rows(recordings: Sequence[Recording], run: _Run) -> list[RowOutput]:
    out = [
        RowOutput(r, np.zeros(len(r.ts)), np.zeros(len(r.ts), np.int8), np.zeros(len(r.ts), np.int8))
        for r in recordings
    ]
    for (f, i), score, flagged in zip(run.fed, run.scores.tolist(), run.flagged.tolist(), strict=True):
        row = out[f]
        row.score[i] = max(row.score[i], score)
        row.anomalous[i] |= flagged
    for row in out:
        for lo, hi in run.spans.get(row.recording.device_id, []):
            row.alerting[(row.recording.ts >= lo) & (row.recording.ts < hi)] = 1
    return out


def _firing_spans(alerts: list[Alert]) -> dict[str, list[tuple[int, float]]]:
    """Per device, ``[fired, resolved)`` of each device-scope alert (unresolved: to the end)."""
    fired: dict[str, Alert] = {}
    spans: dict[str, list[tuple[int, float]]] = {}
    for a in alerts:
        if a.scope != "device":
            continue
        if a.status == "firing":
            fired[a.alert_id] = a
        elif a.status == "resolved" and a.alert_id in fired:
            spans.setdefault(a.device_id, []).append((fired.pop(a.alert_id).ts, a.ts))
    for a in fired.values():
        spans.setdefault(a.device_id, []).append((a.ts, float("inf")))
    return spans


def _events(rec: Recording, kind: LabelKind) -> list[LabelledEvent]:
    if rec.labels is None:
        return []
    key, ts, labels = (rec.device_id, DEVICE), rec.ts.tolist(), rec.labels
    on = labels != 0
    if kind == "anomaly":
        starts = np.flatnonzero(on & ~np.r_[False, on[:-1]])
        ends = np.flatnonzero(on & ~np.r_[on[1:], False])
        return [LabelledEvent(key, "labelled", ts[a], ts[b]) for a, b in zip(starts, ends, strict=True)]
    rows = np.flatnonzero(on) if kind == "onset" else np.flatnonzero(labels[1:] != labels[:-1]) + 1
    return [LabelledEvent(key, kind, ts[i], ts[-1]) for i in rows]


def _observed(recordings: Sequence[Recording], run: _Run) -> dict[str, Any]:
    """``stream_span`` and ``readings_index`` of :func:`anomaly_quality`, per device (key ``*``)."""
    key_span = {(r.device_id, DEVICE): (int(r.ts.min()), int(r.ts.max())) for r in recordings}
    index: dict[tuple[str, str], list[int]] = {}
    for f, i in run.fed:
        index.setdefault((recordings[f].device_id, DEVICE), []).append(int(recordings[f].ts[i]))
    readings_index = {k: np.sort(np.asarray(v, np.int64)) for k, v in index.items()}
    return {"stream_span": key_span, "readings_index": readings_index}


def _primary_events(
    recordings: Sequence[Recording], fmt: CsvFormat, scoring: Scoring
) -> tuple[list[LabelledEvent], int]:
    """The events a detector is compared on, and their grace: change points within the horizon
    (onset and change labels), else the anomaly windows (runs of a 0/1 label); and --event's."""
    events = [e for r in recordings for e in _events(r, fmt.label_kind)]
    grace = GRACE_MS
    if fmt.label_kind != "anomaly":
        events = [LabelledEvent(e.key, e.kind, e.start_ts, e.start_ts) for e in events]
        grace = scoring.horizon_ms
    for e in scoring.events:
        events += [LabelledEvent((r.device_id, DEVICE), e.kind, e.start_ts, e.end_ts) for r in recordings]
    return events, grace


def _quality_of(
    recordings: Sequence[Recording], fmt: CsvFormat, scoring: Scoring, run: _Run
) -> Callable[[list[Detection]], AnomalyQuality]:
    """Detections scored against the primary events (:func:`_primary_events`)."""
    events, grace = _primary_events(recordings, fmt, scoring)
    return functools.partial(anomaly_quality, events, grace_ms=grace, **_observed(recordings, run))


def _primary(report: dict[str, Any]) -> dict[str, Any]:
    """The section a report's detector is compared on: change points, else anomaly windows."""
    section: dict[str, Any] = report.get("change_points") or report["anomaly"]
    return section


def _by_rule(quality: Callable[[list[Detection]], AnomalyQuality], found: list[Detection]) -> dict[str, Any]:
    """Per rule: its firings, false alarms (per device-day) and, per event, its first delay."""
    out: dict[str, Any] = {}
    for rule in sorted({d.rule for d in found}):
        q = quality([d for d in found if d.rule == rule])
        out[rule] = {
            "firings": q.n_detections,
            "false_alarms": q.n_false_alarms,
            "false_alarms_per_device_day": q.false_alarms_per_device_day,
            "delays_ms": [w.delay_ms for w in q.windows],
        }
    return out


def _report(recordings: Sequence[Recording], fmt: CsvFormat, scoring: Scoring, run: _Run) -> dict[str, Any]:
    """Anomaly windows or changes, at device level (any channel's alert detects for the file)."""
    quality = _quality_of(recordings, fmt, scoring, run)
    primary = quality(run.found)
    kind = fmt.label_kind
    changes = [] if kind == "anomaly" else [e for r in recordings for e in _events(r, kind)]
    report: dict[str, Any] = {
        "detector": run.detector,
        "files": [str(r.path) for r in recordings],
        "devices": [r.device_id for r in recordings],
        "label_kind": fmt.label_kind,
        "events": [dataclasses.asdict(e) for e in scoring.events],
        "messages": len(run.fed),
        "alerts_firing": len(run.found),
    }
    if changes:
        report["horizon_ms"] = scoring.horizon_ms
        report["change_points"] = primary.to_dict()
        no_windows = anomaly_quality([], run.found, grace_ms=GRACE_MS, **_observed(recordings, run))
        report["anomaly"] = no_windows.to_dict()
    else:
        report["anomaly"] = primary.to_dict()
    report["drift"] = drift_quality(changes, run.found, horizon_ms=None).to_dict()
    report["by_rule"] = _by_rule(quality, run.found)
    return report
