"""Tests for monitor.pipeline: dead letters, offsets, alerts, retraining and lineage, with fake messages."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from monitor.govern.alerts import Alert
from monitor.govern.registry import AuditEvent, ModelVersion
from monitor.govern.rules import RuleSet, load_rules, parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Message
from monitor.schema import SENSOR_INDEX, SENSORS, Reason, encode_reading
from monitor.settings import load_settings

RULES = Path(__file__).resolve().parents[2] / "configs" / "rules.yaml"
TOPIC = "telemon.readings"
T0 = 1_700_000_000_000
TEMP = SENSOR_INDEX["temperature"]
#: Small windows so a drift is detected within a few hundred readings.
DRIFT = {
    "reference_size": 32,
    "window_size": 32,
    "check_every": 16,
    "fleet_reference_size": 100,
    "fleet_window_size": 100,
    "fleet_check_every": 50,
}
MODEL = {"warmup": 50, "retrain_window": 32}
LEVEL, NOISE = 21.0, 0.5
SHIFT = 50 * NOISE
SHIFT_AT = 200  # reading index (per device) where dev-1's temperature shifts


@dataclass(frozen=True)
class FakeMessage:
    """The part of ``confluent_kafka.Message`` the pipeline uses."""

    payload: bytes | None
    key_: bytes | None
    partition_: int
    offset_: int
    ts: int
    topic_: str = TOPIC

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str | None:
        return self.topic_

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)  # TIMESTAMP_CREATE_TIME


def _pipeline(rules: RuleSet | None = None) -> Pipeline:
    return Pipeline(load_settings(None, drift=DRIFT, model=MODEL), rules or load_rules(RULES))


def _shipped(*names: str) -> RuleSet:
    """The shipped rules of these names (a retrain's path through one rule, without the others')."""
    return RuleSet(rules=[r for r in load_rules(RULES).rules if r.name in names])


class Stream:
    """Builds messages with per-partition offsets; device ``dev-<i>`` lives on partition ``i % 2``."""

    def __init__(self) -> None:
        self.next_offset: dict[int, int] = {}

    def message(self, payload: bytes | None, key: bytes | None, partition: int, ts: int) -> FakeMessage:
        offset = self.next_offset.get(partition, 0)
        self.next_offset[partition] = offset + 1
        return FakeMessage(payload, key, partition, offset, ts)

    def reading(self, device: int, seq: int, value: float, sensor: str = "temperature") -> FakeMessage:
        dev = f"dev-{device}"
        ts = T0 + seq * 1000
        keys = SENSORS[sensor].keys
        values = {k: round(value, 4) for k in keys}
        return self.message(encode_reading(dev, sensor, ts, seq, values), dev.encode(), device % 2, ts)


def _gaussian_stream(
    readings: int, devices: int = 3, shift_device: int | None = None, seed: int = 0
) -> list[FakeMessage]:
    """Interleaved temperature readings of ``devices`` devices, one per second each."""
    rng = np.random.default_rng(seed)
    stream = Stream()
    out = []
    for i in range(readings):
        for d in range(devices):
            v = LEVEL + NOISE * rng.standard_normal()
            if d == shift_device and i >= SHIFT_AT:
                v += SHIFT
            out.append(stream.reading(d, i, v))
    return out


def _run(p: Pipeline, messages: Sequence[Message], batch: int = 1) -> list[BatchResult]:
    return [p.process(messages[i : i + batch]) for i in range(0, len(messages), batch)]


def _alerts(results: Iterable[BatchResult], rule: str | None = None) -> list[Alert]:
    return [a for r in results for a in r.alerts if rule is None or a.rule == rule]


# --- dead letters and offsets ---------------------------------------------------------------------


def _good(seq: int = 0) -> bytes:
    return encode_reading("dev-0", "temperature", T0 + seq, seq, {"value": 21.0})


MALFORMED = [
    (b'{"device_id": "dev-0"', b"dev-0", Reason.INVALID_JSON),
    (None, b"dev-0", Reason.INVALID_JSON),
    (b"[1]", b"dev-0", Reason.NOT_OBJECT),
    (_good(), b"dev-9", Reason.KEY_MISMATCH),
    (_good().replace(b"degC", b"degF"), b"dev-0", Reason.WRONG_UNIT),
    (encode_reading("dev-0", "temperature", T0, 0, {"value": 200.0}), b"dev-0", Reason.OUT_OF_RANGE),
    (_good().replace(b"21.0", b"1e999"), b"dev-0", Reason.NON_FINITE),
    (_good() + b" " * 5000, b"dev-0", Reason.OVERSIZE),
]


@pytest.mark.parametrize(("payload", "key", "reason"), MALFORMED, ids=[m[2].value for m in MALFORMED])
def test_malformed_message_becomes_a_dead_letter(payload: bytes | None, key: bytes, reason: Reason) -> None:
    p = _pipeline()
    msg = FakeMessage(payload, key, 0, 7, T0)
    result = p.process([msg])
    assert len(result.dead_letters) == 1
    assert result.dead_letters[0].message is msg
    assert result.dead_letters[0].rejection.reason is reason
    assert result.rejected == {reason.value: 1}
    assert int(result.valid.sum()) == 0
    assert len(p.store) == 0  # no device state for a rejected message


def test_mixed_batch_counts_only_valid_readings() -> None:
    p = _pipeline()
    stream = Stream()
    msgs = [stream.reading(0, i, 21.0 + 0.1 * i) for i in range(5)]
    msgs.insert(2, stream.message(b"not json", b"dev-0", 0, T0))
    msgs.append(stream.message(_good().replace(b"temperature", b"thermocouple"), b"dev-0", 0, T0))
    result = p.process(msgs)
    assert int(result.valid[TEMP]) == 5
    assert int(result.valid.sum()) == 5
    assert result.rejected == {"invalid_json": 1, "unknown_sensor": 1}


def test_offsets_are_last_offset_plus_one_per_partition() -> None:
    msgs = [
        FakeMessage(_good(0), b"dev-0", 0, 10, T0),
        FakeMessage(_good(1), b"dev-0", 0, 11, T0),
        FakeMessage(b"garbage", b"dev-1", 1, 40, T0),  # a dead letter is consumed too
        FakeMessage(_good(2), b"dev-0", 0, 12, T0),
        FakeMessage(_good(3), b"dev-0", 2, 5, T0, topic_="other.readings"),
    ]
    result = _pipeline().process(msgs)
    assert result.offsets == {(TOPIC, 0): 13, (TOPIC, 1): 41, ("other.readings", 2): 6}


def test_empty_batch() -> None:
    result = _pipeline().process([])
    assert result.offsets == {}
    assert result.alerts == result.versions == result.dead_letters == []


# --- alerts, retraining and lineage ---------------------------------------------------------------


def test_clean_gaussian_stream_yields_no_alerts() -> None:
    p = _pipeline()
    msgs = _gaussian_stream(400, devices=3, seed=1)
    results = _run(p, msgs)
    assert _alerts(results) == []
    assert [v for r in results for v in r.versions] == []
    assert sum(int(r.valid.sum()) for r in results) == len(msgs)
    assert sum(len(r.dead_letters) for r in results) == 0
    assert all(int(p.detect_state.n_scored[p.store.slots[f"dev-{d}"], TEMP]) > 0 for d in range(3))


@dataclass
class Shifted:
    pipeline: Pipeline
    messages: list[FakeMessage]
    results: list[BatchResult]

    def dev1_offsets(self) -> list[int]:
        return [m.offset_ for m in self.messages if m.key_ == b"dev-1"]

    def versions(self) -> list[ModelVersion]:
        """The retrained versions (the online model, registered as v1 at the same time, left out)."""
        return [v for r in self.results for v in r.versions if v.version > 1]

    def retrain_index(self) -> int:
        """Index of the message (= batch) whose processing promoted the retrained model."""
        (i,) = [i for i, r in enumerate(self.results) if any(v.version > 1 for v in r.versions)]
        return i

    def audit(self, kind: str) -> list[AuditEvent]:
        return [e for r in self.results for e in r.audit if e.kind == kind]


@pytest.fixture(scope="module")
def shifted() -> Shifted:
    p = _pipeline(_shipped("score_drift"))
    msgs = _gaussian_stream(500, devices=3, shift_device=1, seed=2)
    return Shifted(p, msgs, _run(p, msgs))


def test_shift_fires_score_drift_for_exactly_that_pair(shifted: Shifted) -> None:
    firing = [a for a in _alerts(shifted.results, "score_drift") if a.status == "firing"]
    assert [(a.device_id, a.sensor, a.scope) for a in firing] == [("dev-1", "temperature", "device")]
    (alert,) = firing
    assert alert.ts >= T0 + SHIFT_AT * 1000
    assert alert.signals["ks_drift"] == 1.0
    assert alert.signals["psi_drift"] == 1.0
    assert alert.model_version == 1
    assert alert.actions == ["alert", "retrain"]


def test_retrain_records_a_version_with_lineage(shifted: Shifted) -> None:
    (v,) = shifted.versions()
    firing = next(a for a in _alerts(shifted.results, "score_drift") if a.status == "firing")
    settings = shifted.pipeline.settings
    assert (v.device_id, v.sensor, v.version, v.parent) == ("dev-1", "temperature", 2, 1)
    assert (v.trigger_rule, v.trigger_alert_id) == ("score_drift", firing.alert_id)
    t = v.trained_on
    assert (t.topic, t.partition) == (settings.kafka.readings_topic, 1)
    offsets = shifted.dev1_offsets()
    assert t.first_offset in offsets
    assert t.last_offset in offsets
    assert t.readings == settings.model.retrain_window
    assert t.last_ts == firing.ts  # the window ends with the reading whose evaluation fired
    assert t.last_ts - t.first_ts == (t.readings - 1) * 1000
    test = v.test_data
    assert test is not None and t.first_offset < test.first_offset <= test.last_offset == t.last_offset
    assert v.metrics["candidate_metric"] > v.metrics["incumbent_metric"] + v.metrics["margin"]
    assert v.created_at > t.last_ts + settings.retrain.shadow_readings * 1000 - 1000  # after its shadow


def test_first_retrain_registers_the_online_model_as_v1(shifted: Shifted) -> None:
    (v1,) = [v for r in shifted.results for v in r.versions if v.version == 1]
    assert (v1.device_id, v1.parent, v1.trigger_rule) == ("dev-1", 0, "")
    # The online model as it served at the firing: on the old level, moved part of the way toward
    # the shifted readings by clipped learning (model.clip_anomalies), never all of it.
    assert LEVEL - 4 * NOISE < v1.baseline["mean"][0] < LEVEL + SHIFT / 2


def test_retrain_is_audited_from_firing_to_promotion(shifted: Shifted) -> None:
    (action,) = [e for e in shifted.audit("action") if e.action == "retrain"]
    (promoted,) = shifted.audit("promoted")
    assert (promoted.device_id, promoted.version, promoted.previous) == ("dev-1", 2, 1)
    assert action.alert_id == promoted.alert_id
    assert "candidate AUC" in promoted.reason and "live readings" in promoted.reason
    assert "score_drift" in [e.rule for e in shifted.audit("rule_fired") if e.device_id == "dev-1"]


def test_retrained_baseline_is_finite_and_at_the_new_level(shifted: Shifted) -> None:
    (v,) = shifted.versions()
    assert all(math.isfinite(x) for xs in v.baseline.values() for x in xs)
    assert all(math.isfinite(x) for x in v.params.values())
    assert v.trained_on.first_ts >= T0 + SHIFT_AT * 1000  # these settings fire after > 32 shifted readings
    assert v.baseline["mean"][0] == pytest.approx(LEVEL + SHIFT, abs=4 * NOISE)
    assert v.baseline["var"][0] == pytest.approx(NOISE**2, rel=0.6)


def test_retrained_model_serves_the_pair(shifted: Shifted) -> None:
    p = shifted.pipeline
    slot = p.store.slots["dev-1"]
    assert p.govern_state.version(slot, TEMP) == 2
    assert p.govern_state.version(p.store.slots["dev-0"], TEMP) == 1
    m = p.detect_state.model_of(slot, TEMP)
    assert m is not None
    assert m.params()["mean"][0] == pytest.approx(LEVEL + SHIFT, abs=4 * NOISE)


def test_scores_are_normal_again_after_the_retrain(shifted: Shifted) -> None:
    after = shifted.results[shifted.retrain_index() + 1 :]
    fired = [a for a in _alerts(after) if a.status == "firing" and a.scope == "device"]
    assert fired == []
    assert sum(int(r.anomalies.sum()) for r in after) <= 2
    assert all(a.model_version == 2 for a in _alerts(after) if a.device_id == "dev-1")
    slot = shifted.pipeline.store.slots["dev-1"]
    # The pair went through a whole new reference and window, and compared clean.
    assert (
        int(shifted.pipeline.detect_state.n_scored[slot, TEMP])
        >= DRIFT["reference_size"] + DRIFT["window_size"]
    )


def test_other_devices_are_untouched_by_the_shift(shifted: Shifted) -> None:
    device_alerts = [a for a in _alerts(shifted.results) if a.scope == "device"]
    assert {a.device_id for a in device_alerts} == {"dev-1"}


# --- duplicates -----------------------------------------------------------------------------------


def test_duplicate_seq_is_not_applied_twice() -> None:
    p = _pipeline()
    stream = Stream()
    msgs = [stream.reading(0, i, LEVEL + 0.1 * (i % 5)) for i in range(60)]
    p.process(msgs)
    slot, gov = p.store.slots["dev-0"], p.govern_state
    before = p.detect_state.model_of(slot, TEMP)
    assert before is not None
    raw_n = int(gov.raw_n[slot, TEMP])
    replay = stream.message(msgs[-1].payload, b"dev-0", 0, msgs[-1].ts)  # same seq, new offset
    result = p.process([replay])
    after = p.detect_state.model_of(slot, TEMP)
    assert after is not None and after.dump() == before.dump() and int(gov.raw_n[slot, TEMP]) == raw_n
    assert result.dead_letters == []
    assert int(p.ingest_state.integrity[slot, TEMP, 2]) == 1  # "duplicate"
    assert result.offsets == {(TOPIC, 0): replay.offset_ + 1}


# --- known deviations (see the reasons) -----------------------------------------------------------


def test_online_model_uses_configured_var_fading_and_sensor_resolution() -> None:
    p = _pipeline()
    stream = Stream()
    msgs = [stream.reading(0, i, 21.0) for i in range(60)]  # a constant reading: variance 0
    msgs.append(stream.reading(0, 60, 21.0 + SENSORS["temperature"].resolution))  # one resolution step
    result = p.process(msgs)
    m = p.detect_state.model_of(0, TEMP)
    assert m is not None
    assert (m.var_fading, m.resolution) == (p.settings.model.var_fading, SENSORS["temperature"].resolution)
    assert int(result.anomalies[TEMP]) == 0  # one step = one floored std, d2 = 1 (actual: d2 = 100)


def test_retrain_uses_axis_names_not_json_key_order() -> None:
    p = _pipeline()
    rng = np.random.default_rng(3)
    msgs = []
    for i in range(60):
        values = {"z": 9.81 + 0.01 * rng.standard_normal(), "y": 0.01 * rng.standard_normal(), "x": 1.0}
        raw = json.dumps(
            {
                "device_id": "dev-0",
                "sensor": "accelerometer",
                "ts": T0 + i * 100,
                "seq": i,
                "values": values,
                "unit": "m/s^2",
                "schema_version": 1,
            }
        ).encode()
        msgs.append(FakeMessage(raw, b"dev-0", 0, i, T0 + i * 100))
    result = p.process(msgs)
    assert result.dead_letters == []
    assert p.governor.retrain(0, SENSOR_INDEX["accelerometer"], "manual", "test", T0, result) is None
    (trained,) = p.trainer.poll()
    assert trained.job.rows.mean(axis=0) == pytest.approx([1.0, 0.0, 9.81], abs=0.05)
    assert trained.candidate is not None
    assert trained.candidate.params()["mean"] == pytest.approx([1.0, 0.0, 9.81], abs=0.05)


def _alert_keys(results: Iterable[BatchResult]) -> list[tuple[str, str, str, int]]:
    return [(a.rule, a.status, a.device_id, a.ts) for a in _alerts(results)]


@pytest.mark.parametrize("batch", [2, 3, 7, 1000])
def test_alerts_do_not_depend_on_batch_size(batch: int) -> None:
    # Evaluations happen in stream order right after every check_every-th reading of a pair.
    msgs = _gaussian_stream(400, devices=1, shift_device=0, seed=4)
    one_by_one = _alert_keys(_run(_pipeline(), msgs, batch=1))
    assert ("score_drift", "firing", "dev-0") in [k[:3] for k in one_by_one]
    assert _alert_keys(_run(_pipeline(), msgs, batch=batch)) == one_by_one


# --- quarantine -----------------------------------------------------------------------------------

QUARANTINE_RULES = """
rules:
  - name: unreliable
    scope: device
    when: {signal: anomaly_rate, op: ">", value: 0.5}
    clear: {signal: anomaly_rate, op: "<", value: 0.1}
    actions: [alert, quarantine]
