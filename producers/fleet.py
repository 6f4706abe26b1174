"""Physically grounded, seeded signal models for a fleet of devices, vectorised over devices.

Every sensor model turns epoch-millisecond sample times of shape ``(T,)`` into readings of
shape ``(T, devices, keys)`` in SI-style units (``SENSORS[name].unit``):

* accelerometer, m/s^2: gravity (9.80665) on z, a per-device calibration offset, machine
  vibration (a sinusoid at a device-specific frequency below the 5 Hz Nyquist limit) and noise;
* gyroscope, rad/s: a small per-device bias and noise around 0;
* magnetometer, uT: an Earth-like field of 25-65 uT (device-specific dip and heading), a
  hard-iron offset and noise;
* temperature, degC: a daily cycle around a device-specific base of 18-28 degC, plus noise;
* humidity, %RH: anti-correlated with temperature at constant absolute humidity (Magnus);
* pressure, hPa: around 1013 with a weather-scale random walk (about 1 hPa per hour).

Randomness is seeded only: per sensor, one generator draws the device parameters and another the
noise, each from ``numpy.random.default_rng((seed, stream, sensor index))``. A model draws exactly
one ``standard_normal`` block per call, filled in time order, so the readings do not depend on how
the time axis is cut into blocks. Injected faults (:func:`build_injectors`) draw from their own
generators, so adding an event leaves every other device and sensor byte-identical. Events that
change messages rather than values (clock skew, duplicates, late delivery, reboots) are applied in
transit by :mod:`producers.transport`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from monitor.schema import SENSOR_INDEX, SENSOR_NAMES, SENSORS, SensorSpec
from producers.scenario import (
    AbruptShift,
    CalibrationOffset,
    Dropout,
    Event,
    GradualDrift,
    SamplingRateChange,
    Saturation,
    Scenario,
    SpikeBurst,
    StuckAt,
    UnitChange,
    VarianceIncrease,
    event_span_ms,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GRAVITY: Final = 9.80665  # m/s^2, standard gravity
DAY_MS: Final = 86_400_000
#: Decimal places sent per sensor: about a tenth of the smallest noise level, like a real ADC.
DECIMALS: Final[dict[str, int]] = {
    "accelerometer": 4,
    "gyroscope": 5,
    "magnetometer": 3,
    "humidity": 3,
    "pressure": 3,
    "temperature": 3,
}
_PARAMS_STREAM: Final = 1
_NOISE_STREAM: Final = 2
_EVENT_STREAM: Final = 3
#: Readings generated at once per sensor (samples x devices), to bound memory.
_BLOCK_READINGS: Final = 16_384


class SensorModel(ABC):
    """One sensor kind for the whole fleet: device parameters drawn once, then noisy samples."""

    name: ClassVar[str]
    noise_range: ClassVar[tuple[float, float]]  # per-device noise std, uniform in this range
    normals: ClassVar[int]  # standard normals drawn per device and sample

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        self.devices = devices
        self.noise_std: FloatArray = params.uniform(*self.noise_range, size=devices)
        self._noise = noise

    @property
    def spec(self) -> SensorSpec:
        return SENSORS[self.name]

    def sample(self, t_ms: IntArray) -> FloatArray:
        """Raw readings, shape ``(len(t_ms), devices, keys)``; ``t_ms`` ascending, epoch ms."""
        z = self._noise.standard_normal((len(t_ms), self.devices, self.normals))
        return self._signal(t_ms, z)

    @abstractmethod
    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray: ...


class Accelerometer(SensorModel):
    name = "accelerometer"
    noise_range = (0.01, 0.04)
    normals = 3

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        super().__init__(devices, params, noise)
        self.offset = params.normal(0.0, 0.05, (devices, 3))
        self.vibration_hz = params.uniform(0.5, 4.5, devices)
        self.vibration_amp = params.uniform(0.02, 0.2, (devices, 3))
        self.vibration_phase = params.uniform(0.0, 2 * math.pi, (devices, 3))

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        t = (t_ms / 1000.0)[:, None, None]
        angle = 2 * math.pi * self.vibration_hz[:, None] * t + self.vibration_phase
        gravity = np.array([0.0, 0.0, GRAVITY])
        out: FloatArray = gravity + self.offset + self.vibration_amp * np.sin(angle)
        return out + z * self.noise_std[:, None]


class Gyroscope(SensorModel):
    name = "gyroscope"
    noise_range = (0.001, 0.004)
    normals = 3

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        super().__init__(devices, params, noise)
        self.bias = params.normal(0.0, 0.003, (devices, 3))

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        out: FloatArray = self.bias + z * self.noise_std[:, None]
        return out


class Magnetometer(SensorModel):
    name = "magnetometer"
    noise_range = (0.1, 0.4)
    normals = 3

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        super().__init__(devices, params, noise)
        strength = params.uniform(25.0, 65.0, devices)
        dip = np.radians(params.uniform(-70.0, 70.0, devices))
        heading = params.uniform(0.0, 2 * math.pi, devices)
        field = np.stack([np.cos(dip) * np.cos(heading), np.cos(dip) * np.sin(heading), np.sin(dip)], axis=1)
        hard_iron = params.normal(0.0, 1.5, (devices, 3))
        self.field: FloatArray = strength[:, None] * field + hard_iron

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        out: FloatArray = self.field + z * self.noise_std[:, None]
        return out


class Temperature(SensorModel):
    name = "temperature"
    noise_range = (0.05, 0.15)
    normals = 1

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        super().__init__(devices, params, noise)
        self.base = params.uniform(18.0, 28.0, devices)
        self.daily_amp = params.uniform(1.0, 3.0, devices)
        self.peak_ms = params.uniform(12.0, 17.0, devices) * 3_600_000  # warmest hour, UTC
        self.offset = params.normal(0.0, 0.2, devices)

    def true_temperature(self, t_ms: IntArray) -> FloatArray:
        """The air temperature around each device, shape ``(T, devices)`` (no sensor error)."""
        phase = 2 * math.pi * ((t_ms % DAY_MS)[:, None] - self.peak_ms) / DAY_MS
        out: FloatArray = self.base + self.daily_amp * np.cos(phase)
        return out

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        out = self.true_temperature(t_ms) + self.offset + z[..., 0] * self.noise_std
        return out[..., None]


def saturation_vapour_hpa(t_c: FloatArray) -> FloatArray:
    """Saturation vapour pressure over water (Magnus formula, WMO coefficients)."""
    out: FloatArray = 6.112 * np.exp(17.62 * t_c / (243.12 + t_c))
    return out


class Humidity(SensorModel):
    """Relative humidity at constant absolute humidity: it falls as the air warms."""

    name = "humidity"
    noise_range = (0.3, 0.8)
    normals = 1

    def __init__(
        self,
        devices: int,
        params: np.random.Generator,
        noise: np.random.Generator,
        temperature: Temperature,
    ):
        super().__init__(devices, params, noise)
        self.temperature = temperature
        rh_at_base = params.uniform(35.0, 60.0, devices)
        self.vapour_hpa = rh_at_base / 100.0 * saturation_vapour_hpa(temperature.base)
        self.offset = params.normal(0.0, 1.0, devices)

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        air = self.temperature.true_temperature(t_ms)
        rh = 100.0 * self.vapour_hpa / saturation_vapour_hpa(air)
        return (rh + self.offset + z[..., 0] * self.noise_std)[..., None]


class Pressure(SensorModel):
    """Station pressure: a site level plus smooth weather-scale swings (two slow sinusoids with
    periods of 3-12 h and amplitudes of 0.5-2 hPa per device): real pressure changes by ~1 hPa/h
    but is smooth from one second to the next."""

    name = "pressure"
    noise_range = (0.03, 0.1)
    normals = 1

    def __init__(self, devices: int, params: np.random.Generator, noise: np.random.Generator):
        super().__init__(devices, params, noise)
        self.site = 1013.25 + params.normal(0.0, 6.0, devices)
        self.offset = params.normal(0.0, 0.3, devices)
        self.weather_amp = params.uniform(0.5, 2.0, (devices, 2))
        self.weather_period_s = params.uniform(3 * 3600.0, 12 * 3600.0, (devices, 2))
        self.weather_phase = params.uniform(0.0, 2 * math.pi, (devices, 2))

    def _signal(self, t_ms: IntArray, z: FloatArray) -> FloatArray:
        t = (t_ms / 1000.0)[:, None, None]
        swings = self.weather_amp * np.sin(2 * math.pi * t / self.weather_period_s + self.weather_phase)
        out: FloatArray = self.site + self.offset + swings.sum(axis=-1) + z[..., 0] * self.noise_std
        return out[..., None]


class Fleet:
    """The signal models of every sensor kind for ``devices`` devices, seeded by ``seed``."""

    def __init__(self, devices: int, seed: int):
        def rngs(name: str) -> tuple[np.random.Generator, np.random.Generator]:
            index = SENSOR_INDEX[name]
            return (
                np.random.default_rng((seed, _PARAMS_STREAM, index)),
                np.random.default_rng((seed, _NOISE_STREAM, index)),
            )

        temperature = Temperature(devices, *rngs("temperature"))
        models: list[SensorModel] = [
            Accelerometer(devices, *rngs("accelerometer")),
            Gyroscope(devices, *rngs("gyroscope")),
            Magnetometer(devices, *rngs("magnetometer")),
            Humidity(devices, *rngs("humidity"), temperature),
            Pressure(devices, *rngs("pressure")),
            temperature,
        ]
        self.models: dict[str, SensorModel] = {m.name: m for m in models}


@dataclass(frozen=True, slots=True)
class Target:
    """Where an injected fault acts: one device, some value columns, ms ``[start, end)``."""

    device: int
    columns: slice  # the changed keys of ``spec.keys``: one axis or all
    start_ms: int  # after the scenario start
    end_ms: int


class Injector(ABC):
    """One injected fault, changing only its target's samples."""

    def __init__(self, target: Target):
        self.target = target

    def apply(self, offsets_ms: IntArray, values: FloatArray) -> None:
        """Change ``values`` (T, devices, keys) in place; ``offsets_ms`` are ms after the start."""
        t = self.target
        hit = (offsets_ms >= t.start_ms) & (offsets_ms < t.end_ms)
        if not hit.any():
            return
        rows = values[hit, t.device, :]
        self._change(offsets_ms[hit] - t.start_ms, rows)
        values[hit, t.device, :] = rows

    @abstractmethod
    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        """Change ``rows`` (n, keys) in place; ``elapsed_ms`` counts from the event start."""


