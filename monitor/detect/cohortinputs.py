"""A cohort's inputs against the rest of the fleet's at the same time: per cohort, sensor and axis,
binned KS and PSI of the cohort's share of the fleet's latest inputs against the other share.

:mod:`monitor.detect.inputs` compares one pair with the fleet (``peer_*``); this module asks the
same of a cohort (``firmware=1.3.0``, ``site=plant-b``, ``vendor=bosch``): do its devices' inputs
differ from the others' now? It keeps, per sensor, one ring of the fleet's latest
``fleet_window_size`` inputs in the peer bins (:class:`~monitor.detect.inputs.FleetInputs`' frozen
quantiles), with the device each came from and the cohorts it is in; a cohort's evaluation splits
the ring in two (the cohort's inputs and the rest) and compares them:

- **Against the rest, not the whole fleet**: the fleet holds the cohort, so against it a cohort of
  share ``q`` shows only ``(1 - q)`` of its difference (nothing at all for a cohort that is the
  whole fleet), and its inputs would sit in both samples, which the KS law does not allow for.
  The rest is a disjoint sample of the same moments, whatever the cohort's share.
- **KS** is the binned statistic over the bin edges (as :func:`monitor.detect.inputs.measure`);
  its p-value is the limiting Kolmogorov law for the two sides' *effective* sizes
  (:func:`clustered_size`): a device's inputs in the window are alike (its offset, its place, its
  slow wander), so ``n`` inputs of ``k`` devices carry between ``k`` and ``n`` inputs' worth of
  evidence, and a cohort of a few devices that merely differ from one another is not a cohort
  that differs from the fleet. The score windows' correction for serial correlation
  (:func:`monitor.detect.drift.effective_size`) does not fit here: in a pooled window neighbours
  come from different devices, so its lag-1 autocorrelation misses what makes the inputs alike.
- **PSI** on the same bins, fractions floored at :data:`~monitor.detect.inputs.PSI_FLOOR`, the
  cohort against the rest. An axis drifts when the KS p-value < ``inputs.ks_alpha`` and the PSI >
  ``inputs.psi_threshold``, as for ``input_*`` and ``peer_*``.
- Each side needs ``inputs.cohort_min_inputs`` inputs in the window, or there is no comparison.

Inputs enter the ring in stream order (:meth:`CohortInputs.push`, vectorised over a run of
readings; :class:`Feed` pushes a sensor's readings up to a cohort's evaluation), so the state at
an evaluation, and its result, do not depend on the batch size. Like the fleet's side of
:mod:`monitor.detect.inputs` the ring is this process's (the devices of its partitions) and is
not snapshotted: after a restart the comparisons return once the peer bins are frozen and each
side has its minimum again.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from monitor.detect.inputs import PSI_FLOOR, AxisShift, FleetInputs, Shift, kolmogorov
from monitor.schema import Catalog
from monitor.settings import InputDriftSettings

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


class CohortInputs:
    """Per sensor: the fleet's latest ``fleet_window_size`` inputs as bin indices of the peer bins
    (one byte per axis), with each input's device (its slot: the clusters of :func:`clustered_size`)
    and cohorts (a code per distinct set of cohort keys, :meth:`code`)."""

    def __init__(self, settings: InputDriftSettings, catalog: Catalog, fleet: FleetInputs) -> None:
        self.settings = settings
        self.fleet = fleet
        self.keys = np.array([len(s.keys) for s in catalog.specs], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.keys)[:-1]]).astype(np.int64)
        w, p = settings.fleet_window_size, len(catalog)
        self.n = np.zeros(p, np.int64)  # inputs of each sensor pushed so far
        self.bins = np.zeros((int(self.keys.sum()), w), np.uint8)
        self.slot = np.zeros((p, w), np.int32)
        self.codes = np.zeros((p, w), np.int32)
        self.groups: list[frozenset[str]] = []  # the cohort keys of each code
        self._codes: dict[tuple[str, ...], int] = {}
        self._members: dict[str, NDArray[np.bool_]] = {}  # key -> membership by code

    def code(self, keys: tuple[str, ...]) -> int:
        """The code of the devices whose pairs are in the cohorts ``keys`` (one per distinct set)."""
        code = self._codes.get(keys)
        if code is None:
            code = self._codes[keys] = len(self.groups)
            self.groups.append(frozenset(keys))
        return code

    def push(self, s: int, values: FloatArray, slots: IntArray, codes: IntArray) -> None:
        """Inputs of sensor ``s`` in stream order (``values``: rows zero-padded to ``MAX_AXES``),
        from the devices in ``slots`` with cohort codes ``codes``. The peer bins are frozen at the
        fleet's ``fleet_reference_size``-th input of the sensor: later ones enter the ring."""
        f, w = self.settings.fleet_reference_size, self.settings.fleet_window_size
        n0, m = int(self.n[s]), len(values)
        self.n[s] = n0 + m
        first = max(f - n0, m - w, 0)  # the first row that enters the ring and stays there
        if first >= m:
            return
        pos = (n0 + np.arange(first, m) - f) % w
        k, off = int(self.keys[s]), int(self.offsets[s])
        edges = self.fleet.edges[off : off + k]
        for j in range(k):
            x = values[first:, j].astype(np.float32)
            self.bins[off + j, pos] = np.searchsorted(edges[j], x, side="left")  # inputs._bin's
        self.slot[s, pos] = slots[first:]
        self.codes[s, pos] = codes[first:]

    def compare(self, s: int, key: str, axes: tuple[str, ...]) -> Shift | None:
        """Cohort ``key``'s inputs of sensor ``s`` against the rest of the window's, per axis (None
        until the ring is full and each side holds ``cohort_min_inputs``)."""
        cfg = self.settings
        if self.n[s] < cfg.fleet_reference_size + cfg.fleet_window_size:
            return None
        member = self._membership(key)[self.codes[s]]
        inside = int(member.sum())
        if min(inside, len(member) - inside) < cfg.cohort_min_inputs:
            return None
        k, off = int(self.keys[s]), int(self.offsets[s])
        bins = self.bins[off : off + k]
        d, psi = binned_shift(bins, member, cfg.bins)
        cohort = clustered_size(bins[:, member], self.slot[s, member])
        rest = clustered_size(bins[:, ~member], self.slot[s, ~member])
        p = [kolmogorov(math.sqrt(a * b / (a + b)) * x) for a, b, x in zip(cohort, rest, d, strict=True)]
        drifted = [pv < cfg.ks_alpha and v > cfg.psi_threshold for pv, v in zip(p, psi.tolist(), strict=True)]
        return Shift(tuple(map(AxisShift, axes, d.tolist(), p, psi.tolist(), drifted)))

    def _membership(self, key: str) -> NDArray[np.bool_]:
        member = self._members.get(key)
        if member is None or len(member) != len(self.groups):
            member = self._members[key] = np.array([key in g for g in self.groups], np.bool_)
        return member


