"""Drift of the inputs: per (device, sensor) pair and axis, the latest inputs against a frozen
reference of the pair's first ones, and against the fleet's latest inputs at the same time.

The score windows of :mod:`monitor.detect.drift` watch what the pair model makes of its inputs,
and the model follows a gradual change of level by design: its scores stay calibrated while the
inputs move. This module watches the inputs themselves, per axis, in a few hundred bytes:

- **Bins.** A pair's bins are the ``bins`` quantiles of its first inputs after the model's
  warm-up (or a promotion or rollback, which renew them), taken from the retraining ring of
  :class:`monitor.govern.state.GovernState` when the pair's ``min(reference_size, retrain_window)``-th
  input arrives; so no raw input is kept beyond what the ring already holds.
- **Reference**: the bin counts of the pair's first ``reference_size`` inputs, frozen.
- **Current**: a ring of the bin indices (one byte each) of the latest ``window_size`` inputs.
- **Fleet**: per sensor axis, the fleet's first ``fleet_reference_size`` inputs give the peer bins
  (quantiles, frozen); then a ring of the bin indices of the fleet's latest ``fleet_window_size``
  inputs with its counts, and per pair a ring of its latest ``window_size`` inputs in those bins
  (two a byte with at most :data:`NIBBLE_BINS` bins: it is never exported, so its layout is this
  process' own).

Every input goes through :func:`step`, compiled and called by both the kernel and the Python path,
in stream order: the state after a reading does not depend on the batch size. :func:`measure`
compares at a pair's evaluation:

- **KS** is the binned statistic ``max_k |F_ref(e_k) - F_cur(e_k)|`` over the bin edges: a lower
  bound of the exact two-sample statistic (equal to it when no two inputs of different windows
  fall between the same edges). Its p-value is scipy's two-sided asymptotic one for sample sizes
  ``reference_size`` and ``window_size`` (:func:`monitor.detect.stats.ks_pvalue`); against the fleet,
  the limiting Kolmogorov law (:func:`kolmogorov`) for ``window_size`` and ``fleet_window_size``
  (its statistic takes too many distinct values for scipy's memoised finite-sample law).
- **PSI** on the same bins, each fraction floored at :data:`PSI_FLOOR` (as
  :func:`monitor.detect.stats.psi`).

A reading's values are compared as float32 (what the retraining ring keeps), so every input bins
the same way whichever copy of it is binned.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray
from scipy import stats as sps

from monitor.detect import stats
from monitor.schema import MAX_AXES, Catalog
from monitor.settings import InputDriftSettings
from monitor.state.store import AXES as DEVICE_AXES
from monitor.state.store import PAIRS, Columns

#: Bin fractions below this count as this in PSI (as for the score windows).
PSI_FLOOR = 1e-4


#: Bin indices below this fit in half a byte.
NIBBLE_BINS = 16


def dims(settings: InputDriftSettings, catalog: Catalog) -> int:
    """Axes watched per device: every axis of the catalog, at its offsets (0 when input drift is off)."""
    return catalog.dims if settings.enabled else 0


def columns(settings: InputDriftSettings) -> Columns:
    """The per-device arrays, for the detect stage's slab: per pair the inputs since the reference
    started (``in_n``) and the inputs in fleet bins (``peer_n``); per axis of the device the bin
    edges, the reference's counts, and the two rings of bin indices (none when input drift is off)."""
    p, d, b, w = (PAIRS,), DEVICE_AXES if settings.enabled else 0, settings.bins, settings.window_size
    return {
        "in_n": (p, np.int64, 0),
        "in_edges": ((d, b - 1), np.float32, 0),
        "in_ref": ((d, b), np.uint16, 0),  # counts of at most reference_size (4096) inputs
        "in_cur": ((d, w), np.uint8, 0),
        "peer_n": (p, np.int64, 0),
        "peer_cur": ((d, (w + 1) // 2 if b <= NIBBLE_BINS else w), np.uint8, 0),
    }


#: Arrays in the fleet's bins: they mean something only next to this process' fleet state, which
#: a snapshot does not hold, so they are never exported (a restored pair fills them again).
LOCAL = frozenset({"peer_n", "peer_cur"})


class FleetInputs:
    """The fleet's side, per sensor axis: its first inputs (until the peer bins are frozen), the
    peer bins, and the ring of its latest inputs' bin indices with their counts. Kept by this
    process for the devices it reads, like the fleet's score windows."""

    def __init__(self, settings: InputDriftSettings, catalog: Catalog) -> None:
        d, b = dims(settings, catalog), settings.bins
        self.n = np.zeros(catalog.capacity, np.int64)  # inputs of each sensor seen so far
        self.ref = np.zeros((d, settings.fleet_reference_size), np.float32)
        self.edges = np.zeros((d, b - 1), np.float32)
        self.ring = np.zeros((d, settings.fleet_window_size), np.uint8)
        self.counts = np.zeros((d, b), np.int64)

    def arrays(self) -> tuple[Any, ...]:
        return self.n, self.ref, self.edges, self.ring, self.counts


def config(settings: InputDriftSettings, catalog: Catalog, retrain_window: int) -> tuple[Any, ...]:
    """What :func:`step` and :func:`measure` need of the settings and the catalog."""
    keys, offsets = catalog.axes(), np.array(catalog.offsets, np.int64)
    r, w, alpha = settings.reference_size, settings.window_size, settings.ks_alpha
    critical = float(sps.kstwo.isf(alpha, int(np.round(r * w / (r + w)))))  # p < alpha <=> D > this
    return (
        settings.enabled, keys, offsets, settings.bins, r, w, min(r, retrain_window),
        settings.fleet_reference_size, settings.fleet_window_size, alpha, settings.psi_threshold, critical,
        settings.bins <= NIBBLE_BINS,
    )  # fmt: skip


def arrays_for_step(slab: Any, fleet: FleetInputs) -> tuple[Any, ...]:
    """The arrays :func:`step` updates, in its order (taken anew: the slab may have grown)."""
    return (slab.in_n, slab.in_edges, slab.in_ref, slab.in_cur, slab.peer_n, slab.peer_cur, *fleet.arrays())


@njit(cache=True)
def step(slot: int, s: int, x: Any, raw: Any, raw_n: Any, cfg: tuple[Any, ...], st: tuple[Any, ...]) -> None:
    """One scored input ``x`` of pair ``(slot, s)``, already written to the retraining ring
    ``raw``: into the pair's reference or current ring, and into the fleet's state."""
    enabled, keys, offsets, _, r, w, e, f, fw, _, _, _, packed = cfg
    in_n, in_edges, in_ref, in_cur, peer_n, peer_cur, fl_n, fl_ref, fl_edges, fl_ring, fl_counts = st
    if not enabled:
        return
    k, off = keys[s], offsets[s]
    n = in_n[slot, s] + 1
    in_n[slot, s] = n
    edges = in_edges[slot]
    if n == e:  # the bins: quantiles of the ring's latest e inputs, all of them since the start
        _freeze_pair(slot, s, k, off, e, raw, raw_n, edges, in_ref[slot])
    elif e < n <= r:
        for j in range(k):
            in_ref[slot, off + j, _bin(edges[off + j], np.float32(x[j]))] += 1
    elif n > r:
        for j in range(k):
            in_cur[slot, off + j, (n - r - 1) % w] = _bin(edges[off + j], np.float32(x[j]))
    fleet = (fl_n, fl_ref, fl_edges, fl_ring, fl_counts)
    _fleet_step(slot, s, k, off, x, w, f, fw, packed, peer_n, peer_cur, fleet)


@njit(cache=True)
def _fleet_step(
    slot: int,
    s: int,
    k: int,
    off: int,
    x: Any,
    w: int,
    f: int,
    fw: int,
    packed: bool,
    peer_n: Any,
    peer_cur: Any,
    fleet: tuple[Any, ...],
) -> None:
    """The input into the fleet's first inputs (then its bins), or its ring and the pair's."""
    fl_n, fl_ref, fl_edges, fl_ring, fl_counts = fleet
    m = fl_n[s] + 1
    fl_n[s] = m
    if m <= f:
        for j in range(k):
            fl_ref[off + j, m - 1] = x[j]
            if m == f:
                _freeze(fl_ref[off + j].astype(np.float64), fl_edges[off + j])
        return
    pos, pn = (m - f - 1) % fw, peer_n[slot, s]
    for j in range(k):
        b = _bin(fl_edges[off + j], np.float32(x[j]))
        if m - f > fw:
            fl_counts[off + j, fl_ring[off + j, pos]] -= 1
        fl_ring[off + j, pos] = b
        fl_counts[off + j, b] += 1
        _put(peer_cur[slot, off + j], pn % w, b, packed)
    peer_n[slot, s] = pn + 1


@njit(cache=True)
def _freeze_pair(
    slot: int, s: int, k: int, off: int, e: int, raw: Any, raw_n: Any, edges: Any, ref: Any
) -> None:
    """Freeze the bins of a pair's axes on the ring's latest ``e`` inputs, and count them in."""
    window, last = raw.shape[2], raw_n[slot, s] - 1
    for j in range(k):
        values = np.empty(e)
        for t in range(e):
            values[t] = raw[slot, off + j, (last - t) % window]
        _freeze(values, edges[off + j])
        ref[off + j, :] = 0
        for t in range(e):
            ref[off + j, _bin(edges[off + j], np.float32(values[t]))] += 1


@njit(cache=True)
def _freeze(values: Any, edges: Any) -> None:
    """Interior quantile edges of ``values`` (linear interpolation, as numpy's default), as
    float32, non-decreasing."""
    a = np.sort(values)
    n, b = len(a), len(edges) + 1
    for i in range(len(edges)):
        h = (n - 1) * (i + 1) / b
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        edges[i] = np.float32(a[lo] + (h - lo) * (a[hi] - a[lo]))
        if i and edges[i] < edges[i - 1]:
            edges[i] = edges[i - 1]


@njit(cache=True)
def _bin(edges: Any, v: np.float32) -> int:
    """The right-closed bin of ``v``: how many edges lie strictly below it."""
    b = 0
    for i in range(len(edges)):
        if edges[i] < v:
            b += 1
    return b


#: :func:`measure`'s output: input ready, peer ready; the input comparison's largest KS statistic,
#: largest PSI and drift flag; the peer comparison's largest KS statistic, its p-value, largest PSI
#: and drift flag; then per axis (``MAX_AXES`` each) input KS, input PSI, peer KS, peer PSI, peer p.
OUT_SIZE = 9 + 5 * MAX_AXES
AXES = 9


def new_out() -> NDArray[np.float64]:
    return np.zeros(OUT_SIZE)


@njit(cache=True)
def measure(slot: int, s: int, cfg: tuple[Any, ...], st: tuple[Any, ...], out: Any) -> None:
    """At a pair's evaluation, per axis: binned KS and PSI of its current inputs against its
    reference, and of its latest inputs against the fleet's (with the p-value of the latter),
    and the worst of them, into ``out`` (see :data:`OUT_SIZE`). The kernel calls it as it stops
    for the evaluation. The input KS p-value, scipy's, is left to :func:`signals` (an axis drifts
    when its statistic is over the critical value of ``ks_alpha``, which is the same)."""
    enabled, keys, offsets, bins, r, w, _, f, fw, alpha, limit, critical, packed = cfg
    in_n, _, in_ref, in_cur, peer_n, peer_cur, fl_n, _, _, _, fl_counts = st
    k, off, a = keys[s], offsets[s], MAX_AXES
    out[:] = 0.0
    out[0] = enabled and in_n[slot, s] >= r + w
    out[1] = enabled and fl_n[s] >= f + fw and peer_n[slot, s] >= w
    scale = math.sqrt(w * fw / (w + fw))
    for j in range(k):
        if out[0]:
            ref = in_ref[slot, off + j].astype(np.int64)
            d, psi = _compare(ref, r, _counts(in_cur[slot, off + j], bins, w, False), w)
            out[AXES + j], out[AXES + a + j] = d, psi
            out[2] = max(out[2], d)
            out[3] = max(out[3], psi)
            if d > critical and psi > limit:
                out[4] = 1.0
        if out[1]:
            d, psi = _compare(fl_counts[off + j], fw, _counts(peer_cur[slot, off + j], bins, w, packed), w)
            p = kolmogorov(scale * d)
            out[AXES + 2 * a + j], out[AXES + 3 * a + j], out[AXES + 4 * a + j] = d, psi, p
            if d > out[5] or j == 0:
                out[5], out[6] = d, p
            out[7] = max(out[7], psi)
            if p < alpha and psi > limit:
                out[8] = 1.0


@njit(cache=True)
def kolmogorov(x: float) -> float:
    """The limiting Kolmogorov distribution's survival function ``P(K > x)`` (as
    ``scipy.special.kolmogorov``): its alternating series above 1, Jacobi's form below."""
    if x <= 0.0:
        return 1.0
    if x < 1.0:
        total, c = 0.0, math.pi**2 / (8.0 * x * x)
        for j in range(1, 40, 2):
            total += math.exp(-j * j * c)
        return min(1.0, max(0.0, 1.0 - math.sqrt(2.0 * math.pi) / x * total))
    total = 0.0
    for j in range(1, 101):
        term = math.exp(-2.0 * j * j * x * x)
        total += term if j % 2 else -term
        if term < 1e-300:
            break
    return min(1.0, max(0.0, 2.0 * total))


@njit(cache=True)
def _put(ring: Any, i: int, b: int, packed: bool) -> None:
    """Bin index ``b`` at place ``i`` of a ring (``packed``: two a byte, the even place low)."""
    if packed:
        shift = (i % 2) * 4
        ring[i // 2] = (ring[i // 2] & (0xF0 >> shift)) | (b << shift)
    else:
        ring[i] = b


@njit(cache=True)
def _counts(ring: Any, bins: int, w: int, packed: bool) -> Any:
    """How many of the ``w`` bin indices of a ring fall in each bin."""
    out = np.zeros(bins, np.int64)
    for i in range(w):
        out[(ring[i // 2] >> ((i % 2) * 4)) & 0xF if packed else ring[i]] += 1
    return out


@njit(cache=True)
def _compare(ref: Any, n: int, cur: Any, m: int) -> tuple[float, float]:
    """Binned KS and PSI of counts ``cur`` (of ``m`` values) against ``ref`` (of ``n``). The KS
    statistic is computed on integers, so equal counts give the very same float."""
    gap, a, b, psi = 0, 0, 0, 0.0
    for i in range(len(ref)):
        a += ref[i]
        b += cur[i]
        gap = max(gap, abs(a * m - b * n))
        p = max(ref[i] / n, PSI_FLOOR)
        q = max(cur[i] / m, PSI_FLOOR)
        psi += (q - p) * math.log(q / p)
    return gap / (n * m), psi


@dataclass(frozen=True)
class AxisShift:
    """One axis of a comparison, ready to explain an alert: which axis, how far it moved."""

    axis: str
    ks_stat: float
    ks_pvalue: float
    psi: float
    drifted: bool  # KS p-value < ks_alpha and PSI > psi_threshold


@dataclass(frozen=True)
class Shift:
    """A pair's inputs compared per axis, with its reference (``input``) or with the fleet (``peer``)."""

    axes: tuple[AxisShift, ...]

    @property
    def worst(self) -> AxisShift:
        """The axis that moved most: the largest KS statistic, then the largest PSI."""
        return max(self.axes, key=lambda a: (a.ks_stat, a.psi))

    def signals(self, prefix: str) -> dict[str, float]:
        """``<prefix>_ks_stat`` and ``_ks_pvalue`` of the worst axis, the largest ``_psi``, and
        ``_drift`` (1 when any axis drifted)."""
        w = self.worst
        return {
            f"{prefix}_ks_stat": w.ks_stat,
            f"{prefix}_ks_pvalue": w.ks_pvalue,
            f"{prefix}_psi": max(a.psi for a in self.axes),
            f"{prefix}_drift": float(any(a.drifted for a in self.axes)),
        }


def compare(
    out: NDArray[np.float64], axes: tuple[str, ...], settings: InputDriftSettings
) -> tuple[Shift | None, Shift | None]:
    """The input shift and peer shift of a pair :func:`measure` wrote ``out`` for (None until
    their windows are full), an :class:`AxisShift` per axis."""
    k, a, r, w = len(axes), MAX_AXES, settings.reference_size, settings.window_size
    alpha, limit = settings.ks_alpha, settings.psi_threshold
    shift = peer = None
    if out[0]:
        ks, psi = out[AXES : AXES + k].tolist(), out[AXES + a : AXES + a + k].tolist()
        p = [_ks_pvalue(d, r, w) for d in ks]
        shift = Shift(tuple(map(AxisShift, axes, ks, p, psi, _flags(p, psi, alpha, limit))))
    if out[1]:
        block = out[AXES + 2 * a :].tolist()
        ks, psi, p = block[:k], block[a : a + k], block[2 * a : 2 * a + k]
        peer = Shift(tuple(map(AxisShift, axes, ks, p, psi, _flags(p, psi, alpha, limit))))
    return shift, peer


#: Counts of values in bins, and the bins' edges.
Binned = tuple[NDArray[np.int64], NDArray[np.float32]]


def references(
    slab: Any, fleet: FleetInputs, slot: int, s: int, k: int, offset: int, settings: InputDriftSettings
) -> list[tuple[Binned | None, Binned | None]]:
    """Per axis of pair ``(slot, s)`` (``k`` axes from ``offset`` in the device's): the counts of its
    reference inputs in its bins, and of the fleet's latest inputs in the fleet's, with the bins'
    edges (None until the pair's comparison with either is ready)."""
    w = settings.window_size
    own_ready = slab.in_n[slot, s] >= settings.reference_size + w
    fleet_full = fleet.n[s] >= settings.fleet_reference_size + settings.fleet_window_size
    peer_ready = fleet_full and slab.peer_n[slot, s] >= w
    return [
        (
            (slab.in_ref[slot, j].astype(np.int64), slab.in_edges[slot, j]) if own_ready else None,
            (fleet.counts[j].copy(), fleet.edges[j]) if peer_ready else None,
        )
        for j in range(offset, offset + k)
    ]


def _flags(p: list[float], psi: list[float], alpha: float, limit: float) -> list[bool]:
    return [pv < alpha and v > limit for pv, v in zip(p, psi, strict=True)]


def signals(out: NDArray[np.float64], settings: InputDriftSettings) -> dict[str, float]:
    """The rules' signals of what :func:`measure` wrote to ``out``: :meth:`Shift.signals` of
    :func:`compare`'s records, without building them (this runs at every pair evaluation)."""
    ready, peer, ks, psi, drift, peer_ks, peer_p, peer_psi, peer_drift = out[:AXES].tolist()
    sig: dict[str, float] = {}
    if ready:
        p = _ks_pvalue(ks, settings.reference_size, settings.window_size)
        sig.update(input_ks_stat=ks, input_ks_pvalue=p, input_psi=psi, input_drift=drift)
    if peer:
        sig.update(peer_ks_stat=peer_ks, peer_ks_pvalue=peer_p, peer_psi=peer_psi, peer_drift=peer_drift)
    return sig


@functools.lru_cache(maxsize=65536)
def _ks_pvalue(d: float, n: int, m: int) -> float:
    """:func:`monitor.detect.stats.ks_pvalue`, memoised whole (the binned statistic takes few
    distinct values: multiples of ``1 / lcm(n, m)``)."""
    return stats.ks_pvalue(d, n, m)


__all__ = [
    "AxisShift",
    "FleetInputs",
    "Shift",
    "columns",
    "compare",
    "config",
    "kolmogorov",
    "measure",
    "references",
    "signals",
    "step",
]
