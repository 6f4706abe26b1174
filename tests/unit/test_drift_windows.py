"""Tests for monitor.detect.drift: window filling, quantisation, per-pair and fleet drift windows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from numpy.testing import assert_array_equal

from monitor.detect import adwin, stats
from monitor.detect.drift import QUANTUM, Comparison, GroupDrift, PairDrift, _append, dequantise
from monitor.detect.state import DetectState
from monitor.schema import SENSOR_NAMES
from monitor.settings import DriftSettings
from monitor.state.store import StateStore

N_SENSORS = len(SENSOR_NAMES)

IntArray = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]


# --- _append ------------------------------------------------------------------------------------


def test_append_fills_the_reference_first_then_the_current_ring() -> None:
    ref, cur = np.zeros(3, np.uint16), np.zeros(2, np.uint16)
    completes = [_append(ref, cur, n, v) for n, v in enumerate([1, 2, 3, 4, 5, 6, 7])]
    assert completes == [False, False, True, False, False, False, False]  # reported once
    assert_array_equal(ref, [1, 2, 3])
    assert_array_equal(cur, [6, 7])  # ring position (n - r) % w: 4 5, then 6 7 overwrite


# --- quantisation ---------------------------------------------------------------------------------


def quantise(x: npt.NDArray[np.float64]) -> U16:
    """What PairDrift.push stores for each score."""
    return np.array([round(min(max(float(v), 0.0), 1.0) * QUANTUM) for v in x], np.uint16)


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


def _pair_drift(psi_bins: int = 10) -> tuple[PairDrift, DetectState]:
    """Windows of the detect state; its slot 0 (and 1) are the store's first devices."""
    settings = DriftSettings(reference_size=REF, window_size=WIN, psi_bins=psi_bins)
    store = StateStore().add(DetectState(N_SENSORS, settings))
    return PairDrift(store, settings), store


def _compare(drift: PairDrift, slot: int, s: int) -> Comparison:
    cmp = drift.compare(slot, s)
    assert cmp is not None
    return cmp


def _push(drift: PairDrift, slot: int, s: int, scores: npt.NDArray[np.float64]) -> None:
    for x in scores:
        drift.push(slot, s, float(x))


def test_pair_becomes_comparable_after_reference_and_window() -> None:
    drift, store = _pair_drift()
    slot = 0
    rng = np.random.default_rng(3)
    _push(drift, slot, 2, rng.random(REF + WIN - 1))
    assert drift.compare(slot, 2) is None
    _push(drift, slot, 2, rng.random(1))
    assert drift.compare(slot, 2) is not None
    assert drift.compare(slot, 3) is None  # another sensor of the same device
    assert int(store.n_scored[slot, 2]) == REF + WIN


def test_identical_windows_give_no_drift() -> None:
    drift, _ = _pair_drift()
    slot = 0
    scores = np.random.default_rng(4).random(REF)
    _push(drift, slot, 0, scores)
    _push(drift, slot, 0, scores)  # the current window is the reference, value for value
    cmp = _compare(drift, slot, 0)
    assert cmp.ks_stat[0] == 0.0
    assert cmp.ks_pvalue[0] == 1.0
    assert cmp.psi[0] < 0.01


def test_psi_is_zero_when_the_window_equals_a_reference_with_ties() -> None:
    settings = DriftSettings(reference_size=128, window_size=128)
    drift, slot = PairDrift(StateStore().add(DetectState(N_SENSORS, settings)), settings), 0
    tie = 30000 / QUANTUM  # an exact quantisation level that float32 rounds down
    assert float(np.float32(tie)) < tie
    ref = np.random.default_rng(0).random(128)
    ref[:64] = tie  # half the scores tie, so several decile edges equal `tie`
    _push(drift, slot, 0, np.concatenate([ref, ref]))
    cmp = _compare(drift, slot, 0)
    assert cmp.ks_pvalue[0] == 1.0
    assert cmp.psi[0] == pytest.approx(0.0, abs=1e-9)  # actual: 2.749 (> psi_threshold 0.5)


def test_same_distribution_gives_high_p_value_and_small_psi() -> None:
    drift, _ = _pair_drift()
    slot = 0
    _push(drift, slot, 0, np.random.default_rng(5).random(REF + WIN))
    cmp = _compare(drift, slot, 0)
    assert cmp.ks_pvalue[0] > 0.01
    assert cmp.psi[0] < 0.15


