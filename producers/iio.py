"""Real sensors on Linux: the kernel's Industrial I/O (IIO) sysfs interface, sampled to Kafka.

Every IIO device is a directory ``<root>/iio:deviceN/`` (root: ``/sys/bus/iio/devices``) with a
``name`` file and one file per channel attribute (kernel ABI: Documentation/ABI/testing/
sysfs-bus-iio). A channel's value is ``(in_<chan>_raw + offset) * scale``, where ``offset`` and
``scale`` come from ``in_<chan>_offset``/``in_<chan>_scale`` or, shared by every channel of the
type, ``in_<type>_offset``/``in_<type>_scale`` (absent: 0 and 1). A processed ``in_<chan>_input``
already holds the value and is preferred when present. The ABI's units, converted to the wire
format's:

=================  ==========================  =================  =============
IIO channel type   sysfs unit (kernel ABI)     wire sensor        factor
=================  ==========================  =================  =============
accel_{x,y,z}      m/s^2                       accelerometer      1
anglvel_{x,y,z}    rad/s                       gyroscope          1
magn_{x,y,z}       gauss                       magnetometer (uT)  100
humidityrelative   milli percent               humidity (%RH)     0.001
pressure           kilopascal                  pressure (hPa)     10
temp               milli degree Celsius        temperature (degC) 0.001
=================  ==========================  =================  =============

Discovery (:func:`discover`) scans the devices in index order and takes each sensor kind from the
first device that has a complete set of its channels (a Sense HAT: LSM9DS1 accelerometer, gyroscope
and magnetometer, HTS221 humidity and temperature, LPS25H pressure; the LPS25H's temperature is
not used because the HTS221 comes first). ``offset`` and ``scale`` are read once, at discovery.

Error policy: a channel that is missing or unreadable at discovery removes that sensor kind from
that device (logged; another device may supply it). A read that fails while sampling (``EIO`` from
a busy I2C bus, a value that does not parse) skips that sensor's reading for that tick, and a
reading the wire format rejects (out of range) is not published: both are logged (the first
three, then every thousandth per sensor) and counted in :class:`IioReport`, never silently dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from monitor.schema import SENSORS
from producers.publisher import Sample, SampleSink

log = logging.getLogger(__name__)

DEFAULT_ROOT: Final = Path("/sys/bus/iio/devices")
#: IIO channel type -> (wire sensor, factor from the kernel ABI unit to the wire unit).
CHANNEL_TYPES: Final[dict[str, tuple[str, float]]] = {
    "accel": ("accelerometer", 1.0),
    "anglvel": ("gyroscope", 1.0),
    "magn": ("magnetometer", 100.0),  # 1 gauss = 100 uT
    "humidityrelative": ("humidity", 1e-3),  # milli percent -> %RH
    "pressure": ("pressure", 10.0),  # 1 kPa = 10 hPa
    "temp": ("temperature", 1e-3),  # milli degC -> degC
}
_CHANNEL_FILE: Final = re.compile(
    r"in_(?P<type>accel|anglvel|magn|humidityrelative|pressure|temp)(?P<index>\d*)"
    r"(?:_(?P<axis>[xyz]))?_(?P<info>raw|input)"
)
_DEVICE_DIR: Final = re.compile(r"iio:device(\d+)")


@dataclass(frozen=True, slots=True)
class Channel:
    """One channel file and how to turn its content into the wire unit."""

    path: Path  # in_<chan>_raw or in_<chan>_input
    offset: float
    scale: float
    factor: float

    def read(self) -> float:
        """The current value in the wire unit; ``OSError``/``ValueError`` if it cannot be read."""
        raw = float(self.path.read_text(encoding="ascii").strip())
        return (raw + self.offset) * self.scale * self.factor


@dataclass(frozen=True, slots=True)
class Source:
    """One sensor kind as provided by one IIO device."""

    sensor: str
    device: str  # directory name, e.g. iio:device0
    name: str  # the device's `name`, e.g. lsm9ds1_accel
    channels: dict[str, Channel]  # wire value key -> channel
    sampling_frequency: float | None  # the device's own rate (Hz), if it exposes one

    def read(self) -> dict[str, float]:
        return {key: ch.read() for key, ch in self.channels.items()}

    def describe(self) -> str:
        files = ", ".join(ch.path.name for ch in self.channels.values())
        rate = f"{self.sampling_frequency:g} Hz" if self.sampling_frequency else "rate unknown"
        return f"{self.sensor:<13} {self.device} ({self.name}, {rate}): {files}"


def discover(root: Path) -> list[Source]:
    """Each sensor kind from the first device (in index order) that has all its channels."""
    if not root.is_dir():
        raise FileNotFoundError(f"IIO root not found: {root}")
    chosen: dict[str, Source] = {}
    for device in _device_dirs(root):
        for source in scan_device(device):
            chosen.setdefault(source.sensor, source)
    if not chosen:
        raise ValueError(f"no supported IIO channels under {root}")
    return sorted(chosen.values(), key=lambda s: list(SENSORS).index(s.sensor))


def _device_dirs(root: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _DEVICE_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def scan_device(device: Path) -> list[Source]:
    """Every sensor kind a device directory offers completely (lowest channel index wins)."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(device.iterdir()):
        m = _CHANNEL_FILE.fullmatch(path.name)
        if m is None:
            continue
        key = m.group("axis") or "value"
        files = groups.setdefault((m.group("type"), m.group("index")), {})
        if m.group("info") == "input" or key not in files:  # a processed value beats a raw one
            files[key] = path
    name = _read_optional(device / "name") or device.name
    sources: dict[str, Source] = {}
    for (kind, _index), files in sorted(groups.items(), key=lambda g: (g[0][0], int(g[0][1] or -1))):
        sensor = CHANNEL_TYPES[kind][0]
        if sensor in sources or set(files) != set(SENSORS[sensor].keys):
            continue
        channels = _channels(device, kind, files)
        if channels is not None:
            sources[sensor] = Source(sensor, device.name, name, channels, _rate(device, kind))
    return list(sources.values())


