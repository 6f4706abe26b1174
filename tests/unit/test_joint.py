"""The device tier: a joint model per device sees a broken relation between channels that each
channel's own model cannot, attributes it, and keeps to its frames, restarts and settings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from monitor.detect import joint
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Scored
from monitor.schema import encode_reading
from monitor.settings import Settings, load_settings
from tests.unit.test_pipeline import FakeMessage

TS = 1_700_000_000_000
CHANNELS = {
    "builtin": False,
    "declare": [
        {"name": "flow", "unit": "l/min", "low": 0, "high": 1000, "resolution": 0.01},
        {"name": "current", "unit": "A", "low": 0, "high": 100, "resolution": 0.001},
        {
            "name": "vibration",
            "unit": "mm/s",
            "low": -100,
            "high": 100,
            "resolution": 0.001,
            "axes": ["x", "y"],
        },
    ],
}
RULES = """
rules:
  - name: relation_broken
    scope: device
    when: {signal: device_anomaly_rate, op: ">", value: 0.2}
    actions: [alert]
"""


def _settings(**extra: object) -> Settings:
    return load_settings(None, channels=CHANNELS, **extra)  # type: ignore[arg-type]


def _pump(n: int = 1500, fault_at: int = 1000, seed: int = 4) -> list[FakeMessage]:
    """A pump whose current follows its flow (current = 0.1 x flow); from ``fault_at`` the motor
    draws 0.6 A more for the same flow: every value stays inside its usual range (the flow varies
    by +-40 l/min, the current by +-4 A), only the relation breaks."""
    rng = np.random.default_rng(seed)
    catalog = _settings().channels.catalog()
    out, seq = [], 0
    for i in range(n):
        flow = float(200 + 40 * np.sin(i / 25) + rng.normal(0, 1.0))
        current = float(0.1 * flow + rng.normal(0, 0.05) + (0.6 if i >= fault_at else 0.0))
        vib = {"x": float(rng.normal(0, 0.2)), "y": float(rng.normal(0, 0.2))}
        for sensor, values in (
            ("flow", {"value": flow}),
            ("current", {"value": current}),
            ("vibration", vib),
        ):
            seq += 1
            raw = encode_reading("pump-1", sensor, TS + i * 1000, seq, values, catalog=catalog)
            out.append(FakeMessage(raw, b"pump-1", 0, seq, TS + i * 1000))
    return out


def _run(p: Pipeline, msgs: list[FakeMessage], batch: int = 300) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def _trace(results: list[BatchResult]) -> list[Scored]:
    return [s for r in results for s in r.trace]


def test_a_broken_relation_is_flagged_by_the_joint_model_and_not_by_the_pairs() -> None:
    settings = _settings(joint={"relearn_after": 0})
    p = Pipeline(settings, parse_rules(RULES, sensors=settings.channels.catalog().names), trace=True)
    results = _run(p, _pump())
    trace = _trace(results)
    frames = [s for s in trace if s.joint_distance is not None]
    # A frame per row from the second (the first row's channels each restart the model), scored
    # after its warm-up.
    assert len(frames) == 1500 - 1 - 100
    assert {s.joint_dims for s in frames} == {4}
    before = [s for s in frames if s.ts < TS + 1000 * 1000]
    after = [s for s in frames if s.ts >= TS + 1000 * 1000]
    assert sum(s.joint_anomalous for s in before) <= 2
    assert sum(s.joint_anomalous for s in after) > 0.9 * len(after)
    pair_flags = sum(s.anomalous for s in trace if s.ts >= TS + 1000 * 1000 and s.sensor == "current")
    assert pair_flags < 0.05 * 500  # the current alone stays in its range
    firing = [a for r in results for a in r.alerts if a.status == "firing"]
    assert {(a.rule, a.sensor) for a in firing} <= {
        ("relation_broken", "current"),
        ("relation_broken", "flow"),
    }
    assert ("relation_broken", "current") in {(a.rule, a.sensor) for a in firing}


def test_the_kernel_and_the_python_path_agree_on_the_joint_model() -> None:
    runs = [
        Pipeline(
            _settings(),
            parse_rules(RULES, sensors=_settings().channels.catalog().names),
            trace=True,
            compiled=c,
        )
        for c in (True, False)
    ]
    kr, pr = (_run(p, _pump(n=600, fault_at=400), batch=97) for p in runs)
    assert _trace(kr) == _trace(pr)
    k, q = (p.store.export(sorted(p.store.slots.values())) for p in runs)
    for name in [n for n in k.arrays if n.startswith("joint_")]:
        np.testing.assert_array_equal(k.arrays[name], q.arrays[name], err_msg=name)


def test_a_new_channel_restarts_the_model_over_the_larger_set() -> None:
    p = Pipeline(_settings(), parse_rules(RULES, sensors=_settings().channels.catalog().names), trace=True)
    msgs = [m for m in _pump(n=300) if b'"sensor":"vibration"' not in (m.value() or b"")]
    _run(p, msgs[:400])  # flow and current only: 200 frames
    js, slot = p.joint_state, p.store.slots["pump-1"]
    assert int(js.joint_dims[slot]) == 2 and js.joint_n[slot] == 199
    catalog = p.catalog
    raw = encode_reading("pump-1", "vibration", TS + 300_000, 10_000, {"x": 0.0, "y": 0.0}, catalog=catalog)
    p.process([FakeMessage(raw, b"pump-1", 0, 10_000, TS + 300_000)])
    assert int(js.joint_dims[slot]) == 4 and js.joint_n[slot] == 0


def test_a_persistent_new_regime_is_learned_anew() -> None:
    settings = _settings(joint={"relearn_after": 50})
    p = Pipeline(settings, parse_rules(RULES, sensors=settings.channels.catalog().names), trace=True)
    trace = _trace(_run(p, _pump()))
    frames = [s for s in trace if s.ts >= TS + 1000 * 1000 and s.joint_distance is not None]
    flagged = [s.joint_anomalous for s in frames]
    # Relearned after 50 (then 100 frames of warm-up): the new relation is the baseline.
    assert all(flagged[:50]) and sum(flagged[50:]) < 5 and len(flagged) == 500 - 100


def test_quarantine_stops_learning_and_disabled_means_no_frames() -> None:
    off = _settings(joint={"enabled": False})
    p = Pipeline(off, parse_rules(RULES, sensors=off.channels.catalog().names), trace=True)
    trace = _trace(_run(p, _pump(n=200)))
    assert all(s.joint_distance is None for s in trace)
    assert not p.joint_state.joint_n.any()


def test_signals_reach_the_rules() -> None:
    p = Pipeline(_settings(), parse_rules(RULES, sensors=_settings().channels.catalog().names))
    _run(p, _pump(n=170, fault_at=10_000))  # the current's last evaluation: at its 160th reading
    slot, s = p.store.slots["pump-1"], p.catalog.index["current"]
    sig = p._pair_signals(slot, s)
    assert sig["device_frames"] > 0 and 0.0 <= sig["device_score"] <= 1.0
    assert sig["device_anomaly_rate"] == sig["device_anomalies"] / sig["device_frames"]


@pytest.mark.parametrize("a", [0.5, 1.0, 1.5, 2.0, 6.0, 30.0])
def test_gammainc_is_the_regularised_lower_incomplete_gamma(a: float) -> None:
    for x in (0.0, 0.01, 0.5, a, 2 * a + 3, 60.0, 400.0):
        assert joint.gammainc(a, x) == pytest.approx(special.gammainc(a, x), rel=1e-12, abs=1e-15)


def test_the_joint_model_is_in_the_per_device_budget() -> None:
    p = Pipeline(load_settings(None), parse_rules("rules: []"))
    per_device = sum(a.nbytes for a in p.joint_state.arrays.values()) // p.store.capacity
    # mean, and the upper triangles of the covariance and the inverse over 12 dimensions; count,
    # dims, run, learned; per pair: in, fresh, frames, anomalies, max, the part of the latest flagged
    # frame (6 pairs); that frame's T^2 and time
    assert per_device == 8 * (12 + 2 * 78) + 8 + 3 * 4 + 6 * (1 + 1 + 4 + 4 + 8 + 8) + 2 * 8 == 1536
    assert p.store.array_bytes_per_device() >= per_device
