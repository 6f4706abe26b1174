"""The plots of a report, drawn by matplotlib as inline SVG: text as paths (no font to load), no
date in the file, ids salted per figure (the same records give the same bytes), long series
reduced to the minimum and maximum of each pixel column (:func:`envelope`).

matplotlib is imported on first use, with the Agg backend: the command line stays quick to start.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Pixel columns of a timeline: a series longer than twice this is reduced to its envelope.
COLUMNS = 700
WIDTH_IN = 10.0
AXIS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
FIRING, PENDING, DRIFT = "#d62728", "#f2b701", "#7b3fa0"
PROMOTED, REJECTED = "#2a9d3c", "#7f7f7f"
_counter = iter(range(1 << 30))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e5e5e5",
            "grid.linewidth": 0.6,
            "legend.fontsize": 8,
            "legend.frameon": False,
            "lines.linewidth": 1.0,
            "path.simplify": True,
        }
    )
    return plt


@contextmanager
def figure(rows: int = 1, height_in: float = 2.2, **kw: Any) -> Iterator[tuple[Figure, Any]]:
    """A figure of ``rows`` axes sharing the x axis (closed afterwards)."""
    plt = _pyplot()
    size = (WIDTH_IN, height_in * rows)
    fig, axes = plt.subplots(rows, 1, figsize=size, squeeze=False, layout="constrained", **kw)
    try:
        yield fig, axes[:, 0]
    finally:
        plt.close(fig)


def svg(fig: Figure, label: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page, with ``label`` as its accessible name."""
    plt = _pyplot()
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"telemon-{next(_counter)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.08, metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    escaped = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return re.sub(r"<svg ", f'<svg role="img" aria-label="{escaped}" ', text, count=1)


def reset_ids() -> None:
    """Restart the figure ids (each page numbers its figures from 0: the same page, the same bytes)."""
    global _counter
    _counter = iter(range(1 << 30))


def times(ms: NDArray[np.int64] | Sequence[int]) -> NDArray[Any]:
    """Epoch ms as datetime64 (matplotlib draws them as dates)."""
    return np.asarray(ms, np.int64).astype("datetime64[ms]")


def envelope(
    ts: NDArray[np.int64], y: NDArray[np.float64], lo: int, hi: int, columns: int = COLUMNS
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The series as its minimum and maximum per column of ``[lo, hi]`` (2 points a column, in
    time order; a column of only NaN gives NaN, a gap), or as it is when that is not shorter.

    >>> t, v = envelope(np.arange(10), np.array([0., 5, 1, 1, 1, 1, 1, 1, 9, 1]), 0, 9, columns=2)
    >>> t.tolist(), v.tolist()
    ([0, 1, 5, 8], [0.0, 5.0, 1.0, 9.0])
    """
    if len(ts) <= 2 * columns:
        return ts, y
    col = np.minimum(((ts - lo) * columns) // max(hi - lo, 1), columns - 1)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    out_t: list[int] = []
    out_y: list[float] = []
    for a, b in zip(starts, [*starts[1:], len(ts)], strict=True):
        seg = y[a:b]
        if np.all(np.isnan(seg)):
            out_t.append(int(ts[a]))
            out_y.append(np.nan)
            continue
        i, j = sorted((int(np.nanargmin(seg)), int(np.nanargmax(seg))))
        for k in dict.fromkeys((i, j)):
            out_t.append(int(ts[a + k]))
            out_y.append(float(seg[k]))
    return np.asarray(out_t, np.int64), np.asarray(out_y, np.float64)


def date_axis(ax: Axes, lo: int, hi: int) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, show_offset=True)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    pad = max((hi - lo) // 100, 1)
    ax.set_xlim(times([lo - pad])[0], times([hi + pad])[0])


def bins(lo: int, hi: int, n: int = 120) -> NDArray[np.int64]:
    """``n`` equal time bins over ``[lo, hi]``: their ``n + 1`` edges (epoch ms), at least 1 s wide."""
    width = max((hi - lo) // n + 1, 1000)
    return lo + width * np.arange(n + 1, dtype=np.int64)


def empty(ax: Axes, text: str) -> None:
    """An axes that says there is nothing to draw."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#777777")
    ax.set_yticks([])
