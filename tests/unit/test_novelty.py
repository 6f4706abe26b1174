"""The novelty stage: hand-computed levels for each of its steps, and its place in the pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from monitor.detect.novelty import LIKELIHOOD_BAND, Novelty, state_size, tail_probability
from monitor.evaluation import harness
from monitor.evaluation.replay import ReplayMessage, Series, replay_series
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.schema import Reading
from monitor.settings import NoveltySettings, Settings, load_settings
from monitor.state import snapshot

HOUR = 3_600_000
KEY = b"k" * 32
NO_LIKELIHOOD = {"learning": 10**6}  # the likelihood never scores: levels are range levels only


def levels(settings: NoveltySettings, values: list[float], step_ms: int = HOUR) -> list[float]:
    n = Novelty(settings)
    state = n.new_state()
    return [n.update(state, i * step_ms, (v,)) for i, v in enumerate(values)]


def test_new_ground_scores_half_plus_the_excess_over_the_range() -> None:
    cfg = NoveltySettings(warmup=2, refractory=0, **NO_LIKELIHOOD)
    # range [0, 10] -> 15: 0.5 + 5/10 = 1.0; [0, 15] -> 12: inside; -> 16: 0.5 + 1/15; -> -3: 0.5 + 3/16
    out = levels(cfg, [0.0, 10.0, 15.0, 12.0, 16.0, -3.0])
    assert out == pytest.approx([0.0, 0.0, 1.0, 0.0, 0.5 + 1 / 15, 0.5 + 3 / 16])


def test_excess_is_capped_at_one() -> None:
    cfg = NoveltySettings(warmup=2, refractory=0, **NO_LIKELIHOOD)
    assert levels(cfg, [0.0, 1.0, 100.0])[-1] == 1.0


def test_new_ground_during_warmup_is_learned_not_reported() -> None:
    cfg = NoveltySettings(warmup=4, refractory=0, **NO_LIKELIHOOD)
    out = levels(cfg, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert out == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.5 + 1 / 3, 0.5 + 1 / 4])


def test_refractory_reports_an_episode_once_unless_it_gets_worse() -> None:
    cfg = NoveltySettings(warmup=2, refractory=3, **NO_LIKELIHOOD)
    # 12 over [0, 10]: 0.7; 13 over [0, 12]: 0.583 < 0.7 within 3 readings: 0; three readings later
    # 14 over [0, 13]: 0.577 is reported again; 30 over [0, 14]: 1.0 > 0.577 at once.
    out = levels(cfg, [0.0, 10.0, 12.0, 13.0, 5.0, 5.0, 5.0, 14.0, 30.0])
    assert out == pytest.approx([0, 0, 0.7, 0, 0, 0, 0, 0.5 + 1 / 13, 1.0])


def test_new_ground_within_the_range_tolerance_is_not_reported() -> None:
    cfg = NoveltySettings(warmup=2, refractory=0, range_tolerance=0.1, **NO_LIKELIHOOD)
    # [0, 10] -> 10.5: excess 0.05 <= 0.1, learned but not reported; [0, 10.5] -> 12: 1.5/10.5 > 0.1
    assert levels(cfg, [0.0, 10.0, 10.5, 12.0]) == pytest.approx([0, 0, 0, 0.5 + 1.5 / 10.5])


def test_a_residual_outside_the_residuals_range_scores_in_the_lower_band() -> None:
    # One hour of day: the profile is one mean, moving half way to each reading. Alternating 0 and
    # 10 take it to 0, 5, 2.5, ... then between 10/3 and 20/3: the residuals span [-20/3, 7.5] (7.5:
    # the 10 after 2.5). Three 9s take it from 20/3 to 8.708, and a 0 (inside the range [0, 10])
    # then has a residual of -8.708, past the residuals' range by (8.708 - 20/3) / (7.5 + 20/3).
    cfg = NoveltySettings(warmup=2, residual_warmup=40, refractory=0, fading=0.5, **NO_LIKELIHOOD)
    values = [0.0, 10.0] * 30 + [9.0, 9.0, 9.0, 0.0]
    n = Novelty(cfg)
    state = n.new_state()
    out = [n.update(state, i, (v,)) for i, v in enumerate(values)]
    assert max(out[:-1]) == 0.0
    profile = 20 / 3
    for _ in range(3):
        profile += 0.5 * (9.0 - profile)
    excess = (profile - 20 / 3) / (7.5 + 20 / 3)
    assert out[-1] == pytest.approx(0.45 * (0.5 + excess))


def test_a_variance_increase_inside_the_range_alarms_once_as_a_regime_change() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(0, 1, 4000)
    values[2000:] *= 3.0  # the noise triples
    # Only the regime detector reports: no new ground of either kind, no likelihood.
    cfg = NoveltySettings(range_tolerance=100, residual_warmup=10**6, refractory=0, **NO_LIKELIHOOD)
    out = np.asarray(levels(cfg, values.tolist(), step_ms=1))
    alarms = np.flatnonzero(out > 0)
    assert out[alarms].tolist() == [cfg.regime_level]  # one alarm: the new regime is then learned
    # The CUSUM grows by about 3 x 0.8 - (0.8 + 0.8) = 0.8 a reading: ~25 readings to pass 20.
    assert 2010 <= alarms[0] < 2060


def test_no_regime_alarm_on_stationary_noise() -> None:
    values = np.random.default_rng(12).normal(0, 1, 6000)
    cfg = NoveltySettings(range_tolerance=100, residual_warmup=10**6, refractory=0, **NO_LIKELIHOOD)
    assert max(levels(cfg, values.tolist(), step_ms=1)) == 0.0


FLAT_ONLY = {"range_tolerance": 100, "residual_warmup": 10**6, "regime_warmup": 10**6, **NO_LIKELIHOOD}


def test_a_flatline_longer_than_every_earlier_run_alarms_once() -> None:
    cfg = NoveltySettings(flat_min=5, flat_warmup=1, refractory=0, **FLAT_ONLY)
    # runs of 3, 7 (5 repeats: the 6th reading of the run alarms), 4, and 9 (its 8th reading:
    # 7 repeats beat the record of 6)
    values = [1.0] * 3 + [2.0] * 7 + [3.0] * 4 + [4.0] * 9
    out = levels(cfg, values)
    alarms = [i for i, level in enumerate(out) if level]
    assert alarms == [3 + 5, 3 + 7 + 4 + 7]
    assert {out[i] for i in alarms} == {cfg.flat_level}


def test_a_flatline_during_warmup_sets_the_record_without_alarming() -> None:
    cfg = NoveltySettings(flat_min=3, flat_warmup=20, refractory=0, **FLAT_ONLY)
    values = [0.0] * 10 + [1.0, 2.0] * 10 + [5.0] * 9 + [6.0] * 12
    out = levels(cfg, values)
    # the run of 10 zeros (9 repeats) is the record; the 5s (8 repeats) do not beat it, the 6s do
    # at their 11th reading
    assert [i for i, level in enumerate(out) if level] == [10 + 20 + 9 + 10]


def test_tail_probability_by_hand() -> None:
    # mean 0.5, variance 0.01 (sd 0.1): x = 0.7 is 2 sd away, both sides alike
    assert tail_probability(0.7, 0.5, 0.01) == pytest.approx(0.5 * math.erfc(2 / math.sqrt(2)))
    assert tail_probability(0.3, 0.5, 0.01) == pytest.approx(tail_probability(0.7, 0.5, 0.01))
    # floors: mean 0.03, variance 0.0003 (a near-constant raw score must not make every blip red)
    assert tail_probability(0.05, 0.0, 0.0) == pytest.approx(0.5 * math.erfc(0.02 / math.sqrt(0.0006)))


def test_a_learned_daily_rhythm_is_not_novel() -> None:
    day = [10.0 + 5.0 * math.sin(2 * math.pi * h / 24) for h in range(24)]
    out = levels(NoveltySettings(learning=100, average=5), day * 40)
    assert max(out[24 * 10 :]) < 0.05


def test_a_burst_off_the_daily_profile_peaks_at_its_start() -> None:
    rng = np.random.default_rng(7)
    day = np.array([10.0 + 5.0 * math.sin(2 * math.pi * h / 24) for h in range(24)])
    values = np.tile(day, 40) + rng.normal(0, 0.2, 24 * 40)
    start = 24 * 35
    values[:2] = [4.0, 16.0]  # the range covers the noise from the start: no new ground
    values[start : start + 12] = day[:12][::-1]  # inside the range, at the wrong hours
    cfg = NoveltySettings(learning=200, average=5, refractory=24)
    out = np.asarray(levels(cfg, values.tolist()))
    peak = int(np.argmax(out))
    assert start <= peak < start + 5  # within the averaging window of the burst's start
    others = np.delete(out, np.s_[start : start + 24])
    assert out[peak] > others.max() + 0.1  # the noise's own levels stay well below the burst's
    assert out.max() <= LIKELIHOOD_BAND  # in range: the likelihood band, below new ground


def test_only_the_first_reading_of_a_red_episode_keeps_its_level() -> None:
    values = [0.0 if h % 2 == 0 else 10.0 for h in range(400)]  # the hour-of-day profile is exact
    values[350:356] = [10.0 - v for v in values[350:356]]  # swapped: far off the profile, in range
    cfg = NoveltySettings(learning=50, average=1, refractory=0, warmup=5)
    out = levels(cfg, values)
    yellow = LIKELIHOOD_BAND * 3 / 10  # a tail probability of 1e-3
    assert out[350] == LIKELIHOOD_BAND  # red: a tail probability under 1e-5 (1e-10 at most)
    assert out[351:356] == pytest.approx([yellow] * 5)
    assert max(out[100:350]) < yellow


def test_state_size_is_zero_when_off() -> None:
    assert state_size(NoveltySettings()) == 0
    # 14 scalars, the previous reading (3), two ranges (2 x 2 x 3), slow residual mean and
    # variance, level and variance (2 x 2 x 3), 24 x 3 profile means, 24 counts, 20 raw scores
    assert state_size(NoveltySettings(enabled=True, average=20)) == 14 + 3 + 12 + 12 + 72 + 24 + 20


def _nab_like_settings() -> Settings:
    return load_settings(Path("configs/nab.yaml"), novelty={"learning": 40}, metrics={"enabled": False})


def test_pipeline_traces_levels_and_counts_anomalies_by_level() -> None:
    settings = _nab_like_settings()
    rules = load_rules(Path("configs/nab-rules.yaml"))
    values = [10.0 + (i % 5) for i in range(300)] + [100.0] + [10.0] * 20
    stamps = [i * 300_000 for i in range(len(values))]
    replay = replay_series(settings, rules, [Series("s", stamps, values)], harness.NAB_SENSOR)
    trace = replay.trace
    assert all(s.level is not None for s in trace)
    spike = trace[300]
    assert spike.level == 1.0 and spike.anomalous
    assert [a.rule for a in replay.alerts if a.status == "firing"] == ["novel_reading"]
    assert sum(s.anomalous for s in trace) == sum(
        s.level is not None and s.level >= settings.novelty.threshold for s in trace
    )


def test_novelty_state_survives_a_partition_snapshot() -> None:
    settings = _nab_like_settings()
    rules = load_rules(Path("configs/nab-rules.yaml"))
    stamps = [i * 300_000 for i in range(200)]
    items = [
        (
            Reading("s", harness.NAB_SENSOR, ts, i, {"value": 10.0 + i % 7}, "", 1),
            ReplayMessage(b"s", None, ts, i),
        )
        for i, ts in enumerate(stamps)
    ]
    whole = Pipeline(settings, rules, trace=True).process_readings(items).trace
    first = Pipeline(settings, rules, trace=True)
    head = first.process_readings(items[:120]).trace
    second = Pipeline(settings, rules, trace=True)
    snap = snapshot.PartitionSnapshot("t", 0, 120, first.export_partition(0))
    restored = snapshot.decode(snapshot.encode(snap, KEY), KEY)  # signed, as written to disk
    second.import_partition(restored.state)
    tail = second.process_readings(items[120:]).trace
    assert [s.level for s in head + tail] == [s.level for s in whole]
    assert any(s.level for s in tail)
