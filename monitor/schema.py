"""The wire format: one sensor reading per Kafka message, JSON, keyed by ``device_id``.

Shared by the monitor (decoding and strict validation) and the producers (encoding).

A message looks like::

    {"device_id": "dev-0001", "sensor": "accelerometer", "ts": 1764000000000, "seq": 42,
     "values": {"x": 0.02, "y": -0.11, "z": 9.81}, "unit": "m/s^2", "schema_version": 1}

Bad input is an error *value* (:class:`Rejection`) carrying a machine-readable :class:`Reason`,
never an exception: the caller routes it to the dead-letter topic.

>>> raw = encode_reading("dev-1", "temperature", 1_700_000_000_000, 7, {"value": 21.5})
>>> decode(raw, b"dev-1").sensor
'temperature'
>>> decode(b'{"device_id": "dev-1"}', b"dev-1").reason
<Reason.MISSING_FIELD: 'missing_field'>
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import re
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Union, cast

import msgspec
import numpy as np
from numpy.typing import NDArray

SCHEMA_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 4096
DEVICE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


#: The most values a reading of one sensor may hold (the pair model's and the ring's width).
MAX_AXES: Final = 3
#: Names of sensors (channels) and of their value keys.
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Units: 1 to 32 characters, no quote, backslash or control character.
UNIT_PATTERN: Final = re.compile(r'[^"\\\x00-\x1f]{1,32}')
#: The range of a channel registered automatically: every finite value (nobody declared a range).
AUTO_LOW: Final = -sys.float_info.max
AUTO_HIGH: Final = sys.float_info.max


@dataclasses.dataclass(frozen=True, slots=True)
class SensorSpec:
    """What a sensor kind (a channel) sends: its value keys, its unit, and the physically possible
    range."""

    name: str
    keys: tuple[str, ...]
    unit: str
    low: float
    high: float
    rate_hz: float  # nominal sampling rate, used by the simulator and the gap check
    resolution: float  # smallest meaningful change: floors the noise a model may learn
    # Keyword-only: fastest plausible change of the level, units per second (0: unchecked); the
    # weight of its pair models' trend (0: a level alone; model.trend, when set, overrides it); and
    # whether it was registered on its first reading (channels.auto_register), not declared.
    max_rate: float = dataclasses.field(default=0.0, kw_only=True)
    trend: float = dataclasses.field(default=0.0, kw_only=True)
    auto: bool = dataclasses.field(default=False, kw_only=True)

    @property
    def is_vector(self) -> bool:
        return len(self.keys) > 1


VECTOR_KEYS: Final = ("x", "y", "z")
SCALAR_KEYS: Final = ("value",)

#: The six built-in sensor kinds. Ranges are the full scale of common MEMS parts (LSM9DS1, HTS221,
#: LPS25H): anything outside cannot come from a working sensor and is rejected as out_of_range.
#: Rates of change (``max_rate``) are set where the physics of the environment bounds them: air
#: temperature 20 degC per hour (the limit data-centre guidelines give for the fastest allowed
#: swing) and station pressure 10 hPa per hour (several times the deepest storms' fall); motion
#: and humidity (breath, a door) change as fast as they like.
#: A trend (``trend``, Holt's linear trend: docs/concepts/models.md) is given to the
#: environmental kinds, whose quantities have inertia and so ramp (a heater, the sun, a weather
#: front): a level alone lags a ramp and its scores drift up with nothing wrong. Motion kinds move
#: in steps (the device turned, an activity changed), which a trend would stretch into a ramp that
#: overshoots. ENV_TREND makes the trend's memory ``1 / (fading * trend)`` about three times the
#: level's: long enough that noise does not make a slope, short enough to follow one that turns.
ENV_TREND: Final = 0.3
BUILTIN: Final = (
    SensorSpec("accelerometer", VECTOR_KEYS, "m/s^2", -156.9, 156.9, 10.0, 1e-3),  # +-16 g
    SensorSpec("gyroscope", VECTOR_KEYS, "rad/s", -34.9, 34.9, 10.0, 1e-4),  # +-2000 dps
    SensorSpec("magnetometer", VECTOR_KEYS, "uT", -1600.0, 1600.0, 5.0, 1e-2),  # +-16 gauss
    SensorSpec("humidity", SCALAR_KEYS, "%RH", 0.0, 100.0, 1.0, 1e-2, trend=ENV_TREND),
    SensorSpec(
        "pressure", SCALAR_KEYS, "hPa", 260.0, 1260.0, 1.0, 1e-2, max_rate=10.0 / 3600, trend=ENV_TREND
    ),
    SensorSpec(
        "temperature", SCALAR_KEYS, "degC", -40.0, 125.0, 1.0, 1e-2, max_rate=20.0 / 3600, trend=ENV_TREND
    ),
)
#: The built-in kinds by name: what the simulator and the device producers send.
SENSORS: Final[dict[str, SensorSpec]] = {s.name: s for s in BUILTIN}
SENSOR_NAMES: Final = tuple(SENSORS)
SENSOR_INDEX: Final = {name: i for i, name in enumerate(SENSOR_NAMES)}


class Reason(StrEnum):
    """Why a message was quarantined. The value is the ``telemon.reason`` dead-letter header."""

    OVERSIZE = "oversize"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    EXTRA_FIELD = "extra_field"
    DUPLICATE_KEY = "duplicate_key"
    WRONG_TYPE = "wrong_type"
    BAD_DEVICE_ID = "bad_device_id"
    KEY_MISMATCH = "key_mismatch"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_SENSOR = "unknown_sensor"
    WRONG_UNIT = "wrong_unit"
    BAD_VALUES = "bad_values"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    MISSING_KEY = "missing_key"
    CHANNEL_MISMATCH = "channel_mismatch"  # not the axes or unit a channel was registered with
    TOO_LARGE = "too_large"  # only as a dead letter's reason: the record was truncated to fit
    # Operators' feedback records (monitor/analyze/feedback.py) only:
    BAD_ALERT_ID = "bad_alert_id"  # not 16 lowercase hex characters
    BAD_VERDICT = "bad_verdict"  # not true_positive, false_positive or expected_maintenance


class Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One validated sensor reading."""

    device_id: str
    sensor: str
    ts: int
    seq: int
    values: dict[str, float]
    unit: str
    schema_version: int

    def features(self) -> tuple[float, ...]:
        """The values in the sensor's key order (:func:`validate` puts them so)."""
        return tuple(self.values.values())


