"""A corpus of hostile records mixed into valid traffic: each bad record is quarantined exactly once
with a reason from the fixed set, no valid reading is quarantined, and no NaN/inf reaches a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.records import DeadLetter
from monitor.schema import SENSORS, Reason, Rejection, encode_reading
from monitor.serve import deadletters
from monitor.settings import load_settings

T0 = 1_767_225_600_000
VALID = encode_reading("dev-1", "temperature", T0, 0, {"value": 21.5})


def _valid_stream(n: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        device = f"dev-{i % 4}"
        ts = T0 + 1000 * (i // 4)
        out.append(
            (
                device.encode(),
                encode_reading(device, "temperature", ts, i // 4, {"value": 21 + float(rng.normal(0, 0.1))}),
            )
        )
    return out


def _obj(**fields: str) -> bytes:
    base = {
        "device_id": '"dev-9"',
        "sensor": '"temperature"',
        "ts": str(T0),
        "seq": "1",
        "values": '{"value": 21.5}',
        "unit": '"degC"',
        "schema_version": "1",
    } | fields
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


HOSTILE: list[tuple[str, bytes | None, bytes | None, Reason]] = [
    ("invalid utf-8", b"\xff\xfe\xfd", b"dev-9", Reason.INVALID_JSON),
    ("truncated json", VALID[:20], b"dev-9", Reason.INVALID_JSON),
    ("empty", b"", b"dev-9", Reason.INVALID_JSON),
    ("tombstone", None, b"dev-9", Reason.INVALID_JSON),
    ("array", b"[1, 2, 3]", b"dev-9", Reason.NOT_OBJECT),
    ("number", b"42", b"dev-9", Reason.NOT_OBJECT),
    ("NaN literal", _obj(values='{"value": NaN}'), b"dev-9", Reason.INVALID_JSON),
    ("Infinity literal", _obj(values='{"value": Infinity}'), b"dev-9", Reason.INVALID_JSON),
    ("1e999", _obj(values='{"value": 1e999}'), b"dev-9", Reason.NON_FINITE),
    ("huge integer ts", _obj(ts="9" * 400), b"dev-9", Reason.BAD_TIMESTAMP),
    ("huge integer seq", _obj(seq="9" * 40), b"dev-9", Reason.WRONG_TYPE),
    ("deep nesting", _obj(values='{"value": ' + "[" * 5000 + "]" * 5000 + "}"), b"dev-9", Reason.OVERSIZE),
    (
        "deep nesting, small",
        _obj(values='{"value": ' + "[" * 500 + "]" * 500 + "}"),
        b"dev-9",
        Reason.WRONG_TYPE,
    ),
    ("oversize", _obj(unit='"' + "x" * 8000 + '"'), b"dev-9", Reason.OVERSIZE),
    ("duplicate key", _obj(seq='1, "seq": 2'), b"dev-9", Reason.DUPLICATE_KEY),
    ("control char id", _obj(device_id='"dev\\u0007"'), b"dev\x07", Reason.BAD_DEVICE_ID),
    ("64 KB id", _obj(device_id='"' + "d" * 65536 + '"'), b"d" * 65536, Reason.OVERSIZE),
    ("129-char id", _obj(device_id='"' + "d" * 129 + '"'), b"d" * 129, Reason.BAD_DEVICE_ID),
    ("key mismatch", _obj(), b"dev-8", Reason.KEY_MISMATCH),
    ("far future", _obj(ts=str(4_000_000_000_000)), b"dev-9", Reason.BAD_TIMESTAMP),
    ("far past", _obj(ts="1000"), b"dev-9", Reason.BAD_TIMESTAMP),
    ("unknown sensor", _obj(sensor='"sonar"'), b"dev-9", Reason.UNKNOWN_SENSOR),
    ("wrong unit", _obj(unit='"degF"'), b"dev-9", Reason.WRONG_UNIT),
    ("missing field", _obj().replace(b', "unit": "degC"', b""), b"dev-9", Reason.MISSING_FIELD),
    ("extra field", _obj(firmware='"1.0"'), b"dev-9", Reason.EXTRA_FIELD),
    ("out of range", _obj(values='{"value": 500.0}'), b"dev-9", Reason.OUT_OF_RANGE),
    # Keys compared decoded: an escaped name is the same key.
    (
        "escaped duplicate value key",
        _obj(values='{"v\\u0061lue": 1.0, "value": 2.0}'),
        b"dev-9",
        Reason.DUPLICATE_KEY,
    ),
    (
        "escaped duplicate device_id",
        _obj(sensor='"temperature", "dev\\u0069ce_id": "dev-8"'),
        b"dev-9",
        Reason.DUPLICATE_KEY,
    ),
    ("1 MiB value", _obj(unit='"' + "x" * (1 << 20) + '"'), b"dev-9", Reason.OVERSIZE),
    # Keys: none, not UTF-8, huge.
    ("no key", _obj(), None, Reason.MISSING_KEY),
    ("tombstone without key", None, None, Reason.MISSING_KEY),
    ("invalid utf-8 key", _obj(), b"\xff\xfe", Reason.KEY_MISMATCH),
    ("1 MiB key", _obj(), b"d" * (1 << 20), Reason.KEY_MISMATCH),
]


def _pipeline() -> Pipeline:
    return Pipeline(
        load_settings(Path("configs/monitor.yaml")), load_rules(Path("configs/rules.yaml")), trace=True
    )


def _models_finite(p: Pipeline) -> bool:
    return bool(np.isfinite(p.detect_state.model).all())


def test_hostile_corpus_mixed_into_valid_traffic() -> None:
    valid = _valid_stream(400)
    items: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(valid):
        items.append((key, value))
        if i % 10 == 0 and i // 10 < len(HOSTILE):
            _, bad, bad_key, _ = HOSTILE[i // 10]
            items.append((bad_key, bad))
    messages = [ReplayMessage(k, v, T0, off) for off, (k, v) in enumerate(items)]
    p = _pipeline()
    result = p.process(messages)
    assert len(result.dead_letters) == len(HOSTILE)
    assert [d.rejection.reason for d in result.dead_letters] == [h[3] for h in HOSTILE]
    assert {d.rejection.reason for d in result.dead_letters} <= set(Reason)
    assert int(result.valid.sum()) == len(valid)  # no valid reading quarantined
    assert len(result.trace) == len(valid)
    assert _models_finite(p)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(sorted(SENSORS)))
def test_no_value_ever_puts_nan_or_inf_into_a_model(value: float, sensor: str) -> None:
    p = _pipeline()
    spec = SENSORS[sensor]
    raw = [
        encode_reading("dev-1", sensor, T0 + i, i, {k: (value if i == 60 else 0.5) for k in spec.keys})
        for i in range(80)
    ]
    p.process([ReplayMessage(b"dev-1", r, T0, i) for i, r in enumerate(raw)])
    assert _models_finite(p)


@pytest.mark.parametrize(
    ("kafka_ts", "ignored"),  # none, negative, 1970 (plausible), years ahead, absurd
    [(0, 1), (-1, 1), (1, 0), (T0 + 3 * 86_400_000 * 365, 1), (2**62, 1)],
)
def test_hostile_kafka_timestamps_date_nothing(kafka_ts: int, ignored: int) -> None:
    p = _pipeline()
    valid = _valid_stream(400)
    messages = [ReplayMessage(k, v, T0 + 1000 * (i // 4), i) for i, (k, v) in enumerate(valid)]
    messages.insert(200, ReplayMessage(b"dev-1", valid[201][1], kafka_ts, 10_000))
    results = [p.process(messages[i : i + 50]) for i in range(0, len(messages), 50)]
    assert sum(r.evicted.total() for r in results) == 0
    assert sorted(p.store.slots) == ["dev-0", "dev-1", "dev-2", "dev-3"]
    assert sum(r.kafka_ts_ignored for r in results) == ignored


def test_dead_letter_headers_are_bounded_whatever_the_record() -> None:
    hostile = ReplayMessage(b"k" * (1 << 20), _obj(sensor='"' + "\\u0007" * 2000 + '"'), T0, 7)
    d = DeadLetter(hostile, Rejection(Reason.UNKNOWN_SENSOR, "x\x00" * 10_000))
    record = deadletters.record(d, 4096)
    assert len(record.key or b"") + len(record.value or b"") <= 4096
    assert all(len(v) <= 512 for _, v in record.headers)
    assert dict(record.headers)["telemon.reason"] == b"too_large"
