"""Every alert explains itself: the contributions it carries are the model's own terms,
recomputed here by hand from the model's state just before the explained reading."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest

from monitor.analyze import explain
from monitor.govern import alerts
from monitor.govern.alerts import Alert, annotations_of
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import SENSOR_INDEX, SENSORS, encode_reading
from monitor.settings import load_settings
from monitor.state.store import packing
from tests.unit.test_pipeline import T0, FakeMessage, Stream

ACC = SENSOR_INDEX["accelerometer"]
SPIKE_AT = 300
SPIKE = (0.3, -0.2, 4.0)  # m/s^2 added to x, y, z: z carries most of the distance


def _rules(signal: str, op: str = ">", value: float = 0) -> str:
    when = f"{{signal: {signal}, op: '{op}', value: {value}}}"
    return f"rules:\n  - {{name: why, scope: device, when: {when}, actions: [alert]}}\n"


def _acc_stream(n: int, spike_at: int | None = SPIKE_AT, seed: int = 3) -> list[FakeMessage]:
    rng = np.random.default_rng(seed)
    stream, out = Stream(), []
    for i in range(n):
        v = np.array([0.1, -0.2, 9.81]) + 0.05 * rng.standard_normal(3)
        if i == spike_at:
            v = v + SPIKE
        values = {k: round(float(x), 4) for k, x in zip(("x", "y", "z"), v, strict=True)}
        payload = encode_reading("dev-1", "accelerometer", T0 + i * 100, i, values)
        out.append(stream.message(payload, b"dev-1", 0, T0 + i * 100))
    return out


def _firing(results: list[BatchResult], rule: str = "why") -> Alert:
    return next(a for r in results for a in r.alerts if a.rule == rule and a.status == "firing")


def test_a_readings_terms_are_the_models_own_recomputed_by_hand() -> None:
    p = Pipeline(load_settings(None), parse_rules(_rules("anomalies")))
    messages = _acc_stream(SPIKE_AT + 40)
    results = [p.process(messages[:SPIKE_AT])]
    slot = p.store.slots["dev-1"]
    row = p.detect_state.model[slot, ACC].copy()  # the model as it scores the spike
    resolution = SENSORS["accelerometer"].resolution
    results += [p.process(messages[SPIKE_AT:])]
    why = _firing(results).explanation
    assert why is not None and why.kind == "anomaly" and why.reading is not None
    x = json.loads(messages[SPIKE_AT].payload or b"")["values"]
    by_hand = {}
    for i, axis in enumerate(("x", "y", "z")):
        forecast = row[1 + i] + row[7 + i]
        spread = math.sqrt(max(row[4 + i], resolution**2))
        by_hand[axis] = (x[axis], forecast, spread, ((x[axis] - forecast) / spread) ** 2)
    d2 = sum(t[3] for t in by_hand.values())
    r = why.reading
    assert r.ts == T0 + SPIKE_AT * 100
    assert r.score == pytest.approx(d2, rel=1e-5)
    assert [t.name for t in r.axes] == sorted(by_hand, key=lambda a: -by_hand[a][3])
    assert r.axes[0].name == "z"
    for t in r.axes:
        value, forecast, spread, term = by_hand[t.name]
        assert (t.value, t.expected, t.spread) == pytest.approx((value, forecast, spread), rel=1e-5)
        assert t.term == pytest.approx(term, rel=1e-5)
        assert t.share == pytest.approx(term / d2, rel=1e-5)
    assert sum(t.term for t in r.axes) == pytest.approx(r.score, rel=1e-5)
    assert r.threshold == pytest.approx(p.thresholds[3], rel=1e-5)
    assert len(r.recent) == explain.MAX_RECENT and r.recent[-1].ts <= T0 + (SPIKE_AT + 40) * 100
    assert why.text.startswith("why: accelerometer.z ") and "% of the distance" in why.text


def test_an_interval_without_a_scored_reading_says_so() -> None:
    p = Pipeline(load_settings(None), parse_rules(_rules("readings", ">=", 1)))
    results = [p.process(_acc_stream(40, spike_at=None))]  # all within the warm-up
    why = _firing(results).explanation
    assert why is not None and why.reading is None
    assert why.text == "why: no reading scored in the interval"


def _two_channel_stream(n: int, break_at: int) -> list[FakeMessage]:
    """Temperature and humidity of one device, anti-correlated around a shared factor, until the
    humidity follows the temperature at ``break_at`` (each channel alone keeps its spread)."""
    rng = np.random.default_rng(5)
    stream, out = Stream(), []
    for i in range(n):
        common, ts = rng.standard_normal(), T0 + i * 1000
        t = 21.0 + 0.5 * common + 0.02 * rng.standard_normal()
        h = 45.0 - 2.0 * common + 0.05 * rng.standard_normal()
        if i >= break_at:
            h = 45.0 + 2.0 * common + 0.05 * rng.standard_normal()
        # The first tick opens the model on both channels; then the humidity comes first, so each
        # frame closes on a temperature reading with both of the tick's values.
        order = (("temperature", t), ("humidity", h)) if i == 0 else (("humidity", h), ("temperature", t))
        for sensor, v in order:
            payload = encode_reading(
                "dev-1", sensor, ts, 2 * i + (sensor == "humidity"), {"value": round(v, 4)}
            )
            out.append(stream.message(payload, b"dev-1", 0, ts))
    return out


def test_a_frames_parts_are_its_hotelling_distance_split_by_channel() -> None:
    p = Pipeline(load_settings(None), parse_rules(_rules("device_anomalies")))
    frames: dict[int, tuple[float, float, float]] = {}  # flagged frames by event time, by hand
    results = []
    for m in _two_channel_stream(600, break_at=500):
        js, slot = p.joint_state, p.store.slots.get("dev-1")
        before = None if slot is None else (js.joint_mean[slot].copy(), js.joint_inv[slot].copy())
        results.append(p.process([m]))
        if slot is not None and before is not None and js.joint_why_at[slot, 1] == m.ts:
            frames[m.ts] = _by_hand(p, slot, *before)
    why = _firing(results).explanation
    assert why is not None and why.frame is not None
    t2_temp, t2_hum, t2 = frames[why.frame.ts]
    parts = {c.name: c.term for c in why.frame.channels}
    assert parts == pytest.approx({"temperature": t2_temp, "humidity": t2_hum}, rel=1e-5)
    assert why.frame.score == pytest.approx(t2, rel=1e-5)
    assert sum(parts.values()) == pytest.approx(why.frame.score, rel=1e-5)
    assert "device frame T^2" in why.text


def _by_hand(
    p: Pipeline, slot: int, mean: np.ndarray, inv_triangle: np.ndarray
) -> tuple[float, float, float]:
    """T^2 of the device's current values against the joint model's mean and inverse as they
    were before the frame, and the parts of temperature and humidity."""
    dims = p.catalog.dims
    inv = inv_triangle[packing(dims)]
    x = np.zeros(dims)
    for name in ("temperature", "humidity"):
        s = SENSOR_INDEX[name]
        x[p.catalog.offsets[s]] = p.ingest_state.last_vals[slot, s, 0]
    d = np.where(inv.any(axis=0), x - mean, 0.0)
    y = inv @ d
    part = {
        n: float(d[p.catalog.offsets[SENSOR_INDEX[n]]] * y[p.catalog.offsets[SENSOR_INDEX[n]]])
        for n in ("temperature", "humidity")
    }
    return part["temperature"], part["humidity"], part["temperature"] + part["humidity"]


def test_a_drift_alert_names_the_inputs_that_moved_with_their_quantiles() -> None:
    settings = load_settings(
        None,
        drift={"reference_size": 64, "window_size": 64, "check_every": 16},
        inputs={"reference_size": 256, "window_size": 128},
    )
    p = Pipeline(settings, parse_rules(_rules("input_drift", "==", 1)))
    rng = np.random.default_rng(7)
    stream, messages = Stream(), []
    for i in range(1500):
        v = 21.0 + 0.3 * rng.standard_normal() + (2.0 if i >= 1000 else 0.0)
        payload = encode_reading("dev-1", "temperature", T0 + i * 1000, i, {"value": round(v, 3)})
        messages.append(stream.message(payload, b"dev-1", 0, T0 + i * 1000))
    why = _firing([p.process(messages)]).explanation
    assert why is not None and why.kind == "drift"
    moved = why.inputs[0]
    assert (moved.axis, moved.against, moved.drifted) == ("value", "reference", True)
    assert moved.quantiles is not None
    ref, cur = moved.quantiles.reference, moved.quantiles.current
    assert len(ref) == len(cur) == len(explain.QUANTILES)
    assert ref[2] == pytest.approx(21.0, abs=0.1)
    assert cur[2] > ref[2] + 1.0  # the current median sits above the reference's
    assert "temperature value inputs vs reference: KS" in why.text


def test_the_wire_record_carries_the_explanation_and_old_records_still_decode() -> None:
    p = Pipeline(load_settings(None), parse_rules(_rules("anomalies")))
    alert = _firing([p.process(_acc_stream(SPIKE_AT + 40))])
    assert alerts.decode(alerts.encode(alert)) == alert
    wire = json.loads(alerts.encode(alert))
    assert wire["schema_version"] == 2 and wire["cohorts"] == {}
    assert set(wire["explanation"]) >= {"kind", "text", "reading", "frame", "inputs", "scores", "notes"}
    assert len(alerts.encode(alert)) < 4096  # bounded
    notes = annotations_of(alert)
    assert notes["explanation"] == alert.explanation.text  # type: ignore[union-attr]
    assert msgspec.json.decode(notes["explanation_json"], type=explain.Explanation) == alert.explanation
    old = {k: v for k, v in wire.items() if k not in ("cohorts", "explanation")} | {"schema_version": 1}
    decoded = alerts.decode(json.dumps(old).encode())
    assert (decoded.explanation, decoded.cohorts, decoded.schema_version) == (None, {}, 1)


def test_a_storm_summary_explains_what_it_suppressed() -> None:
    storm = alerts.StormControl(max_alerts=1, per_seconds=60)
    firing = [
        Alert(
            alerts.alert_id("hot", d, "humidity", 0),
            "hot",
            "firing",
            "warning",
            "device",
            d,
            "humidity",
            0,
            0,
            {},
            ["alert"],
            1,
        )
        for d in ("d1", "d2", "d3")
    ]
    summary = next(a for a in storm.admit(firing) if a.rule == alerts.STORM_RULE)
    assert summary.explanation is not None and summary.explanation.kind == "storm"
    assert summary.explanation.text.endswith("1 suppressed (hot 1)")


def test_binned_quantiles_interpolate_within_bins() -> None:
    counts = np.array([5, 10, 10, 5])
    edges = np.array([0.0, 1.0, 2.0], np.float32)
    assert explain.binned_quantiles(counts, edges) == [0.0, 0.25, 1.0, 1.75, 2.0]
    assert explain.binned_quantiles(np.zeros(4, np.int64), edges) == []