def binned_shift(
    bins: NDArray[np.uint8], member: NDArray[np.bool_], n_bins: int
) -> tuple[FloatArray, FloatArray]:
    """Per row of ``bins`` (an axis: bin indices of the window's inputs), the binned KS statistic
    and the PSI of the inputs where ``member`` holds against the others.

    >>> bins = np.array([[0, 0, 1, 1, 1, 1]], np.uint8)
    >>> d, psi = binned_shift(bins, np.array([True, True, False, False, False, False]), 2)
    >>> float(d[0]), round(float(psi[0]), 2)
    (1.0, 18.42)
    """
    k = len(bins)
    side = (2 * np.arange(k)[:, None] + member[None, :]) * n_bins  # rest: even blocks, cohort: odd
    counts = np.bincount((bins + side).ravel(), minlength=2 * k * n_bins).reshape(k, 2, n_bins)
    rest, cohort = counts[:, 0], counts[:, 1]
    nr, nc = rest.sum(axis=1, keepdims=True), cohort.sum(axis=1, keepdims=True)
    gap = np.abs(np.cumsum(cohort, axis=1) * nr - np.cumsum(rest, axis=1) * nc).max(axis=1)
    p, q = np.maximum(rest / nr, PSI_FLOOR), np.maximum(cohort / nc, PSI_FLOOR)
    return gap / (nr * nc)[:, 0], ((q - p) * np.log(q / p)).sum(axis=1)


