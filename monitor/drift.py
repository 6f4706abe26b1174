"""Drift detection on the anomaly-score stream: KS, PSI and ADWIN, per pair and per sensor fleet-wide.

Windows, per (device, sensor) pair and per sensor across the fleet:

- **reference**: the first ``reference_size`` scores the pair's model produces after its warm-up
  (after a retrain: the first ones of the new model). Frozen when full; the PSI bin edges are the
  reference's quantiles, frozen at the same moment, and the reference bin fractions with them.
- **current**: a ring of the latest ``window_size`` scores after the reference.

KS and PSI compare current with reference in batches (:mod:`monitor.stats`), only when a pair is
evaluated. ADWIN sees every score fleet-wide, and the mean score of each evaluation interval per
pair (see :meth:`PairDrift.close_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from river import drift

from monitor import stats
from monitor.schema import SENSOR_NAMES
from monitor.settings import DriftSettings
from monitor.state import N_SENSORS, StateStore

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
ScoreArray = NDArray[np.uint16]
#: Scores are kept quantised to 16 bits (resolution 1.5e-5) to halve the window memory.
QUANTUM = 65535.0


def quantise(scores: FloatArray) -> ScoreArray:
    q: ScoreArray = np.rint(np.clip(scores, 0.0, 1.0) * QUANTUM).astype(np.uint16)
    return q


def dequantise(q: ScoreArray) -> FloatArray:
    out: FloatArray = q.astype(np.float64) / QUANTUM
    return out


def _ranks(groups: IntArray) -> tuple[IntArray, IntArray]:
    """Stable order of ``groups`` and each element's rank within its group (in that order)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return order, np.arange(len(g)) - first


def _fill(
    ref: ScoreArray, cur: ScoreArray, counts: IntArray, groups: IntArray, values: ScoreArray
) -> IntArray:
    """Append ``values`` of each group: reference first, then the current ring. Returns the
    groups whose reference became full in this call."""
    r, w = ref.shape[1], cur.shape[1]
    order, rank = _ranks(groups)
    g, v = groups[order], values[order]
    k = counts[g] + rank
    into_ref = k < r
    ref[g[into_ref], k[into_ref]] = v[into_ref]
    cur[g[~into_ref], (k[~into_ref] - r) % w] = v[~into_ref]
    before = counts.copy()
    np.add.at(counts, g, 1)
    return np.flatnonzero((before < r) & (counts >= r))


def _freeze(ref: ScoreArray, edges: FloatArray, frac: NDArray[np.float32], rows: IntArray) -> None:
    if len(rows):
        r = dequantise(ref[rows])
        e = stats.psi_edges(r, edges.shape[1] + 1)
        edges[rows] = e
        frac[rows] = stats.bin_fractions(e, r)


@dataclass(frozen=True)
class Comparison:
    """KS and PSI of current against reference for a set of rows."""

    ks_stat: FloatArray
    ks_pvalue: FloatArray
    psi: FloatArray


def compare(ref: ScoreArray, cur: ScoreArray, edges: FloatArray, frac: NDArray[np.float32]) -> Comparison:
    r64, c64 = dequantise(ref), dequantise(cur)
    d, p = stats.ks_2samp_batch(r64, c64)
    cur_frac = stats.bin_fractions(edges, c64)
    return Comparison(d, p, stats.psi(frac.astype(np.float64), cur_frac))


class PairDrift:
    """Reference/current windows and ADWIN for every (device, sensor) pair, in the state store."""

    def __init__(self, store: StateStore, settings: DriftSettings) -> None:
        self.store = store
        self.settings = settings

    def push(self, slots: IntArray, sensors: IntArray, scores: FloatArray) -> None:
        """Record a batch of scores in the windows (vectorised) and the interval sums."""
        st = self.store
        flat = slots * N_SENSORS + sensors
        n = st.n_scored.reshape(-1)
        ref = st.ref.reshape(-1, st.ref.shape[-1])
        full = _fill(ref, st.cur.reshape(-1, st.cur.shape[-1]), n, flat, quantise(scores))
        _freeze(
            ref,
            st.edges.reshape(-1, st.edges.shape[-1]),
            st.ref_frac.reshape(-1, st.ref_frac.shape[-1]),
            full,
        )
        np.add.at(st.score_sum.reshape(-1), flat, scores)
        np.add.at(st.score_count.reshape(-1), flat, 1)

    def close_interval(self, slot: int, s: int) -> None:
        """Feed the pair's ADWIN the mean score of the interval since its last evaluation.

        ADWIN per pair sees interval means, not single scores: a River ADWIN holds ~2 KB of
        buckets after a few thousand updates, which per score would break the per-device budget;
        interval means are also closer to Gaussian, which ADWIN's bound assumes.
        """
        st = self.store
        n = int(st.score_count[slot, s])
        if n:
            a = st.adwin(slot, s)
            a.update(float(st.score_sum[slot, s]) / n)
            if a.drift_detected:
                st.adwin_hits[slot, s] += 1
        st.score_sum[slot, s] = 0.0
        st.score_count[slot, s] = 0

    def comparable(self, slots: IntArray, sensors: IntArray) -> NDArray[np.bool_]:
        """Which pairs have a frozen reference and a full current window."""
        s = self.settings
        full: NDArray[np.bool_] = self.store.n_scored[slots, sensors] >= s.reference_size + s.window_size
        return full

    def compare(self, slots: IntArray, sensors: IntArray) -> Comparison:
        st = self.store
        return compare(
            st.ref[slots, sensors],
            st.cur[slots, sensors],
            st.edges[slots, sensors],
            st.ref_frac[slots, sensors],
        )


class FleetDrift:
    """The same windows and ADWIN per sensor over the pooled scores of the whole fleet."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = s = settings
        self.ref = np.zeros((N_SENSORS, s.fleet_reference_size), np.uint16)
        self.cur = np.zeros((N_SENSORS, s.fleet_window_size), np.uint16)
        self.edges = np.zeros((N_SENSORS, s.psi_bins - 1), np.float64)
        self.frac = np.zeros((N_SENSORS, s.psi_bins), np.float32)
        self.n = np.zeros(N_SENSORS, np.int64)
        self.since_eval = np.zeros(N_SENSORS, np.int64)
        self.adwin_hits = np.zeros(N_SENSORS, np.int64)
        self.adwins = [drift.ADWIN(delta=s.adwin_delta) for _ in SENSOR_NAMES]

    def push(self, sensors: IntArray, scores: FloatArray) -> None:
        full = _fill(self.ref, self.cur, self.n, sensors, quantise(scores))
        _freeze(self.ref, self.edges, self.frac, full)
        np.add.at(self.since_eval, sensors, 1)
        for s, score in zip(sensors.tolist(), scores.tolist(), strict=True):
            a = self.adwins[s]
            a.update(score)
            if a.drift_detected:
                self.adwin_hits[s] += 1

    def due(self) -> IntArray:
        """Sensors with enough new scores since their last evaluation."""
        due: IntArray = np.flatnonzero(self.since_eval >= self.settings.fleet_check_every)
        return due

    def comparable(self, sensors: IntArray) -> NDArray[np.bool_]:
        s = self.settings
        full: NDArray[np.bool_] = self.n[sensors] >= s.fleet_reference_size + s.fleet_window_size
        return full

    def compare(self, sensors: IntArray) -> Comparison:
        return compare(self.ref[sensors], self.cur[sensors], self.edges[sensors], self.frac[sensors])
