"""Replay a recorded CSV or JSONL log to Kafka, at real or accelerated speed, in event time.

A column mapping (YAML, validated by :class:`ReplayMapping`; ``configs/replay/astropi.yaml`` is a
commented example) says which column is the timestamp and in which format, where the device id
comes from, and which columns hold each sensor kind's values, with the conversion to the wire
unit: ``wire value = column value * scale + offset``. Each row gives one reading per mapped
sensor; its ``ts`` is the row's timestamp (never the wall clock) and ``seq`` counts the device's
readings from 0 in file order, so replaying the same file again yields the same numbers.

Pacing: ``speed`` 1 waits between rows as long as the log's clock did, 10 ten times less, 0 not
at all. A row older than the one before it is sent at once.

Bad input policy: **skip and count**. A row whose timestamp or device id does not parse is skipped
whole; a sensor whose value is missing or not a number, or whose converted reading the wire format
rejects (out of range, not finite), is skipped for that row while the row's other sensors are
published. Every problem is counted with its ``file:line`` (the first :data:`LOGGED_PROBLEMS` are
logged) and summarised in :class:`ReplayReport`. ``strict=True`` stops at the first problem instead
(:class:`ReplayError` naming file and line; the rows before it are published). A mapping that names
a column the CSV header lacks is an error before anything is sent.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import ReplayError
from monitor.schema import DEFAULT_CATALOG, DEVICE_ID_PATTERN, Catalog
from producers.publisher import Sample, SampleSink

log = logging.getLogger(__name__)

LOGGED_PROBLEMS: Final = 10
Row = Mapping[str, Any]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimestampMapping(_Frozen):
    column: str
    format: str = Field(
        "iso8601", description="iso8601 | epoch_s | epoch_ms | a strptime pattern such as %Y-%m-%d %H:%M:%S"
    )
    timezone: str = Field("UTC", description="zone of timestamps that carry no offset")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        _zone(v)
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in ("iso8601", "epoch_s", "epoch_ms") and "%" not in v:
            raise ValueError("use iso8601, epoch_s, epoch_ms or a strptime pattern (with % fields)")
        return v


class DeviceMapping(_Frozen):
    id: str | None = Field(None, description="one device id for every row")
    column: str | None = Field(None, description="the column holding each row's device id")

    @model_validator(mode="after")
    def _exactly_one(self) -> DeviceMapping:
        if (self.id is None) == (self.column is None):
            raise ValueError("set exactly one of device.id and device.column")
        if self.id is not None and not DEVICE_ID_PATTERN.fullmatch(self.id):
            raise ValueError(f"device.id must match {DEVICE_ID_PATTERN.pattern}")
        return self


class SensorMapping(_Frozen):
    columns: dict[str, str] = Field(
        description="wire value key (x, y, z, value, or a channel's axes) -> column"
    )
    scale: float = 1.0
    offset: float = 0.0


class ReplayMapping(_Frozen):
    format: Literal["csv", "jsonl"] | None = Field(None, description="default: from the file extension")
    delimiter: str = Field(",", min_length=1, max_length=1)
    timestamp: TimestampMapping
    device: DeviceMapping
    sensors: dict[str, SensorMapping] = Field(
        min_length=1, description="sensor (a built-in kind or a declared channel) -> its columns"
    )

    @model_validator(mode="after")
    def _sensor_keys(self, info: ValidationInfo) -> ReplayMapping:
        catalog: Catalog = (info.context or {}).get("catalog", DEFAULT_CATALOG)
        for name, m in self.sensors.items():
            spec = catalog.by_name.get(name)
            if spec is None:
                raise ValueError(
                    f"sensors.{name}: not a sensor the monitor knows (known: {', '.join(catalog.names)}; "
                    "declare a channel under channels.declare in the config given with --config)"
                )
            if set(m.columns) != set(spec.keys):
                raise ValueError(f"sensors.{name}.columns needs exactly the keys {list(spec.keys)}")
        return self

    def columns(self) -> set[str]:
        cols = {self.timestamp.column} | {c for m in self.sensors.values() for c in m.columns.values()}
        return cols | ({self.device.column} if self.device.column else set())


def load_mapping(path: Path, catalog: Catalog = DEFAULT_CATALOG) -> ReplayMapping:
    """Read and validate a mapping file (:func:`monitor.common.yamlfile.load`) whose sensors are
    those of ``catalog``; :class:`ReplayError` names the file."""
    try:
        return ReplayMapping.model_validate(yamlfile.load(path), context={"catalog": catalog})
    except FileNotFoundError:
        raise FileNotFoundError(f"mapping file not found: {path}") from None
    except errors.YamlError as exc:
        raise ReplayError(str(exc)) from None
    except ValidationError as exc:
        raise ReplayError(f"{path}: {exc}") from None


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _number(raw: object) -> float:
    """A cell as a float; ``ValueError`` for anything else (booleans, empty cells, text)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"not a number: {raw!r}")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"not a number: {raw!r}") from None


