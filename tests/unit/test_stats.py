"""Tests for monitor.detect.stats: scipy as the KS oracle, hand arithmetic for PSI, errors, doctests."""

from __future__ import annotations

import doctest
import math

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import monitor.detect.stats
from monitor.detect.stats import bin_fractions, ks_2samp_batch, psi, psi_edges

FloatArray = npt.NDArray[np.float64]


def _scipy_rows(ref: FloatArray, cur: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The oracle: scipy's asymptotic two-sided KS, one row at a time."""
    results = [scipy.stats.ks_2samp(r, c, method="asymp") for r, c in zip(ref, cur, strict=True)]
    return (
        np.array([res.statistic for res in results], dtype=np.float64),
        np.array([res.pvalue for res in results], dtype=np.float64),
    )


def _assert_matches_scipy(ref: FloatArray, cur: FloatArray) -> None:
    stat, p = ks_2samp_batch(ref, cur)
    want_stat, want_p = _scipy_rows(ref, cur)
    assert stat.shape == p.shape == (ref.shape[0],)
    assert stat.dtype == p.dtype == np.float64
    assert_array_equal(stat, want_stat)  # bit-for-bit
    assert_array_equal(p, want_p)


# --- KS -----------------------------------------------------------------------------------------

SIZES = [(128, 128), (50, 80), (80, 50), (7, 13), (1, 5), (200, 31), (1, 2), (2, 1)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_continuous_matches_scipy(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shift = rng.normal(0.0, 0.5, size=(60, 1))  # some rows drifted, some not
    _assert_matches_scipy(rng.normal(size=(60, n)), rng.normal(size=(60, m)) + shift)


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("high", [2, 4, 10])
def test_ks_heavy_ties_matches_scipy(n: int, m: int, high: int) -> None:
    rng = np.random.default_rng(high * 1000 + n + m)
    ref = rng.integers(0, high, size=(60, n)).astype(np.float64)
    cur = rng.integers(0, high, size=(60, m)) + rng.integers(0, 2, size=(60, 1))
    _assert_matches_scipy(ref, cur.astype(np.float64))


def test_ks_identical_rows() -> None:
    rng = np.random.default_rng(3)
    ref = np.vstack([rng.normal(size=64), rng.integers(0, 3, size=64), np.zeros(64)])
    stat, p = ks_2samp_batch(ref, ref.copy())
    assert_array_equal(stat, 0.0)
    assert_array_equal(p, 1.0)
    _assert_matches_scipy(ref, ref.copy())


def test_ks_disjoint_rows() -> None:
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.0, 1.0, size=(5, 30))
    cur = rng.uniform(2.0, 3.0, size=(5, 45))
    stat, _ = ks_2samp_batch(ref, cur)
    assert_array_equal(stat, 1.0)
    _assert_matches_scipy(ref, cur)
    _assert_matches_scipy(cur, ref)  # disjoint the other way round


def test_ks_rows_are_independent_and_integer_input_is_accepted() -> None:
    ref = np.array([[0, 1, 1, 2], [5, 5, 5, 5]])
    cur = np.array([[1, 1, 3], [5, 5, 6]])
    stat, _ = ks_2samp_batch(ref, cur)
    # Row 0: ECDF gap at 2 is 4/4 - 2/3. Row 1: at 5 the gap is 1 - 2/3.
    assert_allclose(stat, [1 / 3, 1 / 3])
    _assert_matches_scipy(ref.astype(np.float64), cur.astype(np.float64))


def test_ks_empty_batch() -> None:
    stat, p = ks_2samp_batch(np.empty((0, 4)), np.empty((0, 6)))
    assert stat.shape == p.shape == (0,)


def test_ks_does_not_call_scipy_ks_2samp(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ks_2samp_batch must not call scipy.stats.ks_2samp")

    monkeypatch.setattr(scipy.stats, "ks_2samp", forbidden)
    ks_2samp_batch(np.zeros((2, 3)), np.ones((2, 4)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=25),
    st.lists(st.integers(-3, 3), min_size=1, max_size=25),
)
def test_ks_property_small_integer_rows(a: list[int], b: list[int]) -> None:
    _assert_matches_scipy(np.array([a], dtype=np.float64), np.array([b], dtype=np.float64))


# --- PSI ----------------------------------------------------------------------------------------


def test_psi_hand_computed_end_to_end() -> None:
    # ref = 1, 2, 3, 4 with 2 bins: the median edge is 2.5 -> bins (-inf, 2.5], (2.5, inf).
    # ref fractions: [2/4, 2/4] = [0.5, 0.5]; cur = 1, 1, 1, 4 -> [3/4, 1/4] = [0.75, 0.25].
    # PSI = (0.75 - 0.5) * ln(0.75 / 0.5) + (0.25 - 0.5) * ln(0.25 / 0.5)
    #     = 0.25 * ln(1.5) + 0.25 * ln(2) = 0.25 * ln(3) = 0.2746530721670274
    edges = psi_edges(np.array([[1.0, 2.0, 3.0, 4.0]]), bins=2)
    assert_array_equal(edges, [[2.5]])
    ref_frac = bin_fractions(edges, np.array([[1.0, 2.0, 3.0, 4.0]]))
    cur_frac = bin_fractions(edges, np.array([[1.0, 1.0, 1.0, 4.0]]))
    assert_array_equal(ref_frac, [[0.5, 0.5]])
    assert_array_equal(cur_frac, [[0.75, 0.25]])
    assert_allclose(psi(ref_frac, cur_frac), [0.25 * math.log(3)], rtol=1e-12)


def test_psi_hand_computed_three_bins() -> None:
    # (0.5 - 0.25) * ln(0.5 / 0.25) + (0.25 - 0.25) * ln(1) + (0.25 - 0.5) * ln(0.25 / 0.5)
    # = 0.25 * ln 2 + 0 + 0.25 * ln 2 = 0.5 * ln 2 = 0.34657359027997264
    got = psi(np.array([[0.25, 0.25, 0.5]]), np.array([[0.5, 0.25, 0.25]]))
    assert_allclose(got, [0.5 * math.log(2)], rtol=1e-12)


def test_psi_floor_prevents_inf() -> None:
    # Bin 2 is empty in the reference, so it is floored to 1e-4:
    # (0.5 - 0.5) * ln(1) + (0.25 - 0.5) * ln(0.25 / 0.5) + (0.25 - 1e-4) * ln(0.25 / 1e-4)
    # = 0 + 0.25 * ln 2 + 0.2499 * ln 2500
    ref_frac = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    cur_frac = np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])
    got = psi(ref_frac, cur_frac)
    want0 = 0.25 * math.log(2) + 0.2499 * math.log(2500)
    want1 = 2 * (1 - 1e-4) * math.log(1e4)  # all mass moved from bin 0 to bin 2
    assert_allclose(got, [want0, want1], rtol=1e-12)
    assert np.isfinite(psi(ref_frac, cur_frac, floor=1e-12)).all()


def test_psi_zero_for_identical_distributions() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(40, 128))
    edges = psi_edges(ref, bins=10)
    ref_frac = bin_fractions(edges, ref)
    shuffled = rng.permuted(ref, axis=1)  # same values, different order
    assert_array_equal(psi(ref_frac, bin_fractions(edges, shuffled)), 0.0)
    assert_array_equal(psi(ref_frac, ref_frac), 0.0)