def features_of(v: dict[str, float]) -> tuple[float, ...]:
    """Values by key: ``(value,)``, ``(x, y, z)``, or, for other keys, in the dict's order.

    >>> features_of({"z": 3.0, "x": 1.0, "y": 2.0})
    (1.0, 2.0, 3.0)
    """
    if v.keys() == {"value"}:
        return (v["value"],)
    if v.keys() == {"x", "y", "z"}:
        return (v["x"], v["y"], v["z"])
    return tuple(v.values())


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed validation: routed to the dead-letter topic, never dropped."""

    reason: Reason
    detail: str


_DECODER: Final = msgspec.json.Decoder(Reading)
_ENCODER: Final = msgspec.json.Encoder()
# ts must be a plausible UTC epoch in milliseconds: 2000-01-01 .. 2100-01-01.
_TS_LOW: Final = 946_684_800_000
_TS_HIGH: Final = 4_102_444_800_000
_SEQ_HIGH: Final = 2**63 - 1
#: The keys of a reading besides its values' keys.
_TOP_KEYS: Final = 7


class TypedReading(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="sensor"):
    """A reading decoded by :func:`decode_batch`, which msgspec checked while decoding it: one
    subclass per sensor kind (its ``sensor`` the tag), whose ``values`` hold exactly the kind's keys,
    each in its range, with the kind's unit and the schema version; ``ts`` and ``seq`` in range."""

    sensor: ClassVar[str]
    #: Quotes in such a message without a backslash: two per key and per string value
    #: (device_id, sensor, unit). More keys would mean more quotes: the count finds a repeated key.
    n_quotes: ClassVar[int]
    device_id: str
    ts: Annotated[int, msgspec.Meta(ge=_TS_LOW, le=_TS_HIGH)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=_SEQ_HIGH)]
    values: Any

    def features(self) -> tuple[float, ...]:
        """The values in the sensor's key order."""
        out: tuple[float, ...] = msgspec.structs.astuple(self.values)
        return out


