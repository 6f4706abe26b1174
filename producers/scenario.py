"""Scenario files: what the fleet simulator runs, validated, frozen, and its ground truth.

A scenario is YAML (read with :func:`monitor.common.yamlfile.load`: the safe loader, bounded)::

    seed: 7
    devices: 20
    duration_s: 600
    malformed: 12
    events:
      - {kind: gradual_drift, device: 7, sensor: temperature, start_s: 300, duration_s: 120,
         magnitude: 8.0}

Event magnitudes are **absolute amounts in the sensor's unit** (``SENSORS[sensor].unit``):
``magnitude: 8.0`` on temperature is +8 degC. On a vector sensor an event changes every axis
unless ``axis`` names one. Every event becomes one ground-truth record (:func:`truth_records`).

>>> s = Scenario(seed=1, devices=3, duration_s=10)
>>> s.device_ids()
['dev-0000', 'dev-0001', 'dev-0002']
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import ScenarioError
from monitor.schema import DEVICE_ID_PATTERN, SENSORS

#: 2026-01-01T00:00:00Z: the default first timestamp, fixed so that a seed fixes the stream.
DEFAULT_START_TS: Final = 1_767_225_600_000
#: The monitor accepts epoch milliseconds in 2000-01-01 .. 2100-01-01 (see ``monitor.schema``).
_TS_LOW: Final = 946_684_800_000
_TS_HIGH: Final = 4_102_444_800_000
#: Above 1 kHz two samples could share a millisecond timestamp.
MAX_RATE_HZ: Final = 1000.0

SensorName = Literal["accelerometer", "gyroscope", "magnetometer", "humidity", "pressure", "temperature"]
Axis = Literal["x", "y", "z"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _Event(_Frozen):
    """Fields shared by every injection: which device and sensor, and from when."""

    device: int | str = Field(description="device index, or its id such as 'dev-0007'")
    sensor: SensorName
    start_s: float = Field(ge=0, description="simulated seconds after the start")
    axis: Axis | None = Field(default=None, description="vector sensors only; default every axis")

    @model_validator(mode="after")
    def _axis_needs_vector(self) -> _Event:
        if self.axis is not None and not SENSORS[self.sensor].is_vector:
            raise ValueError(f"axis: {self.sensor} is a scalar sensor and has no axis")
        return self


class GradualDrift(_Event):
    """The offset ramps linearly from 0 to ``magnitude`` over ``duration_s``, then stays."""

    kind: Literal["gradual_drift"]
    duration_s: float = Field(gt=0, description="length of the ramp")
    magnitude: float


class AbruptShift(_Event):
    """A step of ``magnitude``; permanent unless ``duration_s`` is given."""

    kind: Literal["abrupt_shift"]
    duration_s: float | None = Field(default=None, gt=0)
    magnitude: float


class SpikeBurst(_Event):
    """For ``duration_s``, each sample is hit with ``probability`` by a +-``magnitude`` spike."""

    kind: Literal["spike_burst"]
    duration_s: float = Field(gt=0)
    magnitude: float = Field(gt=0)
    probability: float = Field(default=0.3, gt=0, le=1)


class StuckAt(_Event):
    """The sensor repeats ``value`` (default: its reading at ``start_s``); permanent by default."""

    kind: Literal["stuck_at"]
    duration_s: float | None = Field(default=None, gt=0)
    value: float | None = None

    @model_validator(mode="after")
    def _value_in_range(self) -> StuckAt:
        spec = SENSORS[self.sensor]
        if self.value is not None and not spec.low <= self.value <= spec.high:
            raise ValueError(f"value: {self.value} is outside [{spec.low}, {spec.high}] {spec.unit}")
        return self


class VarianceIncrease(_Event):
    """The noise standard deviation is multiplied by ``factor``; permanent by default."""

    kind: Literal["variance_increase"]
    duration_s: float | None = Field(default=None, gt=0)
    factor: float = Field(gt=1, le=1000)


class _WholeReadings(_Event):
    """An event that acts on whole readings or messages, so it takes no ``axis``."""

    @model_validator(mode="after")
    def _whole_readings(self) -> _WholeReadings:
        if self.axis is not None:
            kind = getattr(self, "kind", "this event")
            raise ValueError(f"axis: {kind} acts on whole readings, it takes no axis")
        return self


class Dropout(_WholeReadings):
    """The sensor's readings are lost in transit for ``duration_s`` (their seq numbers too)."""

    kind: Literal["dropout"]
    duration_s: float = Field(gt=0)


