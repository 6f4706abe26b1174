"""Detection quality against labelled ground truth: anomaly windows and drift changes.

Pure functions over plain records, no I/O. A :class:`LabelledEvent` is one labelled event on one
``(device_id, sensor)`` key over ``[start_ts, end_ts]`` (for a permanent change ``end_ts`` is the
end of the stream); a :class:`Detection` is one thing the monitor reported on a key at ``ts`` (an
alert firing, an anomalous reading, a drift flag). Timestamps are epoch milliseconds. Intervals
are closed (both ends included) unless written half-open, so a detection exactly on a boundary is
inside. Percentiles are ``numpy.percentile`` with linear interpolation. Undefined ratios are
``None``, never NaN.

Anomaly windows (:func:`anomaly_quality`)
-----------------------------------------
- **Window** of an event: ``[start_ts, end_ts + grace_ms]`` on the event's key. Windows of events
  on one key may overlap; every event keeps its own window and is scored on its own.
- **Detected window** (true positive): at least one detection of the window's key lies in it.
  A window holding several detections is counted once.
- **Recall** = detected windows / windows; ``None`` without events.
- **Inside detection**: a detection lying in at least one window of its own key (counted once
  when windows overlap). Detections on keys without events are never inside.
- **Precision** is detection-level: inside detections / all detections; ``None`` without
  detections. Every detection is judged, so repeated firings inside one window all count as
  correct and every firing outside one counts against.
- **F1** = 2 * precision * recall / (precision + recall); 0.0 when both are 0; ``None`` when
  either is ``None``.
- **False alarms** (event-level false positives) = detections that are not inside detections:
  all detections - inside detections.
- **Delay** of a detected window, with ``first`` its earliest detection: in time,
  ``first - start_ts`` ms (never negative; it can exceed the event's duration by up to
  ``grace_ms``); in readings, when ``readings_index`` is given, the number of readings of the key
  with ``start_ts <= ts < first`` (0 when the first reading of the event is flagged). Missed windows
  have no delay. A **delay summary** is the count, median and p90 over detected windows (median and
  p90 ``None`` when none was detected).
- **Observed device-days**: per device, the total length of the union of the ``stream_span``
  intervals ``[first_ts, last_ts]`` of its keys (time covered by several sensors counts once,
  gaps between disjoint spans not at all), summed over devices, / 86 400 000 ms.
- **False alarms per device-day** = false alarms / observed device-days; ``None`` when the
  observed device-days are 0.
- **Per kind**: windows, detected windows, recall and delay summaries over the events of each kind.

Drift changes (:func:`drift_quality`)
-------------------------------------
- **Search interval** of a change: ``[start_ts, start_ts + horizon_ms]`` when ``horizon_ms`` is
  given (whether or not another change starts in it); otherwise the half-open
  ``[start_ts, next_start)``, where ``next_start`` is the start of the next change on the same key
  that starts strictly later, or unbounded (end of stream) when there is none. ``end_ts`` of a
  change is not used.
- **Detected change**: a detection of its key lies in its search interval; **delay** = earliest
  such ``ts - start_ts`` ms. **Missed change**: none does. **Detection rate** = detected changes /
  changes; ``None`` without changes. Delay summaries as above.
- **False detection**: a detection on a key that has no change, or with ``ts`` strictly before
  the earliest change start on its key. Detections at or after a key's first change are never
  false; those lying in no search interval (possible only with ``horizon_ms``) are counted as
  **unattributed**.
- **Per kind**: changes, detected, missed, detection rate and delay summary per change kind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray

Key: TypeAlias = tuple[str, str]
TsArray: TypeAlias = NDArray[np.int64]
#: What ``to_dict`` returns: only dict, list, str, int, float, bool and None inside (never NaN).
JsonDict: TypeAlias = dict[str, Any]

MS_PER_DAY: Final = 86_400_000
_EMPTY: Final[TsArray] = np.zeros(0, dtype=np.int64)

_T = TypeVar("_T")


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledEvent:
    """One labelled event (anomaly or change) on one ``(device_id, sensor)`` key, epoch ms."""

    key: Key
    kind: str
    start_ts: int
    end_ts: int

    def __post_init__(self) -> None:
        if self.end_ts < self.start_ts:
            raise ValueError(
                f"event {self.kind} on {self.key}: end_ts {self.end_ts} < start_ts {self.start_ts}"
            )

    def to_dict(self) -> JsonDict:
        return {
            "device_id": self.key[0],
            "sensor": self.key[1],
            "kind": self.kind,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
        }


@dataclass(frozen=True)
class Detection:
    """One report of the monitor on a key at ``ts`` (epoch ms), by ``rule``."""

    key: Key
    ts: int
    rule: str


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelaySummary:
    """Count, median and p90 of delays (linear percentiles); median and p90 ``None`` when empty."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, delays: Sequence[int]) -> DelaySummary:
        if not delays:
            return cls(count=0, median=None, p90=None)
        median, p90 = np.percentile(np.asarray(delays, dtype=np.float64), [50.0, 90.0], method="linear")
        return cls(count=len(delays), median=float(median), p90=float(p90))

    def to_dict(self) -> JsonDict:
        return {"count": self.count, "median": self.median, "p90": self.p90}


