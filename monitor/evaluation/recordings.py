"""Recorded sensor files as the pipeline reads them, as a user evaluates their own data.

A *recording* is one delimited text file: one device, a row per instant, value columns that are
axes of sensors (``--value ax=accelerometer.x``), or channels of their own (``--value co2``), an
optional label column. Each row gives one reading per sensor, all at the row's time, so event time
never restarts between the columns of a file; the readings of several files are merged in time
order, as a live fleet's would arrive (:func:`readings_of`). A column mapped to no sensor becomes a
channel named after it, whose resolution (the model's noise floor) is the smallest step between
its first :data:`RESOLUTION_ROWS` distinct values.

Labels are anomaly windows (runs of non-zero rows), onsets (each non-zero row starts a change) or
change points (each row whose label differs from the row before, e.g. an activity id):
:func:`label_events`. :mod:`monitor.evaluation.recorded_quality` runs the detectors over the
readings and scores them.
"""

from __future__ import annotations

import csv
import heapq
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from monitor.errors import LabelledInputError as InputError
from monitor.evaluation.quality import LabelledEvent
from monitor.evaluation.replay import ReplayMessage, device_id, parse_time
from monitor.schema import Catalog, Reading
from monitor.settings import ChannelSettings, ChannelsSettings, Settings

LabelKind = Literal["anomaly", "onset", "change"]
#: A column's resolution is estimated from this many of its first distinct values.
RESOLUTION_ROWS: Final = 1000
#: Index time (no timestamp column): row ``i`` is at this epoch plus ``i`` periods.
INDEX_EPOCH_MS: Final = 1_577_836_800_000  # 2020-01-01T00:00:00Z
#: Device-level key of the quality report: every channel of a file is one device.
DEVICE: Final = "*"
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


def readings_of(
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


def distinct_devices(recordings: list[Recording]) -> list[Recording]:
    """Files of the same name (in other folders) get distinct device ids."""
    seen: dict[str, int] = {}
    for r in recordings:
        n = seen.get(r.device_id, 0)
        seen[r.device_id] = n + 1
        if n:
            r.device_id = f"{r.device_id}.{n + 1}"
    return recordings


def label_events(rec: Recording, kind: LabelKind) -> list[LabelledEvent]:
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
