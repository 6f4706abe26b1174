"""Tests for monitor.schema: round trips, one crafted message per rejection reason, property tests."""

from __future__ import annotations

import json
import string
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.schema import (
    DEVICE_ID_PATTERN,
    MAX_MESSAGE_BYTES,
    SENSORS,
    Reading,
    Reason,
    Rejection,
    SensorSpec,
    decode,
    encode_reading,
)

TS = 1_700_000_000_000
DEV = "dev-0001"
KEY = DEV.encode()
FIELDS = ("device_id", "sensor", "ts", "seq", "values", "unit", "schema_version")


def _values(spec: SensorSpec, value: float | None = None) -> dict[str, Any]:
    """Mid-range values for every key of ``spec`` (or ``value`` for all keys)."""
    mid = (spec.low + spec.high) / 2 if value is None else value
    return {k: mid for k in spec.keys}


def _fields(kind: str = "temperature", **overrides: Any) -> dict[str, Any]:
    spec = SENSORS[kind]
    fields: dict[str, Any] = {
        "device_id": DEV,
        "sensor": kind,
        "ts": TS,
        "seq": 42,
        "values": _values(spec),
        "unit": spec.unit,
        "schema_version": 1,
    }
    fields.update(overrides)
    return fields


def _msg(kind: str = "temperature", **overrides: Any) -> bytes:
    """A JSON message of sensor ``kind``, built with the stdlib encoder (any type in any field)."""
    return json.dumps(_fields(kind, **overrides)).encode()


def _with_token(token: bytes, sensor: str = "temperature") -> bytes:
    """A message whose last value is the raw JSON ``token`` (something json.dumps cannot write)."""
    spec = SENSORS[sensor]
    raw = _msg(sensor, values=_values(spec) | {spec.keys[-1]: "__TOKEN__"})
    return raw.replace(b'"__TOKEN__"', token)


def _without(field: str) -> bytes:
    fields = _fields()
    del fields[field]
    return json.dumps(fields).encode()


def _reason(value: bytes | None, key: bytes | None = KEY) -> Reason:
    r = decode(value, key, require_key=True)
    assert isinstance(r, Rejection), f"accepted: {r!r}"
    assert r.detail, "a rejection carries a human-readable detail"
    return r.reason


# --- valid readings -------------------------------------------------------------------------------


@pytest.mark.parametrize("sensor", sorted(SENSORS))
def test_valid_reading_of_each_sensor_round_trips(sensor: str) -> None:
    spec = SENSORS[sensor]
    values = {k: spec.low + (i + 1) * (spec.high - spec.low) / 5 for i, k in enumerate(spec.keys)}
    raw = encode_reading(DEV, sensor, TS, 7, values)
    got = decode(raw, KEY)
    assert got == Reading(DEV, sensor, TS, 7, values, spec.unit, 1)


def test_decode_without_key_skips_the_key_check() -> None:
    assert isinstance(decode(_msg(), None), Reading)