#: What the stages downstream of decoding read: either kind of reading.
ReadingLike = Reading | TypedReading


def _typed(spec: SensorSpec) -> type[TypedReading]:
    value = Annotated[float, msgspec.Meta(ge=spec.low, le=spec.high)]
    values = msgspec.defstruct(
        f"{spec.name}_values", [(k, value) for k in spec.keys], frozen=True, forbid_unknown_fields=True
    )
    fields = [
        ("values", values),
        ("unit", Literal[spec.unit]),
        ("schema_version", Literal[SCHEMA_VERSION]),
    ]
    namespace = {"sensor": spec.name, "n_quotes": 2 * (_TOP_KEYS + len(spec.keys) + 3)}
    cls = msgspec.defstruct(
        f"{spec.name}_reading", fields, bases=(TypedReading,), tag=spec.name, namespace=namespace
    )
    return cast("type[TypedReading]", cls)


class Catalog:
    """The sensors (channels) a deployment monitors, in index order: the six built-in kinds and the
    channels its settings declare (:meth:`monitor.settings.Settings.catalog`), then the channels
    registered automatically so far, and ``spare`` free indices for more (``channels.auto_register``:
    see :meth:`register`). It decodes and validates readings of its sensors; a reading of any other
    sensor is rejected as ``unknown_sensor``.

    Per-device state is laid out by the catalog: ``capacity`` entries per pair (every index,
    spare ones included), and, for state kept per axis, ``dims`` entries, sensor ``s`` at
    ``offsets[s]``: as many as its axes for a declared sensor, :data:`MAX_AXES` for an automatic
    one (registered or spare), whose axes nobody knows before its first reading.

    >>> current = SensorSpec("current", ("value",), "A", 0.0, 100.0, 1.0, 1e-4)
    >>> Catalog((*BUILTIN, current)).index["current"]
    6
    >>> c = Catalog(BUILTIN, spare=2)
    >>> c.capacity, c.dims, c.offsets[6:]
    (8, 18, (12, 15))
    >>> co2 = SensorSpec("co2", ("value",), "ppm", AUTO_LOW, AUTO_HIGH, 1.0, 0.01, auto=True)
    >>> c.register(co2).index["co2"]
    6
    """

    def __init__(self, specs: Sequence[SensorSpec], spare: int = 0) -> None:
        self.specs = tuple(specs)
        self.spare = spare
        self.by_name = {s.name: s for s in self.specs}
        if len(self.by_name) != len(self.specs):
            raise ValueError("sensor names must be unique")
        if any(a.auto and not b.auto for a, b in itertools.pairwise(self.specs)):
            raise ValueError("channels registered automatically come after the declared ones")
        self.names = tuple(self.by_name)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.key_sets = {s.name: frozenset(s.keys) for s in self.specs}
        self.auto = tuple(s.name for s in self.specs if s.auto)
        self.capacity = len(self.specs) + spare
        widths = [MAX_AXES if s.auto else len(s.keys) for s in self.specs] + [MAX_AXES] * spare
        self.offsets = tuple(itertools.accumulate(widths[:-1], initial=0)) if widths else ()
        self.dims = sum(widths)

    def register(self, spec: SensorSpec) -> Catalog:
        """This catalog with ``spec``, a channel registered automatically, at the first spare index."""
        if not spec.auto or not self.spare or spec.name in self.by_name:
            raise ValueError(f"cannot register {spec.name!r} automatically here")
        return Catalog((*self.specs, spec), self.spare - 1)

    def axes(self) -> NDArray[np.int64]:
        """The number of axes of the sensor at each index up to ``capacity`` (0: a spare index)."""
        return np.array([len(s.keys) for s in self.specs] + [0] * self.spare, np.int64)

    @functools.cached_property
    def one_typed(self) -> msgspec.json.Decoder[Any]:
        """Decodes one message of a sensor of the catalog to its :class:`TypedReading` subclass."""
        # With a single kind msgspec would accept a message without "sensor": the quote count of
        # _passes (two quotes fewer for the key, two for the value) still finds it.
        typed = self._typed
        return msgspec.json.Decoder(Union[typed])  # noqa: UP007

    @functools.cached_property
    def batch_typed(self) -> msgspec.json.Decoder[Any]:
        """Decodes a JSON array of such messages."""
        typed = self._typed
        return msgspec.json.Decoder(list[Union[typed]])  # type: ignore[valid-type]  # noqa: UP007

    @functools.cached_property
    def _typed(self) -> tuple[type[TypedReading], ...]:
        return tuple(_typed(spec) for spec in self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and (self.specs, self.spare) == (other.specs, other.spare)

    def __hash__(self) -> int:
        return hash((self.specs, self.spare))

    def __repr__(self) -> str:
        spare = f"; {self.spare} spare" if self.spare else ""
        return f"Catalog({', '.join(self.names)}{spare})"


#: The built-in kinds only: what a deployment that declares no channels monitors.
DEFAULT_CATALOG: Final = Catalog(BUILTIN)


def encode_reading(
    device_id: str,
    sensor: str,
    ts: int,
    seq: int,
    values: dict[str, float],
    unit: str | None = None,
    catalog: Catalog = DEFAULT_CATALOG,
) -> bytes:
    """Encode one reading in the wire format (unit defaults to the sensor's unit in ``catalog``)."""
    return _ENCODER.encode(
        Reading(
            device_id=device_id,
            sensor=sensor,
            ts=ts,
            seq=seq,
            values=values,
            unit=catalog.by_name[sensor].unit if unit is None else unit,
            schema_version=SCHEMA_VERSION,
        )
    )


def decode(
    value: bytes | None,
    key: bytes | None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    latest_ts: int | None = None,
    require_key: bool = False,
    catalog: Catalog = DEFAULT_CATALOG,
) -> Reading | Rejection:
    """Decode and strictly validate one message value; the key must equal its device_id.

    ``latest_ts`` (epoch ms), when given, is the latest acceptable ``ts``: readings from further in
    the future are rejected as ``bad_timestamp``. With ``require_key`` a message without a key is
    rejected as ``missing_key``. Sensors are those of ``catalog``.
    """
    reading = parse(value, key, max_bytes, require_key)
    return reading if isinstance(reading, Rejection) else validate(reading, key, latest_ts, catalog)


def parse(
    value: bytes | None, key: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES, require_key: bool = False
) -> Reading | Rejection:
    """The checks of :func:`decode` before :func:`validate`'s: the message is there, not too large,
    a JSON object of the wire format's fields and types, without a repeated key."""
    if key is None and require_key:
        return Rejection(Reason.MISSING_KEY, "message has no key (readings are keyed by device_id)")
    if value is None:
        return Rejection(Reason.INVALID_JSON, "message has no value")
    if len(value) > max_bytes:
        return Rejection(Reason.OVERSIZE, f"{len(value)} bytes > limit {max_bytes}")
    try:
        reading = _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        return classify(str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(Reason.INVALID_JSON, str(exc)[:200])
    return _duplicate_key(value, 7 + len(reading.values)) or reading


def decode_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    max_bytes: int = MAX_MESSAGE_BYTES,
    latest_ts: int | None = None,
    require_key: bool = False,
    catalog: Catalog = DEFAULT_CATALOG,
) -> list[ReadingLike | Rejection]:
    """:func:`decode` of every message, with the same outcome (a reading with the same content, or
    the same rejection), in one msgspec call for the batch: the typed readings check keys, types,
    units and ranges while decoding. A batch that does not decode so is halved until the messages
    that do not are found; a message that fails any check is decoded again alone by :func:`decode`,
    which says why.
    """
    fast = [
        i
        for i, v in enumerate(values)
        if v is not None and len(v) <= max_bytes and (keys[i] or not require_key)
    ]
    raw = [cast("bytes", values[i]) for i in fast]
    joined = b"[" + b",".join(raw) + b"]"
    typed = _decode_typed(catalog, raw, joined)
    fast_keys = [keys[i] for i in fast]
    if not _all_pass(typed, joined, fast_keys, latest_ts):  # find the messages that do not
        typed = [
            r if r is not None and _passes(r, v, k, latest_ts) else None
            for r, v, k in zip(typed, raw, fast_keys, strict=True)
        ]
    out: list[ReadingLike | Rejection | None] = [None] * len(values)
    for i, r in zip(fast, typed, strict=True):
        out[i] = r
    return [
        decode(values[i], keys[i], max_bytes, latest_ts, require_key, catalog) if r is None else r
        for i, r in enumerate(out)
    ]


def _passes(r: TypedReading, value: bytes, key: bytes | None, latest_ts: int | None) -> bool:
    """The checks of :func:`decode` that typing does not make: no repeated key (without a
    backslash, a message has ``n_quotes`` quotes, more if a key repeats: see
    :func:`_duplicate_key`), the key, the device id's pattern, the future bound."""
    return (
        b"\\" not in value
        and value.count(b'"') == r.n_quotes
        and (key is None or key == r.device_id.encode())
        and _valid_device_id(r.device_id)
        and (latest_ts is None or r.ts <= latest_ts)
    )


def _all_pass(
    typed: list[TypedReading | None], joined: bytes, keys: list[bytes | None], latest_ts: int | None
) -> bool:
    """:func:`_passes` for every message at once, from the batch as a whole: no backslash in it,
    as many quotes as the messages' ``n_quotes`` together (each has at least its own, so each has
    exactly its own), every device id of the pattern (so none holds a NUL) and the keys, joined by
    NULs, equal to the device ids joined so."""
    if None in typed or b"\\" in joined:
        return False
    readings = cast("list[TypedReading]", typed)
    ids = [r.device_id for r in readings]
    return (
        joined.count(b'"') == sum(r.n_quotes for r in readings)
        and all(map(_valid_device_id, set(ids)))
        and None not in keys
        and b"\0".join(cast("list[bytes]", keys)) == "\0".join(ids).encode()
        and (latest_ts is None or not readings or max(r.ts for r in readings) <= latest_ts)
    )


def _decode_typed(
    catalog: Catalog, values: list[bytes], joined: bytes | None = None
) -> list[TypedReading | None]:
    """The typed reading of each value, or None for one that does not decode to one (``joined``:
    the values as a JSON array, if already built)."""
    if not catalog.specs:  # nothing declared (only channels to register): no message is typed
        return [None] * len(values)
    try:
        if len(values) == 1:
            return [catalog.one_typed.decode(values[0])]
        joined = b"[" + b",".join(values) + b"]" if joined is None else joined
        typed: list[TypedReading | None] = catalog.batch_typed.decode(joined)
        if len(typed) == len(values):
            return typed
        # More elements than messages: one held several values, which the halves will isolate.
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        if len(values) == 1:
            return [None]
    half = len(values) // 2
    return _decode_typed(catalog, values[:half]) + _decode_typed(catalog, values[half:]) if values else []


def validate(
    r: Reading, key: bytes | None, latest_ts: int | None = None, catalog: Catalog = DEFAULT_CATALOG
) -> Reading | Rejection:
    """Check the semantic rules the JSON schema alone cannot express; the valid reading comes back
    with its values in the sensor's key order."""
    if not _valid_device_id(r.device_id):
        return Rejection(Reason.BAD_DEVICE_ID, "device_id must match " + DEVICE_ID_PATTERN.pattern)
    if key is not None and key != r.device_id.encode():
        return Rejection(Reason.KEY_MISMATCH, "message key differs from device_id")
    if r.schema_version != SCHEMA_VERSION:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"schema_version {r.schema_version}")
    spec = catalog.by_name.get(r.sensor)
    if spec is None:
        known = ", ".join(catalog.names)
        return Rejection(
            Reason.UNKNOWN_SENSOR, f"sensor {r.sensor[:64]!r} is not monitored here (known: {known})"[:400]
        )
    return check(r, spec, latest_ts, catalog.key_sets[spec.name])