class _Drift(Injector):
    def __init__(self, target: Target, event: GradualDrift):
        super().__init__(target)
        self.magnitude = event.magnitude
        self.ramp_ms = event.duration_s * 1000.0

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        ramp = np.minimum(elapsed_ms / self.ramp_ms, 1.0)
        rows[:, self.target.columns] += (self.magnitude * ramp)[:, None]


class _Shift(Injector):
    def __init__(self, target: Target, event: AbruptShift | CalibrationOffset):
        super().__init__(target)
        self.magnitude = event.magnitude

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        rows[:, self.target.columns] += self.magnitude


class _Spikes(Injector):
    def __init__(self, target: Target, event: SpikeBurst, rng: np.random.Generator):
        super().__init__(target)
        self.magnitude = event.magnitude
        self.probability = event.probability
        self.rng = rng

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        u = self.rng.random((len(elapsed_ms), 2))
        sign = np.where(u[:, 1] < 0.5, -1.0, 1.0)
        spikes = np.where(u[:, 0] < self.probability, sign * self.magnitude, 0.0)
        rows[:, self.target.columns] += spikes[:, None]


class _Stuck(Injector):
    def __init__(self, target: Target, event: StuckAt):
        super().__init__(target)
        self.held: FloatArray | float | None = event.value

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        if self.held is None:
            self.held = rows[0, self.target.columns].copy()  # frozen at the reading at start_s
        rows[:, self.target.columns] = self.held