@dataclass(frozen=True)
class ChangeOutcome:
    """One labelled change: the detections in its search interval and the first one's delay."""

    event: LabelledEvent
    n_detections: int
    first_detection_ts: int | None
    delay_ms: int | None

    @property
    def detected(self) -> bool:
        return self.n_detections > 0

    def to_dict(self) -> JsonDict:
        return {
            "event": self.event.to_dict(),
            "detected": self.detected,
            "n_detections": self.n_detections,
            "first_detection_ts": self.first_detection_ts,
            "delay_ms": self.delay_ms,
        }


@dataclass(frozen=True)
class WindowOutcome(ChangeOutcome):
    """One event's window ``[event.start_ts, window_end]`` and what fell in it."""

    window_end: int
    delay_readings: int | None

    def to_dict(self) -> JsonDict:
        return super().to_dict() | {"window_end": self.window_end, "delay_readings": self.delay_readings}


@dataclass(frozen=True)
class KindAnomalyQuality:
    """Recall and delays over the windows of one event kind."""

    kind: str
    n_windows: int
    n_detected: int
    recall: float
    delay_ms: DelaySummary
    delay_readings: DelaySummary | None

    def to_dict(self) -> JsonDict:
        return {
            "kind": self.kind,
            "n_windows": self.n_windows,
            "n_detected": self.n_detected,
            "recall": self.recall,
            "delay_ms": self.delay_ms.to_dict(),
            "delay_readings": None if self.delay_readings is None else self.delay_readings.to_dict(),
        }


@dataclass(frozen=True)
class AnomalyQuality:
    """Window-based detection quality; see the module docstring for every definition."""

    n_windows: int
    n_detected: int
    recall: float | None
    n_detections: int
    n_inside: int
    n_false_alarms: int
    precision: float | None
    f1: float | None
    delay_ms: DelaySummary
    delay_readings: DelaySummary | None
    device_days: float
    false_alarms_per_device_day: float | None
    by_kind: Mapping[str, KindAnomalyQuality]
    windows: tuple[WindowOutcome, ...]

    def to_dict(self) -> JsonDict:
        return {
            "n_windows": self.n_windows,
            "n_detected": self.n_detected,
            "recall": self.recall,
            "n_detections": self.n_detections,
            "n_inside": self.n_inside,
            "n_false_alarms": self.n_false_alarms,
            "precision": self.precision,
            "f1": self.f1,
            "delay_ms": self.delay_ms.to_dict(),
            "delay_readings": None if self.delay_readings is None else self.delay_readings.to_dict(),
            "device_days": self.device_days,
            "false_alarms_per_device_day": self.false_alarms_per_device_day,
            "by_kind": {kind: q.to_dict() for kind, q in self.by_kind.items()},
            "windows": [w.to_dict() for w in self.windows],
        }


