"""Tests for monitor.drift: window filling, quantisation, per-pair and fleet drift windows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from numpy.testing import assert_array_equal

from monitor import stats
from monitor.drift import QUANTUM, FleetDrift, PairDrift, _fill, _ranks, dequantise, quantise
from monitor.settings import DriftSettings
from monitor.state import N_SENSORS, Shapes, StateStore

IntArray = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]


def _i(*values: int) -> IntArray:
    return np.array(values, np.int64)


def _u(*values: int) -> U16:
    return np.array(values, np.uint16)


def _windows(groups: int, r: int, w: int) -> tuple[U16, U16, IntArray]:
    return np.zeros((groups, r), np.uint16), np.zeros((groups, w), np.uint16), np.zeros(groups, np.int64)


# --- _ranks and _fill -----------------------------------------------------------------------------


def test_ranks_are_stable_positions_within_each_group() -> None:
    order, rank = _ranks(_i(2, 0, 2, 1, 0, 2))
    assert_array_equal(order, [1, 4, 3, 0, 2, 5])
    assert_array_equal(rank, [0, 1, 0, 0, 1, 2])


def test_ranks_of_empty_and_single_group() -> None:
    order, rank = _ranks(_i())
    assert len(order) == len(rank) == 0
    order, rank = _ranks(_i(3, 3, 3))
    assert_array_equal(order, [0, 1, 2])
    assert_array_equal(rank, [0, 1, 2])


def test_fill_reference_first_then_current() -> None:
    ref, cur, n = _windows(2, r=3, w=2)
    assert len(_fill(ref, cur, n, _i(0, 0), _u(1, 2))) == 0
    assert_array_equal(ref[0], [1, 2, 0])
    assert_array_equal(n, [2, 0])
    full = _fill(ref, cur, n, _i(0, 1, 0, 0), _u(3, 10, 4, 5))
    assert_array_equal(full, [0])  # group 0's reference just became full, group 1's did not
    assert_array_equal(ref, [[1, 2, 3], [10, 0, 0]])
    assert_array_equal(cur, [[4, 5], [0, 0]])
    assert_array_equal(n, [5, 1])


def test_fill_current_ring_wraps() -> None:
    ref, cur, n = _windows(1, r=2, w=3)
    _fill(ref, cur, n, _i(0, 0), _u(1, 2))
    for v in (3, 4, 5, 6, 7):
        assert len(_fill(ref, cur, n, _i(0), _u(v))) == 0  # already full: reported once only
    assert_array_equal(ref[0], [1, 2])
    assert_array_equal(cur[0], [6, 7, 5])  # ring position (k - r) % w
    assert n[0] == 7


def test_fill_many_values_of_one_group_in_one_call_keep_their_order() -> None:
    ref, cur, n = _windows(3, r=4, w=3)
    groups = _i(1, 2, 1, 1, 1, 1, 2, 1, 1, 1)
    values = _u(10, 20, 11, 12, 13, 14, 21, 15, 16, 17)
    full = _fill(ref, cur, n, groups, values)
    assert_array_equal(full, [1])
    assert_array_equal(ref[1], [10, 11, 12, 13])
    # Current ring of group 1 after 4 reference values: 14 15 16 at 0 1 2, then 17 wraps to 0.
    assert_array_equal(cur[1], [17, 15, 16])
    assert_array_equal(ref[2], [20, 21, 0, 0])
    assert_array_equal(n, [0, 8, 2])


def test_fill_reports_each_group_whose_reference_fills() -> None:
    ref, cur, n = _windows(4, r=2, w=2)
    full = _fill(ref, cur, n, _i(3, 0, 3, 0, 2), _u(1, 2, 3, 4, 5))
    assert_array_equal(np.sort(full), [0, 3])


def test_fill_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, size=300)
    values = rng.integers(0, 65535, size=300).astype(np.uint16)
    ref_a, cur_a, n_a = _windows(5, r=16, w=8)
    ref_b, cur_b, n_b = _windows(5, r=16, w=8)
    full_a = _fill(ref_a, cur_a, n_a, groups, values)
    full_b = np.concatenate(
        [_fill(ref_b, cur_b, n_b, groups[i : i + 1], values[i : i + 1]) for i in range(300)]
    )
    assert_array_equal(ref_a, ref_b)
    assert_array_equal(cur_a, cur_b)
    assert_array_equal(n_a, n_b)
    assert_array_equal(np.sort(full_a), np.sort(full_b))


# --- quantisation ---------------------------------------------------------------------------------


def test_quantise_and_dequantise() -> None:
    x = np.array([-0.5, 0.0, 0.25, 0.5, 1.0 - 1e-9, 1.0, 3.0])
    q = quantise(x)
    assert q.dtype == np.uint16
    assert_array_equal(q, [0, 0, round(0.25 * QUANTUM), round(0.5 * QUANTUM), 65535, 65535, 65535])
    assert dequantise(q)[0] == 0.0
    assert dequantise(q)[-1] == 1.0


def test_quantisation_error_is_at_most_half_a_step() -> None:
    x = np.random.default_rng(1).random(10_000)
    back = dequantise(quantise(x))
    assert back.dtype == np.float64
    assert np.abs(back - x).max() <= 0.5 / QUANTUM + 1e-15


def test_quantise_preserves_order() -> None:
    x = np.sort(np.random.default_rng(2).random(1000))
    assert (np.diff(quantise(x).astype(np.int64)) >= 0).all()


# --- PairDrift ------------------------------------------------------------------------------------

REF, WIN = 256, 256


def _pair_drift(psi_bins: int = 10) -> tuple[PairDrift, StateStore]:
    settings = DriftSettings(reference_size=REF, window_size=WIN, psi_bins=psi_bins)
    store = StateStore(Shapes(REF, WIN, psi_bins, 16), settings.adwin_delta)
    return PairDrift(store, settings), store


def _push(drift: PairDrift, slot: int, s: int, scores: npt.NDArray[np.float64]) -> None:
    drift.push(np.full(len(scores), slot, np.int64), np.full(len(scores), s, np.int64), scores)


def test_pair_becomes_comparable_after_reference_and_window() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    rng = np.random.default_rng(3)
    _push(drift, slot, 2, rng.random(REF + WIN - 1))
    assert not drift.comparable(_i(slot), _i(2))[0]
    _push(drift, slot, 2, rng.random(1))
    assert drift.comparable(_i(slot), _i(2))[0]
    assert not drift.comparable(_i(slot), _i(3))[0]  # another sensor of the same device
    assert int(store.n_scored[slot, 2]) == REF + WIN


def test_identical_windows_give_no_drift() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    scores = np.random.default_rng(4).random(REF)
    _push(drift, slot, 0, scores)
    _push(drift, slot, 0, scores)  # the current window is the reference, value for value
    cmp = drift.compare(_i(slot), _i(0))
    assert cmp.ks_stat[0] == 0.0
    assert cmp.ks_pvalue[0] == 1.0
    assert cmp.psi[0] < 0.01


def test_psi_is_zero_when_the_window_equals_a_reference_with_ties() -> None:
    settings = DriftSettings(reference_size=128, window_size=128)
    store = StateStore(Shapes(128, 128, 10, 16), settings.adwin_delta)
    drift, slot = PairDrift(store, settings), store.slot("dev-1", 0)
    tie = 30000 / QUANTUM  # an exact quantisation level that float32 rounds down
    assert float(np.float32(tie)) < tie
    ref = np.random.default_rng(0).random(128)
    ref[:64] = tie  # half the scores tie, so several decile edges equal `tie`
    _push(drift, slot, 0, np.concatenate([ref, ref]))
    cmp = drift.compare(_i(slot), _i(0))
    assert cmp.ks_pvalue[0] == 1.0
    assert cmp.psi[0] == pytest.approx(0.0, abs=1e-9)  # actual: 2.749 (> psi_threshold 0.5)


def test_same_distribution_gives_high_p_value_and_small_psi() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    _push(drift, slot, 0, np.random.default_rng(5).random(REF + WIN))
    cmp = drift.compare(_i(slot), _i(0))
    assert cmp.ks_pvalue[0] > 0.01
    assert cmp.psi[0] < 0.15


def test_shifted_scores_give_ks_and_psi_drift() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    rng = np.random.default_rng(6)
    _push(drift, slot, 0, rng.random(REF))
    _push(drift, slot, 0, 0.99 + 0.01 * rng.random(WIN))  # a persistent change: scores pile up near 1
    cmp = drift.compare(_i(slot), _i(0))
    assert cmp.ks_pvalue[0] < 1e-6
    assert cmp.psi[0] > 0.5


def test_compare_many_pairs_at_once() -> None:
    drift, store = _pair_drift()
    a, b = store.slot("dev-a", 0), store.slot("dev-b", 1)
    rng = np.random.default_rng(7)
    ref_a, ref_b = rng.random(REF), rng.random(REF)
    # Interleave the two pairs in one push, as a batch would.
    drift.push(np.repeat(_i(a, b), REF), np.repeat(_i(4, 4), REF), np.concatenate([ref_a, ref_b]))
    slots = np.tile(_i(a, b), WIN)
    drift.push(slots, np.full(2 * WIN, 4, np.int64), np.where(slots == a, rng.random(2 * WIN), 1.0))
    cmp = drift.compare(_i(a, b), _i(4, 4))
    assert cmp.ks_pvalue[0] > 0.01
    assert cmp.ks_pvalue[1] < 1e-6
    assert cmp.psi[1] > 0.5


def test_psi_edges_are_frozen_at_reference_time() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    ref = np.random.default_rng(8).random(REF)
    _push(drift, slot, 1, ref[:-1])
    assert not store.edges[slot, 1].any()  # not frozen before the reference is full
    _push(drift, slot, 1, ref[-1:])
    edges, frac = store.edges[slot, 1].copy(), store.ref_frac[slot, 1].copy()
    want = stats.psi_edges(dequantise(quantise(ref))[None, :], 10)[0]
    np.testing.assert_allclose(edges, want, rtol=1e-6)
    np.testing.assert_allclose(
        frac, stats.bin_fractions(want[None, :], dequantise(quantise(ref))[None, :])[0]
    )
    assert frac.sum() == pytest.approx(1.0)
    _push(drift, slot, 1, np.random.default_rng(9).random(3 * WIN) ** 4)  # a different shape later
    assert_array_equal(store.edges[slot, 1], edges)
    assert_array_equal(store.ref_frac[slot, 1], frac)
    assert_array_equal(store.ref[slot, 1], quantise(ref))


def test_reset_detectors_starts_a_new_reference() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    rng = np.random.default_rng(10)
    _push(drift, slot, 0, rng.random(REF + WIN))
    old_edges = store.edges[slot, 0].copy()
    store.reset_detectors(slot, 0)
    assert not drift.comparable(_i(slot), _i(0))[0]
    new_ref = rng.random(REF) ** 2
    _push(drift, slot, 0, new_ref)
    assert_array_equal(store.ref[slot, 0], quantise(new_ref))
    assert not np.array_equal(store.edges[slot, 0], old_edges)


def test_close_interval_feeds_the_interval_mean_to_adwin_and_resets_the_sums() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    drift.close_interval(slot, 0)
    assert store.adwins[slot][0] is None  # an interval without scores feeds nothing
    _push(drift, slot, 0, np.array([0.1, 0.2, 0.6]))
    assert int(store.score_count[slot, 0]) == 3
    drift.close_interval(slot, 0)
    adwin = store.adwins[slot][0]
    assert adwin is not None
    assert adwin.width == 1
    assert adwin.estimation == pytest.approx(0.3, rel=1e-6)
    assert (float(store.score_sum[slot, 0]), int(store.score_count[slot, 0])) == (0.0, 0)


def test_adwin_counts_a_change_in_the_interval_means() -> None:
    drift, store = _pair_drift()
    slot = store.slot("dev-1", 0)
    rng = np.random.default_rng(11)
    for _ in range(200):
        _push(drift, slot, 0, 0.5 * rng.random(16))
        drift.close_interval(slot, 0)
    quiet = int(store.adwin_hits[slot, 0])
    for _ in range(200):
        _push(drift, slot, 0, 0.5 + 0.5 * rng.random(16))
        drift.close_interval(slot, 0)
    assert quiet == 0
    assert int(store.adwin_hits[slot, 0]) >= 1


# --- FleetDrift -----------------------------------------------------------------------------------


def _fleet(every: int = 100) -> FleetDrift:
    return FleetDrift(DriftSettings(fleet_reference_size=100, fleet_window_size=100, fleet_check_every=every))


def test_fleet_due_after_check_every_scores_of_a_sensor() -> None:
    fleet = _fleet(every=50)
    rng = np.random.default_rng(12)
    fleet.push(np.full(49, 3, np.int64), rng.random(49))
    fleet.push(np.full(60, 1, np.int64), rng.random(60))
    assert_array_equal(fleet.due(), [1])
    fleet.push(_i(3), rng.random(1))
    assert_array_equal(fleet.due(), [1, 3])
    assert_array_equal(fleet.since_eval, [0, 60, 0, 50, 0, 0])


def test_fleet_pools_devices_and_compares_per_sensor() -> None:
    fleet = _fleet()
    rng = np.random.default_rng(13)
    sensors = np.tile(np.arange(N_SENSORS, dtype=np.int64), 200)
    scores = rng.random(len(sensors))
    scores[(sensors == 5) & (np.arange(len(sensors)) >= 100 * N_SENSORS)] = 1.0  # sensor 5 drifts
    fleet.push(sensors, scores)
    assert fleet.comparable(np.arange(N_SENSORS)).all()
    cmp = fleet.compare(np.arange(N_SENSORS))
    assert (cmp.ks_pvalue[:5] > 1e-3).all()
    assert cmp.ks_pvalue[5] < 1e-6
    assert cmp.psi[5] > 0.5
