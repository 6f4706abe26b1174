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
  inputs with its counts, and per pair a ring of its latest ``window_size`` inputs in those bins.

Every input goes through :func:`step`, compiled and called by both the kernel and the Python path,
in stream order: the state after a reading does not depend on the batch size. :func:`measure`
compares at a pair's evaluation:

- **KS** is the binned statistic ``max_k |F_ref(e_k) - F_cur(e_k)|`` over the bin edges: a lower
  bound of the exact two-sample statistic (equal to it when no two inputs of different windows
  fall between the same edges). Its p-value is scipy's two-sided asymptotic one for sample sizes
  ``reference_size`` and ``window_size`` (:func:`monitor.detect.stats.ks_pvalue`); against the fleet,
  the limiting Kolmogorov law for ``window_size`` and ``fleet_window_size``.
- **PSI** on the same bins, each fraction floored at :data:`PSI_FLOOR` (as
  :func:`monitor.detect.stats.psi`).

A reading's values are compared as float32 (what the retraining ring keeps), so every input bins
the same way whichever copy of it is binned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from scipy import special

from monitor.detect import stats
from monitor.schema import Catalog
from monitor.settings import InputDriftSettings
from monitor.state.store import Columns

#: Bin fractions below this count as this in PSI (as for the score windows).
PSI_FLOOR = 1e-4


def dims(settings: InputDriftSettings, catalog: Catalog) -> int:
    """Axes watched per device: every axis of the catalog (0 when input drift is off)."""
    return sum(len(s.keys) for s in catalog.specs) if settings.enabled else 0


def columns(settings: InputDriftSettings, catalog: Catalog) -> Columns:
    """The per-device arrays, for the detect stage's slab: per pair the inputs since the reference
    started (``in_n``) and the inputs in fleet bins (``peer_n``); per axis of the device the bin
    edges, the reference's counts, and the two rings of bin indices."""
    p, d, b, w = (len(catalog),), dims(settings, catalog), settings.bins, settings.window_size
    return {
        "in_n": (p, np.int64, 0),
        "in_edges": ((d, b - 1), np.float32, 0),
        "in_ref": ((d, b), np.float32, 0),
        "in_cur": ((d, w), np.uint8, 0),
        "peer_n": (p, np.int64, 0),
        "peer_cur": ((d, w), np.uint8, 0),
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
        self.n = np.zeros(len(catalog), np.int64)  # inputs of each sensor seen so far
        self.ref = np.zeros((d, settings.fleet_reference_size), np.float32)
        self.edges = np.zeros((d, b - 1), np.float32)
        self.ring = np.zeros((d, settings.fleet_window_size), np.uint8)
        self.counts = np.zeros((d, b), np.int64)

    def arrays(self) -> tuple[Any, ...]:
        return self.n, self.ref, self.edges, self.ring, self.counts


def config(settings: InputDriftSettings, catalog: Catalog, retrain_window: int) -> tuple[Any, ...]:
    """What :func:`step` and :func:`measure` need of the settings and the catalog."""
    keys = np.array([len(s.keys) for s in catalog.specs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(keys)[:-1]]).astype(np.int64)
    r = settings.reference_size
    return (
        settings.enabled, keys, offsets, settings.bins, r, settings.window_size,
        min(r, retrain_window), settings.fleet_reference_size, settings.fleet_window_size,
    )  # fmt: skip


def arrays_for_step(slab: Any, fleet: FleetInputs) -> tuple[Any, ...]:
    """The arrays :func:`step` updates, in its order (taken anew: the slab may have grown)."""
    return (slab.in_n, slab.in_edges, slab.in_ref, slab.in_cur, slab.peer_n, slab.peer_cur, *fleet.arrays())


@njit(cache=True)
def step(slot: int, s: int, x: Any, raw: Any, raw_n: Any, cfg: tuple[Any, ...], st: tuple[Any, ...]) -> None:
    """One scored input ``x`` of pair ``(slot, s)``, already written to the retraining ring
    ``raw``: into the pair's reference or current ring, and into the fleet's state."""
    enabled, keys, offsets, _, r, w, e, f, fw = cfg
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
            in_ref[slot, off + j, _bin(edges[off + j], np.float32(x[j]))] += 1.0
    elif n > r:
        for j in range(k):
            in_cur[slot, off + j, (n - r - 1) % w] = _bin(edges[off + j], np.float32(x[j]))
    _fleet_step(slot, s, k, off, x, w, f, fw, peer_n, peer_cur, fl_n, fl_ref, fl_edges, fl_ring, fl_counts)


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
    peer_n: Any,
    peer_cur: Any,
    fl_n: Any,
    fl_ref: Any,
    fl_edges: Any,
    fl_ring: Any,
    fl_counts: Any,
) -> None:
    """The input into the fleet's first inputs (then its bins), or its ring and the pair's."""
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
        peer_cur[slot, off + j, pn % w] = b
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
            values[t] = raw[slot, s, (last - t) % window, j]
        _freeze(values, edges[off + j])
        ref[off + j, :] = 0.0
        for t in range(e):
            ref[off + j, _bin(edges[off + j], np.float32(values[t]))] += 1.0


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


