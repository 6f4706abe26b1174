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
  (:func:`split`): a device's inputs in the window are alike (its offset, its place, its
  slow wander), so ``n`` inputs of ``k`` devices carry between ``k`` and ``n`` inputs' worth of
  evidence, and a cohort of a few devices that merely differ from one another is not a cohort
  that differs from the fleet. The score windows' correction for serial correlation
  (:func:`monitor.detect.drift.effective_size`) does not fit here: in a pooled window neighbours
  come from different devices, so its lag-1 autocorrelation misses what makes the inputs alike.
- **PSI** on the same bins, fractions floored at :data:`~monitor.detect.inputs.PSI_FLOOR`, the
  cohort against the rest. An axis drifts when the KS p-value < ``inputs.ks_alpha`` and the PSI >
  ``inputs.psi_threshold``, as for ``input_*`` and ``peer_*``.
- Each side needs ``inputs.cohort_min_inputs`` inputs in the window, or there is no comparison.

Inputs enter the ring in stream order (:meth:`CohortInputs.push`, compiled, over a run of
readings; :class:`Feed` pushes a sensor's readings up to a cohort's evaluation), so the state at
an evaluation, and its result, do not depend on the batch size. Like the fleet's side of
:mod:`monitor.detect.inputs` the ring is this process's (the devices of its partitions) and is
not snapshotted: after a restart the comparisons return once the peer bins are frozen and each
side has its minimum again. Its memory: per sensor, a byte per axis and 8 bytes (slot, code) per
input of the window, and 8 bytes per device slot for grouping the window by device. Each spare
index of ``channels.auto_register`` takes a sensor's share up front, at
:data:`~monitor.schema.MAX_AXES` axes (as the fleet's peer bins lay it out); a channel registered
there is compared like a declared one (:meth:`CohortInputs.adopt`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from monitor.detect.inputs import AxisShift, FleetInputs, Shift, _bin, _compare, kolmogorov
from monitor.schema import MAX_AXES, Catalog
from monitor.settings import InputDriftSettings

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


class CohortInputs:
    """Per sensor: the fleet's latest ``fleet_window_size`` inputs as bin indices of the peer bins
    (one byte per axis), with each input's device (its slot: the clusters of :func:`split`)
    and cohorts (a code per distinct set of cohort keys, :meth:`code`)."""

    def __init__(self, settings: InputDriftSettings, catalog: Catalog, fleet: FleetInputs) -> None:
        self.settings = settings
        self.fleet = fleet
        # Laid out as the fleet's peer bins: every index up to the catalog's capacity, sensor s
        # at catalog.offsets[s] (a spare index: MAX_AXES rows, no axes until it is registered).
        self.keys = catalog.axes()
        self.offsets = np.array(catalog.offsets, np.int64)
        w, p = settings.fleet_window_size, catalog.capacity
        self.n = np.zeros(p, np.int64)  # inputs of each sensor pushed so far
        self.bins = np.zeros((catalog.dims, w), np.uint8)
        self.slot = np.zeros((p, w), np.int32)
        self.codes = np.zeros((p, w), np.int32)
        self.groups: list[frozenset[str]] = []  # the cohort keys of each code
        self._codes: dict[tuple[str, ...], int] = {}
        self._members: dict[str, NDArray[np.bool_]] = {}  # key -> membership by code
        self._scratch = np.zeros(0, np.int32)  # -1 per (slot, side) key: see _cluster_sums

    def adopt(self, catalog: Catalog) -> None:
        """Compare the channels registered at ``catalog``'s spare indices too (their rows are
        already laid out: only their number of axes was unknown)."""
        assert tuple(self.offsets.tolist()) == catalog.offsets and len(self.n) == catalog.capacity
        self.keys = catalog.axes()

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
        fleet's ``fleet_reference_size``-th input of the sensor: later ones enter the ring. (Both
        count every scored input of the sensor, and :func:`monitor.detect.inputs.step` has taken
        an input before it is pushed here, so its bins are frozen by then.)"""
        n0 = int(self.n[s])
        self.n[s] = n0 + len(values)
        k, off = int(self.keys[s]), int(self.offsets[s])
        ring = (self.bins[off : off + k], self.slot[s], self.codes[s])
        f, w = self.settings.fleet_reference_size, self.settings.fleet_window_size
        _push(ring, self.fleet.edges[off : off + k], n0, f, w, values, slots, codes)

    def warm_up(self) -> None:
        """Load the compiled functions (compiled and cached on disk the first time)."""
        self.push(0, np.zeros((0, MAX_AXES)), np.zeros(0, np.int64), np.zeros(0, np.int64))
        split(np.zeros((1, 2), np.uint8), np.zeros(2, np.int32), np.array([True, False]), 2)

    def compare(self, s: int, key: str, axes: tuple[str, ...]) -> Shift | None:
        """Cohort ``key``'s inputs of sensor ``s`` against the rest of the window's, per axis (None
        until the ring is full and each side holds ``cohort_min_inputs``)."""
        cfg = self.settings
        if self.n[s] < cfg.fleet_reference_size + cfg.fleet_window_size:
            return None
        k, off = int(self.keys[s]), int(self.offsets[s])
        need = 2 * (int(self.slot[s].max()) + 2)  # the keys of (slot, side), slot -1 included
        if len(self._scratch) < need:
            self._scratch = np.full(need, -1, np.int32)
        out = np.zeros((k, 5))
        sides = (self.codes[s], self._membership(key), cfg.cohort_min_inputs)
        if not _split(self.bins[off : off + k], self.slot[s], sides, cfg.bins, self._scratch, out):
            return None
        d, psi, p = out[:, KS].tolist(), out[:, PSI].tolist(), out[:, PVALUE].tolist()
        drifted = [pv < cfg.ks_alpha and v > cfg.psi_threshold for pv, v in zip(p, psi, strict=True)]
        return Shift(tuple(map(AxisShift, axes, d, p, psi, drifted)))

    def _membership(self, key: str) -> NDArray[np.bool_]:
        member = self._members.get(key)
        if member is None or len(member) != len(self.groups):
            member = self._members[key] = np.array([key in g for g in self.groups], np.bool_)
        return member


@njit(cache=True)
def _push(ring: Any, edges: Any, n0: int, f: int, w: int, values: Any, slots: Any, codes: Any) -> None:
    """The rows of ``values`` that enter the ring (after the sensor's ``f``-th input, the last
    ``w``), binned as :func:`monitor.detect.inputs.step` bins them, with their slots and codes."""
    bins, ring_slots, ring_codes = ring
    m = len(values)
    for i in range(max(f - n0, m - w, 0), m):
        pos = (n0 + i - f) % w
        for j in range(len(bins)):
            bins[j, pos] = _bin(edges[j], np.float32(values[i, j]))
        ring_slots[pos] = slots[i]
        ring_codes[pos] = codes[i]


#: :func:`split`'s columns per axis.
KS, PSI, COHORT_SIZE, REST_SIZE, PVALUE = range(5)


def split(
    bins: NDArray[np.uint8], slots: NDArray[np.int32], member: NDArray[np.bool_], n_bins: int
) -> FloatArray:
    """Per row of ``bins`` (an axis: the bin indices of a window's inputs), the inputs where
    ``member`` holds against the others: binned KS statistic, PSI, the two sides' effective sizes
    and the KS p-value for them (the columns :data:`KS` ... :data:`PVALUE`).

    The effective size of a side whose inputs come from the devices in ``slots`` is
    ``n / (1 + (m - 1) rho)``, Kish's design effect, with ``m`` the size-weighted mean number of
    inputs per device and ``rho`` the intra-device correlation of the row on that side (the one-way
    ANOVA estimate, within ``[0, 1]``): inputs of devices that differ only by noise count in full;
    devices that each sit apart count about once each (``n^2 / sum m_i^2``, their number when they
    are equally represented); one device counts as one input.

    >>> bins = np.array([[0, 1, 0, 1, 1, 0, 1, 0, 2, 2, 2, 2, 5, 5, 5, 5]], np.uint8)
    >>> devices = np.repeat(np.arange(4, dtype=np.int32), 4)  # two alike, then two apart
    >>> out = split(bins, devices, np.arange(16) < 8, 6)
    >>> out[0, KS], out[0, COHORT_SIZE], out[0, REST_SIZE]
    (np.float64(1.0), np.float64(8.0), np.float64(2.0))
    """
    out = np.zeros((len(bins), 5))
    scratch = np.full(2 * (int(slots.max()) + 2), -1, np.int32)
    sides = (member.astype(np.int32), np.array([False, True]), 1)
    _split(bins, slots, sides, n_bins, scratch, out)
    return out


@njit(cache=True)
def _split(bins: Any, slots: Any, sides: Any, n_bins: int, scratch: Any, out: Any) -> bool:
    """:func:`split` into ``out`` for the inputs whose code (``sides``: the codes, which codes
    are members, the fewest inputs a side needs) is a member's; False (``out`` untouched) when a
    side has too few. ``scratch`` (-1 for every key ``(slot + 1) * 2 + side`` of the window) is
    left as it was found."""
    codes, by_code, fewest = sides
    k, w = bins.shape
    member = np.empty(w, np.bool_)
    for t in range(w):
        member[t] = by_code[codes[t]]
    inside = member.sum()
    if inside < fewest or w - inside < fewest:
        return False
    counts = np.zeros((k, 2, n_bins), np.int64)
    for t in range(w):
        for j in range(k):
            counts[j, int(member[t]), bins[j, t]] += 1
    sums = _cluster_sums(bins, slots, member, scratch)
    for j in range(k):
        rest, cohort = counts[j, 0], counts[j, 1]
        d, psi = _compare(rest, w - inside, cohort, inside)
        a, b = _effective(sums[1, j]), _effective(sums[0, j])
        out[j, 0], out[j, 1], out[j, 2], out[j, 3] = d, psi, a, b
        out[j, 4] = kolmogorov(math.sqrt(a * b / (a + b)) * d)
    return True


@njit(cache=True)
def _cluster_sums(bins: Any, slots: Any, member: Any, scratch: Any) -> Any:
    """Per side (0: the others, 1: the members) and row: inputs, devices, sum of squared inputs
    per device, sum, sum of squares, and sum over devices of (their sum)^2 / their inputs. A
    device on both sides (its slot reused within the window) counts as two. No sort: ``scratch``
    numbers the window's (slot, side) keys as they come, and is reset after."""
    k, w = bins.shape
    dense, c = np.empty(w, np.int64), 0
    for t in range(w):
        key = (slots[t] + 1) * 2 + member[t]
        if scratch[key] < 0:
            scratch[key] = c
            c += 1
        dense[t] = scratch[key]
    m, side_of = np.zeros(c), np.zeros(c, np.int64)
    acc = np.zeros((k, c, 2))
    for t in range(w):
        i = dense[t]
        m[i] += 1.0
        side_of[i] = member[t]
        scratch[(slots[t] + 1) * 2 + member[t]] = -1
        for j in range(k):
            v = float(bins[j, t])
            acc[j, i, 0] += v
            acc[j, i, 1] += v * v
    sums = np.zeros((2, k, 6))
    for i in range(c):
        side = sums[side_of[i]]
        for j in range(k):
            side[j, 0] += m[i]
            side[j, 1] += 1.0
            side[j, 2] += m[i] * m[i]
            side[j, 3] += acc[j, i, 0]
            side[j, 4] += acc[j, i, 1]
            side[j, 5] += acc[j, i, 0] ** 2 / m[i]
    return sums


@njit(cache=True)
def _effective(sums: Any) -> float:
    """Kish's effective size of a side from :func:`_cluster_sums`' row."""
    n: float = sums[0]
    c, m2, total, squares, by_device = sums[1], sums[2], sums[3], sums[4], sums[5]
    if c < 2:  # one device: one input's worth (none: none)
        return min(n, 1.0)
    weighted: float = m2 / n
    if weighted <= 1.0:  # one input per device: every input
        return n
    between = (by_device - total * total / n) / (c - 1)
    within = max(squares - by_device, 0.0) / (n - c)
    den = between + ((n - weighted) / (c - 1) - 1.0) * within
    rho: float = min(max((between - within) / den, 0.0), 1.0) if den > 0 else 0.0
    return n / (1.0 + (weighted - 1.0) * rho)


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
