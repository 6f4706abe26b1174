"""decode_batch decodes a batch in one msgspec call and must say of every message exactly what
decode says of it alone: the same reading, or the same rejection with the same detail."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.schema import (
    SENSORS,
    Reading,
    ReadingLike,
    Rejection,
    TypedReading,
    decode,
    decode_batch,
    encode_reading,
)
from tests.unit.test_hostile_input import HOSTILE
from tests.unit.test_schema import _MUTATED_UTF8, _OBJECTS, _UTF8, CASES, _readings

T0 = 1_767_225_600_000
Message = tuple[bytes | None, bytes | None]


def _valid(n: int) -> list[Message]:
    out: list[Message] = []
    for i in range(n):
        name, spec = list(SENSORS.items())[i % len(SENSORS)]
        values = {k: (spec.low + spec.high) / 2 + 0.01 * i for k in spec.keys}
        out.append((encode_reading(f"dev-{i % 7}", name, T0 + i, i, values), f"dev-{i % 7}".encode()))
    return out


def _outcome(r: ReadingLike | Rejection) -> tuple[object, ...]:
    if isinstance(r, Rejection):
        return ("rejected", r.reason, r.detail)
    return ("read", r.device_id, r.sensor, r.ts, r.seq, r.features())


def _same_as_alone(messages: list[Message], **kw: object) -> list[ReadingLike | Rejection]:
    values, keys = [v for v, _ in messages], [k for _, k in messages]
    batch = decode_batch(values, keys, **kw)  # type: ignore[arg-type]
    alone = [decode(v, k, **kw) for v, k in messages]  # type: ignore[arg-type]
    assert [_outcome(r) for r in batch] == [_outcome(r) for r in alone]
    return batch


def test_a_valid_batch_is_decoded_typed_in_one_call() -> None:
    out = _same_as_alone(_valid(60))
    assert all(isinstance(r, TypedReading) for r in out)
    assert {r.sensor for r in out if isinstance(r, TypedReading)} == set(SENSORS)


def test_every_crafted_and_hostile_message_mixed_into_valid_traffic() -> None:
    bad: list[Message] = [(c.value, c.key) for c in CASES] + [(v, k) for _, v, k, _ in HOSTILE]
    stream = _valid(200) + bad
    random.Random(0).shuffle(stream)
    for kw in ({}, {"require_key": True}, {"latest_ts": T0 + 1000}, {"max_bytes": 300}):
        out = _same_as_alone(stream, **kw)
        assert sum(isinstance(r, TypedReading) for r in out) >= 150  # the valid ones stay fast


def test_two_values_in_one_message_do_not_shift_the_others() -> None:
    (v1, k1), (v2, k2), (v3, k3) = _valid(3)
    out = _same_as_alone([(v1, k1), (v1 + b"," + v2, k2), (v3, k3)])
    assert isinstance(out[0], TypedReading) and isinstance(out[2], TypedReading)
    assert isinstance(out[1], Rejection)


def test_a_key_repeated_is_caught_in_a_batch_too() -> None:
    (value, key), *_ = _valid(1)
    repeated = value.replace(b'"ts":', b'"ts":1,"ts":', 1)
    out = _same_as_alone([(value, key), (repeated, key)])
    assert isinstance(out[0], TypedReading) and isinstance(out[1], Rejection)


@given(
    st.lists(
        st.one_of(
            _OBJECTS,
            _UTF8,
            _MUTATED_UTF8,
            st.binary(max_size=64),
            _readings().map(lambda r: encode_reading(r.device_id, r.sensor, r.ts, r.seq, r.values)),
        ),
        max_size=12,
    ),
    st.none() | st.just(b"dev-1"),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_any_batch_decodes_as_its_messages_alone(values: list[bytes], key: bytes | None) -> None:
    _same_as_alone([(v, key) for v in values])


_DEV1 = _readings().map(lambda r: encode_reading("dev-1", r.sensor, r.ts, r.seq, r.values))


@given(
    st.lists(
        st.tuples(
            _DEV1 | _MUTATED_UTF8,
            st.sampled_from([None, b"dev-1", b"dev-1\0", b"", b"dev-\x001", b"dev-2"]),
        ),
        max_size=8,
    ),
    st.sampled_from([{}, {"require_key": True}, {"latest_ts": 2_000_000_000_000}]),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_batch_wide_checks_agree_with_each_message_alone(
    messages: list[tuple[bytes, bytes | None]], kw: dict[str, object]
) -> None:
    _same_as_alone(messages, **kw)


@given(_readings())
@settings(max_examples=100)
def test_a_typed_reading_carries_what_the_reading_does(r: Reading) -> None:
    raw = encode_reading(r.device_id, r.sensor, r.ts, r.seq, r.values)
    (typed,) = decode_batch([raw], [r.device_id.encode()])
    assert isinstance(typed, TypedReading)
    assert (typed.device_id, typed.sensor, typed.ts, typed.seq, typed.features()) == (
        r.device_id, r.sensor, r.ts, r.seq, r.features()
    )  # fmt: skip