class _Noisier(Injector):
    def __init__(self, target: Target, event: VarianceIncrease, rng: np.random.Generator, noise_std: float):
        super().__init__(target)
        # Independent extra noise that brings the variance to factor^2 times the device's own.
        self.extra_std = noise_std * math.sqrt(event.factor**2 - 1.0)
        self.rng = rng

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        selected = rows[:, self.target.columns]
        noise = self.extra_std * self.rng.standard_normal(selected.shape)
        rows[:, self.target.columns] = selected + noise


class _Dropout(Injector):
    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        rows[:] = np.nan  # NaN marks a reading lost in transit


class _Saturation(Injector):
    def __init__(self, target: Target, event: Saturation):
        super().__init__(target)
        self.limit = event.limit
        self.clip = np.minimum if event.side == "upper" else np.maximum

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        rows[:, self.target.columns] = self.clip(rows[:, self.target.columns], self.limit)


class _UnitChange(Injector):
    def __init__(self, target: Target, event: UnitChange):
        super().__init__(target)
        self.factor = event.factor
        self.offset = event.offset

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        rows[:] = rows * self.factor + self.offset


class _RateChange(Injector):
    """Keeps the samples of a ``factor`` times slower grid; marks the others +inf (not taken)."""

    def __init__(self, target: Target, event: SamplingRateChange, rate_hz: float):
        super().__init__(target)
        self.factor = event.factor
        self.rate_hz = rate_hz

    def _change(self, elapsed_ms: IntArray, rows: FloatArray) -> None:
        k = np.round(elapsed_ms * self.rate_hz / 1000.0)  # sample number since the event start
        taken = np.floor(k * self.factor) > np.floor((k - 1) * self.factor)
        rows[~taken] = np.inf