@njit(cache=True)
def measure(slot: int, s: int, cfg: tuple[Any, ...], st: tuple[Any, ...]) -> tuple[Any, ...]:
    """At a pair's evaluation, per axis: binned KS and PSI of its current inputs against its
    reference, and of its latest inputs against the fleet's. Returns ``(input ready, KS (k,),
    PSI (k,), peer ready, KS (k,), PSI (k,))``."""
    enabled, keys, offsets, bins, r, w, _, f, fw = cfg
    in_n, _, in_ref, in_cur, peer_n, peer_cur, fl_n, _, _, _, fl_counts = st
    k, off = keys[s], offsets[s]
    in_ks, in_psi, peer_ks, peer_psi = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    ready = enabled and in_n[slot, s] >= r + w
    peer = enabled and fl_n[s] >= f + fw and peer_n[slot, s] >= w
    for j in range(k):
        if ready:
            ref = in_ref[slot, off + j].astype(np.int64)
            in_ks[j], in_psi[j] = _compare(ref, r, _counts(in_cur[slot, off + j], bins), w)
        if peer:
            peer_ks[j], peer_psi[j] = _compare(
                fl_counts[off + j], fw, _counts(peer_cur[slot, off + j], bins), w
            )
    return ready, in_ks, in_psi, peer, peer_ks, peer_psi


@njit(cache=True)
def _counts(ring: Any, bins: int) -> Any:
    out = np.zeros(bins, np.int64)
    for b in ring:
        out[b] += 1
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
    slot: int,
    s: int,
    axes: tuple[str, ...],
    settings: InputDriftSettings,
    cfg: tuple[Any, ...],
    st: tuple[Any, ...],
) -> tuple[Shift | None, Shift | None]:
    """The pair's input shift and peer shift (None until their windows are full)."""
    ready, in_ks, in_psi, peer, peer_ks, peer_psi = measure(slot, s, cfg, st)
    r, w, fw = settings.reference_size, settings.window_size, settings.fleet_window_size
    alpha, limit = settings.ks_alpha, settings.psi_threshold
    shift = peer_shift = None
    if ready:
        p = [stats.ks_pvalue(float(d), r, w) for d in in_ks.tolist()]
        shift = _shift(axes, in_ks.tolist(), p, in_psi.tolist(), alpha, limit)
    if peer:
        scale = math.sqrt(w * fw / (w + fw))
        p = [min(1.0, float(special.kolmogorov(scale * d))) for d in peer_ks.tolist()]
        peer_shift = _shift(axes, peer_ks.tolist(), p, peer_psi.tolist(), alpha, limit)
    return shift, peer_shift


def _shift(
    axes: tuple[str, ...], ks: list[float], p: list[float], psi: list[float], alpha: float, limit: float
) -> Shift:
    return Shift(
        tuple(
            AxisShift(a, d, pv, v, pv < alpha and v > limit)
            for a, d, pv, v in zip(axes, ks, p, psi, strict=True)
        )
    )


__all__ = ["AxisShift", "FleetInputs", "Shift", "columns", "compare", "config", "measure", "step"]
