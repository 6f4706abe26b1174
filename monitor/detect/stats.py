"""Pure, vectorised drift statistics for many (device, sensor) pairs at once.

Every function here is stateless and works on a *batch*: ``P`` pairs stacked as rows of 2-D
float arrays. A reference window has shape ``(P, n)``, a current window ``(P, m)``; ``n`` and
``m`` may differ but are the same for every row. Nothing loops over pairs in Python.

Conventions
-----------
* Inputs must be 2-D, non-empty along the value axis, and finite: a wrong shape, a NaN or an
  infinity raises :class:`ValueError` (an infinite anomaly score is an upstream bug and must be
  loud, and it would make quantile edges undefined). ``P == 0`` is allowed and gives empty output.
* **KS** (:func:`ks_2samp_batch`): the statistic is bit-for-bit the one of
  ``scipy.stats.ks_2samp``, ties included; the p-value is its two-sided ``method="asymp"`` one,
  ``scipy.stats.kstwo.sf(D, round(n*m/(n+m)))``. ``n = m = 1`` (where that rounds to 0 and
  scipy returns NaN) raises :class:`ValueError`.
* **PSI bins** are right-closed and frozen on the reference. :func:`psi_edges` returns the
  ``bins - 1`` interior quantile edges ``e_0 <= ... <= e_last`` of each reference row (numpy's
  default linear interpolation), and the bins are::

      (-inf, e_0], (e_0, e_1], ..., (e_last, +inf)

  so a value equal to an edge falls in the lower bin. The caller stores the edges and the
  reference fractions (:func:`bin_fractions` of the reference) at freeze time, and only computes
  the current fractions per check.
* Many ties give duplicate edges, i.e. empty bins ``(e, e]``. They are empty in both windows,
  both fractions are floored to the same value, and they add exactly 0 to the PSI.
* :func:`psi` floors every fraction below ``floor`` to ``floor`` (no renormalisation), so it is
  always finite and non-negative.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

FloatArray = npt.NDArray[np.float64]

__all__ = ["bin_fractions", "ks_2samp_batch", "psi", "psi_edges"]


def _as_2d(name: str, a: npt.ArrayLike, *, min_cols: int = 1) -> FloatArray:
    """``a`` as a finite float64 2-D array with at least ``min_cols`` columns, or ValueError."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (pairs, values), got shape {arr.shape}")
    if arr.shape[1] < min_cols:
        raise ValueError(f"{name} must have at least {min_cols} value(s) per row, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _same_pairs(a_name: str, a: FloatArray, b_name: str, b: FloatArray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of rows (pairs), "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def ks_2samp_batch(ref: FloatArray, cur: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Two-sample Kolmogorov-Smirnov for each row.

    ref (P, n), cur (P, m) -> (statistic (P,), pvalue (P,)), equal row by row to the two-sided
    ``scipy.stats.ks_2samp(ref[i], cur[i], method="asymp")``.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(3, 40))
    >>> cur = np.vstack([rng.normal(size=40), rng.normal(1.0, size=40), ref[2]])
    >>> stat, p = ks_2samp_batch(ref, cur)
    >>> print(np.round(stat, 3), np.round(p, 4))
    [0.175 0.35  0.   ] [0.5168 0.0108 1.    ]
    >>> stat, p = ks_2samp_batch(np.array([[0, 1, 1, 2]]), np.array([[1, 1, 3]]))  # ties
    >>> print(np.round(stat, 4), np.round(p, 4))  # D = ECDF gap at 2: 4/4 - 2/3
    [0.3333] [0.9444]
    """
    ref = _as_2d("ref", ref)
    cur = _as_2d("cur", cur)
    _same_pairs("ref", ref, "cur", cur)
    stat = _ks_statistic(ref, cur)
    return stat, _ks_pvalue(stat, ref.shape[1], cur.shape[1])


def _ks_statistic(ref: FloatArray, cur: FloatArray) -> FloatArray:
    """max |ECDF_ref - ECDF_cur| over the pooled values, evaluated at the end of each tie run."""
    n, m = ref.shape[1], cur.shape[1]
    pooled = np.concatenate([ref, cur], axis=1)
    order = np.argsort(pooled, axis=1)
    values = np.sort(pooled, axis=1)  # == pooled in `order`, and cheaper than take_along_axis
    n_ref = np.cumsum(order < n, axis=1, dtype=np.int32)  # ref values up to each sorted position
    n_cur = np.arange(1, n + m + 1) - n_ref
    diff = np.abs(n_ref / n - n_cur / m)  # same float ops as scipy's cdf1 - cdf2
    run_end = np.ones(values.shape, dtype=bool)
    run_end[:, :-1] = values[:, 1:] != values[:, :-1]
    stat: FloatArray = np.where(run_end, diff, 0.0).max(axis=1, initial=0.0)
    return stat


def _ks_pvalue(stat: FloatArray, n: int, m: int) -> FloatArray:
    """scipy's two-sided asymptotic p-value, ``kstwo.sf(D, round(n*m/(n+m)))``, clipped to [0, 1].

    ``kstwo.sf`` is a per-element Python loop inside scipy, so it is evaluated once per distinct
    statistic (D only takes multiples of 1/lcm(n, m)), memoised, and broadcast back.
    """
    effective_n = _effective_n(n, m)
    distinct, inverse = np.unique(stat, return_inverse=True)
    if distinct.size == 0:
        return np.zeros(0, dtype=np.float64)
    pvalues = np.array([_kstwo_sf(float(d), effective_n) for d in distinct])
    out: FloatArray = pvalues[inverse.reshape(-1)]
    return out


def ks_pvalue(stat: float, n: int, m: int) -> float:
    """The p-value of one statistic (what :func:`ks_2samp_batch` gives its row)."""
    return _kstwo_sf(stat, _effective_n(n, m))


def _effective_n(n: int, m: int) -> int:
    big, small = sorted([float(n), float(m)], reverse=True)
    effective_n = np.round(big * small / (big + small))
    if effective_n < 1:  # only n = m = 1: scipy warns and returns NaN
        raise ValueError("KS needs more than one value in ref or cur (n = m = 1 has no p-value)")
    return int(effective_n)


@functools.lru_cache(maxsize=65536)
def _kstwo_sf(d: float, effective_n: int) -> float:
    """``kstwo.sf`` is slow (~0.5 ms); D takes few distinct values for fixed window sizes."""
    return min(1.0, max(0.0, float(sps.kstwo.sf(d, effective_n))))


def psi_edges(ref: FloatArray, bins: int) -> FloatArray:
    """Bin edges frozen on the reference: interior quantile edges per row, shape (P, bins-1).

    Edge ``k`` of row ``i`` is ``np.quantile(ref[i], (k + 1) / bins)``; see the module docstring
    for the right-closed bin convention.

    >>> psi_edges(np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 8.0]]), bins=2)
    array([[2.5],
           [0. ]])
    >>> rng = np.random.default_rng(0)
    >>> psi_edges(rng.normal(size=(2, 1000)), bins=4).round(2)
    array([[-0.69, -0.07,  0.62],
           [-0.75,  0.  ,  0.69]])
    """
    ref = _as_2d("ref", ref)
    bins = operator.index(bins)
    if bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins}")
    levels = np.arange(1, bins) / bins
    edges = np.quantile(ref, levels, axis=1).T  # (P, bins-1)
    # Guard against a last-ulp decrease from interpolation: bins must never overlap.
    return np.ascontiguousarray(np.maximum.accumulate(edges, axis=1), dtype=np.float64)


def bin_fractions(edges: FloatArray, x: FloatArray) -> FloatArray:
    """Fraction of each row of x (P, m) in each bin defined by edges (P, bins-1) -> (P, bins).

    Bins are ``(-inf, e_0], (e_0, e_1], ..., (e_last, inf)``; every row sums to 1.

    >>> edges = np.array([[1.0, 2.0], [0.0, 0.0]])  # second row: duplicate edge, bin (0, 0]
    >>> bin_fractions(edges, np.array([[0.5, 1.0, 1.5, 3.0], [-1.0, 0.0, 2.0, 3.0]]))
    array([[0.5 , 0.25, 0.25],
           [0.5 , 0.  , 0.5 ]])
    """
    edges = _as_2d("edges", edges, min_cols=0)
    x = _as_2d("x", x)
    _same_pairs("edges", edges, "x", x)
    if (np.diff(edges, axis=1) < 0).any():
        raise ValueError("edges must be non-decreasing along each row")
    m = x.shape[1]
    at_or_below = np.count_nonzero(x[:, :, None] <= edges[:, None, :], axis=1)  # (P, bins-1)
    counts = np.diff(at_or_below, axis=1, prepend=0, append=m)
    fractions: FloatArray = counts / m
    return fractions


def psi(ref_frac: FloatArray, cur_frac: FloatArray, floor: float = 1e-4) -> FloatArray:
    """Population Stability Index per row: ``sum((c - r) * ln(c / r))``, never inf.

    Fractions below ``floor`` (empty bins in particular) are replaced by ``floor`` in both
    inputs; the result is finite and >= 0, and 0 for identical rows.

    >>> ref_frac = np.array([[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]])
    >>> cur_frac = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    >>> psi(ref_frac, cur_frac).round(6)  # 0.25 ln 2 + 0 - 0.25 ln 0.5 = 0.5 ln 2
    array([0.346574, 0.      ])
    """
    ref_frac = _as_2d("ref_frac", ref_frac)
    cur_frac = _as_2d("cur_frac", cur_frac)
    if ref_frac.shape != cur_frac.shape:
        raise ValueError(
            f"ref_frac and cur_frac must have the same shape, got {ref_frac.shape} and {cur_frac.shape}"
        )
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    if ((ref_frac < 0) | (ref_frac > 1) | (cur_frac < 0) | (cur_frac > 1)).any():
        raise ValueError("fractions must lie in [0, 1]")
    r = np.maximum(ref_frac, floor)
    c = np.maximum(cur_frac, floor)
    value: FloatArray = np.sum((c - r) * np.log(c / r), axis=1)
    return value