class RowParser:
    """One row -> its samples, plus a description of every value that could not be used."""

    def __init__(self, mapping: ReplayMapping) -> None:
        self.mapping = mapping
        self.zone = _zone(mapping.timestamp.timezone)

    def parse(self, row: Row | None) -> tuple[list[Sample], list[str]]:
        if row is None:
            return [], ["row skipped: not a JSON object"]
        try:
            ts = self.timestamp(row.get(self.mapping.timestamp.column))
            device = self.device_id(row)
        except ValueError as exc:
            return [], [f"row skipped: {exc}"]
        samples: list[Sample] = []
        problems: list[str] = []
        for sensor, m in self.mapping.sensors.items():
            try:
                values = {k: _number(row.get(col)) * m.scale + m.offset for k, col in m.columns.items()}
            except ValueError as exc:
                problems.append(f"{sensor} skipped: {exc}")
                continue
            samples.append(Sample(device, sensor, ts, values))
        return samples, problems

    def timestamp(self, raw: object) -> int:
        """Epoch milliseconds of a timestamp cell."""
        fmt = self.mapping.timestamp.format
        column = self.mapping.timestamp.column
        try:
            if fmt == "epoch_s":
                return round(_number(raw) * 1000)
            if fmt == "epoch_ms":
                return round(_number(raw))
            text = str(raw).strip()
            when = datetime.fromisoformat(text) if fmt == "iso8601" else datetime.strptime(text, fmt)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{column}: bad timestamp {raw!r} ({fmt})") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        return round(when.timestamp() * 1000)

    def device_id(self, row: Row) -> str:
        if self.mapping.device.id is not None:
            return self.mapping.device.id
        value = row.get(self.mapping.device.column or "")
        if value is None or str(value).strip() == "":
            raise ValueError(f"{self.mapping.device.column}: no device id")
        return str(value).strip()


def read_rows(path: Path, mapping: ReplayMapping) -> Iterator[tuple[int, Row | None]]:
    """``(line number, row)`` for every record; ``row`` is None for a JSONL line that is no object."""
    kind = mapping.format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    with path.open(encoding="utf-8-sig", newline="") as f:
        if kind == "jsonl":
            yield from _jsonl_rows(f)
            return
        reader = csv.DictReader(f, delimiter=mapping.delimiter)
        missing = mapping.columns() - set(reader.fieldnames or ())
        if missing:
            raise ReplayError(f"{path}: the header lacks the mapped columns {sorted(missing)}")
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(lines: Iterator[str]) -> Iterator[tuple[int, Row | None]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = msgspec.json.decode(line)
        except msgspec.DecodeError:
            row = None
        yield number, row if isinstance(row, dict) else None


@dataclass
class ReplayReport:
    """What a replay did: rows read, readings published, and every problem skipped."""

    rows: int = 0
    published: int = 0
    skipped: int = 0  # readings not published (bad value, rejected, or a skipped row)
    bad_lines: int = 0
    first_problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self) -> str:
        text = f"{self.rows} rows, {self.published} readings published in {self.duration_s:.1f}s"
        if self.bad_lines:
            first = self.first_problems[0]
            text += f"; {self.skipped} readings skipped on {self.bad_lines} lines, first: {first}"
        return text


class Pacer:
    """Waits until the wall clock reaches a row's event time divided by ``speed`` (0: never waits)."""

    def __init__(
        self, speed: float, wait: Callable[[float], object], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.speed = speed
        self.wait = wait
        self.clock = clock
        self.origin: tuple[float, int] | None = None  # (wall clock, event ts) of the first row

    def until(self, ts: int) -> None:
        if self.speed == 0:
            return
        if self.origin is None:
            self.origin = (self.clock(), ts)
            return
        delay = self.origin[0] + (ts - self.origin[1]) / 1000 / self.speed - self.clock()
        if delay > 0:
            self.wait(delay)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    speed: float = 1.0
    strict: bool = False
    limit: int | None = None  # rows


class Replayer:
    """Reads a log, paces it, publishes every row's readings, accounts for every problem."""

    def __init__(self, mapping: ReplayMapping, publisher: SampleSink, options: ReplayOptions) -> None:
        self.mapping = mapping
        self.parser = RowParser(mapping)
        self.publisher = publisher
        self.options = options
        self.report = ReplayReport()

    def run(self, path: Path, stop: threading.Event) -> ReplayReport:
        began = time.monotonic()
        pacer = Pacer(self.options.speed, self._wait(stop))
        for line, row in read_rows(path, self.mapping):
            if stop.is_set() or self.report.rows == self.options.limit:
                break
            self._row(path, line, row, pacer)
        self.report.duration_s = time.monotonic() - began
        return self.report

    def _row(self, path: Path, line: int, row: Row | None, pacer: Pacer) -> None:
        self.report.rows += 1
        samples, problems = self.parser.parse(row)
        if samples:
            pacer.until(samples[0].ts)
        published = self._publish(samples, problems)
        if problems:
            self._problems(f"{path}:{line}: " + "; ".join(problems), len(self.mapping.sensors) - published)

    def _wait(self, stop: threading.Event) -> Callable[[float], object]:
        def wait(delay: float) -> None:
            self.publisher.check()  # deliveries of the rows so far: fail fast
            stop.wait(delay)

        return wait

    def _publish(self, samples: list[Sample], problems: list[str]) -> int:
        """Publish the row's samples; a rejected one adds a problem. Returns how many went out."""
        published = 0
        for s in samples:
            rejection = self.publisher.publish(s)
            if rejection is None:
                published += 1
            else:
                problems.append(f"{s.sensor} skipped: {rejection.reason}: {rejection.detail}")
        self.report.published += published
        return published

    def _problems(self, where: str, skipped: int) -> None:
        if self.options.strict:
            raise ReplayError(where)
        self.report.bad_lines += 1
        self.report.skipped += skipped
        if len(self.report.first_problems) < LOGGED_PROBLEMS:
            self.report.first_problems.append(where)
            log.warning("%s", where)
