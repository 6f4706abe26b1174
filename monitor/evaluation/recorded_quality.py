"""Detectors over recorded files and their quality: ``telemon evaluate csv``.

:func:`evaluate_recordings` reads the files (:mod:`monitor.evaluation.recordings`), replays their
readings through the live pipeline and, with ``compare``, through the baselines
(:mod:`monitor.evaluation.baselines`), and scores each detector's detections at device level (any
alert of a file's device detects for it) against the primary events: change points within the
horizon (onset and change labels), else anomaly windows (runs of a 0/1 label), and the known
events of :class:`TimedEvent`. It returns the quality report and, per file, a row table
(:class:`~monitor.evaluation.recordings.RowOutput`): the device-level anomaly score of each row
(the largest over its readings), whether a reading of it was flagged, and whether the detector
was alerting for its device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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
from monitor.evaluation.recordings import (
    DEVICE,
    CsvFormat,
    Recording,
    RowOutput,
    ValueColumn,
    distinct_devices,
    label_events,
    plan,
    read_recording,
    readings_of,
)
from monitor.evaluation.replay import ReplayMessage, parse_time
from monitor.govern.alerts import Alert
from monitor.govern.rules import RuleSet
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Scored
from monitor.schema import Reading
from monitor.settings import Settings

#: An anomaly window also counts detections this long after its end (as for scenarios).
GRACE_MS: Final = 60_000


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
class Evaluation:
    report: dict[str, Any]
    rows: list[RowOutput] = field(default_factory=list)
    baseline_rows: dict[str, list[RowOutput]] = field(default_factory=dict)


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
    recordings = distinct_devices([read_recording(p, fmt, [c.column for c in columns]) for p in paths])
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

    for f, i, r, m in readings_of(recordings, sensors):
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
    for f, i, r, _ in readings_of(recordings, sensors):
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
    events = [e for r in recordings for e in label_events(r, fmt.label_kind)]
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
    changes = [] if kind == "anomaly" else [e for r in recordings for e in label_events(r, kind)]
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