class SamplingRateChange(_WholeReadings):
    """The device samples the sensor ``factor`` times as often (0 < factor < 1: slower, 0.1 is ten
    times slower); the samples it skips are never sent and take no seq number. Permanent unless
    ``duration_s`` is given."""

    kind: Literal["sampling_rate_change"]
    duration_s: float | None = Field(default=None, gt=0)
    factor: float

    @model_validator(mode="after")
    def _slower(self) -> SamplingRateChange:
        if not 0 < self.factor < 1:
            raise ValueError(
                f"factor: {self.factor} is not in (0, 1); only slower sampling can be simulated "
                "(the fleet samples every sensor on a fixed grid)"
            )
        return self


class Saturation(_Event):
    """The sensor's output clips at ``limit``: with ``side: upper`` readings above it read
    ``limit``, with ``side: lower`` readings below it. Permanent unless ``duration_s`` is given."""

    kind: Literal["saturation"]
    duration_s: float | None = Field(default=None, gt=0)
    limit: float
    side: Literal["upper", "lower"] = "upper"

    @model_validator(mode="after")
    def _limit_in_range(self) -> Saturation:
        spec = SENSORS[self.sensor]
        if not spec.low <= self.limit <= spec.high:
            raise ValueError(f"limit: {self.limit} is outside [{spec.low}, {spec.high}] {spec.unit}")
        return self


class CalibrationOffset(_Event):
    """A calibration fault: a constant offset of ``magnitude`` from ``start_s`` on, permanent."""

    kind: Literal["calibration_offset"]
    magnitude: float

    @model_validator(mode="after")
    def _nonzero(self) -> CalibrationOffset:
        if self.magnitude == 0:
            raise ValueError("magnitude: an offset of 0 changes nothing")
        return self


class ClockSkew(_WholeReadings):
    """The device's clock jumps by ``skew_s`` (positive: ahead): readings carry ``ts`` + skew while
    the Kafka message timestamp stays the true publish time. Permanent unless ``duration_s``."""

    kind: Literal["clock_skew"]
    duration_s: float | None = Field(default=None, gt=0)
    skew_s: float = Field(ge=-86_400, le=86_400)

    @model_validator(mode="after")
    def _nonzero(self) -> ClockSkew:
        if round(self.skew_s * 1000) == 0:
            raise ValueError("skew_s: a skew under 1 ms changes nothing")
        return self


class DuplicateMessages(_WholeReadings):
    """Each message of the sensor is sent twice (same bytes, same seq) with ``probability``.
    Permanent unless ``duration_s`` is given."""

    kind: Literal["duplicate_messages"]
    duration_s: float | None = Field(default=None, gt=0)
    probability: float = Field(gt=0, le=1)


class OutOfOrder(_WholeReadings):
    """Each message of the sensor is, with ``probability``, delivered late: after the device's next
    message, so its seq goes backwards. Permanent unless ``duration_s`` is given."""

    kind: Literal["out_of_order"]
    duration_s: float | None = Field(default=None, gt=0)
    probability: float = Field(gt=0, le=1)


class UnitChange(_WholeReadings):
    """Values are sent in another unit, ``value * factor + offset``, while the ``unit`` field keeps
    the sensor's unit (degC as degF: factor 1.8, offset 32). Permanent unless ``duration_s``."""

    kind: Literal["unit_change"]
    duration_s: float | None = Field(default=None, gt=0)
    factor: float
    offset: float = 0.0

    @model_validator(mode="after")
    def _changes(self) -> UnitChange:
        if self.factor == 0:
            raise ValueError("factor: 0 is not a unit conversion")
        if (self.factor, self.offset) == (1, 0):
            raise ValueError("factor: 1 with offset 0 changes nothing")
        return self


class Reboot(_WholeReadings):
    """The device reboots and its seq counter restarts at 0, at the first reading of ``sensor``
    at or after ``start_s`` (the reading on which the monitor sees seq go backwards)."""

    kind: Literal["reboot"]


Event = Annotated[
    GradualDrift
    | AbruptShift
    | SpikeBurst
    | StuckAt
    | VarianceIncrease
    | Dropout
    | SamplingRateChange
    | Saturation
    | CalibrationOffset
    | ClockSkew
    | DuplicateMessages
    | OutOfOrder
    | UnitChange
    | Reboot,
    Field(discriminator="kind"),
]
#: Events that last until the end of the simulation whatever their ``duration_s`` says (kinds
#: without a ``duration_s`` are permanent too).
_PERMANENT_KINDS: Final = frozenset({"gradual_drift"})


