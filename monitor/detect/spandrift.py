"""The fleet and cohort detectors on the merged windows of every replica (``fleet.span``).

Per (group key, sensor), one evaluation per closed window (:class:`monitor.detect.span.Window`):

- **reference**: the histogram of the first windows, until it holds ``drift.fleet_reference_size``
  scores (whole windows: it may hold more); then frozen, with its PSI bins (``drift.psi_bins``
  quantiles of the reference, snapped to histogram bins; heavy bins may merge, leaving fewer);
- **current**: the latest windows after the reference, as few as hold ``drift.fleet_window_size``
  scores (the oldest drop out as new ones come);
- KS and PSI of current against reference on the histograms. Binned, KS is the largest gap
  between the two distributions at a bin edge: at most the true statistic, and short of it by at
  most the larger share of one bin in either window (1/bins for scores spread evenly, as a
  calibrated model's are). Its p-value counts ``fleet_reference_size`` and ``fleet_window_size``
  scores, the windows' sizes of one replica: a fleet read faster does not make it more sensitive;
- ADWIN on each window's mean score (the interval means of :class:`monitor.detect.drift.GroupDrift`);
- the window's readings, anomalies, anomaly rate, mean score and devices.

Every replica computes the same signals from the same windows in the same order: the fleet
topic has one partition, so every replica reads the partials in one order.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray
from river import drift

from monitor.detect import stats
from monitor.detect.drift import PSI_FLOOR
from monitor.detect.span import Cell
from monitor.settings import DriftSettings

IntArray = NDArray[np.int64]


def ks_binned(ref: IntArray, cur: IntArray) -> float:
    """The largest gap between the two histograms' cumulative distributions at a bin edge.

    >>> ks_binned(np.array([5, 5, 0, 0]), np.array([0, 0, 5, 5]))
    1.0
    >>> ks_binned(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))
    0.0
    """
    a = np.cumsum(ref) / max(int(ref.sum()), 1)
    b = np.cumsum(cur) / max(int(cur.sum()), 1)
    return float(np.abs(a - b).max())


def psi_starts(ref: IntArray, psi_bins: int) -> IntArray:
    """The first histogram bin of each PSI bin: the reference's quantiles ``1/k .. (k-1)/k``,
    snapped to histogram bins, duplicates merged.

    >>> psi_starts(np.array([1, 1, 1, 1, 1, 1, 1, 1]), 4).tolist()
    [0, 2, 4, 6]
    """
    cdf = np.cumsum(ref) / max(int(ref.sum()), 1)
    cuts = np.searchsorted(cdf, np.arange(1, psi_bins) / psi_bins, side="right")
    return np.unique(np.concatenate([[0], cuts[cuts < len(ref)]])).astype(np.int64)


def psi_binned(ref: IntArray, cur: IntArray, starts: IntArray) -> float:
    """PSI of ``cur`` against ``ref`` on the PSI bins starting at ``starts``."""
    r = np.add.reduceat(ref, starts) / max(int(ref.sum()), 1)
    c = np.add.reduceat(cur, starts) / max(int(cur.sum()), 1)
    return float(stats.psi(r[None, :], c[None, :], PSI_FLOOR)[0])


class MergedDrift:
    """Reference, current windows and ADWIN of one (group key, sensor) on merged windows."""

    def __init__(self, settings: DriftSettings, bins: int) -> None:
        self.settings = settings
        self.ref = np.zeros(bins, np.int64)
        self.starts: IntArray | None = None  # the PSI bins, once the reference is frozen
        self.current: deque[IntArray] = deque()
        self.cur = np.zeros(bins, np.int64)
        self.adwin = drift.ADWIN(delta=settings.adwin_delta, clock=1)

    def push(self, cell: Cell, devices: int) -> dict[str, float]:
        """Take a closed window's cell; the signals of its evaluation."""
        n = cell.n
        sig = {
            "readings": float(n),
            "anomalies": float(cell.anomalies),
            "anomaly_rate": cell.anomalies / n if n else 0.0,
            "devices": float(devices),
        }
        hits = 0
        if n:
            sig["score_mean"] = mean = cell.score_sum / n
            self.adwin.update(mean)
            hits = int(self.adwin.drift_detected)
        sig["adwin_detections"], sig["adwin_drift"] = float(hits), float(hits > 0)
        self._slide(cell.hist)
        sig.update(self.compare())
        return sig

    def _slide(self, hist: IntArray) -> None:
        cfg = self.settings
        if self.starts is None:
            self.ref += hist
            if self.ref.sum() >= cfg.fleet_reference_size:
                self.starts = psi_starts(self.ref, cfg.psi_bins)
            return
        self.current.append(hist)
        self.cur += hist
        while len(self.current) > 1 and self.cur.sum() - self.current[0].sum() >= cfg.fleet_window_size:
            self.cur -= self.current.popleft()

    def compare(self) -> dict[str, float]:
        """KS and PSI, once the reference is frozen and the current windows full (else none)."""
        cfg = self.settings
        if self.starts is None or self.cur.sum() < cfg.fleet_window_size:
            return {}
        d = ks_binned(self.ref, self.cur)
        p = stats.ks_pvalue(d, cfg.fleet_reference_size, cfg.fleet_window_size)
        psi = psi_binned(self.ref, self.cur, self.starts)
        return {
            "ks_stat": d,
            "ks_pvalue": p,
            "ks_drift": float(p < cfg.ks_alpha),
            "psi": psi,
            "psi_drift": float(psi > cfg.psi_threshold),
        }