def check(
    r: Reading, spec: SensorSpec, latest_ts: int | None = None, keys: frozenset[str] | None = None
) -> Reading | Rejection:
    """The checks of :func:`validate` past the sensor's name: ``r`` against ``spec`` (``keys``: its
    keys as a set, if at hand). A reading of a channel registered automatically whose axes or
    unit are not the ones it was registered with is a ``channel_mismatch``."""
    keys = frozenset(spec.keys) if keys is None else keys
    if spec.auto and (r.unit != spec.unit or r.values.keys() != keys):
        return Rejection(Reason.CHANNEL_MISMATCH, _mismatch(spec, r))
    if r.unit != spec.unit:
        return Rejection(Reason.WRONG_UNIT, f"{spec.name} expects {spec.unit!r}, got {r.unit[:32]!r}")
    if not _TS_LOW <= r.ts <= _TS_HIGH:
        return Rejection(Reason.BAD_TIMESTAMP, f"ts {r.ts} is not UTC epoch milliseconds")
    if latest_ts is not None and r.ts > latest_ts:
        return Rejection(
            Reason.BAD_TIMESTAMP, f"ts {r.ts} is {(r.ts - latest_ts) // 1000} s too far in the future"
        )
    if not 0 <= r.seq <= _SEQ_HIGH:
        return Rejection(Reason.WRONG_TYPE, "seq must be a non-negative 64-bit integer")
    return _check_values(r.values, spec, keys) or _in_key_order(r, spec)


