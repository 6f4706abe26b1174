"""Tests for monitor.govern.training: metrics by hand, injection, search, promotion and rejection, workers."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from pydantic import ValidationError

import monitor.govern.training.worker
from monitor.detect.model import AdaptiveGaussian, distance_threshold, score
from monitor.govern.registry import TrainingData
from monitor.govern.state import GovernState
from monitor.govern.training import (
    Decision,
    InlineTrainer,
    Metrics,
    Shadow,
    Space,
    TrainingJob,
    TrainingResult,
    TrainingWorker,
    decide,
    detection_rate,
    inject_anomalies,
    job_seed,
    noise_sigma,
    roc_auc,
    run_job,
    search_points,
    split_point,
    step,
)
from monitor.settings import LogUniform, RetrainSettings, Settings, load_settings
from monitor.state.store import StateStore

BASE = {"fading": 0.05, "var_fading": 0.005, "resolution": 0.01, "trend": 0.3}
THRESHOLD = 0.9999
SD = 0.1
#: Generous guard for waiting on the background thread; never a timing assertion.
PATIENCE_S = 30.0


def _serving_model(level: float, n: int = 400, seed: int = 1) -> AdaptiveGaussian:
    """A temperature model as the pipeline grows it: warm-up learned, then learn unless flagged."""
    m = AdaptiveGaussian(1, **BASE)
    t = distance_threshold(THRESHOLD, 1)
    for i, x in enumerate(np.random.default_rng(seed).normal(level, SD, n)):
        if i < 50:
            m.learn((float(x),))
        else:
            step(m, (float(x),), t, "skip")
    return m


def _job(
    rows: np.ndarray,
    incumbent: AdaptiveGaussian,
    seed: int = 7,
    device: str = "dev-0007",
    base_params: dict[str, float] = BASE,
) -> TrainingJob:
    n = len(rows)
    return TrainingJob(
        device_id=device,
        sensor="temperature",
        rows=rows.reshape(n, -1),
        offsets=np.arange(1000, 1000 + 3 * n, 3),
        timestamps=1_767_225_600_000 + 1000 * np.arange(n),
        topic="telemon.readings",
        partition=2,
        incumbent=incumbent,
        incumbent_version=1,
        base_params=base_params,
        anomaly_threshold=THRESHOLD,
        flagged="skip",
        seed=seed,
        trigger_rule="score_drift",
        trigger_alert_id="a1b2",
    )


def _normal(level: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(level, SD, n)


def _shadow(result: TrainingResult, incumbent: AdaptiveGaussian, live: np.ndarray, n: int = 96) -> Shadow:
    """Both models scored side by side on ``live``, each learning as it would when serving."""
    assert result.candidate is not None
    inc, cand = copy.deepcopy(incumbent), copy.deepcopy(result.candidate)
    t = distance_threshold(THRESHOLD, 1)
    shadow = Shadow(n, THRESHOLD)
    for x in live[:n]:
        f = (float(x),)
        shadow.push(score(step(inc, f, t, False), 1), score(step(cand, f, t, False), 1))
    return shadow


# --- metrics by hand --------------------------------------------------------------------------------


def test_auc_of_hand_worked_examples() -> None:
    labels = np.array([False, False, True, True])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(np.array([0.3, 0.4, 0.1, 0.2]), labels) == 0.0
    # pairs (anomaly, normal): (0.35, 0.1) won, (0.35, 0.4) lost, (0.8, *) won: 3 of 4
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75


def test_auc_counts_ties_as_one_half() -> None:
    assert roc_auc(np.full(4, 0.5), np.array([True, False, True, False])) == 0.5
    # anomalies 0.3, 0.5 vs normals 0.5, 0.1: (0.3, 0.5) 0, (0.3, 0.1) 1, (0.5, 0.5) 1/2, (0.5, 0.1) 1
    assert roc_auc(np.array([0.3, 0.5, 0.5, 0.1]), np.array([True, True, False, False])) == 0.625


def test_auc_equals_the_pairwise_definition_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 60).astype(float)
    labels = rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


def test_detection_rate_of_hand_worked_examples() -> None:
    normal = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    anomalies = np.array([0.95, 0.9, 0.5])
    scores = np.concatenate([normal, anomalies])
    labels = np.concatenate([np.zeros(10, bool), np.ones(3, bool)])
    # 10 % of 10 normals: 1 false alarm allowed, the threshold is the second highest normal (0.9),
    # and the anomaly tied with it is no detection
    assert detection_rate(scores, labels, 0.1) == pytest.approx(1 / 3)
    assert detection_rate(scores, labels, 0.01) == 0.0  # threshold = highest normal, 1.0
    assert detection_rate(scores, labels, 0.3) == pytest.approx(2 / 3)  # threshold 0.7


def test_detection_rate_false_alarm_budget_survives_float_rounding() -> None:
    normal = np.arange(100, dtype=float)  # 0.29 * 100 is 28.999999999999996 in floats
    scores = np.concatenate([normal, [70.5]])
    labels = np.concatenate([np.zeros(100, bool), [True]])
    assert detection_rate(scores, labels, 0.29) == 1.0  # 29 allowed: threshold is 70


def test_metrics_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="both classes"):
        detection_rate(np.array([0.1, 0.2]), np.array([False, False]), 0.01)


# --- split and injection ----------------------------------------------------------------------------


def test_split_keeps_time_order_and_refuses_tiny_windows() -> None:
    assert split_point(32, 0.25) == 24
    assert split_point(16, 0.25) == 12
    assert split_point(33, 0.25) == 24  # 8.25 rows held out rounds up to 9
    with pytest.raises(ValueError, match="longer window"):
        split_point(10, 0.25)


def test_noise_sigma_ignores_a_level_shift() -> None:
    rows = np.concatenate([_normal(20.0, 100, 1), _normal(28.0, 100, 2)]).reshape(-1, 1)
    assert noise_sigma(rows, 0.01)[0] == pytest.approx(SD, rel=0.25)
    assert rows.std() > 30 * SD  # what a plain standard deviation would say
    assert noise_sigma(np.full((20, 1), 5.0), 0.01)[0] == 0.01  # quantised: the resolution floor


def test_injection_is_seeded_labelled_and_leaves_the_readings() -> None:
    rows = np.random.default_rng(0).normal([1.0, 2.0, 3.0], 0.5, size=(40, 3))
    original = rows.copy()
    sigma = np.array([0.5, 0.5, 0.5])
    out, labels = inject_anomalies(rows, np.random.default_rng(5), 10, 3.0, 12.0, sigma)
    again, labels_again = inject_anomalies(rows, np.random.default_rng(5), 10, 3.0, 12.0, sigma)
    other, _ = inject_anomalies(rows, np.random.default_rng(6), 10, 3.0, 12.0, sigma)
    assert_array_equal(out, again)
    assert_array_equal(labels, labels_again)
    assert not np.array_equal(out, other)
    assert_array_equal(rows, original)  # a copy is injected
    assert out.shape == (50, 3) and labels.sum() == 10
    assert_array_equal(out[~labels], rows)  # every reading kept, in order


def test_each_spike_moves_one_feature_by_the_configured_sigmas() -> None:
    rows = np.random.default_rng(0).normal(0.0, 1.0, size=(30, 3))
    sigma = np.array([0.5, 1.0, 2.0])
    out, labels = inject_anomalies(rows, np.random.default_rng(1), 200, 3.0, 12.0, sigma)
    for i in np.flatnonzero(labels):
        following = out[i + 1 :][~labels[i + 1 :]][0]  # the reading the spike was copied from
        moved = np.flatnonzero(out[i] != following)
        assert len(moved) == 1
        j = moved[0]
        assert 3.0 - 1e-9 <= abs(out[i, j] - following[j]) / sigma[j] <= 12.0 + 1e-9


# --- search -----------------------------------------------------------------------------------------


def test_grid_is_the_whole_product_in_order() -> None:
    space = {"var_fading": [0.005, 0.01], "fading": [0.05, 0.1, 0.2]}
    points = search_points(space, "grid", 6, np.random.default_rng(0))
    assert points == [
        {"fading": f, "var_fading": v} for f, v in itertools.product([0.05, 0.1, 0.2], [0.005, 0.01])
    ]
    with pytest.raises(ValueError, match="budget"):
        search_points(space, "grid", 5, np.random.default_rng(0))


def test_random_over_lists_samples_the_grid_without_repetition() -> None:
    space = {"fading": [0.02, 0.05, 0.1, 0.2], "var_fading": [0.005, 0.01, 0.02]}
    grid = search_points(space, "grid", 12, np.random.default_rng(0))
    points = search_points(space, "random", 5, np.random.default_rng(4))
    assert len(points) == 5 and all(p in grid for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == 5
    assert points == search_points(space, "random", 5, np.random.default_rng(4))
    whole = search_points(space, "random", 50, np.random.default_rng(4))
    assert sorted(map(str, whole)) == sorted(map(str, grid))  # a budget over the grid: all of it once


def test_random_over_a_range_is_log_uniform_within_bounds() -> None:
    space: Space = {"fading": LogUniform(low=0.01, high=0.5), "var_fading": [0.005, 0.01]}
    points = search_points(space, "random", 400, np.random.default_rng(2))
    fading = np.array([p["fading"] for p in points])
    assert len(points) == 400
    assert fading.min() >= 0.01 and fading.max() <= 0.5
    assert {p["var_fading"] for p in points} == {0.005, 0.01}
    # log-uniform: about half the draws below the geometric mean sqrt(0.01 * 0.5) ~ 0.0707
    assert 0.4 < np.mean(fading < np.sqrt(0.01 * 0.5)) < 0.6
    assert points == search_points(space, "random", 400, np.random.default_rng(2))
    with pytest.raises(ValueError, match="strategy random"):
        search_points(space, "grid", 400, np.random.default_rng(2))


def test_run_job_honours_space_and_budget_and_is_reproducible() -> None:
    space: dict[str, list[float] | LogUniform] = {
        "fading": LogUniform(low=0.02, high=0.3),
        "var_fading": [0.005, 0.02],
    }
    settings = RetrainSettings(strategy="random", space=space, budget=5)
    job = _job(_normal(28.0, 32, 2), _serving_model(20.0))
    result = run_job(job, settings)
    assert len(result.trials) == 5
    for t in result.trials:
        assert 0.02 <= t.params["fading"] <= 0.3
        assert t.params["var_fading"] in (0.005, 0.02)
        assert t.params["resolution"] == BASE["resolution"]
    assert run_job(job, settings).trials == result.trials
    assert result.params in [t.params for t in result.trials]
    best = max(t.metrics.auc for t in result.trials)
    assert result.candidate_metrics is not None and result.candidate_metrics.auc == best


def test_grid_job_tries_every_point() -> None:
    settings = RetrainSettings()  # the default 4 x 3 grid
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), settings)
    assert len(result.trials) == 12
    assert {(t.params["fading"], t.params["var_fading"]) for t in result.trials} == set(
        itertools.product([0.02, 0.05, 0.1, 0.2], [0.005, 0.01, 0.02])
    )


# --- the training window --------------------------------------------------------------------------


def test_window_is_recorded_by_offsets_and_time() -> None:
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    w = result.window
    assert w is not None
    assert (w.source, w.topic, w.partition) == ("buffer", "telemon.readings", 2)
    assert (w.train.rows, w.train.first_offset, w.train.last_offset) == (24, 1000, 1069)
    assert (w.holdout.rows, w.holdout.first_offset, w.holdout.last_offset) == (8, 1072, 1093)
    assert w.holdout.first_ts == w.train.last_ts + 1000
    assert w.training_data() == TrainingData(
        "telemon.readings", 2, 1000, 1093, 32, 1_767_225_600_000, 1_767_225_600_000 + 31_000
    )


def test_job_copies_its_inputs_and_checks_them() -> None:
    rows, incumbent = _normal(20.0, 32, 2), _serving_model(20.0)
    job = _job(rows, incumbent)
    rows[:] = 0.0
    incumbent.learn((99.0,))
    assert job.rows[0, 0] != 0.0 and not job.rows.flags.writeable
    assert job.incumbent.n == incumbent.n - 1
    with pytest.raises(ValueError, match="shape"):
        _job(np.zeros((32, 3)), incumbent)
    with pytest.raises(ValueError, match="NaN"):
        _job(np.full(32, np.nan), incumbent)
    with pytest.raises(ValueError, match="base_params"):
        _job(_normal(20.0, 32, 2), incumbent, base_params={"fading": 0.05})


def test_job_seed_is_stable_and_per_version() -> None:
    assert job_seed(0, "dev-0007", "temperature", 2) == job_seed(0, "dev-0007", "temperature", 2)
    assert job_seed(0, "dev-0007", "temperature", 2) != job_seed(0, "dev-0007", "temperature", 3)
    assert job_seed(0, "dev-0007", "temperature", 2) != job_seed(1, "dev-0007", "temperature", 2)


# --- promotion and rejection ------------------------------------------------------------------------


def test_candidate_after_a_drift_beats_the_incumbent_and_is_promoted() -> None:
    settings = RetrainSettings()
    incumbent = _serving_model(20.0)
    result = run_job(_job(_normal(28.0, 32, 2), incumbent), settings)
    assert result.ok and result.candidate_metrics and result.incumbent_metrics
    assert result.candidate_metrics.auc > result.incumbent_metrics.auc + settings.promotion_margin
    first = decide(result, None, settings.promotion_margin)
    assert first.promote and "no shadow evaluation" in first.reason
    final = decide(result, _shadow(result, incumbent, _normal(28.0, 200, 3)), settings.promotion_margin)
    assert final.promote, final.reason
    assert re.match(
        r"candidate AUC \d\.\d{3} > incumbent \d\.\d{3} \+ margin 0\.020; on 96 live", final.reason
    )
    assert final.metrics["incumbent_alarms"] == 96.0  # the old model flags every post-drift reading
    assert final.metrics["candidate_ks"] <= final.metrics["ks_critical"]


def test_candidate_trained_on_another_devices_data_is_rejected_with_the_numbers() -> None:
    incumbent = _serving_model(20.0)
    rows = np.concatenate([_normal(35.0, 24, 4), _normal(20.0, 8, 5)])  # train slice from elsewhere
    result = run_job(_job(rows, incumbent), RetrainSettings())
    d = decide(result, None, 0.02)
    assert not d.promote
    m = re.fullmatch(r"candidate AUC (\d\.\d{3}) < incumbent (\d\.\d{3}) \+ margin 0\.020", d.reason)
    assert m, d.reason
    assert float(m.group(1)) < float(m.group(2))
    assert d.metrics["candidate_metric"] < d.metrics["incumbent_metric"]


def test_no_drift_keeps_the_incumbent() -> None:
    incumbent = _serving_model(20.0)
    result = run_job(_job(_normal(20.0, 32, 6), incumbent), RetrainSettings())
    assert not decide(result, None, 0.02).promote


def test_silly_space_after_a_drift_is_rejected_on_live_traffic() -> None:
    # fading 1 forgets all but the last reading, var_fading 1 collapses the noise level to the
    # resolution floor: it wins on the held-out slice against the stale incumbent, but live it
    # flags most readings, hardly better than the incumbent that flags all of them
    silly = RetrainSettings(space={"fading": [1.0], "var_fading": [1.0]}, budget=1)
    incumbent = _serving_model(20.0)
    result = run_job(_job(_normal(28.0, 32, 2), incumbent), silly)
    shadow = _shadow(result, incumbent, _normal(28.0, 200, 3))
    d = decide(result, shadow, 0.0)
    assert not d.promote
    assert d.reason.startswith("candidate AUC")
    assert "not calibrated and do not halve the incumbent's excess" in d.reason
    assert d.metrics["candidate_ks"] > (d.metrics["ks_critical"] + d.metrics["incumbent_ks"]) / 2


def test_candidate_with_excess_alarms_is_rejected() -> None:
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    shadow = Shadow(96, THRESHOLD)
    calibrated = (np.arange(96) + 0.5) / 96
    for i, u in enumerate(calibrated):
        shadow.push(float(u), 0.999999 if i % 20 == 0 else float(u))  # 5 alarms, small KS distance
    d = decide(result, shadow, 0.02)
    assert not d.promote
    assert "raised 5 alarms (incumbent 0, a calibrated model up to 0): too many alarms" in d.reason
    assert d.metrics["candidate_ks"] <= d.metrics["ks_critical"]


def test_held_out_alarm_rate_is_the_share_of_real_readings_flagged() -> None:
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    assert result.incumbent_metrics is not None and result.candidate_metrics is not None
    assert result.incumbent_metrics.alarm_rate == 1.0  # the old level flags every post-drift reading
    assert result.candidate_metrics.alarm_rate == 0.0


def test_a_ranking_tie_with_a_broken_incumbent_passes_the_held_out_test() -> None:
    # An incumbent merely offset from a new level still ranks every spike first (AUC 1.0, like
    # the candidate's) while it flags every real reading: the candidate passes if it flags at
    # most half as many.
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    tied = dataclasses.replace(
        result, candidate_metrics=Metrics(1.0, 1.0, 0.0), incumbent_metrics=Metrics(1.0, 1.0, 1.0)
    )
    d = decide(tied, None, 0.02)
    assert d.promote
    assert d.reason.startswith(
        "candidate AUC 1.000 < incumbent 1.000 + margin 0.020, but the incumbent flags 100 %"
    )
    half = dataclasses.replace(tied, candidate_metrics=Metrics(1.0, 1.0, 0.6))
    assert not decide(half, None, 0.02).promote  # not half of the incumbent's
    sound = dataclasses.replace(tied, incumbent_metrics=Metrics(1.0, 1.0, 0.25))
    assert not decide(sound, None, 0.02).promote  # a working incumbent keeps the ranking test


def test_candidate_whose_scores_sit_low_passes_calibration() -> None:
    # Scores below uniform (a noise level estimated high, or a sensor whose noise is below its
    # resolution) raise fewer alarms, not more: only scores above uniform count against it.
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    shadow = Shadow(96, THRESHOLD)
    for i in range(96):
        shadow.push(1.0, 0.1 * (i + 0.5) / 96)
    d = decide(result, shadow, 0.0)
    assert d.promote, d.reason
    assert d.metrics["candidate_ks"] < 0.001
    high = Shadow(96, THRESHOLD)
    for i in range(96):
        high.push((i + 0.5) / 96, 0.5 + 0.49 * (i + 0.5) / 96)  # no alarm, but the mass moved up
    assert not decide(result, high, 0.0).promote


def test_failed_training_is_never_promoted() -> None:
    result = TrainingResult(job=_job(_normal(20.0, 32, 2), _serving_model(20.0)), error="ValueError: boom")
    assert decide(result, None, 0.02) == Decision(False, "training failed: ValueError: boom", {})


def test_shadow_holds_exactly_its_readings() -> None:
    result = run_job(_job(_normal(28.0, 32, 2), _serving_model(20.0)), RetrainSettings())
    shadow = Shadow(3, THRESHOLD)
    shadow.push(0.1, 0.2)
    with pytest.raises(ValueError, match="1 of 3 readings"):
        decide(result, shadow, 0.02)
    shadow.push(0.5, 0.5)
    shadow.push(0.9, 0.8)
    assert shadow.done
    with pytest.raises(ValueError, match="decide"):
        shadow.push(0.3, 0.3)
    with pytest.raises(ValueError, match="at least one"):
        Shadow(0, THRESHOLD)


# --- workers ----------------------------------------------------------------------------------------


def test_worker_runs_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    release, started = threading.Event(), threading.Event()
    real = monitor.govern.training.worker.run_job

    def held(job: TrainingJob, settings: RetrainSettings) -> TrainingResult:
        started.set()
        release.wait(PATIENCE_S)
        return real(job, settings)

    monkeypatch.setattr(monitor.govern.training.worker, "run_job", held)
    worker = TrainingWorker(RetrainSettings())
    try:
        worker.submit(_job(_normal(28.0, 32, 2), _serving_model(20.0)))  # returns while the job runs
        assert started.wait(PATIENCE_S)
        assert worker.poll() == [] and worker.pending == 1
        release.set()
        assert worker.wait(PATIENCE_S)
        (result,) = worker.poll()
        assert result.ok and worker.pending == 0
    finally:
        release.set()
        assert worker.close(PATIENCE_S)


def test_worker_survives_a_failing_job() -> None:
    worker = TrainingWorker(RetrainSettings())
    incumbent = _serving_model(20.0)
    try:
        worker.submit(_job(_normal(28.0, 10, 2), incumbent, device="short"))  # too few rows to split
        worker.submit(_job(_normal(28.0, 32, 2), incumbent, device="fine"))
        assert worker.wait(PATIENCE_S)
        failed, fine = worker.poll()
    finally:
        assert worker.close(PATIENCE_S)
    assert (failed.job.device_id, failed.ok) == ("short", False)
    assert failed.error is not None and failed.error.startswith("ValueError: a window of 10 rows")
    assert (fine.job.device_id, fine.ok) == ("fine", True)
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(fine.job)


def test_inline_and_threaded_give_identical_results() -> None:
    settings = RetrainSettings(strategy="random", budget=6)
    job = _job(np.concatenate([_normal(20.0, 16, 1), _normal(26.0, 32, 2)]), _serving_model(20.0))
    inline = InlineTrainer(settings)
    inline.submit(job)
    (a,) = inline.poll()
    worker = TrainingWorker(settings)
    try:
        worker.submit(job)
        assert worker.wait(PATIENCE_S)
        (b,) = worker.poll()
    finally:
        assert worker.close(PATIENCE_S)
    assert a.ok and b.ok and a.candidate is not None and b.candidate is not None
    assert a.trials == b.trials
    assert (a.params, a.window, a.candidate_metrics, a.incumbent_metrics) == (
        b.params,
        b.window,
        b.candidate_metrics,
        b.incumbent_metrics,
    )
    assert a.candidate.params() == b.candidate.params()
    assert inline.poll() == [] and inline.wait() and inline.close()


# --- settings ---------------------------------------------------------------------------------------


def test_retrain_settings_defaults_are_valid_and_on_settings() -> None:
    s = Settings().retrain
    assert s == RetrainSettings()
    assert (s.strategy, s.budget, s.metric, s.shadow_readings, s.promotion_margin) == (
        "grid",
        16,
        "auc",
        96,
        0.02,
    )


def test_retrain_settings_from_yaml_with_a_range(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "retrain:\n  strategy: random\n  budget: 8\n  space:\n    fading: {low: 0.01, high: 0.3}\n"
        "    var_fading: [0.005, 0.01]\n",
        encoding="utf-8",
    )
    s = load_settings(path).retrain
    assert s.space["fading"] == LogUniform(low=0.01, high=0.3)
    assert s.space["var_fading"] == [0.005, 0.01]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"space": {"fading": [0.1] * 4, "var_fading": [0.1] * 5}, "budget": 16}, "grid has 20 points"),
        ({"space": {"warmup": [10.0]}}, "unknown parameter"),
        ({"space": {"fading": {"low": 0.01, "high": 0.2}}}, "strategy random"),
        ({"space": {"fading": []}}, "non-empty list"),
        ({"space": {"fading": [0.0]}}, r"\(0, 1\]"),
        ({"space": {}}, "space is empty"),
        ({"strategy": "random", "space": {"fading": {"low": 0.2, "high": 0.1}}}, "below high"),
        ({"anomaly_min_sigma": 5.0, "anomaly_max_sigma": 4.0}, "exceeds anomaly_max_sigma"),
        ({"holdout_fraction": 0.9}, "less than or equal to 0.5"),
        ({"metric": "f1"}, "auc"),
    ],
)
def test_retrain_settings_reject_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetrainSettings.model_validate(values)


def test_a_sound_incumbent_stands_after_a_held_out_rejection() -> None:
    """No candidate beats a serving model that flags none of the held-out readings: the change
    that asked for the retrain is accepted (the pair's reference restarts), and not retried."""
    from monitor.govern.governor import _incumbent_stands

    result = run_job(_job(_normal(20.0, 32, 6), _serving_model(20.0)), RetrainSettings())
    held = decide(result, None, 0.02)
    assert not held.promote
    assert result.incumbent_metrics is not None and result.incumbent_metrics.alarm_rate == 0.0
    assert _incumbent_stands(result, held)
    flagged = dataclasses.replace(result, incumbent_metrics=Metrics(0.9, 0.9, 0.125))
    assert not _incumbent_stands(flagged, decide(flagged, None, 0.02))  # it missed something
    live = Decision(False, "rejected live", {"shadow_readings": 96.0})
    assert not _incumbent_stands(result, live)  # a candidate rejected live: the drift stays open


@pytest.mark.parametrize("first", [2**31 - 2, 2**32 - 2])
def test_the_ring_gives_back_full_offsets_and_timestamps_across_32_bit_boundaries(first: int) -> None:
    """The ring keeps the low 32 bits of each offset and timestamp; the pair's latest full values
    restore them, here across 2**31 or 2**32, with a gap of 20 days and readings out of order."""
    ring = StateStore().add(GovernState([1, 3], retrain_window=4))
    slot, start, day = 0, 1_767_225_600_000, 86_400_000
    readings = [  # (ts, offset, values): the last four stay in the ring
        (start, first - 1, (0.5, 1.0, 2.0)),
        (start + 1000, first, (0.25, -1.0, 3.0)),
        (start + 20 * day, first + 3, (0.125, 4.0, -2.0)),
        (start + 20 * day - 5000, first + 2**30, (1.5, 2.5, 3.5)),  # out of order
        (start + 20 * day + 1000, first + 2**30 + 7, (2.0, 3.0, 4.0)),
    ]
    for ts, offset, values in readings:
        ring.remember(slot, 1, ts, values, offset)
    ring.remember(slot, 0, start, (9.0,), 0)
    rows, offsets, timestamps = ring.window(slot, 1)
    assert_array_equal(rows, [v for _, _, v in readings[1:]])
    assert offsets.tolist() == [o for _, o, _ in readings[1:]]
    assert timestamps.tolist() == [t for t, _, _ in readings[1:]]
    rows, offsets, timestamps = ring.window(slot, 0)
    assert rows.tolist() == [[9.0]] and offsets.tolist() == [0] and timestamps.tolist() == [start]