"""


def test_quarantine_stops_learning_while_the_rule_fires() -> None:
    """Two readings in three are spikes from 200 to 400: the device is quarantined, so even its
    normal readings are not learned, until the spikes stop and the rule resolves."""
    p = Pipeline(load_settings(None, drift=DRIFT, model=MODEL), parse_rules(QUARANTINE_RULES))
    stream, rng, learned = Stream(), np.random.default_rng(5), []
    for i in range(600):
        spike = 200 <= i < 400 and i % 3 != 0
        v = LEVEL + NOISE * rng.standard_normal() + (SHIFT if spike else 0.0)
        result = p.process([stream.reading(0, i, v)])
        m = p.detect_state.model_of(p.store.slots["dev-0"], TEMP)
        learned.append(
            (i, m.n if m is not None else 0, [e.action for e in result.audit if e.kind == "action"])
        )
    quarantined = next(i for i, _, actions in learned if "quarantine" in actions)
    released = next(i for i, _, actions in learned if "release" in actions)
    assert 200 < quarantined < released
    during = {n for i, n, _ in learned if quarantined <= i < released}
    assert len(during) == 1  # not one reading learned while quarantined ...
    assert learned[-1][1] > learned[released][1]  # ... and learning resumes once released
    assert p.govern_state.quarantined[p.store.slots["dev-0"]] == 0