def test_psi_bins_are_frozen_on_the_reference() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(20, 5000))
    edges = psi_edges(ref, bins=10)
    ref_frac = bin_fractions(edges, ref)
    assert_allclose(ref_frac, 0.1, atol=1e-3)  # quantile bins hold ~equal mass
    same = psi(ref_frac, bin_fractions(edges, rng.normal(size=(20, 5000))))
    shifted_window = ref + 3.0
    shifted = psi(ref_frac, bin_fractions(edges, shifted_window))
    assert (same < 0.02).all()
    assert (shifted > 5.0).all()
    # Re-deriving edges on the shifted window would hide the drift entirely.
    own_edges = psi_edges(shifted_window, bins=10)
    assert_array_equal(psi(ref_frac, bin_fractions(own_edges, shifted_window)), 0.0)


def test_psi_duplicate_edges_are_finite_and_sensible() -> None:
    # 90% zeros and 10% ones: the 0.1..0.8 quantiles are all 0, so edges repeat and the bins
    # (0, 0] are empty in every window; floored equally on both sides, they add exactly 0.
    ref = np.zeros((3, 100))
    ref[:, 90:] = 1.0
    edges = psi_edges(ref, bins=10)
    assert edges.shape == (3, 9)
    assert_array_equal(edges[:, :8], 0.0)
    assert (np.diff(edges, axis=1) >= 0).all()
    ref_frac = bin_fractions(edges, ref)
    assert_allclose(ref_frac.sum(axis=1), 1.0)
    assert_array_equal(ref_frac[:, 0], 0.9)
    assert_array_equal(psi(ref_frac, bin_fractions(edges, ref[:, ::-1])), 0.0)
    all_ones = psi(ref_frac, bin_fractions(edges, np.ones((3, 50))))
    assert np.isfinite(all_ones).all()
    assert (all_ones > 5.0).all()
    constant = np.full((2, 10), 7.0)  # a stuck sensor: every edge is the same value
    const_edges = psi_edges(constant, bins=5)
    assert_array_equal(const_edges, 7.0)
    const_frac = bin_fractions(const_edges, constant)
    assert_array_equal(const_frac, [[1.0, 0.0, 0.0, 0.0, 0.0]] * 2)
    assert_array_equal(psi(const_frac, const_frac), 0.0)