@dataclass(frozen=True)
class KindDriftQuality:
    """Detected and missed changes and delays for one change kind."""

    kind: str
    n_changes: int
    n_detected: int
    n_missed: int
    detection_rate: float
    delay_ms: DelaySummary

    def to_dict(self) -> JsonDict:
        return {
            "kind": self.kind,
            "n_changes": self.n_changes,
            "n_detected": self.n_detected,
            "n_missed": self.n_missed,
            "detection_rate": self.detection_rate,
            "delay_ms": self.delay_ms.to_dict(),
        }


@dataclass(frozen=True)
class DriftQuality:
    """Change-detection quality; see the module docstring for every definition."""

    n_changes: int
    n_detected: int
    n_missed: int
    detection_rate: float | None
    delay_ms: DelaySummary
    n_detections: int
    n_false_detections: int
    n_unattributed: int
    by_kind: Mapping[str, KindDriftQuality]
    changes: tuple[ChangeOutcome, ...]

    def to_dict(self) -> JsonDict:
        return {
            "n_changes": self.n_changes,
            "n_detected": self.n_detected,
            "n_missed": self.n_missed,
            "detection_rate": self.detection_rate,
            "delay_ms": self.delay_ms.to_dict(),
            "n_detections": self.n_detections,
            "n_false_detections": self.n_false_detections,
            "n_unattributed": self.n_unattributed,
            "by_kind": {kind: q.to_dict() for kind, q in self.by_kind.items()},
            "changes": [c.to_dict() for c in self.changes],
        }


# --- helpers ------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def f1_score(precision: float | None, recall: float | None) -> float | None:
    """Harmonic mean of precision and recall; 0.0 when both are 0, ``None`` when either is."""
    if precision is None or recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _detections_by_key(detections: Iterable[Detection]) -> dict[Key, TsArray]:
    """Sorted detection timestamps per key (duplicates kept: each is one detection)."""
    grouped: defaultdict[Key, list[int]] = defaultdict(list)
    for d in detections:
        grouped[d.key].append(d.ts)
    return {key: np.sort(np.asarray(ts, dtype=np.int64)) for key, ts in grouped.items()}


def _group(items: Iterable[_T], by: Callable[[_T], str]) -> dict[str, list[_T]]:
    """Items grouped by a string, the groups sorted by it, items in input order."""
    grouped: defaultdict[str, list[_T]] = defaultdict(list)
    for item in items:
        grouped[by(item)].append(item)
    return {name: grouped[name] for name in sorted(grouped)}


def _union_length(spans: list[tuple[int, int]]) -> int:
    """Total length of the union of closed intervals (at least one)."""
    ordered = sorted(spans)
    total = 0
    cur_lo, cur_hi = ordered[0]
    for lo, hi in ordered[1:]:
        if lo > cur_hi:
            total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    return total + cur_hi - cur_lo


def observed_device_days(stream_span: Mapping[Key, tuple[int, int]]) -> float:
    """Sum over devices of the length of the union of their keys' ``[first_ts, last_ts]``, in days."""
    per_device: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, (lo, hi) in stream_span.items():
        if hi < lo:
            raise ValueError(f"stream_span of {key}: last_ts {hi} < first_ts {lo}")
        per_device[key[0]].append((lo, hi))
    return sum(_union_length(spans) for spans in per_device.values()) / MS_PER_DAY


def _readings_before(readings: TsArray, lo: int, hi: int) -> int:
    """Number of readings with ``lo <= ts < hi``."""
    return int(np.searchsorted(readings, hi, side="left") - np.searchsorted(readings, lo, side="left"))


def _check_sorted(readings_index: Mapping[Key, TsArray]) -> None:
    for key, ts in readings_index.items():
        if ts.ndim != 1 or (ts.size > 1 and bool(np.any(np.diff(ts) < 0))):
            raise ValueError(f"readings_index[{key}] must be a sorted 1-d array of timestamps")


# --- anomaly windows ----------------------------------------------------------------------------