def as_auto(spec: SensorSpec) -> SensorSpec:
    """``spec`` as a channel registered automatically: no range, the rest the same."""
    return dataclasses.replace(spec, low=AUTO_LOW, high=AUTO_HIGH, auto=True)


def _mismatch(spec: SensorSpec, r: Reading) -> str:
    theirs = ", ".join(k[:64] for k in sorted(r.values)[: MAX_AXES + 1])
    return (
        f"{spec.name} was registered automatically with axes [{', '.join(spec.keys)}] and unit "
        f"{spec.unit!r}; this reading has axes [{theirs}] and unit {r.unit[:32]!r} "
        "(declare the channel in channels.declare to settle what it is)"
    )[:400]


def auto_spec(r: Reading, resolution: float, rate_hz: float) -> SensorSpec | Rejection:
    """The channel a reading of a sensor nobody declared registers (``channels.auto_register``): its
    sensor name, its values' keys sorted (so that the first reading's key order does not matter),
    its unit, no range (every finite value: nobody said what a working sensor can report), and
    ``resolution`` and ``rate_hz``; or why the reading cannot define a channel.

    >>> r = Reading("d1", "flow", 1_700_000_000_000, 1, {"out": 2.0, "in": 1.0}, "l/min", 1)
    >>> auto_spec(r, 0.01, 1.0).keys
    ('in', 'out')
    """
    name = r.sensor
    if not NAME_PATTERN.fullmatch(name):
        return Rejection(
            Reason.UNKNOWN_SENSOR,
            f"sensor {name[:64]!r} cannot be registered: a channel's name matches {NAME_PATTERN.pattern}",
        )
    keys = tuple(sorted(r.values))
    if not 1 <= len(keys) <= MAX_AXES or not all(NAME_PATTERN.fullmatch(k) for k in keys):
        return Rejection(
            Reason.BAD_VALUES,
            f"{name}: a channel registered automatically has 1 to {MAX_AXES} values whose keys match "
            + NAME_PATTERN.pattern,
        )
    if not UNIT_PATTERN.fullmatch(r.unit):
        return Rejection(
            Reason.WRONG_UNIT,
            f"{name}: a channel's unit is 1 to 32 characters, without quotes, backslashes or control "
            "characters",
        )
    return SensorSpec(name, keys, r.unit, AUTO_LOW, AUTO_HIGH, rate_hz, resolution, auto=True)


