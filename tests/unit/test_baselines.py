"""The baseline detectors of `telemon evaluate`: the static 3-sigma rule, River's HalfSpaceTrees,
their debounced detections and the recall at a given false-alarm rate."""

from __future__ import annotations

import functools
from array import array

import numpy as np
import pytest

from monitor.evaluation import baselines
from monitor.evaluation.harness import ReadingsTee, baseline_quality, nab_baseline_scores
from monitor.evaluation.nab import CorpusFile, probation_length
from monitor.evaluation.quality import MS_PER_DAY, LabelledEvent, anomaly_quality
from monitor.schema import DEFAULT_CATALOG, encode_reading


def test_three_sigma_learns_mean_and_deviation_over_the_warm_up_then_keeps_them() -> None:
    warm = np.tile([[9.0, 0.0], [11.0, 0.0]], (5, 1))  # axis 0: mean 10, std 1; axis 1 constant
    later = np.array([[12.0, 0.0], [10.0, 0.0], [100.0, 0.0], [10.0, 1e-6]])
    z = baselines.three_sigma(np.vstack([warm, later]), warmup=10)
    assert z[:10].tolist() == [0.0] * 10
    assert z[10:13].tolist() == [2.0, 0.0, 90.0]
    assert z[13] > 1e5  # a constant axis: any other value is flagged
    assert baselines.three_sigma(warm, warmup=10).tolist() == [0.0] * 10  # never past its warm-up


def test_the_3sigma_baseline_flags_readings_beyond_three_deviations() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, (2000, 3))
    values[1500] = [0.0, 6.0, 0.0]
    scores, flags = baselines.run("3sigma", values, ["x", "y", "z"])
    assert flags[1500] and not flags[: baselines.WARMUP].any()
    assert (flags == (scores > 3)).all()
    assert flags.mean() < 0.02  # Gaussian noise: 0.27 % per axis, three axes


def test_half_space_trees_flags_a_far_outlier_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (3000, 2))
    values[2500] = [30.0, 30.0]
    scores, flags = baselines.run("hst", values, ["x", "y"])
    again, _ = baselines.run("hst", values, ["x", "y"])
    assert (scores == again).all()
    assert flags[2500] and scores[2500] > 0.99
    assert not flags[: baselines.WARMUP].any() and (scores[: baselines.WARMUP] == 0).all()
    assert flags.mean() < 0.01  # the running 99.99 % quantile (P2) is a record score at first


def test_a_detection_silences_its_channel_for_the_cooldown() -> None:
    ts = np.arange(0, 1_000_000, 10_000, dtype=np.int64)  # a reading every 10 s
    flags = np.zeros(len(ts), np.bool_)
    flags[[5, 6, 20, 36, 37, 90]] = True  # at 50, 60, 200, 360, 370 and 900 s
    starts = baselines.episode_starts(ts, flags, cooldown_ms=300_000)
    assert starts.tolist() == [5, 36, 90]  # 60 and 200 s are within 300 s of 50 s; 370 of 360
    assert baselines.episode_starts(ts, np.zeros(len(ts), np.bool_)).tolist() == []


def _channel(scores: list[float], key: tuple[str, str] = ("dev", "*")) -> baselines.Channel:
    ts = np.arange(len(scores), dtype=np.int64) * 600_000  # every 10 minutes: no debounce
    s = np.asarray(scores)
    return baselines.Channel(key, "temperature", ts, s, s >= 0.5)


def test_detections_name_the_baseline_and_the_sensor() -> None:
    found = baselines.detections([_channel([0, 0.9, 0, 0.2])], "hst")
    assert [(d.ts, d.rule) for d in found] == [(600_000, "hst.temperature")]
    assert [d.ts for d in baselines.detections([_channel([0, 0.9, 0, 0.2])], "hst", at=0.1)] == [
        600_000,
        1_800_000,
    ]


def test_recall_at_a_false_alarm_rate_sweeps_the_threshold() -> None:
    # Events at readings 2 and 6; scores 0.9 and 0.4 there; noise peaks 0.7 and 0.3 at 4 and 8.
    channel = _channel([0.0, 0.0, 0.9, 0.0, 0.7, 0.0, 0.4, 0.0, 0.3, 0.0])
    events = [LabelledEvent(("dev", "*"), "change", i * 600_000, i * 600_000) for i in (2, 6)]
    span = {("dev", "*"): (0, MS_PER_DAY)}  # one device-day
    quality = functools.partial(anomaly_quality, events, grace_ms=0, stream_span=span)
    none = baselines.recall_at_rate([channel], "hst", quality, rate=0.0)
    assert none.recall == 0.5 and none.false_alarms_per_device_day == 0.0  # only 0.9 is clean
    one = baselines.recall_at_rate([channel], "hst", quality, rate=1.0)  # 0.4 flags 0.7 too
    assert one.recall == 1.0 and one.false_alarms_per_device_day == 1.0 and 0.3 < one.threshold <= 0.4
    two = baselines.recall_at_rate([channel], "hst", quality, rate=2.0)  # no better: fewest alarms
    assert two == one


def _reading(device: str, sensor: str, ts: int, seq: int, value: float) -> bytes:
    return encode_reading(device, sensor, ts, seq, {"value": value}, catalog=DEFAULT_CATALOG)


def test_scenario_baselines_score_the_readings_the_replay_read() -> None:
    values = 20 + 0.1 * (np.arange(600) % 7 - 3) / 3  # |z| <= 1.5
    values[500:] += 5.0  # a shift at reading 500
    t0 = 1_767_225_600_000
    messages = [
        (b"dev-1", _reading("dev-1", "temperature", t0 + 1000 * i, i, float(v)), t0 + 1000 * i)
        for i, v in enumerate(values.tolist())
    ]
    tee = ReadingsTee(DEFAULT_CATALOG)
    assert list(tee([*messages, (b"dev-1", b"not json", 0)])) == [*messages, (b"dev-1", b"not json", 0)]
    kept = tee.ts[("dev-1", "temperature")]
    assert isinstance(kept, array) and len(kept) == 600
    shift = LabelledEvent(("dev-1", "temperature"), "abrupt_shift", t0 + 500_000, t0 + 599_000)
    report = baseline_quality("3sigma", tee, [shift])
    assert report["anomaly"]["recall"] == 1.0 and report["anomaly"]["n_false_alarms"] == 0


@pytest.mark.parametrize("name", baselines.NAMES)
def test_nab_baseline_scores_wait_for_the_probationary_period(name: baselines.Name) -> None:
    n = 2000
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, n)
    values[1800] = 40.0
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    (scores,) = nab_baseline_scores(name, [CorpusFile("x.csv", stamps, values, [])])
    assert len(scores) == n and (scores[: probation_length(n)] == 0).all()
    assert scores[1800] > 0.99
    if name == "3sigma":  # the rule's flags
        assert set(scores.tolist()) == {0.0, 1.0} and scores.mean() < 0.01
