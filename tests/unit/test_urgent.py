"""Urgent evaluations (a data gap's end, a run of anomalous readings) and the pair and group
signals that go with them: ``anomaly_streak``, ``retraining``, ``devices``."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.govern.alerts import Alert
from monitor.govern.rules import parse_rules
from monitor.pipeline import Pipeline
from monitor.schema import encode_reading
from monitor.settings import load_settings
from tests.unit.test_pipeline import DRIFT, LEVEL, MODEL, NOISE, T0, FakeMessage, Stream

RULES = """
rules:
  - name: gap
    scope: device
    when: {signal: gap, op: ">", value: 0}
  - name: step
    scope: device
    when: {signal: anomaly_streak, op: ">=", value: 3}
  - name: fleet_seen
    scope: fleet
    when: {signal: devices, op: ">=", value: 1}
    for: 1
"""


def _pipeline(compiled: bool, **drift: object) -> Pipeline:
    settings = load_settings(None, drift={**DRIFT, "check_every": 64, **drift}, model=MODEL)
    return Pipeline(settings, parse_rules(RULES), compiled=compiled)


def _firing(p: Pipeline, messages: list[FakeMessage], rule: str, batch: int = 1) -> list[Alert]:
    out = []
    for i in range(0, len(messages), batch):
        out += [
            a for a in p.process(messages[i : i + batch]).alerts if a.rule == rule and a.status == "firing"
        ]
    return out


def _readings(
    n: int, seed: int = 0, step_at: int | None = None, gap_at: int | None = None
) -> list[FakeMessage]:
    """dev-0's temperature at 1 Hz; from ``step_at`` on 40 noise levels higher; from ``gap_at`` on
    10 minutes later (a gap)."""
    rng, stream, out = np.random.default_rng(seed), Stream(), []
    for i in range(n):
        v = (
            LEVEL
            + NOISE * rng.standard_normal()
            + (40 * NOISE if step_at is not None and i >= step_at else 0.0)
        )
        ts = T0 + i * 1000 + (600_000 if gap_at is not None and i >= gap_at else 0)
        out.append(
            stream.message(
                encode_reading("dev-0", "temperature", ts, i, {"value": round(v, 4)}), b"dev-0", 0, ts
            )
        )
    return out


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("batch", [1, 97])
def test_the_reading_that_ends_a_gap_is_evaluated_at_once(compiled: bool, batch: int) -> None:
    msgs = _readings(300, gap_at=150)
    (alert,) = _firing(_pipeline(compiled), msgs, "gap", batch)
    assert alert.ts == T0 + 150 * 1000 + 600_000  # the first reading after the gap, not 64 later


def test_without_urgent_gap_the_gap_waits_for_the_interval() -> None:
    msgs = _readings(300, gap_at=150)
    (alert,) = _firing(_pipeline(True, urgent_gap=False), msgs, "gap")
    assert alert.ts > T0 + 150 * 1000 + 600_000


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("batch", [1, 97])
def test_a_run_of_anomalies_is_evaluated_at_its_third_reading(compiled: bool, batch: int) -> None:
    msgs = _readings(300, step_at=170)
    (alert,) = _firing(_pipeline(compiled), msgs, "step", batch)
    assert alert.ts == T0 + 172 * 1000
    assert alert.signals["anomaly_streak"] == 3
    assert alert.signals["readings"] < 64  # an interval cut short


def test_urgent_streak_zero_evaluates_on_schedule_only() -> None:
    msgs = _readings(300, step_at=170)
    (alert,) = _firing(_pipeline(True, urgent_streak=0), msgs, "step")
    assert (alert.ts - T0) // 1000 >= 172
    assert alert.signals["readings"] == 64


def test_a_clean_stream_has_no_streak() -> None:
    assert _firing(_pipeline(True), _readings(600, seed=3), "step") == []


def test_devices_counts_the_devices_feeding_the_fleet() -> None:
    p, stream, rng = _pipeline(True), Stream(), np.random.default_rng(1)
    msgs = [stream.reading(d, i, LEVEL + NOISE * rng.standard_normal()) for i in range(200) for d in range(3)]
    (alert,) = _firing(p, msgs, "fleet_seen")
    assert alert.signals["devices"] == 3
    p._release([p.store.slots["dev-0"]])
    assert p._group_sizes["*"] == 2


RETRAIN = """
rules:
  - name: shifted
    scope: device
    when: {signal: anomaly_rate, op: ">", value: 0.5}
    actions: [alert, retrain]
  - name: busy
    scope: device
    when: {signal: retraining, op: "==", value: 1}
"""


def test_retraining_is_one_while_a_retrain_of_the_pair_is_under_way() -> None:
    settings = load_settings(None, drift=DRIFT, model=MODEL)
    p = Pipeline(settings, parse_rules(RETRAIN))
    fired = []
    for m in _readings(500, step_at=200):
        fired += [(a.rule, a.status) for a in p.process([m]).alerts]
    assert fired[:2] == [("shifted", "firing"), ("busy", "firing")]
    assert ("busy", "resolved") in fired  # the retrain was decided
    assert not p.governor.retraining(("dev-0", "temperature"))


def test_busy_pair_flags_follow_a_device_to_its_new_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled loop leaves a busy pair's readings to the Python path by slot: when slots
    change hands (devices forgotten, a partition imported) the flags are computed again."""
    p, stream = _pipeline(True), Stream()
    p.process([stream.reading(d, 0, LEVEL) for d in range(3)])
    busy = frozenset({("dev-2", "temperature")})
    monkeypatch.setattr(p.governor, "busy_pairs", lambda: busy)
    temp = p.catalog.index["temperature"]
    assert p._python_pairs()[p.store.slots["dev-2"], temp] == 1
    state = p.export_partition(0)  # dev-0 and dev-2 live on partition 0
    p.drop_partition(0)
    p.process([stream.reading(5, 1, LEVEL)])  # dev-5 takes a freed slot
    p.import_partition(state)
    flags = p._python_pairs()
    assert flags[p.store.slots["dev-2"], temp] == 1
    assert int(flags.sum()) == 1