def _in_key_order(r: Reading, spec: SensorSpec) -> Reading:
    if tuple(r.values) == spec.keys:
        return r
    return msgspec.structs.replace(r, values={k: r.values[k] for k in spec.keys})


@functools.lru_cache(maxsize=1 << 16)
def _valid_device_id(device_id: str) -> bool:
    return DEVICE_ID_PATTERN.fullmatch(device_id) is not None


def _duplicate_key(value: bytes, n_keys: int) -> Rejection | None:
    """A message whose JSON repeats a key is ambiguous (which value counts?): reject it. Keys are
    compared decoded: ``"v\\u0061lue"`` is ``"value"``.

    Fast path: with no backslash, as many ``":`` as keys and two quotes per key and per string
    value (``device_id``, ``sensor``, ``unit``), no key can be repeated. Otherwise the message
    (valid JSON: it decoded) is parsed again, keeping every key of every object.
    """
    if b"\\" not in value and value.count(b'":') == n_keys and value.count(b'"') == 2 * (n_keys + 3):
        return None
    return repeated_key(value)


def repeated_key(value: bytes) -> Rejection | None:
    """A ``duplicate_key`` rejection if the JSON ``value`` (valid: it decoded) repeats a key in
    any of its objects, keys compared decoded."""
    repeated: list[str] = []

    def check(pairs: list[tuple[str, object]]) -> None:
        names = [k for k, _ in pairs]
        if len(set(names)) < len(names):
            repeated.append(next(k for i, k in enumerate(names) if k in names[:i]))

    json.loads(value, object_pairs_hook=check)
    if repeated:
        return Rejection(Reason.DUPLICATE_KEY, f"key {repeated[0][:64]!r} appears more than once")
    return None