def _score_window(
    event: LabelledEvent,
    grace_ms: int,
    dets: TsArray,
    readings_index: Mapping[Key, TsArray] | None,
) -> tuple[WindowOutcome, slice]:
    """The window's outcome and the slice of ``dets`` (sorted) lying in it."""
    window_end = event.end_ts + grace_ms
    i = int(np.searchsorted(dets, event.start_ts, side="left"))
    j = int(np.searchsorted(dets, window_end, side="right"))
    first = int(dets[i]) if j > i else None
    delay_readings = None
    if first is not None and readings_index is not None:
        if event.key not in readings_index:
            raise ValueError(f"readings_index has no timestamps for {event.key}")
        delay_readings = _readings_before(readings_index[event.key], event.start_ts, first)
    outcome = WindowOutcome(
        event=event,
        window_end=window_end,
        n_detections=j - i,
        first_detection_ts=first,
        delay_ms=None if first is None else first - event.start_ts,
        delay_readings=delay_readings,
    )
    return outcome, slice(i, j)


def _window_delays(
    windows: list[WindowOutcome], with_readings: bool
) -> tuple[DelaySummary, DelaySummary | None]:
    """Delay summaries over the detected ones of ``windows``: in ms, and in readings if indexed."""
    in_ms = DelaySummary.of([w.delay_ms for w in windows if w.delay_ms is not None])
    if not with_readings:
        return in_ms, None
    return in_ms, DelaySummary.of([w.delay_readings for w in windows if w.delay_readings is not None])


def _kind_anomaly_quality(kind: str, windows: list[WindowOutcome], with_readings: bool) -> KindAnomalyQuality:
    n_detected = sum(w.detected for w in windows)
    delay_ms, delay_readings = _window_delays(windows, with_readings)
    return KindAnomalyQuality(
        kind=kind,
        n_windows=len(windows),
        n_detected=n_detected,
        recall=n_detected / len(windows),
        delay_ms=delay_ms,
        delay_readings=delay_readings,
    )


def anomaly_quality(
    events: Sequence[LabelledEvent],
    detections: Sequence[Detection],
    *,
    grace_ms: int,
    stream_span: Mapping[Key, tuple[int, int]],
    readings_index: Mapping[Key, TsArray] | None = None,
) -> AnomalyQuality:
    """Window-based precision, recall, F1, delays and false alarms per device-day.

    ``stream_span`` maps every key to its observed ``(first_ts, last_ts)``; every key with a
    detection must be in it. ``readings_index`` maps keys to their sorted reading timestamps;
    when given, every key with a detected window must be in it. Raises ``ValueError`` otherwise,
    and for a negative ``grace_ms``.
    """
    if grace_ms < 0:
        raise ValueError(f"grace_ms must be >= 0, got {grace_ms}")
    unobserved = {d.key for d in detections} - set(stream_span)
    if unobserved:
        raise ValueError(f"stream_span lacks keys that have detections: {sorted(unobserved)}")
    if readings_index is not None:
        _check_sorted(readings_index)
    by_key = _detections_by_key(detections)
    inside = {key: np.zeros(len(ts), dtype=np.bool_) for key, ts in by_key.items()}
    windows: list[WindowOutcome] = []
    for event in events:
        outcome, hit = _score_window(event, grace_ms, by_key.get(event.key, _EMPTY), readings_index)
        windows.append(outcome)
        if event.key in inside:
            inside[event.key][hit] = True
    n_inside = sum(int(mask.sum()) for mask in inside.values())
    n_false = len(detections) - n_inside
    n_detected = sum(w.detected for w in windows)
    precision, recall = _ratio(n_inside, len(detections)), _ratio(n_detected, len(windows))
    device_days = observed_device_days(stream_span)
    with_readings = readings_index is not None
    delay_ms, delay_readings = _window_delays(windows, with_readings)
    return AnomalyQuality(
        n_windows=len(windows),
        n_detected=n_detected,
        recall=recall,
        n_detections=len(detections),
        n_inside=n_inside,
        n_false_alarms=n_false,
        precision=precision,
        f1=f1_score(precision, recall),
        delay_ms=delay_ms,
        delay_readings=delay_readings,
        device_days=device_days,
        false_alarms_per_device_day=None if device_days == 0 else n_false / device_days,
        by_kind=MappingProxyType(
            {
                kind: _kind_anomaly_quality(kind, group, with_readings)
                for kind, group in _group(windows, lambda w: w.event.kind).items()
            }
        ),
        windows=tuple(windows),
    )


# --- drift changes ------------------------------------------------------------------------------