class Scenario(_Frozen):
    """A complete, reproducible simulation: the same scenario always yields the same bytes."""

    name: str = Field(default="scenario", min_length=1, description="tags the ground-truth records")
    seed: int = Field(ge=0)
    devices: int = Field(ge=1, le=1_000_000)
    device_prefix: str = Field(default="dev-", max_length=100)
    duration_s: float = Field(gt=0, le=366 * 86_400)
    start_ts: int = Field(default=DEFAULT_START_TS, ge=_TS_LOW, description="epoch milliseconds")
    rates_hz: dict[SensorName, Annotated[float, Field(gt=0, le=MAX_RATE_HZ)]] = Field(default_factory=dict)
    events: tuple[Event, ...] = ()
    malformed: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if not DEVICE_ID_PATTERN.fullmatch(self.device_id(self.devices - 1)):
            raise ValueError(f"device_prefix: {self.device_prefix!r} makes invalid device ids")
        if self.end_ts > _TS_HIGH:
            raise ValueError("start_ts: the simulation would end after the year 2100")
        for i, event in enumerate(self.events):
            self._check_event(i, event)
        return self

    def _check_event(self, i: int, event: Event) -> None:
        try:
            self.device_index(event.device)
        except ValueError as exc:
            raise ValueError(f"events.{i}.device: {exc}") from None
        if event.start_s >= self.duration_s:
            raise ValueError(
                f"events.{i}.start_s: {event.start_s} is not before the end ({self.duration_s} s)"
            )

    @property
    def end_ts(self) -> int:
        """Epoch ms just after the last possible sample."""
        return self.start_ts + round(self.duration_s * 1000)

    def device_id(self, index: int) -> str:
        return f"{self.device_prefix}{index:04d}"

    def device_ids(self) -> list[str]:
        return [self.device_id(i) for i in range(self.devices)]

    def device_index(self, device: int | str) -> int:
        """The fleet index of a device given by index or id; ValueError if not in the fleet."""
        if isinstance(device, int):
            index = device
        elif device.startswith(self.device_prefix) and device[len(self.device_prefix) :].isdigit():
            index = int(device[len(self.device_prefix) :])
            if self.device_id(index) != device:
                raise ValueError(f"{device!r} is not spelled like {self.device_id(index)!r}")
        else:
            raise ValueError(f"{device!r} is not a device id with prefix {self.device_prefix!r}")
        if not 0 <= index < self.devices:
            raise ValueError(f"{device!r} is not in the fleet (0..{self.devices - 1})")
        return index

    def rate_hz(self, sensor: str) -> float:
        """The sampling rate: the scenario's override, else the sensor's nominal rate."""
        rates = cast(dict[str, float], self.rates_hz)
        return rates.get(sensor, SENSORS[sensor].rate_hz)


class TruthRecord(TypedDict):
    """One injected event, as published to the truth topic."""

    kind: str
    device_id: str
    sensor: str
    start_ts: int
    end_ts: int
    params: dict[str, Any]
    scenario: str


def event_span_ms(scenario: Scenario, event: Event) -> tuple[int, int]:
    """The event's [start, end) in ms after the scenario start; permanent events end with it."""
    start = round(event.start_s * 1000)
    total = scenario.end_ts - scenario.start_ts
    duration_s: float | None = getattr(event, "duration_s", None)
    if event.kind in _PERMANENT_KINDS or duration_s is None:
        return start, total
    return start, min(total, start + round(duration_s * 1000))


def truth_records(scenario: Scenario) -> list[TruthRecord]:
    """The ground truth, one record per event, ordered by start time (stable for ties)."""
    records = [_truth_record(scenario, e) for e in scenario.events]
    return sorted(records, key=lambda r: r["start_ts"])


def _truth_record(scenario: Scenario, event: Event) -> TruthRecord:
    start, end = event_span_ms(scenario, event)
    params = event.model_dump(exclude={"kind", "device", "sensor", "start_s"}, exclude_none=True)
    return TruthRecord(
        kind=event.kind,
        device_id=scenario.device_id(scenario.device_index(event.device)),
        sensor=event.sensor,
        start_ts=scenario.start_ts + start,
        end_ts=scenario.start_ts + end,
        params=params,
        scenario=scenario.name,
    )


def load_scenario(path: Path, **overrides: Any) -> Scenario:
    """Read and validate a scenario file; ``overrides`` replace top-level keys before validation.

    The scenario's ``name`` defaults to the file name without its extension.
    """
    try:
        data = yamlfile.load(path)
    except FileNotFoundError as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc.strerror}") from None
    except errors.YamlError as exc:
        raise ScenarioError(str(exc)) from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping of scenario keys")
    data = {"name": path.stem} | data | overrides
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: invalid scenario:\n{_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        # Our own checks raise ValueError("key: message"); show it without pydantic's prefix.
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)