def build_injectors(scenario: Scenario, fleet: Fleet) -> dict[str, list[Injector]]:
    """The scenario's events as injectors, per sensor, in the order the scenario lists them."""
    out: dict[str, list[Injector]] = {name: [] for name in SENSOR_NAMES}
    for i, event in enumerate(scenario.events):
        rng = event_rng(scenario, i)
        injector = _injector(scenario, fleet, event, rng)
        if injector is not None:
            out[event.sensor].append(injector)
    return out


def event_rng(scenario: Scenario, index: int) -> np.random.Generator:
    """The generator of the scenario's ``index``-th event: its own stream, whatever else runs."""
    return np.random.default_rng((scenario.seed, _EVENT_STREAM, index))


def _target(scenario: Scenario, event: Event) -> Target:
    columns = slice(None)
    if event.axis is not None:
        i = SENSORS[event.sensor].keys.index(event.axis)
        columns = slice(i, i + 1)  # a slice keeps rows 2-D: (n, 1) broadcasts like (n, keys)
    return Target(scenario.device_index(event.device), columns, *event_span_ms(scenario, event))


def _injector(scenario: Scenario, fleet: Fleet, event: Event, rng: np.random.Generator) -> Injector | None:
    """The event's injector; None for events applied in transit (``producers.transport``)."""
    target = _target(scenario, event)
    match event:
        case GradualDrift():
            return _Drift(target, event)
        case AbruptShift() | CalibrationOffset():
            return _Shift(target, event)
        case SpikeBurst():
            return _Spikes(target, event, rng)
        case StuckAt():
            return _Stuck(target, event)
        case VarianceIncrease():
            noise_std = float(fleet.models[event.sensor].noise_std[target.device])
            return _Noisier(target, event, rng, noise_std)
        case Dropout():
            return _Dropout(target)
        case SamplingRateChange():
            return _RateChange(target, event, scenario.rate_hz(event.sensor))
        case Saturation():
            return _Saturation(target, event)
        case UnitChange():
            return _UnitChange(target, event)
        case _:
            return None


def sample_offsets_ms(rate_hz: float, duration_s: float) -> IntArray:
    """Sample times in ms after the start: ``round(k * 1000 / rate)``, all before the end."""
    end_ms = round(duration_s * 1000)
    k = np.arange(math.ceil(duration_s * rate_hz) + 1, dtype=np.float64)
    offsets = np.round(k * 1000.0 / rate_hz).astype(np.int64)
    return offsets[offsets < end_ms]


class SensorStream:
    """The finished readings of one sensor for the whole fleet, sample after sample.

    Finished means: injected faults applied, clipped to the sensor's range (the monitor rejects
    anything outside), rounded to :data:`DECIMALS`. A dropped reading is a row of NaN; a sample the
    device did not take (``sampling_rate_change``) is an empty row. Values are generated in blocks
    of samples; the blocking does not change them.
    """

    def __init__(
        self,
        model: SensorModel,
        injectors: Sequence[Injector],
        offsets_ms: IntArray,
        start_ts: int,
    ):
        self.model = model
        self.injectors = injectors
        self.offsets_ms = offsets_ms
        self.start_ts = start_ts
        self.block = max(1, _BLOCK_READINGS // model.devices)
        self._next = 0  # index of the next sample in offsets_ms
        self._rows: list[list[list[float]]] = []

    def next_readings(self) -> list[list[float]]:
        """The next sample of every device: ``devices`` lists of values in ``spec.keys`` order."""
        if not self._rows:
            self._generate()
        self._next += 1
        return self._rows.pop()

    def _generate(self) -> None:
        offsets = self.offsets_ms[self._next : self._next + self.block]
        if not len(offsets):
            raise IndexError(f"{self.model.name}: no samples left")
        values = self.model.sample(self.start_ts + offsets)
        for injector in self.injectors:
            injector.apply(offsets, values)
        spec = self.model.spec
        not_taken = np.isposinf(values).any(axis=-1)
        np.clip(values, spec.low, spec.high, out=values)
        rows: list[list[list[float]]] = np.round(values, DECIMALS[spec.name]).tolist()
        for t, device in zip(*np.nonzero(not_taken), strict=True):
            rows[t][device] = []
        rows.reverse()  # popped from the end
        self._rows = rows