def clustered_size(values: NDArray[np.uint8], cluster: NDArray[np.int32]) -> FloatArray:
    """Per row of ``values`` (an axis), the effective sample size of inputs that come in clusters
    (the devices in ``cluster``): ``n / (1 + (m - 1) rho)``, Kish's design effect, with ``m`` the
    size-weighted mean cluster size and ``rho`` the intra-cluster correlation of the row (one-way
    ANOVA estimate, within ``[0, 1]``). Inputs of devices that differ only by noise count in full;
    devices that each sit apart count about once each (``n^2 / sum m_i^2``, their number when they
    are equally represented); one device counts as one input.

    >>> noise = np.array([[0, 1, 0, 1, 1, 0, 1, 0]], np.uint8)  # two devices alike
    >>> apart = np.array([[0, 0, 0, 0, 5, 5, 5, 5]], np.uint8)  # two devices apart
    >>> devices = np.array([1, 1, 1, 1, 2, 2, 2, 2], np.int32)
    >>> float(clustered_size(noise, devices)[0]), float(clustered_size(apart, devices)[0])
    (8.0, 2.0)
    """
    k, n = values.shape
    ids, inv = np.unique(cluster, return_inverse=True)
    c = len(ids)
    m = np.bincount(inv, minlength=c).astype(np.float64)
    weighted = float((m * m).sum()) / n if n else 1.0
    if c < 2 or weighted <= 1.0:  # one device: one input's worth; one input per device: n
        return np.full(k, 1.0 if c < 2 else float(n))
    x = values.astype(np.float64)
    at = (inv[None, :] + c * np.arange(k)[:, None]).ravel()
    sums = np.bincount(at, weights=x.ravel(), minlength=k * c).reshape(k, c)
    squares = np.bincount(at, weights=(x * x).ravel(), minlength=k * c).reshape(k, c)
    means = sums / m
    grand = sums.sum(axis=1, keepdims=True) / n
    between = (m * (means - grand) ** 2).sum(axis=1) / (c - 1)
    within = np.maximum((squares - sums * means).sum(axis=1), 0.0) / (n - c) if n > c else np.zeros(k)
    m0 = (n - weighted) / (c - 1)
    den = between + (m0 - 1.0) * within
    rho = np.clip(np.divide(between - within, den, out=np.zeros(k), where=den > 0), 0.0, 1.0)
    out: FloatArray = n / (1.0 + (weighted - 1.0) * rho)
    return out


class Feed:
    """A run of scored readings (``positions`` in the batch, in stream order, with their sensors,
    zero-padded values, slots and cohort codes) pushed into a :class:`CohortInputs` sensor by
    sensor as far as a stream position (:meth:`upto`, before a cohort's evaluation there), then
    the rest (:meth:`finish`)."""

    def __init__(
        self,
        target: CohortInputs,
        positions: IntArray,
        sensors: IntArray,
        values: FloatArray,
        who: tuple[IntArray, IntArray],
    ) -> None:
        self.target = target
        self.positions, self.values, (self.slots, self.codes) = positions, values, who
        self.picks = {s: np.flatnonzero(sensors == s) for s in np.unique(sensors).tolist()}
        self.done = dict.fromkeys(self.picks, 0)

    def upto(self, s: int, position: int) -> None:
        pick = self.picks.get(s)
        if pick is None:
            return
        end = int(np.searchsorted(self.positions[pick], position, side="right"))
        chunk = pick[self.done[s] : end]
        if len(chunk):
            self.target.push(s, self.values[chunk], self.slots[chunk], self.codes[chunk])
            self.done[s] = end

    def finish(self) -> None:
        for s in self.picks:
            self.upto(s, int(self.positions[-1]))
