"""ADWIN kept in fixed-size slab rows: River's ``drift.ADWIN``, with a cap on its window.

Each (device, sensor) pair's ADWIN (fed the mean score of each evaluation interval, see
:meth:`monitor.detect.drift.PairDrift.close_interval`) is two rows of the detect slab instead of
a River object per pair:

- ``sums`` (float64): ``[total, variance, width]``, then the bucket totals (``ROWS`` rows of
  ``MAX_BUCKETS``), then the bucket variances of rows 1 and up (a row-0 bucket holds one value:
  its variance is always 0);
- ``counts`` (uint8): ``[tick modulo CLOCK, detected]``, then the number of buckets in each row.

Row ``i`` holds buckets of ``2**i`` values, oldest first, as in River's exponential histogram.
:func:`update` performs River's arithmetic (``river._river_rust.drift.AdaptiveWindowing``, and
the reset of ``river.drift.ADWIN`` at the update after a detection) in the same order, so both
detect at the same updates with the same window width, total and variance as long as the window
fits in ``ROWS`` rows (``tests/unit/test_adwin.py``). The cap: when every row is full (the
window holds ``MAX_BUCKETS * (2**ROWS - 1)`` values), the oldest bucket is dropped before the
next value goes in, the way ADWIN drops a bucket at a cut: the window holds at most the latest
``MAX_WIDTH`` = 635 interval means (5.6 hours of a 1 Hz sensor with ``drift.check_every`` 32),
and a pair's ADWIN takes ``8 * SUMS + COUNTS`` = 553 bytes whatever its window (a River 0.26
ADWIN object, Python object and native buffers, took about 0.8 KB after 8 updates and 2.8 KB
after 10,000).

:func:`from_river` converts a River ADWIN (as older snapshots hold) into such rows.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from monitor.errors import ConversionError

#: River's ADWIN parameters besides delta (its defaults, which the per-pair ADWIN always used).
CLOCK = 32
MAX_BUCKETS = 5
MIN_WINDOW_LENGTH = 5
GRACE_PERIOD = 10
#: Rows of the exponential histogram: the window is at most MAX_BUCKETS * (2**ROWS - 1) values.
ROWS = 7
MAX_WIDTH = MAX_BUCKETS * (2**ROWS - 1)
#: Lengths of a pair's two rows.
SUMS = 3 + ROWS * MAX_BUCKETS + (ROWS - 1) * MAX_BUCKETS
COUNTS = 2 + ROWS

FloatRow = NDArray[np.float64]
IntRow = NDArray[np.uint8]


@njit(cache=True)
def _total_at(f: FloatRow, m: int, i: int, k: int) -> int:
    """Index in ``sums`` of the total of bucket ``k`` of row ``i``."""
    return 3 + i * m + k


@njit(cache=True)
def _variance_at(f: FloatRow, m: int, i: int, k: int) -> int:
    """Index in ``sums`` of the variance of bucket ``k`` of row ``i`` (``i`` >= 1)."""
    rows = (len(f) - 3 + m) // (2 * m)
    return 3 + rows * m + (i - 1) * m + k


@njit(cache=True)
def _top(c: IntRow) -> int:
    """The highest row that holds a bucket (0 when none does)."""
    for i in range(len(c) - 3, 0, -1):
        if c[2 + i] > 0:
            return i
    return 0


@njit(cache=True)
def _shift(f: FloatRow, c: IntRow, m: int, i: int, n: int) -> None:
    """Remove the ``n`` oldest buckets of row ``i`` (River's ``Bucket.compress``)."""
    cnt = c[2 + i]
    for k in range(cnt):
        src = k + n
        t = f[_total_at(f, m, i, src)] if src < cnt else 0.0
        f[_total_at(f, m, i, k)] = t
        if i > 0:
            v = f[_variance_at(f, m, i, src)] if src < cnt else 0.0
            f[_variance_at(f, m, i, k)] = v
    c[2 + i] = cnt - n


@njit(cache=True)
def _append(f: FloatRow, c: IntRow, m: int, i: int, total: float, variance: float) -> None:
    k = c[2 + i]
    f[_total_at(f, m, i, k)] = total
    if i > 0:
        f[_variance_at(f, m, i, k)] = variance
    c[2 + i] = k + 1


@njit(cache=True)
def _delete(f: FloatRow, c: IntRow, m: int) -> None:
    """Drop the oldest bucket of the window (River's ``delete_element``)."""
    last = _top(c)
    n = float(1 << last)
    u = f[_total_at(f, m, last, 0)]
    v = f[_variance_at(f, m, last, 0)] if last > 0 else 0.0
    mu = u / n
    f[2] -= n
    f[0] -= u
    mu_window = f[0] / f[2]
    inc = v + n * f[2] * (mu - mu_window) * (mu - mu_window) / (n + f[2])
    f[1] -= inc
    _shift(f, c, m, last, 1)


@njit(cache=True)
def _insert(f: FloatRow, c: IntRow, m: int, x: float) -> None:
    """Add ``x`` as a new row-0 bucket, merging the two oldest buckets of each full row into the
    next row first (River appends, then merges a row that holds ``m + 1``: the same buckets)."""
    rows = len(c) - 2
    j = 0
    while j < rows and c[2 + j] == m:
        j += 1
    if j == rows:  # every row full: the cap drops the oldest bucket
        _delete(f, c, m)
        j = rows - 1
    for i in range(j - 1, -1, -1):
        n1 = float(1 << i)
        t0, t1 = f[_total_at(f, m, i, 0)], f[_total_at(f, m, i, 1)]
        v0 = f[_variance_at(f, m, i, 0)] if i > 0 else 0.0
        v1 = f[_variance_at(f, m, i, 1)] if i > 0 else 0.0
        mu1 = t0 / n1
        mu2 = t1 / n1
        total12 = t0 + t1
        temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        v12 = v0 + v1 + temp
        _append(f, c, m, i + 1, total12, v12)
        _shift(f, c, m, i, 2)
    _append(f, c, m, 0, x, 0.0)


@njit(cache=True)
def _cut(f: FloatRow, n0: float, n1: float, delta_mean: float, delta: float, min_len: float) -> bool:
    width = f[2]
    delta_prime = math.log(2.0 * math.log(width) / delta)
    m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0)
    epsilon = math.sqrt(2.0 * m_recip * (f[1] / width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
    return abs(delta_mean) > epsilon


@njit(cache=True)
def _scan(f: FloatRow, c: IntRow, m: int, delta: float, min_len: float) -> bool:
    """One pass over the cut points, oldest first; drops the oldest bucket at the first cut."""
    n0, n1, u0, u1 = 0.0, f[2], 0.0, f[0]
    for idx in range(_top(c), -1, -1):
        size = float(1 << idx)
        cnt = c[2 + idx]
        for k in range(cnt):
            n0 += size
            n1 -= size
            t = f[_total_at(f, m, idx, k)]
            u0 += t
            u1 -= t
            if idx == 0 and k == cnt - 1:
                return False
            delta_mean = (u0 / n0) - (u1 / n1)
            if n1 >= min_len and n0 >= min_len and _cut(f, n0, n1, delta_mean, delta, min_len):
                c[1] = 1
                if f[2] > 0.0:
                    _delete(f, c, m)
                    return True
    return False


@njit(cache=True)
def step(
    f: FloatRow, c: IntRow, x: float, delta: float, clock: int, m: int, min_len: float, grace: float
) -> bool:
    """River's ``ADWIN.update(x)`` on the rows ``f`` (sums) and ``c`` (counts); True: drift."""
    if c[1]:  # River starts a new detector at the update after a detection
        f[:] = 0.0
        c[:] = 0
    width = f[2] + 1.0
    f[2] = width
    inc = 0.0
    if width > 1.0:
        d = x - f[0] / (width - 1.0)
        inc = (width - 1.0) * d * d / width
    f[1] += inc
    f[0] += x
    _insert(f, c, m, x)
    c[0] = (c[0] + 1) % clock
    if c[0] == 0 and f[2] > grace:
        while _scan(f, c, m, delta, min_len):
            pass
    return bool(c[1])


def update(sums: FloatRow, counts: IntRow, x: float, delta: float) -> bool:
    """One value into a pair's ADWIN rows (River's defaults besides ``delta``); True: drift."""
    return bool(
        step(sums, counts, x, delta, CLOCK, MAX_BUCKETS, float(MIN_WINDOW_LENGTH), float(GRACE_PERIOD))
    )


def width(sums: FloatRow) -> int:
    return int(sums[2])


def estimation(sums: FloatRow) -> float:
    """The mean of the window (River's ``ADWIN.estimation``)."""
    return float(sums[0] / sums[2]) if sums[2] else 0.0


# --- River ADWIN objects (snapshots written before the rows) --------------------------------------


def from_river(adwin: Any, sums: FloatRow, counts: IntRow) -> None:
    """Write River ``adwin``'s state into ``sums`` and ``counts`` (a window longer than the cap
    keeps its newest buckets: the oldest are dropped as at the cap). Raises
    :class:`ConversionError` for an ADWIN with other parameters or an unknown state layout."""
    params = (adwin.clock, adwin.max_buckets, adwin.min_window_length, adwin.grace_period)
    if params != (CLOCK, MAX_BUCKETS, MIN_WINDOW_LENGTH, GRACE_PERIOD):
        raise ConversionError(f"an ADWIN with clock, max_buckets, min_window_length, grace_period {params}")
    try:
        raw = bytes(adwin._helper.__getstate__())
        head, rows = _parse(raw)
    except (AttributeError, TypeError, struct.error) as exc:
        raise ConversionError(f"unreadable River ADWIN state: {exc}") from exc
    total, variance, width_, tick = head
    n = max(ROWS, len(rows))
    f = np.zeros(3 + n * MAX_BUCKETS + (n - 1) * MAX_BUCKETS, np.float64)
    c = np.zeros(2 + n, np.uint8)
    f[:3] = (total, variance, width_)
    c[0], c[1] = tick % CLOCK, bool(adwin.drift_detected)
    for i, (totals, variances) in enumerate(rows):
        for total_k, variance_k in zip(totals, variances, strict=True):
            _append(f, c, MAX_BUCKETS, i, total_k, variance_k)
    if sum(int(c[2 + i]) << i for i in range(n)) != width_:
        raise ConversionError("River ADWIN state: its buckets do not add up to its width")
    while _top(c) >= ROWS:
        _delete(f, c, MAX_BUCKETS)
    sums[:3] = f[:3]
    sums[3 : 3 + ROWS * MAX_BUCKETS] = f[3 : 3 + ROWS * MAX_BUCKETS]
    v0 = 3 + n * MAX_BUCKETS
    sums[3 + ROWS * MAX_BUCKETS :] = f[v0 : v0 + (ROWS - 1) * MAX_BUCKETS]
    counts[:] = c[: 2 + ROWS]


def _parse(raw: bytes) -> tuple[tuple[float, float, float, int], list[tuple[list[float], list[float]]]]:
    """River 0.26's ``AdaptiveWindowing`` state: its fields in declaration order (bincode), then
    the parameters again."""
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    _, _, max_buckets, _, _, total, variance, width_, _ = take("diQdddddd")
    _, _, tick, _ = take("iiii")
    (n_rows,) = take("Q")
    rows: list[tuple[list[float], list[float]]] = []
    for _ in range(n_rows):
        size, current = take("QQ")
        (nt,) = take("Q")
        totals = list(take(f"{nt}d"))
        (nv,) = take("Q")
        variances = list(take(f"{nv}d"))
        if size != max_buckets or current > MAX_BUCKETS or nt != nv or current > nt:
            raise ConversionError("River ADWIN state: unexpected bucket layout")
        rows.append((totals[:current], variances[:current]))
    if len(raw) - pos == struct.calcsize("<diQii"):  # the Python class's copy of the parameters
        take("diQii")
    if pos != len(raw) or max_buckets != MAX_BUCKETS:
        raise ConversionError("River ADWIN state: unexpected layout")
    return (total, variance, width_, tick), rows
