"""Compiled per-reading recurrences of the detect stage, over slab rows (numba, cached on disk).

A pair's model row is ``[n, level x 3, var x 3, trend x 3]`` (see :mod:`monitor.detect.state`); these are the
same operations, in the same order, as :class:`monitor.detect.model.AdaptiveGaussian`, so a model
learned here and one learned there are equal to the last bit (``tests/unit/test_kernels.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

FloatRow = NDArray[np.float64]
Values = FloatRow | tuple[float, ...]  # a reading's features


@njit(cache=True)
def learn(row: FloatRow, k: int, fading: float, var_fading: float, trend: float, f: Values) -> None:
    """Learn one reading ``f`` (``k`` features) into the model ``row``."""
    n = row[0] + 1.0
    row[0] = n
    a = fading if n * fading > 1.0 else 1.0 / n
    b = var_fading if n * var_fading > 1.0 else 1.0 / n
    g = a * trend if n * fading > 1.0 else 0.0  # no trend while the level is a running mean
    for i in range(k):
        diff = f[i] - (row[1 + i] + row[7 + i])
        row[1 + i] += row[7 + i] + a * diff
        row[7 + i] += g * diff
        row[4 + i] = (1.0 - b) * (row[4 + i] + b * diff * diff)


@njit(cache=True)
def nudge(row: FloatRow, k: int, fading: float, f: Values, scale: float) -> None:
    """:meth:`monitor.detect.model.AdaptiveGaussian.nudge` on a model row."""
    n = row[0]
    if n < 1.0:
        return
    a = fading if n * fading > 1.0 else 1.0 / n
    for i in range(k):
        row[1 + i] += row[7 + i] + a * scale * (f[i] - (row[1 + i] + row[7 + i]))


@njit(cache=True)
def distance(row: FloatRow, k: int, resolution: float, f: Values) -> float:
    """Squared standardised distance of ``f`` from the model ``row``'s forecast (variance floored)."""
    floor = resolution * resolution
    d2 = 0.0
    for i in range(k):
        var = row[4 + i]
        d = f[i] - (row[1 + i] + row[7 + i])
        d2 += d * d / (var if var > floor else floor)
    return d2


@njit(cache=True)
def keep_worst(
    row: FloatRow, k: int, resolution: float, f: Values, d2: float, ts: int, why: FloatRow, at: Any
) -> None:
    """Keep reading ``f`` (distance ``d2``, event time ``ts``) as its interval's most distant one
    if it is: ``at`` = ``[d2, ts]`` of the kept one, ``why`` = ``[x x 3, forecast x 3, spread x 3]``
    as the model ``row`` scored it (before it learns the reading). An alert's explanation
    (:mod:`monitor.analyze.explain`) splits the distance into the axes' terms from these."""
    if d2 <= at[0]:
        return
    at[0], at[1] = d2, ts
    floor = resolution * resolution
    for i in range(k):
        var = row[4 + i]
        why[i] = f[i]
        why[3 + i] = row[1 + i] + row[7 + i]
        why[6 + i] = math.sqrt(var if var > floor else floor)


@njit(cache=True)
def score(d2: float, k: int) -> float:
    """The chi-square CDF of ``d2`` for 1 to 3 features (:func:`monitor.detect.model.score`)."""
    if k == 2:
        return -math.expm1(-d2 / 2.0)
    e = math.erf(math.sqrt(d2 / 2.0))
    if k == 1:
        return e
    return max(0.0, e - math.sqrt(2.0 * d2 / math.pi) * math.exp(-d2 / 2.0))


@njit(cache=True)
def ks_statistic(ref: NDArray[np.uint16], cur: NDArray[np.uint16]) -> float:
    """max |ECDF_ref - ECDF_cur| of two windows of quantised scores, at the end of each tie run
    (the same float operations as :func:`monitor.detect.stats.ks_2samp_batch`)."""
    a, b = np.sort(ref), np.sort(cur)
    n, m = len(a), len(b)
    i = j = 0
    stat = 0.0
    while i < n or j < m:
        v = a[i] if j == m or (i < n and a[i] <= b[j]) else b[j]
        while i < n and a[i] == v:
            i += 1
        while j < m and b[j] == v:
            j += 1
        stat = max(stat, abs(i / n - j / m))
    return stat


@njit(cache=True)
def psi(
    cur: NDArray[np.uint16], edges: FloatRow, ref_frac: NDArray[np.float32], quantum: float, floor: float
) -> float:
    """PSI of a window of quantised scores against frozen bins (as :func:`monitor.detect.stats.psi`
    of :func:`~monitor.detect.stats.bin_fractions`, numpy's pairwise summation included)."""
    m, bins = len(cur), len(ref_frac)
    below = np.zeros(bins, np.int64)  # at or below each edge; the last bin takes everything
    for q in cur:
        x = q / quantum
        for e in range(bins - 1):
            if x <= edges[e]:
                below[e] += 1
    below[bins - 1] = m
    terms = np.empty(bins)
    prev = 0
    for e in range(bins):
        c, prev = max((below[e] - prev) / m, floor), below[e]
        r = max(np.float64(ref_frac[e]), floor)
        terms[e] = (c - r) * np.log(c / r)
    return float(_pairwise_sum(terms))


@njit(cache=True)
def _pairwise_sum(a: FloatRow) -> float:
    """numpy's summation of a contiguous row of at most 128 values, in its order."""
    n = len(a)
    res = 0.0
    if n < 8:
        for x in a:
            res += x
        return res
    r = a[:8].copy()
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[i]
        i += 1
    return float(res)