def _search_slice(dets: TsArray, start: int, starts: TsArray, horizon_ms: int | None) -> slice:
    """The slice of ``dets`` (sorted) in the search interval of a change starting at ``start``;
    ``starts`` are the sorted distinct change starts of the key."""
    i = int(np.searchsorted(dets, start, side="left"))
    if horizon_ms is not None:
        return slice(i, int(np.searchsorted(dets, start + horizon_ms, side="right")))
    n = int(np.searchsorted(starts, start, side="right"))  # index of the next strictly later start
    if n == len(starts):
        return slice(i, len(dets))
    return slice(i, int(np.searchsorted(dets, starts[n], side="left")))


def _score_key_changes(
    changes: list[LabelledEvent], dets: TsArray, horizon_ms: int | None
) -> tuple[list[ChangeOutcome], int, int]:
    """Outcomes of the changes of one key, and its false and unattributed detection counts."""
    starts = np.unique(np.asarray([c.start_ts for c in changes], dtype=np.int64))
    attributed = np.zeros(len(dets), dtype=np.bool_)
    outcomes = []
    for change in changes:
        hit = _search_slice(dets, change.start_ts, starts, horizon_ms)
        attributed[hit] = True
        n = hit.stop - hit.start
        first = int(dets[hit.start]) if n > 0 else None
        outcomes.append(
            ChangeOutcome(
                event=change,
                n_detections=n,
                first_detection_ts=first,
                delay_ms=None if first is None else first - change.start_ts,
            )
        )
    n_false = int(np.searchsorted(dets, starts[0], side="left"))
    n_unattributed = int(np.count_nonzero(~attributed[n_false:]))
    return outcomes, n_false, n_unattributed


def _kind_drift_quality(kind: str, changes: list[ChangeOutcome]) -> KindDriftQuality:
    hits = [c for c in changes if c.detected]
    return KindDriftQuality(
        kind=kind,
        n_changes=len(changes),
        n_detected=len(hits),
        n_missed=len(changes) - len(hits),
        detection_rate=len(hits) / len(changes),
        delay_ms=DelaySummary.of([c.delay_ms for c in hits if c.delay_ms is not None]),
    )


def drift_quality(
    changes: Sequence[LabelledEvent],
    detections: Sequence[Detection],
    *,
    horizon_ms: int | None,
) -> DriftQuality:
    """Delays, missed changes and false detections of a change detector.

    ``changes`` are the labelled changes (the caller picks the drift kinds); outcomes keep their
    order. Raises ``ValueError`` for a negative ``horizon_ms``.
    """
    if horizon_ms is not None and horizon_ms < 0:
        raise ValueError(f"horizon_ms must be >= 0, got {horizon_ms}")
    by_key = _detections_by_key(detections)
    outcome_of: dict[int, ChangeOutcome] = {}
    n_false = n_unattributed = 0
    changes_by_key: defaultdict[Key, list[int]] = defaultdict(list)
    for index, change in enumerate(changes):
        changes_by_key[change.key].append(index)
    for key, ts in by_key.items():
        if key not in changes_by_key:
            n_false += len(ts)
    for key, indices in changes_by_key.items():
        outcomes, key_false, key_unattributed = _score_key_changes(
            [changes[i] for i in indices], by_key.get(key, _EMPTY), horizon_ms
        )
        outcome_of.update(zip(indices, outcomes, strict=True))
        n_false += key_false
        n_unattributed += key_unattributed
    ordered = [outcome_of[i] for i in range(len(changes))]
    hits = [c for c in ordered if c.detected]
    return DriftQuality(
        n_changes=len(ordered),
        n_detected=len(hits),
        n_missed=len(ordered) - len(hits),
        detection_rate=_ratio(len(hits), len(ordered)),
        delay_ms=DelaySummary.of([c.delay_ms for c in hits if c.delay_ms is not None]),
        n_detections=len(detections),
        n_false_detections=n_false,
        n_unattributed=n_unattributed,
        by_kind=MappingProxyType(
            {
                kind: _kind_drift_quality(kind, group)
                for kind, group in _group(ordered, lambda c: c.event.kind).items()
            }
        ),
        changes=tuple(ordered),
    )