def _rate(device: Path, kind: str) -> float | None:
    """The hardware rate: ``in_<type>_sampling_frequency``, else the device's ``sampling_frequency``."""
    for path in (device / f"in_{kind}_sampling_frequency", device / "sampling_frequency"):
        rate = _number_or_none(_read_optional(path))
        if rate:
            return rate
    return None


def _channels(device: Path, kind: str, files: dict[str, Path]) -> dict[str, Channel] | None:
    """The channels of one sensor kind, or None (logged) if one of them cannot be read."""
    factor = CHANNEL_TYPES[kind][1]
    out: dict[str, Channel] = {}
    try:
        for key, path in sorted(files.items()):
            if path.name.endswith("_input"):
                out[key] = Channel(path, 0.0, 1.0, factor)
            else:
                prefix = path.name.removesuffix("_raw")
                offset = _attribute(device, prefix, kind, "offset", 0.0)
                scale = _attribute(device, prefix, kind, "scale", 1.0)
                out[key] = Channel(path, offset, scale, factor)
            out[key].read()  # readable now, or the kind is not used
    except (OSError, ValueError) as exc:
        log.warning("%s: %s channels unusable: %s", device.name, kind, exc)
        return None
    return out


def _attribute(device: Path, prefix: str, kind: str, info: str, default: float) -> float:
    """``<prefix>_<info>`` (this channel), else ``in_<kind>_<info>`` (shared by type), else default."""
    for name in (f"{prefix}_{info}", f"in_{kind}_{info}"):
        path = device / name
        if path.exists():
            return float(path.read_text(encoding="ascii").strip())
    return default


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _number_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass
class IioReport:
    """What a sampling run did, per sensor: published, failed reads, rejected readings."""

    ticks: int = 0
    published: Counter[str] = field(default_factory=Counter)
    read_errors: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        sent = sum(self.published.values())
        return (
            f"{self.ticks} samples, {sent} readings published, {sum(self.read_errors.values())} "
            f"failed reads {dict(self.read_errors)}, {sum(self.rejected.values())} rejected "
            f"{dict(self.rejected)}"
        )


@dataclass(frozen=True, slots=True)
class Sampling:
    """How often to sample, and how many ticks (None: until stopped)."""

    rate_hz: float
    count: int | None = None


class Sampler:
    """Reads every source once per tick and publishes what it read."""

    def __init__(
        self,
        sources: Iterable[Source],
        publisher: SampleSink,
        device_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = list(sources)
        self.publisher = publisher
        self.device_id = device_id
        self.clock = clock
        self.report = IioReport()

    def tick(self) -> None:
        ts = int(self.clock() * 1000)
        for source in self.sources:
            try:
                values = source.read()
            except (OSError, ValueError) as exc:
                self._count(self.report.read_errors, source, f"read failed: {exc}")
                continue
            rejection = self.publisher.publish(Sample(self.device_id, source.sensor, ts, values))
            if rejection is None:
                self.report.published[source.sensor] += 1
            else:
                self._count(self.report.rejected, source, f"{rejection.reason}: {rejection.detail}")
        self.report.ticks += 1

    def _count(self, counter: Counter[str], source: Source, what: str) -> None:
        counter[source.sensor] += 1
        n = counter[source.sensor]
        if n <= 3 or n % 1000 == 0:
            log.warning("%s %s (%s): %s (%d so far)", source.device, source.sensor, source.name, what, n)


def sample(sampler: Sampler, sampling: Sampling, stop: threading.Event) -> IioReport:
    """Tick at ``rate_hz`` until stopped or ``count`` ticks (a late tick is not made up)."""
    period = 1.0 / sampling.rate_hz
    due = time.monotonic()
    while not stop.is_set():
        sampler.tick()
        sampler.publisher.check()  # serve delivery reports, fail fast on errors
        if sampling.count is not None and sampler.report.ticks >= sampling.count:
            break
        due = max(due + period, time.monotonic())
        stop.wait(max(0.0, due - time.monotonic()))
    return sampler.report


def seq_start(clock: Callable[[], float] = time.time) -> int:
    """The first ``seq``: wall-clock microseconds, so a restarted sampler keeps counting upwards.

    The monitor flags a ``seq`` that goes backwards as out of order; at any rate below 1 MHz the
    numbers of a new run start above the last one of the previous run.
    """
    return int(clock() * 1_000_000)


def warn_about_rates(sources: Iterable[Source], rate_hz: float) -> None:
    for s in sources:
        if s.sampling_frequency and rate_hz > s.sampling_frequency:
            log.warning(
                "%s %s updates at %g Hz; sampling at %g Hz repeats values",
                s.device,
                s.sensor,
                s.sampling_frequency,
                rate_hz,
            )
