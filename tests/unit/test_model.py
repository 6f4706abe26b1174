"""Tests for monitor.detect.model: exact running moments, chi-square scores, variance floor, calibration."""

from __future__ import annotations

import pickle

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from numpy.testing import assert_allclose

from monitor.detect.model import AdaptiveGaussian, distance_threshold, score, window_rows

FloatArray = npt.NDArray[np.float64]
#: So small that n * fading <= 1 for every test here: the weights are exactly 1/n.
TINY = 1e-9


def _exact(rows: FloatArray) -> AdaptiveGaussian:
    """A model in the 1/n regime (infinite memory) fitted on ``rows``."""
    return AdaptiveGaussian.fit(
        [tuple(r) for r in rows.tolist()], fading=TINY, var_fading=TINY, resolution=1e-9
    )


def _params(m: AdaptiveGaussian) -> tuple[FloatArray, FloatArray]:
    p = m.params()
    return np.asarray(p["mean"]), np.asarray(p["var"])


# --- running moments ------------------------------------------------------------------------------


def test_hand_checked_mean_and_population_variance() -> None:
    m = _exact(np.array([[2.0], [4.0], [4.0], [4.0], [5.0], [5.0], [7.0], [9.0]]))
    assert m.n == 8
    mean, var = _params(m)
    assert_allclose(mean, [5.0], rtol=1e-12)  # 40 / 8
    assert_allclose(var, [4.0], rtol=1e-12)  # sum of squared deviations 32 / 8


def test_three_features_match_numpy_mean_and_population_var() -> None:
    rows = np.random.default_rng(1).normal([1.0, -2.0, 30.0], [0.5, 2.0, 10.0], size=(500, 3))
    mean, var = _params(_exact(rows))
    assert_allclose(mean, rows.mean(axis=0), rtol=1e-10)
    assert_allclose(var, rows.var(axis=0), rtol=1e-10)  # ddof=0


def test_fading_forgets_old_level() -> None:
    m = AdaptiveGaussian(1, fading=0.05, var_fading=0.005, resolution=1e-3)
    for _ in range(200):
        m.learn((0.0,))
    for _ in range(200):
        m.learn((10.0,))
    mean, _ = _params(m)
    assert mean[0] == pytest.approx(10.0, abs=1e-3)  # (1 - 0.05) ** 200 ~ 3.5e-5 of the old level left


# --- distance and score ---------------------------------------------------------------------------


def test_distance_is_zero_at_the_mean() -> None:
    rows = np.random.default_rng(2).normal(size=(100, 3))
    m = _exact(rows)
    mean, _ = _params(m)
    assert m.distance(tuple(mean)) == 0.0


def test_distance_is_the_standardised_squared_distance() -> None:
    rows = np.random.default_rng(3).normal([0.0, 5.0, -1.0], [1.0, 3.0, 0.1], size=(300, 3))
    m = _exact(rows)
    mean, var = _params(m)
    x = np.array([1.0, 2.0, 3.0])
    assert m.distance(tuple(x)) == pytest.approx(float(((x - mean) ** 2 / var).sum()), rel=1e-12)


