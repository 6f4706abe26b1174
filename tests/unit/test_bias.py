"""Cohort bias: a cohort the monitor over-alerts is flagged, the others are not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from monitor.analyze.bias import CohortBias
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import encode_reading
from monitor.settings import BiasSettings, load_settings
from tests.unit.test_pipeline import T0, FakeMessage, Stream

RULES = """
rules:
  - name: spike
    scope: device
    when: {signal: anomalies, op: ">", value: 0}
    cooldown_s: 0
    actions: [alert]
  - name: cohort_over_alerting
    scope: cohort
    cohort: firmware
    when:
      all:
        - {signal: bias_alert_pvalue, op: "<", value: 0.01}
        - {signal: bias_alert_ratio, op: ">", value: 2}
    actions: [alert]
"""
NOISY = {"dev-0", "dev-1", "dev-2", "dev-3"}  # firmware 2.1: one reading in 60 off the scale


def readings(
    rng: np.random.Generator, start_s: int, end_s: int, t0: int = T0, devices: int = 12
) -> Iterator[tuple[int, str, int, bytes]]:
    """The fleet's temperature readings of seconds ``[start_s, end_s)``, 1 Hz per device, as
    ``(device index, device id, event time, message)``; ``NOISY`` devices off the scale now and then."""
    for i in range(start_s, end_s):
        for d in range(devices):
            dev = f"dev-{d}"
            v = 21.0 + d * 0.1 + 0.2 * rng.standard_normal()
            if dev in NOISY and i > 200 and rng.random() < 1 / 60:
                v += 10.0
            ts = t0 + i * 1000
            yield d, dev, ts, encode_reading(dev, "temperature", ts, i, {"value": round(v, 3)})


def _stream(minutes: int, seed: int = 11) -> list[FakeMessage]:
    stream = Stream()
    rng = np.random.default_rng(seed)
    return [stream.message(m, dev.encode(), d % 2, ts) for d, dev, ts, m in readings(rng, 0, minutes * 60)]


def _pipeline(tmp_path: Path) -> Pipeline:
    cohorts = tmp_path / "cohorts.yaml"
    labels = {f"dev-{d}": {"firmware": "2.1" if f"dev-{d}" in NOISY else "1.0"} for d in range(12)}
    cohorts.write_text(yaml.safe_dump(labels))
    settings = load_settings(
        None, cohorts_file=cohorts, bias={"window_s": 300, "lateness_s": 0, "min_alerts": 5}
    )
    return Pipeline(settings, parse_rules(RULES))


def test_a_cohort_that_over_alerts_is_flagged_and_the_others_are_not(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    messages = _stream(20)
    results: list[BatchResult] = [p.process(messages[i : i + 500]) for i in range(0, len(messages), 500)]
    cohort_alerts = [a for r in results for a in r.alerts if a.rule == "cohort_over_alerting"]
    assert {a.device_id for a in cohort_alerts} == {"firmware=2.1"}
    firing = next(a for a in cohort_alerts if a.status == "firing")
    assert firing.signals["bias_alert_ratio"] > 2 and firing.signals["bias_alert_pvalue"] < 0.01
    assert firing.cohorts == {"firmware": "2.1"}
    closed = {key: sig for r in results for key, sig in r.bias.items()}
    assert closed[("firmware=2.1", "temperature")]["bias"] == 1.0
    assert closed[("firmware=1.0", "temperature")]["bias_alert_ratio"] < 1
    device_alerts = [a for r in results for a in r.alerts if a.rule == "spike" and a.status == "firing"]
    assert {a.device_id for a in device_alerts} <= NOISY | {f"dev-{d}" for d in range(12)}
    assert all(a.cohorts == {"firmware": "2.1"} for a in device_alerts if a.device_id in NOISY)


def test_the_scores_of_a_cohort_are_compared_by_device(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    messages = _stream(12)
    results = [p.process(messages[i : i + 500]) for i in range(0, len(messages), 500)]
    last = {key: sig for r in results for key, sig in r.bias.items()}
    noisy, clean = last[("firmware=2.1", "temperature")], last[("firmware=1.0", "temperature")]
    assert noisy["bias_devices"] == 4 and clean["bias_devices"] == 8
    assert noisy["bias_score_shift"] > 0 > clean["bias_score_shift"]
    assert noisy["bias_score_pvalue"] < 0.05


def test_a_window_waits_for_partitions_read_behind_and_leaves_out_what_comes_later() -> None:
    bias = CohortBias(BiasSettings(window_s=60, lateness_s=30, min_alerts=1, min_devices=2))
    labels = {"fw": "2.1"}
    bias.on_interval("d1", labels, 0, 10, 5.0, 10, ts=50_000)  # window 0
    bias.on_interval("d2", {"fw": "1.0"}, 0, 10, 5.0, 10, ts=70_000)  # window 1: window 0 stays open
    bias.on_interval("d3", labels, 0, 10, 5.0, 10, ts=55_000)  # a partition behind: still window 0
    assert bias.take_closed() == []
    bias.on_interval("d2", {"fw": "1.0"}, 0, 10, 5.0, 10, ts=95_000)  # 35 s past window 0's end
    closed = {key: sig for key, _, sig in bias.take_closed()}
    assert closed["fw=2.1"]["bias_readings"] == 20 and closed["fw=2.1"]["bias_devices"] == 2
    bias.on_interval("d4", labels, 0, 10, 5.0, 10, ts=58_000)  # window 0 closed: left out
    assert bias.late == 10