def test_psi_edges_are_per_row_quantiles() -> None:
    rng = np.random.default_rng(7)
    ref = rng.exponential(size=(4, 33)) * np.array([[1.0], [10.0], [100.0], [0.01]])
    edges = psi_edges(ref, bins=5)
    assert edges.shape == (4, 4)
    assert edges.dtype == np.float64
    for i in range(4):
        assert_allclose(edges[i], np.quantile(ref[i], [0.2, 0.4, 0.6, 0.8]), rtol=1e-15)


def test_bin_fractions_matches_searchsorted_and_edges_go_to_the_lower_bin() -> None:
    rng = np.random.default_rng(8)
    ref = rng.integers(0, 6, size=(30, 50)).astype(np.float64)
    x = rng.integers(-1, 8, size=(30, 70)).astype(np.float64)  # many values equal to edges
    edges = psi_edges(ref, bins=4)
    got = bin_fractions(edges, x)
    assert got.shape == (30, 4)
    for i in range(30):
        index = np.searchsorted(edges[i], x[i], side="left")  # right-closed bins
        assert_array_equal(got[i], np.bincount(index, minlength=4) / 70)
    on_edge = bin_fractions(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0, 2.0, 2.5]]))
    assert_array_equal(on_edge, [[0.25, 0.5, 0.25]])


# --- errors -------------------------------------------------------------------------------------

GOOD = np.zeros((2, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ks_2samp_batch(np.zeros(4), GOOD), "2-D"),
        (lambda: ks_2samp_batch(GOOD, np.zeros((2, 4, 1))), "2-D"),
        (lambda: ks_2samp_batch(GOOD, np.zeros((3, 4))), "same number of rows"),
        (lambda: ks_2samp_batch(np.zeros((2, 0)), GOOD), "at least 1"),
        (lambda: ks_2samp_batch(np.zeros((2, 1)), np.ones((2, 1))), "n = m = 1"),
        (lambda: ks_2samp_batch(GOOD, np.array([[0.0, np.nan]] * 2)), "NaN"),
        (lambda: ks_2samp_batch(np.array([[0.0, np.inf]] * 2), GOOD), "infinite"),
        (lambda: psi_edges(np.zeros(4), bins=4), "2-D"),
        (lambda: psi_edges(np.array([[1.0, np.nan]]), bins=4), "NaN"),
        (lambda: psi_edges(GOOD, bins=1), "bins"),
        (lambda: bin_fractions(np.zeros(3), GOOD), "2-D"),
        (lambda: bin_fractions(np.zeros((3, 3)), GOOD), "same number of rows"),
        (lambda: bin_fractions(np.array([[2.0, 1.0]] * 2), GOOD), "non-decreasing"),
        (lambda: bin_fractions(np.zeros((2, 3)), np.full((2, 4), np.nan)), "NaN"),
        (lambda: psi(np.full(3, 1 / 3), np.full(3, 1 / 3)), "2-D"),
        (lambda: psi(np.full((2, 3), 1 / 3), np.full((2, 2), 0.5)), "same shape"),
        (lambda: psi(np.array([[0.5, np.nan]]), np.array([[0.5, 0.5]])), "NaN"),
        (lambda: psi(np.array([[1.5, -0.5]]), np.array([[0.5, 0.5]])), r"\[0, 1\]"),
        (lambda: psi(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]), floor=0.0), "floor"),
    ],
)
def test_bad_input_raises_value_error(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()


def test_bins_must_be_an_integer() -> None:
    with pytest.raises(TypeError):
        psi_edges(GOOD, bins=2.5)  # type: ignore[arg-type]


# --- doctests -----------------------------------------------------------------------------------


def test_doctests_pass() -> None:
    result = doctest.testmod(monitor.detect.stats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0