def scores(d2: np.ndarray, k: int) -> np.ndarray:
    return np.array([score(float(d), k) for d in d2])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_score_is_the_chi_square_cdf(k: int) -> None:
    d2 = np.array([0.0, 1e-3, 0.5, 1.0, 3.0, 7.8, 11.3, 21.1, 40.0, 1e3])
    assert_allclose(scores(d2, k), scipy.stats.chi2.cdf(d2, k), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("threshold", [0.9, 0.99, 0.9999, 0.999999])
def test_distance_threshold_inverts_the_score(k: int, threshold: float) -> None:
    d = distance_threshold(threshold, k)
    assert d == pytest.approx(scipy.stats.chi2.ppf(threshold, k), rel=1e-9)
    assert score(d, k) == pytest.approx(threshold, rel=1e-12)


def test_variance_floor_prevents_division_by_zero_for_constant_input() -> None:
    m = AdaptiveGaussian.fit([(21.5,)] * 100, fading=0.05, var_fading=0.005, resolution=0.01)
    _, var = _params(m)
    assert var[0] == 0.0
    assert m.distance((21.5,)) == 0.0
    assert m.distance((21.51,)) == pytest.approx(1.0, rel=1e-6)  # one resolution step = one std
    assert m.score_one({"value": 21.52}) == pytest.approx(scipy.stats.chi2.cdf(4.0, 1), rel=1e-6)


def test_floor_applies_per_feature() -> None:
    rows = [(0.0, float(i % 2), 5.0) for i in range(100)]  # x and z constant, y has variance 0.25
    m = AdaptiveGaussian.fit(rows, fading=TINY, var_fading=TINY, resolution=0.1)
    assert m.distance((0.1, 0.5, 5.0)) == pytest.approx(1.0, rel=1e-9)
    assert m.distance((0.0, 1.0, 5.0)) == pytest.approx(1.0, rel=1e-9)


def test_gaussian_data_rarely_scores_above_0_9999() -> None:
    rng = np.random.default_rng(20240601)
    data = rng.normal([0.0, 1.0, -3.0], [1.0, 0.2, 5.0], size=(55_000, 3))
    m = AdaptiveGaussian(3, fading=0.05, var_fading=0.005, resolution=1e-3)
    for row in data[:5_000]:  # warm-up
        m.learn(tuple(row))
    d2 = np.empty(50_000)
    for i, row in enumerate(data[5_000:]):
        f = tuple(row)
        d2[i] = m.distance(f)
        m.learn(f)
    s = scores(d2, 3)
    assert (s > 0.9999).mean() < 0.002
    assert 0.45 < np.median(s) < 0.55  # roughly uniform: calibrated, not just quiet


# --- River API, copies, persistence ---------------------------------------------------------------


def _trained(n_features: int = 3, n: int = 300, seed: int = 5) -> tuple[AdaptiveGaussian, FloatArray]:
    rows = np.random.default_rng(seed).normal(size=(n, n_features))
    m = AdaptiveGaussian(n_features, fading=0.05, var_fading=0.005, resolution=1e-3)
    for r in rows:
        m.learn(tuple(r))
    return m, rows


def _probe_scores(m: AdaptiveGaussian) -> list[float]:
    probes = np.random.default_rng(9).normal(scale=2.0, size=(20, 3))
    return [m.score_one(dict(zip("xyz", p.tolist(), strict=True))) for p in probes]


def test_clone_gives_identical_scores_and_is_independent() -> None:
    m, _ = _trained()
    c = m.clone(include_attributes=True)
    assert _probe_scores(c) == _probe_scores(m)
    c.learn((100.0, 100.0, 100.0))
    assert c.n == m.n + 1
    assert _probe_scores(c) != _probe_scores(m)


def test_clone_without_attributes_is_a_fresh_model_with_the_same_parameters() -> None:
    m, _ = _trained()
    c = m.clone()
    assert (c.n_features, c.fading, c.var_fading, c.resolution) == (3, 0.05, 0.005, 1e-3)
    assert c.n == 0


def test_pickle_round_trip_gives_identical_scores() -> None:
    m, _ = _trained()
    p = pickle.loads(pickle.dumps(m))
    assert p.n == m.n
    assert p.params() == m.params()
    assert _probe_scores(p) == _probe_scores(m)


def test_learn_one_and_score_one_agree_with_learn_and_distance() -> None:
    rows = np.random.default_rng(6).normal(size=(200, 3))
    a = AdaptiveGaussian(3)
    b = AdaptiveGaussian(3)
    for r in rows:
        a.learn(tuple(r))
        b.learn_one({"z": float(r[2]), "x": float(r[0]), "y": float(r[1])})  # key order is irrelevant
    assert a.params() == b.params()
    probe = {"x": 0.3, "y": -2.0, "z": 1.5}
    want = scipy.stats.chi2.cdf(a.distance((0.3, -2.0, 1.5)), 3)
    assert b.score_one(probe) == pytest.approx(want, rel=1e-12)


def test_scalar_dict_api() -> None:
    m = AdaptiveGaussian(1, resolution=0.01)
    for v in (1.0, 2.0, 3.0):
        m.learn_one({"value": v})
    assert m.score_one({"value": 2.0}) == 0.0
    assert m.score_one({"value": 3.5}) == pytest.approx(scipy.stats.chi2.cdf(3.375, 1), rel=1e-12)


def test_input_dict_is_not_mutated() -> None:
    m = AdaptiveGaussian(3)
    x = {"x": 1.0, "y": 2.0, "z": 3.0}
    before = dict(x)
    m.learn_one(x)
    m.score_one(x)
    assert x == before
    assert list(x) == list(before)


def test_fit_trains_in_order_like_learn() -> None:
    rows = [tuple(r) for r in np.random.default_rng(7).normal(size=(120, 3)).tolist()]
    online = AdaptiveGaussian(3, fading=0.05, var_fading=0.005, resolution=1e-3)
    for r in rows:
        online.learn(r)
    fitted = AdaptiveGaussian.fit(rows, fading=0.05, var_fading=0.005, resolution=1e-3)
    assert fitted.params() == online.params()
    assert fitted.n == 120


def test_window_rows_takes_the_first_columns() -> None:
    raw = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    assert window_rows(raw, 1) == [(1.0,), (4.0,)]
    assert window_rows(raw, 3) == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]