def test_message_of_exactly_max_bytes_is_not_oversize() -> None:
    raw = _msg(device_id="d" * 100)
    padded = raw[:-1] + b" " * (MAX_MESSAGE_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_MESSAGE_BYTES
    assert isinstance(decode(padded, b"d" * 100), Reading)


# --- one crafted message per rejection reason -----------------------------------------------------


class Case(NamedTuple):
    id: str
    value: bytes | None
    key: bytes | None
    reason: Reason


def _out_of_range_cases() -> list[Case]:
    cases = []
    for name, spec in SENSORS.items():
        axis = spec.keys[-1]
        for side, v in (("high", spec.high + spec.resolution), ("low", spec.low - spec.resolution)):
            values = _values(spec) | {axis: v}
            cases.append(
                Case(f"out_of_range-{name}-{side}", _msg(name, values=values), KEY, Reason.OUT_OF_RANGE)
            )
    return cases


CASES: list[Case] = [
    Case(
        "oversize",
        _msg(device_id="d" * 100).replace(b"}", b" " * MAX_MESSAGE_BYTES + b"}"),
        b"d" * 100,
        Reason.OVERSIZE,
    ),
    Case("no-value", None, KEY, Reason.INVALID_JSON),
    Case("empty-value", b"", KEY, Reason.INVALID_JSON),
    Case("invalid-json", b"{device_id: dev-0001}", KEY, Reason.INVALID_JSON),
    Case("truncated-json", _msg()[:-7], KEY, Reason.INVALID_JSON),
    Case("invalid-utf8-outside-strings", b"\xff\xfe" + _msg(), KEY, Reason.INVALID_JSON),
    Case("invalid-utf8-in-key", b'{"\xff": 1}', KEY, Reason.INVALID_JSON),
    Case("invalid-utf8-in-unit", _msg().replace(b'"degC"', b'"deg\xff"'), KEY, Reason.INVALID_JSON),
    Case(
        "invalid-utf8-in-device-id", _msg().replace(b'"dev-0001"', b'"dev-\xc3"', 1), KEY, Reason.INVALID_JSON
    ),
    Case("nan-token", _with_token(b"NaN"), KEY, Reason.INVALID_JSON),
    Case("not-object-array", b"[1]", KEY, Reason.NOT_OBJECT),
    Case("not-object-string", b'"dev-0001"', KEY, Reason.NOT_OBJECT),
    Case("not-object-null", b"null", KEY, Reason.NOT_OBJECT),
    *(Case(f"missing-{f}", _without(f), KEY, Reason.MISSING_FIELD) for f in FIELDS),
    Case("extra-field", _msg(firmware="1.2.3"), KEY, Reason.EXTRA_FIELD),
    Case("duplicate-key", _msg().replace(b'"seq":', b'"seq": 1, "seq":'), KEY, Reason.DUPLICATE_KEY),
    Case(
        "duplicate-key-in-values",
        _msg().replace(b'"value":', b'"value": 1.0, "value":'),
        KEY,
        Reason.DUPLICATE_KEY,
    ),
    Case("wrong-type-ts-string", _msg(ts="1700000000000"), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-ts-float", _msg(ts=1.7e12), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-ts-bool", _msg(ts=True), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-values-list", _msg(values=[21.5]), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-value-string", _msg(values={"value": "21.5"}), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-value-null", _msg(values={"value": None}), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-negative-seq", _msg(seq=-1), KEY, Reason.WRONG_TYPE),
    Case("wrong-type-seq-over-int64", _msg(seq=2**63), KEY, Reason.WRONG_TYPE),
    Case("bad-device-id-control-char", _msg(device_id="dev\x01"), b"dev\x01", Reason.BAD_DEVICE_ID),
    Case("bad-device-id-newline", _msg(device_id="dev-1\n"), b"dev-1\n", Reason.BAD_DEVICE_ID),
    Case("bad-device-id-too-long", _msg(device_id="d" * 129), b"d" * 129, Reason.BAD_DEVICE_ID),
    Case("bad-device-id-empty", _msg(device_id=""), b"", Reason.BAD_DEVICE_ID),
    Case("bad-device-id-leading-dash", _msg(device_id="-dev"), b"-dev", Reason.BAD_DEVICE_ID),
    Case("key-mismatch", _msg(), b"dev-0002", Reason.KEY_MISMATCH),
    Case("key-mismatch-empty-key", _msg(), b"", Reason.KEY_MISMATCH),
    Case("missing-key", _msg(), None, Reason.MISSING_KEY),
    Case("missing-key-tombstone", None, None, Reason.MISSING_KEY),
    Case("unsupported-version-2", _msg(schema_version=2), KEY, Reason.UNSUPPORTED_VERSION),
    Case("unsupported-version-0", _msg(schema_version=0), KEY, Reason.UNSUPPORTED_VERSION),
    Case("unknown-sensor", _msg(sensor="thermocouple"), KEY, Reason.UNKNOWN_SENSOR),
    Case("wrong-unit", _msg(unit="degF"), KEY, Reason.WRONG_UNIT),
    Case("wrong-unit-vector", _msg("accelerometer", unit="g"), KEY, Reason.WRONG_UNIT),
    Case("bad-values-scalar-key-on-vector", _msg("gyroscope", values={"value": 0.1}), KEY, Reason.BAD_VALUES),
    Case(
        "bad-values-vector-keys-on-scalar",
        _msg(values={"x": 1.0, "y": 1.0, "z": 1.0}),
        KEY,
        Reason.BAD_VALUES,
    ),
    Case(
        "bad-values-missing-axis", _msg("magnetometer", values={"x": 1.0, "y": 2.0}), KEY, Reason.BAD_VALUES
    ),
    Case("bad-values-extra-key", _msg(values={"value": 21.5, "raw": 1.0}), KEY, Reason.BAD_VALUES),
    Case("bad-values-empty", _msg(values={}), KEY, Reason.BAD_VALUES),
    Case("non-finite-1e999", _with_token(b"1e999"), KEY, Reason.NON_FINITE),
    Case("non-finite-minus-1e999", _with_token(b"-1e999", "accelerometer"), KEY, Reason.NON_FINITE),
    *_out_of_range_cases(),
    Case("bad-timestamp-seconds", _msg(ts=TS // 1000), KEY, Reason.BAD_TIMESTAMP),
    Case("bad-timestamp-negative", _msg(ts=-1), KEY, Reason.BAD_TIMESTAMP),
    Case("bad-timestamp-microseconds", _msg(ts=TS * 1000), KEY, Reason.BAD_TIMESTAMP),
    Case("bad-timestamp-beyond-int64", _msg(ts=2**64), KEY, Reason.BAD_TIMESTAMP),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_crafted_message_is_rejected_with_its_reason(case: Case) -> None:
    assert _reason(case.value, case.key) is case.reason


def test_crafted_cases_cover_every_reason() -> None:
    # too_large is the dead-letter reason of a record truncated to fit the dead-letter topic;
    # channel_mismatch needs a channel registered automatically (tests/unit/test_auto_channels.py);
    # bad_alert_id and bad_verdict are reasons of feedback records (tests/unit/test_feedback.py).
    feedback = {Reason.BAD_ALERT_ID, Reason.BAD_VERDICT}
    assert {c.reason for c in CASES} == set(Reason) - {Reason.TOO_LARGE, Reason.CHANNEL_MISMATCH} - feedback


def test_a_message_without_key_is_accepted_unless_keys_are_required() -> None:
    assert isinstance(decode(_msg(), None), Reading)
    assert _reason(_msg(), None) is Reason.MISSING_KEY


def test_reading_too_far_in_the_future_is_rejected() -> None:
    assert isinstance(decode(_msg(ts=TS), KEY, latest_ts=TS), Reading)
    rejected = decode(_msg(ts=TS + 1), KEY, latest_ts=TS)
    assert isinstance(rejected, Rejection) and rejected.reason is Reason.BAD_TIMESTAMP


def test_oversize_case_really_exceeds_the_limit() -> None:
    oversize = next(c for c in CASES if c.reason is Reason.OVERSIZE)
    assert oversize.value is not None and len(oversize.value) > MAX_MESSAGE_BYTES
    assert isinstance(decode(oversize.value, oversize.key, max_bytes=len(oversize.value)), Reading)


def test_value_none_is_rejected() -> None:
    raw = encode_reading(DEV, "temperature", TS, 1, {"value": None})  # type: ignore[dict-item]
    assert _reason(raw) is Reason.WRONG_TYPE


@pytest.mark.parametrize("sensor", sorted(SENSORS))
def test_range_limits_themselves_are_accepted(sensor: str) -> None:
    spec = SENSORS[sensor]
    for v in (spec.low, spec.high, spec.low + spec.resolution, spec.high - spec.resolution):
        r = decode(_msg(sensor, values=_values(spec, v)), KEY)
        assert isinstance(r, Reading), (v, r)


@pytest.mark.parametrize("ts", [946_684_800_000, 4_102_444_800_000])
def test_timestamp_bounds_are_accepted(ts: int) -> None:
    assert isinstance(decode(_msg(ts=ts), KEY), Reading)


@pytest.mark.parametrize("ts", [946_684_800_000 - 1, 4_102_444_800_000 + 1])
def test_timestamp_just_outside_bounds_is_rejected(ts: int) -> None:
    assert _reason(_msg(ts=ts)) is Reason.BAD_TIMESTAMP


def test_longest_device_id_is_accepted() -> None:
    dev = "d" * 128
    assert isinstance(decode(_msg(device_id=dev), dev.encode()), Reading)


def test_values_key_order_does_not_matter_for_validation() -> None:
    values = {"z": 9.81, "x": 0.0, "y": 0.1}
    r = decode(_msg("accelerometer", values=values), KEY)
    assert isinstance(r, Reading)
    assert r.values == values


# --- property tests -------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELD_VALUES = st.one_of(
    _JSON,
    st.sampled_from([DEV, "temperature", "accelerometer", "degC", "m/s^2", 1, TS]),
    st.dictionaries(st.sampled_from(["value", "x", "y", "z", "w"]), st.floats() | st.integers(), max_size=4),
)
_OBJECTS = st.dictionaries(st.sampled_from([*FIELDS, "extra"]), _FIELD_VALUES).map(
    lambda d: json.dumps(d).encode()
)
_UTF8 = st.text().map(str.encode)


def _splice(base: bytes, at: int, insert: bytes) -> bytes:
    at %= len(base) + 1
    return base[:at] + insert + base[at:]


_MUTATED_UTF8 = st.builds(_splice, st.just(_msg()), st.integers(0, 10_000), _UTF8)


@given(value=st.one_of(_OBJECTS, _UTF8, _MUTATED_UTF8), key=st.none() | st.binary(max_size=16))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_decode_never_raises_on_valid_utf8_input(value: bytes, key: bytes | None) -> None:
    assert isinstance(decode(value, key), Reading | Rejection)


@given(value=st.binary(max_size=256), key=st.none() | st.binary(max_size=16))
@example(value=b'{"\xff": 1}', key=None)
@example(value=_msg().replace(b'"degC"', b'"deg\xff"'), key=KEY)
@settings(max_examples=300)
def test_decode_never_raises_on_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    assert isinstance(decode(value, key), Reading | Rejection)


@st.composite
def _readings(draw: st.DrawFn) -> Reading:
    name = draw(st.sampled_from(sorted(SENSORS)))
    spec = SENSORS[name]
    finite = st.floats(spec.low, spec.high, allow_nan=False, allow_infinity=False)
    return Reading(
        device_id=draw(st.from_regex(DEVICE_ID_PATTERN, fullmatch=True)),
        sensor=name,
        ts=draw(st.integers(946_684_800_000, 4_102_444_800_000)),
        seq=draw(st.integers(0, 2**63 - 1)),
        values={k: draw(finite) for k in spec.keys},
        unit=spec.unit,
        schema_version=1,
    )


@given(_readings())
@settings(max_examples=300)
def test_any_valid_reading_round_trips(r: Reading) -> None:
    raw = encode_reading(r.device_id, r.sensor, r.ts, r.seq, r.values)
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert decode(raw, r.device_id.encode()) == r


@given(st.text(alphabet=string.printable, min_size=1, max_size=130))
def test_device_id_is_accepted_iff_it_matches_the_pattern(device_id: str) -> None:
    r = decode(_msg(device_id=device_id), device_id.encode())
    assert isinstance(r, Reading) == bool(DEVICE_ID_PATTERN.fullmatch(device_id))
