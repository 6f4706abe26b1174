"""Drift detection on the anomaly-score stream: KS, PSI and ADWIN, per pair and per sensor over a
group of devices (the fleet, a cohort).

Windows, per (device, sensor) pair and per sensor across the fleet:

- **reference**: the first ``reference_size`` scores the pair's model produces after its warm-up
  (after a retrain: the first ones of the new model). Frozen when full; the PSI bin edges are the
  reference's quantiles, frozen at the same moment, and the reference bin fractions with them.
- **current**: a ring of the latest ``window_size`` scores after the reference.

Scores enter the windows one by one, in stream order, so a pair is evaluated after exactly every
``check_every`` readings whatever the batch size. KS and PSI (:mod:`monitor.detect.stats`) compare current
with reference only at evaluations. ADWIN sees every score fleet-wide, and the mean score of each
evaluation interval per pair (see :meth:`PairDrift.close_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from river import drift

from monitor.detect import kernels, stats
from monitor.detect.state import DetectState
from monitor.schema import MAX_AXES
from monitor.settings import DriftSettings

FloatArray = NDArray[np.float64]
ScoreArray = NDArray[np.uint16]
#: Scores are kept quantised to 16 bits (resolution 1.5e-5) to halve the window memory.
QUANTUM = 65535.0
#: Bin fractions below this count as this in PSI (:func:`monitor.detect.stats.psi`'s default).
PSI_FLOOR = 1e-4


def dequantise(q: ScoreArray) -> FloatArray:
    out: FloatArray = q.astype(np.float64) / QUANTUM
    return out


def _append(ref: ScoreArray, cur: ScoreArray, n: int, q: int) -> bool:
    """Append one quantised score to a (reference, current ring) pair of rows that already holds
    ``n`` scores; True when this score completes the reference."""
    r = len(ref)
    if n < r:
        ref[n] = q
        return n + 1 == r
    cur[(n - r) % len(cur)] = q
    return False


def _freeze(ref: ScoreArray, edges: FloatArray, frac: NDArray[np.float32]) -> None:
    """Freeze the PSI bins of one full reference row: its quantiles and its fractions."""
    r = dequantise(ref[None, :])
    e = stats.psi_edges(r, len(edges) + 1)
    edges[:] = e[0]
    frac[:] = stats.bin_fractions(e, r)[0]


@dataclass(frozen=True)
class Comparison:
    """KS and PSI of current against reference for a set of rows."""

    ks_stat: FloatArray
    ks_pvalue: FloatArray
    psi: FloatArray


def compare(
    ref: ScoreArray,
    cur: ScoreArray,
    edges: FloatArray,
    frac: NDArray[np.float32],
    oldest: int | None = None,
) -> Comparison:
    """KS and PSI of a current window against its reference, compiled (:mod:`monitor.detect.kernels`:
    equal to the last bit to :mod:`monitor.detect.stats` on the dequantised scores).

    With ``oldest`` (where the current ring starts, in stream order) the KS p-value takes each
    window's effective sample size (:func:`effective_size`) instead of its length: neighbouring
    scores of a slowly varying sensor are correlated, and a p-value that counts them as
    independent detects drift in the ordinary wander of such a sensor."""
    d = kernels.ks_statistic(ref, cur)
    if oldest is None:
        p = stats.ks_pvalue(d, len(ref), len(cur))
    else:
        p = stats.ks_pvalue(d, effective_size(ref), effective_size(np.roll(cur, -oldest)))
    value = kernels.psi(cur, edges, frac, QUANTUM, PSI_FLOOR)
    return Comparison(np.array([d]), np.array([p]), np.array([value]))


#: The largest lag-1 autocorrelation :func:`effective_size` takes (a window of 96 counts as >= 2).
MAX_AUTOCORRELATION = 0.95


def effective_size(window: ScoreArray) -> int:
    """``n (1 - r) / (1 + r)`` for a window of ``n`` scores in stream order whose lag-1
    autocorrelation is ``r`` (0 if negative or undefined, at most :data:`MAX_AUTOCORRELATION`):
    the number of independent scores that would estimate its mean as well, under an AR(1) model
    (the usual correction of a test's sample size for serial correlation).

    >>> effective_size(np.array([1, 2, 1, 2, 1, 2], np.uint16))  # alternating: r < 0, counted as 0
    6
    >>> effective_size(np.arange(96, dtype=np.uint16))  # a ramp: r = 0.97, capped at 0.95
    2
    """
    x = window.astype(np.float64)
    x -= x.mean()
    var = float(np.dot(x, x))
    r = float(np.dot(x[1:], x[:-1])) / var if var > 0 else 0.0
    r = min(max(r, 0.0), MAX_AUTOCORRELATION)
    return max(2, round(len(x) * (1.0 - r) / (1.0 + r)))


class PairDrift:
    """Reference/current windows and ADWIN for every (device, sensor) pair, in the detect state
    (ADWIN: :mod:`monitor.detect.adwin`, River's algorithm in slab rows)."""

    def __init__(self, state: DetectState, settings: DriftSettings) -> None:
        self.state = state
        self.settings = settings

    def push(self, slot: int, s: int, score: float) -> None:
        """Record one score of a pair in its windows and its interval sums."""
        st = self.state
        n = int(st.n_scored[slot, s])
        if _append(st.ref[slot, s], st.cur[slot, s], n, round(score * QUANTUM)):
            self.freeze(slot, s)
        st.n_scored[slot, s] = n + 1
        st.score_sum[slot, s] += score
        st.score_count[slot, s] += 1

    def freeze(self, slot: int, s: int) -> None:
        """Freeze the PSI bins of the pair's reference, now full."""
        st = self.state
        _freeze(st.ref[slot, s], st.edges[slot, s], st.ref_frac[slot, s])

    def close_interval(self, slot: int, s: int) -> None:
        """Feed the pair's ADWIN the mean score of the interval since its last evaluation.

        ADWIN per pair sees interval means, not single scores: interval means are closer to
        Gaussian, which ADWIN's bound assumes, and its window (capped at
        :data:`monitor.detect.adwin.MAX_WIDTH` values, in fixed-size slab rows) then spans hours.
        """
        st = self.state
        n = int(st.score_count[slot, s])
        if n and st.adwin_update(slot, s, float(st.score_sum[slot, s]) / n):
            st.adwin_hits[slot, s] += 1
        st.score_sum[slot, s] = 0.0
        st.score_count[slot, s] = 0

    def compare(self, slot: int, s: int) -> Comparison | None:
        """KS and PSI of the pair, once its reference is frozen and its current window full."""
        st, cfg = self.state, self.settings
        n = int(st.n_scored[slot, s])
        if n < cfg.reference_size + cfg.window_size:
            return None
        oldest = (n - cfg.reference_size) % cfg.window_size if cfg.ks_autocorrelation else None
        return compare(st.ref[slot, s], st.cur[slot, s], st.edges[slot, s], st.ref_frac[slot, s], oldest)


class GroupDrift:
    """The same windows per sensor over the pooled scores of a group of devices (the whole fleet,
    or a cohort), ADWIN on every score, and the group's anomaly count; and, with ``axes`` (the
    number of axes of each sensor), ADWIN on the mean of each input axis over each evaluation
    interval (:meth:`close_inputs`)."""

    def __init__(self, n_sensors: int, settings: DriftSettings, axes: tuple[int, ...] = ()) -> None:
        self.axes = axes
        self.input_sum = np.zeros((n_sensors, MAX_AXES), np.float64)
        self.input_adwins = [
            [drift.ADWIN(delta=settings.adwin_delta, clock=1) for _ in range(k)] for k in axes
        ]
        self.settings = s = settings
        self.ref = np.zeros((n_sensors, s.fleet_reference_size), np.uint16)
        self.cur = np.zeros((n_sensors, s.fleet_window_size), np.uint16)
        self.edges = np.zeros((n_sensors, s.psi_bins - 1), np.float64)
        self.frac = np.zeros((n_sensors, s.psi_bins), np.float32)
        self.n = [0] * n_sensors
        self.since_eval = [0] * n_sensors
        self.adwin_hits = [0] * n_sensors
        self.anomalies = [0] * n_sensors
        self.score_sum = [0.0] * n_sensors
        self.adwins = [drift.ADWIN(delta=s.adwin_delta) for _ in range(n_sensors)]

    def watch_axes(self, axes: tuple[int, ...]) -> None:
        """The axes of each sensor now (a channel registered at a spare index, which had none)."""
        for s, (old, new) in enumerate(zip(self.axes, axes, strict=True)):
            if new != old:
                self.input_adwins[s] = [
                    drift.ADWIN(delta=self.settings.adwin_delta, clock=1) for _ in range(new)
                ]
        self.axes = axes

    def push(self, s: int, score: float, anomalous: bool = False, values: tuple[float, ...] = ()) -> bool:
        """Record one score of sensor ``s`` (and the reading's ``values`` when the group watches
        its inputs); True when the sensor is due for an evaluation."""
        if self.axes:
            row = self.input_sum[s]
            for j, v in enumerate(values):
                row[j] = row[j] + v
        self.anomalies[s] += anomalous
        self.score_sum[s] += score
        n = self.n[s]
        if _append(self.ref[s], self.cur[s], n, round(score * QUANTUM)):
            _freeze(self.ref[s], self.edges[s], self.frac[s])
        self.n[s] = n + 1
        a = self.adwins[s]
        a.update(score)
        if a.drift_detected:
            self.adwin_hits[s] += 1
        self.since_eval[s] += 1
        return self.since_eval[s] >= self.settings.fleet_check_every

    def push_many(
        self, s: int, scores: FloatArray, anomalous: NDArray[np.bool_], values: FloatArray | None = None
    ) -> None:
        """:meth:`push` of each score in turn (``values``: the readings' rows, zero-padded to
        ``MAX_AXES``), with the same state after (the caller evaluates the sensor where
        :meth:`due_in` says it is due)."""
        m = len(scores)
        if not m:
            return
        if self.axes and values is not None:  # summed in order, as push does (cumsum is sequential)
            k = self.axes[s]
            start = self.input_sum[s, None, :k]
            self.input_sum[s, :k] = np.cumsum(np.concatenate([start, values[:, :k]]), axis=0)[-1]
        self.anomalies[s] += int(anomalous.sum())
        q = np.round(scores * QUANTUM).astype(np.uint16)
        ref, cur, n = self.ref[s], self.cur[s], self.n[s]
        r = len(ref)
        fill = min(m, max(0, r - n))
        ref[n : n + fill] = q[:fill]
        if n < r <= n + m:
            _freeze(ref, self.edges[s], self.frac[s])
        rest = q[fill:][-len(cur) :]  # only the last ring's worth survives
        if len(rest):
            first = n + fill + (m - fill - len(rest))  # the stream position of rest[0]
            cur[(first - r + np.arange(len(rest))) % len(cur)] = rest
        self.n[s] = n + m
        a, total, hits = self.adwins[s], self.score_sum[s], 0
        for x in scores.tolist():
            total += x
            a.update(x)
            hits += a.drift_detected
        self.score_sum[s] = total
        self.adwin_hits[s] += hits
        self.since_eval[s] += m

    def close_inputs(self, s: int) -> int:
        """Feed each axis's ADWIN the mean input of sensor ``s`` over the interval now ending;
        returns how many axes detected a change. Interval means, not every input: an update per
        input and axis would cost more than the whole compiled loop, and means of hundreds of
        readings of many devices are close to Gaussian, as ADWIN's bound assumes."""
        n, hits = self.since_eval[s], 0
        if self.axes and n:
            for j, a in enumerate(self.input_adwins[s]):
                a.update(float(self.input_sum[s, j]) / n)
                hits += a.drift_detected
        self.input_sum[s] = 0.0
        return hits

    def due_in(self, s: int) -> int:
        """How many more scores of sensor ``s`` make it due for an evaluation (at least 1)."""
        return max(1, self.settings.fleet_check_every - self.since_eval[s])

    def compare(self, s: int) -> Comparison | None:
        cfg, n = self.settings, self.n[s]
        if n < cfg.fleet_reference_size + cfg.fleet_window_size:
            return None
        oldest = (n - cfg.fleet_reference_size) % cfg.fleet_window_size if cfg.ks_autocorrelation else None
        return compare(self.ref[s], self.cur[s], self.edges[s], self.frac[s], oldest)