def _check_values(values: dict[str, float], spec: SensorSpec, keys: frozenset[str]) -> Rejection | None:
    if values.keys() != keys:
        return Rejection(Reason.BAD_VALUES, f"{spec.name} values need keys {list(spec.keys)}")
    for k, v in values.items():
        if spec.low <= v <= spec.high:  # the common case: finite (the bounds are) and in range
            continue
        if not math.isfinite(v):
            return Rejection(Reason.NON_FINITE, f"values.{k} is not finite")
        if not spec.low <= v <= spec.high:
            return Rejection(Reason.OUT_OF_RANGE, f"values.{k}={v} outside [{spec.low}, {spec.high}]")
    return None


_ERROR_REASONS: Final = (
    ("missing required field", Reason.MISSING_FIELD),
    ("unknown field", Reason.EXTRA_FIELD),
    ("Expected `object`", Reason.NOT_OBJECT),
    ("Number out of range", Reason.NON_FINITE),
)


def classify(message: str, reasons: Sequence[tuple[str, Reason]] = _ERROR_REASONS) -> Rejection:
    """The rejection of a msgspec validation error ``message``: the reason of the first of
    ``reasons`` (a needle in the message, the reason) it contains, else ``wrong_type``."""
    for needle, reason in reasons:
        if needle in message:
            if reason is Reason.NOT_OBJECT and "at `$." in message:
                break  # a nested value that should be an object: a type error, not a non-object
            return Rejection(reason, message[:200])
    return Rejection(Reason.WRONG_TYPE, message[:200])
