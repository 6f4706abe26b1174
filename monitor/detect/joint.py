"""The device tier: one model per device over all its channels and axes together.

The pair models of :mod:`monitor.detect.model` see each sensor alone; a fault that shows only in
the relation between channels (a motor that draws more current for the same flow, a board turned
on its side whose axes still read plausible values) passes them. The joint model of a device
keeps an exponentially weighted mean and full covariance of the vector of its channels' latest
values, and scores each *frame* by its Hotelling distance ``T^2 = d' S^-1 d``, ``d`` the frame's
deviation from the mean, ``S`` the covariance, every variance plus its channel's resolution squared
(and a small ridge). Under a Gaussian baseline ``T^2`` follows a chi-square law with as many
degrees of freedom as the model has dimensions, so its score ``chi2.cdf(T^2, p)`` means what a pair
score means, and one threshold serves every device.

- **Frames.** A device's frame closes when every channel in its model has reported since the last
  frame (the latest value of each: channels at different rates are aligned on the slowest). So a
  row of a recording, or a tick of a device that sends all its sensors together, is one frame.
- **Dimensions.** A device's model covers the channels it has sent; a channel it sends for the
  first time restarts the model over the larger set (a new device's channels all arrive within
  its first frame or two).
- **Learning** as the pair models: from frames it does not flag (unless ``model.learn_anomalies``),
  never while the device is quarantined; ``relearn_after`` consecutive flagged frames (a new
  regime, e.g. a sensor remounted) restart it.
- **Attribution.** A frame's contribution of channel ``c`` is ``sum_{j in c} d_j (S^-1 d)_j`` (the
  contributions add up to ``T^2``). A flagged frame is counted for the channel that contributes
  most, so the rules' ``device_anomalies`` and ``device_anomaly_rate`` signals of a (device,
  sensor) pair say how often the device's joint model flagged a frame mostly because of it;
  ``device_score`` is the largest frame score of the interval.

Per device it keeps the mean (``D`` floats) and the upper triangles of the covariance and of its
regularised inverse (``D (D + 1) / 2`` floats each, row by row: both are symmetric), ``D`` the
total of the catalog's axes (12 for the built-in kinds: 1.3 KB).

Every step is compiled (numba) and called by both the kernel and the Python path, so they agree
to the last bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from monitor.detect.model import distance_threshold
from monitor.schema import Catalog
from monitor.settings import JointSettings
from monitor.state.store import AXES, PAIRS, TRIANGLE, Columns, DeviceStates, Slab, packing

#: Frame outcome of a reading: no frame closed, a frame learned while warming up, a frame scored.
NO_FRAME, WARMING, SCORED = 0, 1, 2


class JointState(Slab):
    """Per device: the joint model. Per pair: whether the channel is in the model, whether it
    reported since the last frame, and the interval's frame counts (the rules' signals)."""

    joint_in: NDArray[np.int8]
    joint_fresh: NDArray[np.int8]
    joint_n: NDArray[np.float64]
    joint_dims: NDArray[np.int32]
    joint_run: NDArray[np.int32]  # consecutive flagged frames
    joint_learned: NDArray[np.int32]  # frames learned since the inverse was refreshed
    joint_mean: NDArray[np.float64]
    joint_cov: NDArray[np.float64]
    joint_inv: NDArray[np.float64]
    joint_frames: NDArray[np.int32]  # interval: frames of the device while the pair was in its model
    joint_anomalies: NDArray[np.int32]  # interval: flagged frames this channel contributed most to
    joint_max: NDArray[np.float64]  # interval: largest frame score
    # The latest flagged frame, for an alert's explanation: each channel's part of its T^2, and
    # [T^2, event time] (0, 0: none yet).
    joint_why: NDArray[np.float64]
    joint_why_at: NDArray[np.float64]

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog.capacity, catalog.dims)

    def columns(self) -> Columns:
        p, d = (PAIRS,), AXES
        return {
            "joint_in": (p, np.int8, 0),
            "joint_fresh": (p, np.int8, 0),
            "joint_n": ((), np.float64, 0),
            "joint_dims": ((), np.int32, 0),
            "joint_run": ((), np.int32, 0),
            "joint_learned": ((), np.int32, 0),
            "joint_mean": ((d,), np.float64, 0),
            "joint_cov": ((TRIANGLE,), np.float64, 0),
            "joint_inv": ((TRIANGLE,), np.float64, 0),
            "joint_frames": (p, np.int32, 0),
            "joint_anomalies": (p, np.int32, 0),
            "joint_max": (p, np.float64, 0),
            "joint_why": (p, np.float64, 0),
            "joint_why_at": ((2,), np.float64, 0),
        }

    def upgrade(self, states: DeviceStates, source: Catalog) -> None:
        """Full matrices of snapshots written before the triangles were kept: their upper
        triangles (of the inverse, the mean of it and its transpose, as :func:`_refresh` keeps)."""
        for name in ("joint_cov", "joint_inv"):
            old = states.arrays.get(name)
            if old is not None and old.ndim == 3:
                rows, cols = np.triu_indices(old.shape[1])
                full = np.asarray(old, np.float64)
                states.arrays[name] = ((full + full.transpose(0, 2, 1)) / 2)[:, rows, cols]

    def reset_interval(self, slot: int, s: int) -> None:
        self.joint_frames[slot, s] = 0
        self.joint_anomalies[slot, s] = 0
        self.joint_max[slot, s] = 0.0

    def arrays_for_step(self) -> tuple[Any, ...]:
        """The arrays :func:`step` updates, in its order (taken anew: the slab may have grown)."""
        return (
            self.joint_in, self.joint_fresh, self.joint_n, self.joint_dims, self.joint_run,
            self.joint_learned, self.joint_mean, self.joint_cov, self.joint_inv, self.joint_frames,
            self.joint_anomalies, self.joint_max, self.joint_why, self.joint_why_at,
        )  # fmt: skip


def config(
    settings: JointSettings, catalog: Catalog, threshold: float, learn_anomalies: bool
) -> tuple[Any, ...]:
    """What :func:`step` needs of the settings and the catalog: where each sensor's axes sit in
    the device vector, the per-dimension variance floors, and the distance thresholds by number
    of dimensions."""
    keys, offsets = catalog.axes(), np.array(catalog.offsets, np.int64)
    floors = np.ones(catalog.dims)  # an axis no sensor has yet (a spare index's) is never read
    for spec, offset in zip(catalog.specs, offsets.tolist(), strict=False):
        floors[offset : offset + len(spec.keys)] = spec.resolution**2
    dims = catalog.dims
    thresholds = np.array([math.inf, *(distance_threshold(threshold, p) for p in range(1, dims + 1))])
    return (
        settings.enabled, keys, offsets, floors, thresholds, settings.warmup, settings.fading,
        settings.refresh, settings.ridge, settings.relearn_after, learn_anomalies, packing(dims),
    )  # fmt: skip


@njit(cache=True)
def step(  # noqa: C901 - one frame's steps in order, compiled as one function
    slot: int, s: int, ts: int, last_vals: Any, quarantined: Any, cfg: tuple[Any, ...], st: tuple[Any, ...]
) -> tuple[int, float, int, bool]:
    """After a reading of pair ``(slot, s)`` at event time ``ts`` (its values already in
    ``last_vals``): close the device's frame if every channel of its model has reported, learn or
    score it. Returns ``(outcome, T^2, dimensions, flagged)``."""
    enabled, keys, offsets, floors, thresholds, warmup, fading, refresh, ridge = cfg[:9]
    relearn_after, learn_all, at = cfg[9:]  # at: where each (i, j) is in the triangles
    j_in, fresh, n, dims, run, learned, mean, cov, inv, frames, anomalies, top_score, why, why_at = st
    if not enabled:
        return NO_FRAME, 0.0, 0, False
    if not j_in[slot, s]:  # a channel the model does not cover yet: start over with it
        j_in[slot, s] = 1
        dims[slot] += keys[s]
        _restart(slot, fresh, n, run, learned, mean, cov, inv)
    fresh[slot, s] = 1
    x = _close_frame(slot, j_in, fresh, frames, keys, offsets, last_vals, len(floors))
    if x is None:
        return NO_FRAME, 0.0, 0, False
    p, learn = dims[slot], not quarantined[slot]
    if n[slot] < warmup:
        if learn:
            _learn(slot, x, j_in, keys, offsets, fading, at, n, mean, cov)
            if n[slot] >= warmup:
                _refresh(slot, j_in, keys, offsets, floors, ridge, at, cov, inv)
        return WARMING, 0.0, p, False
    parts = np.zeros(len(keys))
    t2, top = _distance(slot, x, j_in, keys, offsets, at, mean, inv, parts)
    flagged = t2 > thresholds[p]
    if flagged:
        why[slot, :] = parts
        why_at[slot, 0], why_at[slot, 1] = t2, ts
    sc = gammainc(p / 2.0, t2 / 2.0)
    for c in range(len(keys)):
        if j_in[slot, c] and sc > top_score[slot, c]:
            top_score[slot, c] = sc
    run[slot] = run[slot] + 1 if flagged else 0
    if flagged:
        anomalies[slot, top] += 1
        if relearn_after and run[slot] >= relearn_after:  # a new regime: learn it from scratch
            _restart(slot, fresh, n, run, learned, mean, cov, inv)
            return SCORED, t2, p, True
    if learn and (not flagged or learn_all):
        _learn(slot, x, j_in, keys, offsets, fading, at, n, mean, cov)
        learned[slot] += 1
        if learned[slot] >= refresh:
            _refresh(slot, j_in, keys, offsets, floors, ridge, at, cov, inv)
            learned[slot] = 0
    return SCORED, t2, p, flagged


@njit(cache=True)
def _close_frame(
    slot: int, j_in: Any, fresh: Any, frames: Any, keys: Any, offsets: Any, last_vals: Any, d: int
) -> Any:
    """The device's vector if every channel of its model reported since the last frame (which it
    closes: counted for each channel), else None."""
    for c in range(len(keys)):
        if j_in[slot, c] and not fresh[slot, c]:
            return None
    x = np.zeros(d)
    for c in range(len(keys)):
        if j_in[slot, c]:
            fresh[slot, c] = 0
            frames[slot, c] += 1
            for j in range(keys[c]):
                x[offsets[c] + j] = last_vals[slot, c, j]
    return x


@njit(cache=True)
def _distance(
    slot: int, x: Any, j_in: Any, keys: Any, offsets: Any, at: Any, mean: Any, inv: Any, parts: Any
) -> tuple[float, int]:
    """``T^2`` of the frame, and the channel whose contribution to it is the largest (each
    channel's contribution in ``parts``)."""
    d = x - mean[slot]
    y = np.zeros(len(d))
    for i in range(len(d)):
        for j in range(len(d)):
            y[i] += inv[slot, at[i, j]] * d[j]
    t2, best, top = 0.0, -math.inf, 0
    for c in range(len(keys)):
        if j_in[slot, c]:
            part = 0.0
            for j in range(offsets[c], offsets[c] + keys[c]):
                part += d[j] * y[j]
            t2 += part
            parts[c] = part
            if part > best:
                best, top = part, c
    return max(t2, 0.0), top


@njit(cache=True)
def _restart(slot: int, fresh: Any, n: Any, run: Any, learned: Any, mean: Any, cov: Any, inv: Any) -> None:
    n[slot] = 0.0
    run[slot] = 0
    learned[slot] = 0
    fresh[slot, :] = 0
    mean[slot, :] = 0.0
    cov[slot, :] = 0.0
    inv[slot, :] = 0.0


@njit(cache=True)
def _learn(
    slot: int,
    x: Any,
    j_in: Any,
    keys: Any,
    offsets: Any,
    fading: float,
    at: Any,
    n: Any,
    mean: Any,
    cov: Any,
) -> None:
    """One frame into the exponentially weighted mean and covariance (exact while ``1/n`` is
    larger than ``fading``), over the model's dimensions."""
    k = n[slot] + 1.0
    n[slot] = k
    a = fading if k * fading > 1.0 else 1.0 / k
    m, c = mean[slot], cov[slot]
    d = np.zeros(len(x))
    active = np.zeros(len(x), np.bool_)
    for s in range(len(keys)):
        if j_in[slot, s]:
            for j in range(offsets[s], offsets[s] + keys[s]):
                active[j] = True
                d[j] = x[j] - m[j]
                m[j] += a * d[j]
    for i in range(len(x)):
        if active[i]:
            for j in range(i, len(x)):
                if active[j]:
                    c[at[i, j]] = (1.0 - a) * (c[at[i, j]] + a * d[i] * d[j])


@njit(cache=True)
def _refresh(
    slot: int, j_in: Any, keys: Any, offsets: Any, floors: Any, ridge: float, at: Any, cov: Any, inv: Any
) -> None:
    """The regularised inverse of the model's covariance: every variance plus its channel's
    resolution squared (a channel never predicts another better than to one quantisation step, so
    collinear channels, e.g. three temperatures of one board, keep it invertible), and ``ridge``
    times itself."""
    idx = np.zeros(len(floors), np.int64)
    p = 0
    for s in range(len(keys)):
        if j_in[slot, s]:
            for j in range(offsets[s], offsets[s] + keys[s]):
                idx[p] = j
                p += 1
    sub = np.empty((p, p))
    for a in range(p):
        for b in range(p):
            sub[a, b] = cov[slot, at[idx[a], idx[b]]]
        sub[a, a] = sub[a, a] * (1.0 + ridge) + floors[idx[a]]
    out = np.linalg.inv(sub)
    inv[slot, :] = 0.0
    for a in range(p):
        for b in range(a, p):  # the mean of the two halves: the inverse of a symmetric matrix is one
            inv[slot, at[idx[a], idx[b]]] = (out[a, b] + out[b, a]) / 2.0


@njit(cache=True)
def gammainc(a: float, x: float) -> float:
    """The regularised lower incomplete gamma function P(a, x) (the chi-square CDF of ``2x`` with
    ``2a`` degrees of freedom): its series below ``a + 1``, its continued fraction above."""
    if x <= 0.0:
        return 0.0
    lg = math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, total * math.exp(-x + a * math.log(x) - lg))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(-x + a * math.log(x) - lg) * h)