def test_shifted_scores_give_ks_and_psi_drift() -> None:
    drift, _ = _pair_drift()
    slot = 0
    rng = np.random.default_rng(6)
    _push(drift, slot, 0, rng.random(REF))
    _push(drift, slot, 0, 0.99 + 0.01 * rng.random(WIN))  # a persistent change: scores pile up near 1
    cmp = _compare(drift, slot, 0)
    assert cmp.ks_pvalue[0] < 1e-6
    assert cmp.psi[0] > 0.5


def test_interleaved_pairs_keep_separate_windows() -> None:
    drift, _ = _pair_drift()
    a, b = 0, 1
    rng = np.random.default_rng(7)
    for x, y in zip(rng.random(REF), rng.random(REF), strict=True):
        drift.push(a, 4, float(x))
        drift.push(b, 4, float(y))
    for x in rng.random(WIN):
        drift.push(a, 4, float(x))
        drift.push(b, 4, 1.0)
    ca, cb = _compare(drift, a, 4), _compare(drift, b, 4)
    assert ca.ks_pvalue[0] > 0.01
    assert cb.ks_pvalue[0] < 1e-6
    assert cb.psi[0] > 0.5


def test_psi_edges_are_frozen_at_reference_time() -> None:
    drift, store = _pair_drift()
    slot = 0
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
    slot = 0
    rng = np.random.default_rng(10)
    _push(drift, slot, 0, rng.random(REF + WIN))
    old_edges = store.edges[slot, 0].copy()
    store.reset_detectors(slot, 0)
    assert drift.compare(slot, 0) is None
    new_ref = rng.random(REF) ** 2
    _push(drift, slot, 0, new_ref)
    assert_array_equal(store.ref[slot, 0], quantise(new_ref))
    assert not np.array_equal(store.edges[slot, 0], old_edges)


def test_close_interval_feeds_the_interval_mean_to_adwin_and_resets_the_sums() -> None:
    drift, store = _pair_drift()
    slot = 0
    drift.close_interval(slot, 0)
    assert adwin.width(store.adwin_sums[slot, 0]) == 0  # an interval without scores feeds nothing
    _push(drift, slot, 0, np.array([0.1, 0.2, 0.6]))
    assert int(store.score_count[slot, 0]) == 3
    drift.close_interval(slot, 0)
    assert adwin.width(store.adwin_sums[slot, 0]) == 1
    assert adwin.estimation(store.adwin_sums[slot, 0]) == pytest.approx(0.3, rel=1e-6)
    assert not store.adwin_sums[slot, 1:].any()  # the other pairs' rows are untouched
    assert (float(store.score_sum[slot, 0]), int(store.score_count[slot, 0])) == (0.0, 0)


def test_adwin_counts_a_change_in_the_interval_means() -> None:
    drift, store = _pair_drift()
    slot = 0
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
    store.reset_detectors(slot, 0)  # a new model: a new ADWIN
    assert adwin.width(store.adwin_sums[slot, 0]) == 0 and not store.adwin_counts[slot, 0].any()


# --- GroupDrift -----------------------------------------------------------------------------------


def _fleet(every: int = 100) -> GroupDrift:
    return GroupDrift(
        N_SENSORS, DriftSettings(fleet_reference_size=100, fleet_window_size=100, fleet_check_every=every)
    )


def test_fleet_due_after_check_every_scores_of_a_sensor() -> None:
    fleet = _fleet(every=50)
    rng = np.random.default_rng(12)
    assert not any(fleet.push(3, float(x)) for x in rng.random(49))
    due_1 = [fleet.push(1, float(x)) for x in rng.random(50)]
    assert due_1 == [False] * 49 + [True]
    assert fleet.push(3, 0.5)
    assert fleet.since_eval == [0, 50, 0, 50, 0, 0]


def test_fleet_pools_devices_and_compares_per_sensor() -> None:
    fleet = _fleet()
    rng = np.random.default_rng(13)
    for i in range(200):
        for s in range(N_SENSORS):
            fleet.push(s, 1.0 if s == 5 and i >= 100 else float(rng.random()))  # sensor 5 drifts
    cmps = [fleet.compare(s) for s in range(N_SENSORS)]
    assert all(c is not None for c in cmps)
    assert all(c.ks_pvalue[0] > 1e-3 for c in cmps[:5] if c is not None)
    last = cmps[5]
    assert last is not None
    assert last.ks_pvalue[0] < 1e-6
    assert last.psi[0] > 0.5
