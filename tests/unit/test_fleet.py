"""The seeded fleet simulator: signal physics, ranges, determinism, ordering, seq, faults, malformed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from monitor.schema import SENSOR_NAMES, SENSORS, Reading, Reason, Rejection, decode
from producers.fleet import GRAVITY, Fleet, SensorStream, build_injectors, sample_offsets_ms
from producers.scenario import DEFAULT_START_TS as DEFAULT_TS
from producers.scenario import Scenario
from producers.simulate import MALFORMED_KINDS, iter_messages, stream

Key = tuple[str, str, int]  # device_id, sensor, ts


def _scenario(**extra: Any) -> Scenario:
    return Scenario.model_validate({"seed": 3, "devices": 4, "duration_s": 20} | extra)


def _readings(s: Scenario) -> list[Reading]:
    out = []
    for key, value, ts in iter_messages(s):
        r = decode(value, key)
        assert isinstance(r, Reading), r
        assert r.ts == ts
        out.append(r)
    return out


def _by_key(s: Scenario) -> dict[Key, tuple[float, ...]]:
    return {(r.device_id, r.sensor, r.ts): tuple(r.values.values()) for r in _readings(s)}


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_stream() -> None:
    s = _scenario(
        malformed=6,
        events=[
            {
                "kind": "spike_burst",
                "device": 1,
                "sensor": "humidity",
                "start_s": 5,
                "duration_s": 5,
                "magnitude": 9.0,
            }
        ],
    )
    first = list(iter_messages(s))
    assert first == list(iter_messages(Scenario.model_validate(s.model_dump())))
    assert len(first) > 1000


def test_different_seed_gives_different_stream() -> None:
    a = list(iter_messages(_scenario(seed=1)))
    b = list(iter_messages(_scenario(seed=2)))
    assert len(a) == len(b)
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 0.9 * len(a)


def test_block_size_does_not_change_readings() -> None:
    s = _scenario(events=[{"kind": "stuck_at", "device": 0, "sensor": "pressure", "start_s": 3}])

    def run(block: int) -> list[list[list[float]]]:
        fleet = Fleet(s.devices, s.seed)
        offsets = sample_offsets_ms(1.0, s.duration_s)
        sensor = SensorStream(
            fleet.models["pressure"], build_injectors(s, fleet)["pressure"], offsets, s.start_ts
        )
        sensor.block = block
        return [sensor.next_readings() for _ in offsets]

    assert run(1) == run(7) == run(1000)


# --- physics, ranges, units, rates ----------------------------------------------------------


def test_every_reading_decodes_with_the_right_unit_and_range() -> None:
    readings = _readings(_scenario(devices=30, duration_s=30))
    assert {r.sensor for r in readings} == set(SENSOR_NAMES)
    for r in readings:
        spec = SENSORS[r.sensor]
        assert r.unit == spec.unit
        assert tuple(r.values) == spec.keys
        assert all(spec.low <= v <= spec.high for v in r.values.values())


def _means(readings: list[Reading], sensor: str) -> dict[str, np.ndarray]:
    per_device: dict[str, list[list[float]]] = defaultdict(list)
    for r in readings:
        if r.sensor == sensor:
            per_device[r.device_id].append(list(r.values.values()))
    return {d: np.asarray(v).mean(axis=0) for d, v in per_device.items()}


def test_signals_are_physically_plausible() -> None:
    readings = _readings(_scenario(devices=50, duration_s=30))
    for accel in _means(readings, "accelerometer").values():
        assert abs(accel[2] - GRAVITY) < 0.3 and np.all(np.abs(accel[:2]) < 0.3)
    for gyro in _means(readings, "gyroscope").values():
        assert np.all(np.abs(gyro) < 0.02)
    for mag in _means(readings, "magnetometer").values():
        assert 20 < np.linalg.norm(mag) < 70
    for temp in _means(readings, "temperature").values():
        assert 14 < temp[0] < 32
    for rh in _means(readings, "humidity").values():
        assert 10 < rh[0] < 90
    for p in _means(readings, "pressure").values():
        assert 980 < p[0] < 1045


def test_devices_differ_in_calibration_and_noise() -> None:
    model = Fleet(100, 5).models["temperature"]
    assert np.ptp(model.noise_std) > 0.05
    assert np.ptp(model.sample(np.array([DEFAULT_TS]))[0, :, 0]) > 5  # base 18-28 degC


def test_humidity_is_anticorrelated_with_temperature_over_a_day() -> None:
    fleet = Fleet(20, 9)
    t = DEFAULT_TS + np.arange(0, 86_400_000, 600_000, dtype=np.int64)
    temp = fleet.models["temperature"].sample(t)[..., 0]
    rh = fleet.models["humidity"].sample(t)[..., 0]
    for d in range(20):
        assert np.corrcoef(temp[:, d], rh[:, d])[0, 1] < -0.8
    assert 1.0 < float(np.mean(np.ptp(temp, axis=0))) < 8.0  # a daily swing of a few degC


def test_pressure_wanders_at_weather_scale() -> None:
    t = DEFAULT_TS + np.arange(0, 6 * 3_600_000, 1000, dtype=np.int64)  # 6 h at 1 Hz
    p = Fleet(200, 4).models["pressure"].sample(t)[..., 0]
    drift = p[-3600:].mean(axis=0) - p[:3600].mean(axis=0)  # last hour vs first hour
    assert 1.0 < float(np.std(drift)) < 4.0  # weather swings of a few hPa over hours


def test_messages_per_sensor_follow_the_rates_and_overrides() -> None:
    s = _scenario(duration_s=10, rates_hz={"magnetometer": 20, "pressure": 0.5})
    times: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in _readings(s):
        times[(r.device_id, r.sensor)].append(r.ts)
    expected = {name: SENSORS[name].rate_hz for name in SENSOR_NAMES} | {"magnetometer": 20, "pressure": 0.5}
    for (_, sensor), ts in times.items():
        assert len(ts) == round(10 * expected[sensor])
        assert set(np.diff(ts)) == {round(1000 / expected[sensor])}
        assert ts[0] == s.start_ts


def test_sample_offsets_stay_before_the_end() -> None:
    assert sample_offsets_ms(3.0, 1.0).tolist() == [0, 333, 667]
    assert sample_offsets_ms(10.0, 0.25).tolist() == [0, 100, 200]
    assert sample_offsets_ms(0.1, 5.0).tolist() == [0]


# --- ordering and seq -----------------------------------------------------------------------


def test_event_time_order_with_devices_in_order_within_a_tick() -> None:
    s = _scenario(malformed=5)
    messages = list(stream(s))
    ts = [m.ts for m in messages]
    assert ts == sorted(ts)
    for tick in sorted(set(ts)):
        keys = [m.key for m in messages if m.ts == tick and not m.malformed]
        assert keys == sorted(keys)


def test_seq_per_device_counts_every_reading_from_zero() -> None:
    s = _scenario(malformed=8)
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in _readings_only(s):
        seqs[r.device_id].append(r.seq)
    assert sorted(seqs) == s.device_ids()
    for values in seqs.values():
        assert values == list(range(len(values)))


def _readings_only(s: Scenario) -> list[Reading]:
    out = []
    for m in stream(s):
        if not m.malformed:
            r = decode(m.value, m.key)
            assert isinstance(r, Reading)
            out.append(r)
    return out


# --- malformed messages ---------------------------------------------------------------------


def test_malformed_messages_are_counted_spread_and_all_rejected() -> None:
    s = _scenario(malformed=13)
    messages = list(stream(s))
    bad = [m for m in messages if m.malformed]
    assert len(bad) == 13
    reasons = []
    for m in bad:
        r = decode(m.value, m.key)
        assert isinstance(r, Rejection), m.value
        reasons.append(r.reason)
    assert set(reasons) == {
        Reason.INVALID_JSON,
        Reason.UNKNOWN_SENSOR,
        Reason.WRONG_UNIT,
        Reason.OUT_OF_RANGE,
        Reason.NON_FINITE,
        Reason.MISSING_FIELD,
    }
    assert len(MALFORMED_KINDS) == 6
    positions = [i for i, m in enumerate(messages) if m.malformed]
    assert positions[0] > len(messages) // 20 and positions[-1] < len(messages) * 19 // 20
    assert sum(isinstance(decode(m.value, m.key), Rejection) for m in messages) == 13


def test_malformed_messages_leave_the_readings_unchanged() -> None:
    clean = [m for m in stream(_scenario()) if not m.malformed]
    dirty = [m for m in stream(_scenario(malformed=40)) if not m.malformed]
    assert clean == dirty


# --- injected events ------------------------------------------------------------------------

START_S, SPAN_S = 8, 6


def _diff(
    event: dict[str, Any],
) -> tuple[Scenario, dict[Key, tuple[float, ...]], dict[Key, tuple[float, ...]]]:
    base = {"device": 2, "sensor": "temperature", "start_s": START_S} | event
    s = _scenario(devices=4, duration_s=20, events=[base])
    return s, _by_key(_scenario(devices=4, duration_s=20)), _by_key(s)


def _changed_keys(clean: dict[Key, Any], faulty: dict[Key, Any]) -> set[Key]:
    return {k for k in clean.keys() | faulty.keys() if clean.get(k) != faulty.get(k)}


def _assert_confined(s: Scenario, changed: set[Key], sensor: str, end_s: float) -> None:
    assert changed, "the event changed nothing"
    for device, name, ts in changed:
        assert (device, name) == ("dev-0002", sensor)
        assert s.start_ts + START_S * 1000 <= ts < s.start_ts + end_s * 1000


def test_gradual_drift_ramps_then_stays() -> None:
    s, clean, faulty = _diff({"kind": "gradual_drift", "duration_s": SPAN_S, "magnitude": 8.0})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "temperature", s.duration_s)
    deltas = {k[2]: faulty[k][0] - clean[k][0] for k in changed}
    start = s.start_ts + START_S * 1000
    for ts, delta in deltas.items():
        expected = 8.0 * min((ts - start) / (SPAN_S * 1000), 1.0)
        assert delta == pytest.approx(expected, abs=2e-3)
    assert max(deltas) == s.end_ts - 1000  # stays until the end


def test_abrupt_shift_is_a_step_on_one_axis() -> None:
    s, clean, faulty = _diff(
        {
            "kind": "abrupt_shift",
            "sensor": "accelerometer",
            "axis": "y",
            "duration_s": SPAN_S,
            "magnitude": -3.0,
        }
    )
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "accelerometer", START_S + SPAN_S)
    assert len(changed) == SPAN_S * 10
    for k in changed:
        dx, dy, dz = (a - b for a, b in zip(faulty[k], clean[k], strict=True))
        assert (dx, dz) == (0, 0) and dy == pytest.approx(-3.0, abs=2e-4)


def test_spike_burst_adds_spikes_of_the_magnitude() -> None:
    s, clean, faulty = _diff(
        {"kind": "spike_burst", "duration_s": SPAN_S, "magnitude": 5.0, "probability": 0.5}
    )
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "temperature", START_S + SPAN_S)
    for k in changed:
        assert abs(faulty[k][0] - clean[k][0]) == pytest.approx(5.0, abs=2e-3)


def test_stuck_at_repeats_the_reading_at_start() -> None:
    s, clean, faulty = _diff({"kind": "stuck_at", "sensor": "humidity", "duration_s": SPAN_S})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "humidity", START_S + SPAN_S)
    start = s.start_ts + START_S * 1000
    stuck = {faulty[("dev-0002", "humidity", start + i * 1000)] for i in range(SPAN_S)}
    assert stuck == {clean[("dev-0002", "humidity", start)]}


def test_stuck_at_a_given_value() -> None:
    s, clean, faulty = _diff({"kind": "stuck_at", "value": 0.0})
    _assert_confined(s, _changed_keys(clean, faulty), "temperature", s.duration_s)
    assert {
        v for k, v in faulty.items() if k[:2] == ("dev-0002", "temperature") and k[2] >= s.start_ts + 8000
    } == {(0.0,)}


def test_variance_increase_widens_the_noise() -> None:
    s, clean, faulty = _diff({"kind": "variance_increase", "sensor": "gyroscope", "factor": 10.0})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "gyroscope", s.duration_s)
    extra = np.array([np.subtract(faulty[k], clean[k]) for k in changed])
    assert extra.shape == (12 * 10, 3)
    assert 0.005 < float(extra.std()) < 0.06  # 0.001-0.004 rad/s noise x sqrt(99)


def test_dropout_loses_readings_but_keeps_their_seq() -> None:
    s, clean, faulty = _diff({"kind": "dropout", "sensor": "magnetometer", "duration_s": SPAN_S})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "magnetometer", START_S + SPAN_S)
    assert all(k not in faulty for k in changed) and len(changed) == SPAN_S * 5
    seqs = [r.seq for r in _readings_only(s) if r.device_id == "dev-0002"]
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
    assert seqs[-1] == len(seqs) - 1 + len(changed)


def test_sampling_rate_change_skips_samples_without_seq_gaps() -> None:
    s, clean, faulty = _diff(
        {"kind": "sampling_rate_change", "sensor": "accelerometer", "duration_s": SPAN_S, "factor": 0.1}
    )
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "accelerometer", START_S + SPAN_S)
    assert all(k not in faulty for k in changed)  # only missing readings, no changed values
    start = s.start_ts + START_S * 1000
    kept = sorted(k[2] for k in faulty if k[:2] == ("dev-0002", "accelerometer") and k[2] >= start)
    assert kept[: SPAN_S + 1] == [start + i * 1000 for i in range(SPAN_S)] + [start + SPAN_S * 1000]
    assert len(changed) == SPAN_S * 10 - SPAN_S  # 10 Hz -> 1 Hz
    seqs = [r.seq for r in _readings_only(s) if r.device_id == "dev-0002"]
    assert seqs == list(range(len(seqs)))  # skipped samples take no number


def test_sampling_rate_change_keeps_the_nearest_share_of_samples() -> None:
    s, clean, faulty = _diff({"kind": "sampling_rate_change", "sensor": "gyroscope", "factor": 0.25})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "gyroscope", s.duration_s)
    after = (s.duration_s - START_S) * 10
    assert len(changed) == after * 3 // 4


@pytest.mark.parametrize(("side", "clip"), [("upper", min), ("lower", max)])
def test_saturation_clips_at_the_limit(side: str, clip: Any) -> None:
    clean = _by_key(_scenario(devices=4, duration_s=20))
    values = [v[0] for k, v in clean.items() if k[:2] == ("dev-0002", "temperature")]
    limit = sorted(values)[len(values) // 2]
    s, clean, faulty = _diff({"kind": "saturation", "duration_s": SPAN_S, "limit": limit, "side": side})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "temperature", START_S + SPAN_S)
    for k in changed:
        assert faulty[k] == (clip(clean[k][0], limit),)


def test_calibration_offset_is_permanent() -> None:
    s, clean, faulty = _diff({"kind": "calibration_offset", "sensor": "pressure", "magnitude": -1.5})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "pressure", s.duration_s)
    assert len(changed) == s.duration_s - START_S
    for k in changed:
        assert faulty[k][0] - clean[k][0] == pytest.approx(-1.5, abs=2e-3)


def test_unit_change_converts_the_values_but_not_the_unit() -> None:
    s, clean, faulty = _diff({"kind": "unit_change", "duration_s": SPAN_S, "factor": 1.8, "offset": 32.0})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "temperature", START_S + SPAN_S)
    assert len(changed) == SPAN_S
    for k in changed:
        assert faulty[k][0] == pytest.approx(clean[k][0] * 1.8 + 32.0, abs=2e-3)
    assert {r.unit for r in _readings_only(s) if r.sensor == "temperature"} == {"degC"}


def test_unit_change_out_of_range_reads_as_the_range_limit() -> None:
    s, clean, faulty = _diff({"kind": "unit_change", "sensor": "pressure", "factor": 0.1})
    changed = _changed_keys(clean, faulty)
    _assert_confined(s, changed, "pressure", s.duration_s)
    assert {faulty[k] for k in changed} == {(SENSORS["pressure"].low,)}


def _message_readings(s: Scenario) -> list[tuple[Reading, int]]:
    out = []
    for m in stream(s):
        r = decode(m.value, m.key)
        assert isinstance(r, Reading)
        out.append((r, m.ts))
    return out


def test_clock_skew_moves_the_reading_ts_but_not_the_kafka_timestamp() -> None:
    event = {"kind": "clock_skew", "device": 2, "sensor": "humidity", "start_s": START_S}
    s = _scenario(events=[event | {"duration_s": SPAN_S, "skew_s": 400}])
    clean = _message_readings(_scenario())
    faulty = _message_readings(s)
    assert [ts for _, ts in faulty] == [ts for _, ts in clean]  # Kafka timestamps: the true time
    start, end = s.start_ts + START_S * 1000, s.start_ts + (START_S + SPAN_S) * 1000
    skewed = 0
    for (a, _), (b, ts) in zip(clean, faulty, strict=True):
        assert a.values == b.values and a.seq == b.seq
        if (b.device_id, b.sensor) == ("dev-0002", "humidity") and start <= ts < end:
            assert b.ts == ts + 400_000
            skewed += 1
        else:
            assert b.ts == a.ts == ts
    assert skewed == SPAN_S


def test_duplicate_messages_resend_target_messages_right_after_them() -> None:
    event = {"kind": "duplicate_messages", "device": 2, "sensor": "magnetometer", "start_s": START_S}
    s = _scenario(events=[event | {"duration_s": SPAN_S, "probability": 0.5}])
    clean = list(stream(_scenario()))
    faulty = list(stream(s))
    copies = [i for i in range(1, len(faulty)) if faulty[i] == faulty[i - 1]]
    assert 0 < len(copies) < SPAN_S * 5
    assert [m for i, m in enumerate(faulty) if i not in set(copies)] == clean
    start, end = s.start_ts + START_S * 1000, s.start_ts + (START_S + SPAN_S) * 1000
    for i in copies:
        r = decode(faulty[i].value, faulty[i].key)
        assert isinstance(r, Reading)
        assert (r.device_id, r.sensor) == ("dev-0002", "magnetometer") and start <= r.ts < end


def test_out_of_order_delivers_target_messages_after_the_next_one() -> None:
    event = {"kind": "out_of_order", "device": 2, "sensor": "gyroscope", "start_s": START_S}
    s = _scenario(events=[event | {"duration_s": SPAN_S, "probability": 0.3}])
    clean = list(stream(_scenario()))
    faulty = list(stream(s))
    assert sorted(faulty) == sorted(clean) and faulty != clean
    start, end = s.start_ts + START_S * 1000, s.start_ts + (START_S + SPAN_S) * 1000
    late = 0
    last: dict[str, int] = {}
    for r in _readings_only(s):
        if r.seq < last.get(r.device_id, -1):
            assert (r.device_id, r.sensor) == ("dev-0002", "gyroscope") and start <= r.ts < end
            assert r.seq == last[r.device_id] - 1  # swapped with the device's next message
            late += 1
        last[r.device_id] = r.seq
    assert 0 < late < SPAN_S * 10


def test_reboot_restarts_the_seq_at_the_first_reading_of_the_sensor() -> None:
    s, clean, faulty = _diff({"kind": "reboot", "sensor": "humidity"})
    assert clean == faulty  # values untouched
    readings = [r for r in _readings_only(s) if r.device_id == "dev-0002"]
    first = next(i for i, r in enumerate(readings) if r.sensor == "humidity" and r.ts >= s.start_ts + 8000)
    assert readings[first].seq == 0 and readings[first - 1].seq == first - 1
    assert [r.seq for r in readings[first:]] == list(range(len(readings) - first))
    others = [r.seq for r in _readings_only(s) if r.device_id == "dev-0001"]
    assert others == list(range(len(others)))


def test_every_kind_is_deterministic_and_leaves_other_devices_alone() -> None:
    def ev(kind: str, device: int, sensor: str, **params: Any) -> dict[str, Any]:
        return {"kind": kind, "device": device, "sensor": sensor, "start_s": 4} | params

    events = [
        ev("sampling_rate_change", 1, "accelerometer", factor=0.3),
        ev("saturation", 1, "humidity", limit=40.0),
        ev("calibration_offset", 1, "pressure", magnitude=3.0),
        ev("clock_skew", 1, "temperature", skew_s=-700),
        ev("duplicate_messages", 1, "magnetometer", probability=0.4),
        ev("out_of_order", 1, "gyroscope", probability=0.4),
        ev("unit_change", 1, "temperature", factor=1.8, offset=32),
        ev("reboot", 1, "humidity"),
        ev("spike_burst", 1, "pressure", duration_s=5, magnitude=3.0),
    ]
    s = _scenario(malformed=7, events=events)
    first = list(stream(s))
    assert first == list(stream(Scenario.model_validate(s.model_dump())))
    clean = list(stream(_scenario(malformed=7)))
    assert [m for m in first if m.key != b"dev-0001"] == [m for m in clean if m.key != b"dev-0001"]
    assert sum(m.malformed for m in first) == 7
