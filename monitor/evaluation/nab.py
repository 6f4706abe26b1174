"""Numenta Anomaly Benchmark (NAB v1.0) scoring: the sweep scorer, threshold optimiser and normaliser.

This is a numpy re-implementation of the scorer of numenta/NAB v1.0, where ``nab/sweeper.py``
(``Sweeper``, ``scaledSigmoid``) does the scoring, ``nab/optimizer.py`` (``optimizeThreshold``)
picks one threshold per profile for the whole corpus, ``nab/scorer.py`` (``scoreCorpus``) scores
every file at that threshold and ``nab/runner.py`` (``Runner.normalize``) normalises the total.

Rows and windows
----------------
A detector gives every row of a series an anomaly score in ``[0, 1]``; at a threshold ``t`` a row
is a *detection* when its score is ``>= t``. Anomaly windows are ``[start, end]`` timestamps of
the series (both must be row timestamps). The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows
of a series of ``n`` rows (at most 750) are *probationary*: they are dropped before scoring, so
they never count as detections, and a window lying wholly inside them is neither found nor missed
(``Sweeper._getProbationaryLength``, ``util.getProbationPeriod``).

Per-row weights
---------------
Every row gets a weight from the scaled sigmoid ``S(x) = 2 / (1 + exp(5x)) - 1`` of its relative
position ``x``, with ``S(x) = -1`` for ``x > 3`` (``scaledSigmoid``). For row ``i`` inside a
window of rows ``[l, r]`` (width ``w = r - l + 1``), ``x = -(r - i + 1) / w``, from ``-1`` on the
first row to ``-1/w`` on the last, and the weight is ``A_TP * S(x) / S(-1)``: exactly ``A_TP`` at
the window start, decreasing along the window. For a row outside every window the weight is
``A_FP * S(x)`` with ``x = (i - r') / (w' - 1)`` measured from the end ``r'`` of the closest
*preceding* window (width ``w'``): just after a window an FP costs little (``S`` is near 0), three
window-widths later it costs ``-A_FP``. Rows before the first window cost the full ``-A_FP``.

Score of a threshold
--------------------
``raw = sum of the weights of the FP rows detected + sum over windows of max(-A_FN, best)``,
where ``best`` is the largest weight of the window's detected rows: only the earliest detection
in a window counts, and a missed window (one that has non-probationary rows but no detection)
costs ``-A_FN``. True negatives add nothing (``A_TN`` is unused, as in NAB). The TP/FP/FN/TN
counts NAB reports alongside are *row* counts over the non-probationary rows (e.g. FN = window
rows not detected), not window counts.

Threshold optimisation and normalisation
----------------------------------------
For each profile NAB pools the non-probationary rows of the whole corpus, sorts them by score
(descending, stable) and evaluates the raw score at the threshold ``1.1`` (nothing detected) and
at every distinct score; the first candidate with the largest summed score wins, i.e. the highest
threshold among ties (``Sweeper.calcScoreByThreshold``, ``optimizeThreshold``). Every file is then
scored at that threshold and the file scores are summed (``scoreCorpus``). The result is
normalised as ``100 * (raw - null) / (perfect - null)``, where ``null`` is the total of NAB's null
detector (a constant score of 0.5 for every row) taken through the same optimise-and-score path,
and ``perfect`` is ``A_TP`` times the number of labelled windows (``Runner.normalize``), which is
what a detector firing exactly at every window start scores.

Exactness
---------
Per-row weights use ``math.exp`` like NAB, so they are bit-identical to NAB's ``S(t)`` columns,
and running sums are accumulated in NAB's order (the stably sorted row order for the FP sum,
windows in order of their first appearance in that order), sequentially as Python <= 3.11 does.
Only the final sum over files can differ in its last bit (NAB's file order is ``os.walk`` order).
Where NAB has no defined answer this module raises ``ValueError`` instead: scores outside
``[0, 1]`` or NaN (NAB's sweep assumes ``[0, 1]``), one-row windows (NAB divides by ``w - 1``),
and windows whose limits are not row timestamps, unsorted or overlapping. Scoring a series at a
threshold that is not one of its own candidates uses the ``score >= t`` rule throughout (NAB's
``scoreDataSet`` returns ``None`` for a threshold below every score of a file).

The published scoreboard (:data:`PUBLISHED`) was computed from results files holding scores to 12
significant digits; :func:`round_as_published` applies the same rounding, which matters for
detectors whose scores crowd just below 1.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
TimeArray = npt.NDArray[np.datetime64]
Window = tuple[np.datetime64, np.datetime64]

PROBATION_PERCENT = 0.15
"""Share of every series NAB leaves unscored (capped at ``PROBATION_PERCENT * 5000`` rows)."""
NO_DETECTION_THRESHOLD = 1.1
"""NAB's first sweep threshold, above every score in ``[0, 1]``: nothing is detected."""
NULL_DETECTOR_SCORE = 0.5
"""The constant score of NAB's null detector, whose result is the normalisation baseline."""

_TIME_UNIT = "datetime64[us]"

_PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
_SCOREBOARD = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "earthgecko Skyline": (58.2, 46.2, 63.9),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "Etsy Skyline": (35.7, 27.1, 44.5),
    "Bayesian Changepoint": (17.7, 3.2, 32.2),
    "EXPoSE": (16.4, 3.2, 26.9),
    "Random": (11.0, 1.2, 19.5),
    "Null": (0.0, 0.0, 0.0),
}
PUBLISHED: dict[str, dict[str, float]] = {
    detector: dict(zip(_PROFILE_NAMES, scores, strict=True)) for detector, scores in _SCOREBOARD.items()
}
"""The published NAB v1.0 scoreboard (whole corpus, normalised): detector -> profile -> score."""

__all__ = [
    "NO_DETECTION_THRESHOLD",
    "NULL_DETECTOR_SCORE",
    "PROBATION_PERCENT",
    "PUBLISHED",
    "CorpusFile",
    "Profile",
    "ProfileResult",
    "Series",
    "SeriesScore",
    "Sweep",
    "load_corpus",
    "load_corpus_labels",
    "load_profiles",
    "load_windows",
    "optimise_threshold",
    "probation_length",
    "round_as_published",
    "scaled_sigmoid",
    "score_corpus",
    "score_series",
    "threshold_sweep",
    "write_results_csv",
]


# --- Profiles, windows, weights ---------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A NAB cost matrix (``config/profiles.json``): the weights A_TP, A_FP, A_FN and A_TN."""

    tp: float
    fp: float
    fn: float
    tn: float


def load_profiles(path: Path) -> dict[str, Profile]:
    """The profiles of a NAB ``profiles.json``, by name, in file order."""
    profiles: dict[str, Profile] = {}
    for name, entry in json.loads(Path(path).read_text()).items():
        cm = entry["CostMatrix"]
        profiles[name] = Profile(
            tp=float(cm["tpWeight"]),
            fp=float(cm["fpWeight"]),
            fn=float(cm["fnWeight"]),
            tn=float(cm["tnWeight"]),
        )
    return profiles


def parse_timestamps(values: Sequence[str]) -> TimeArray:
    """NAB timestamp strings (``"2014-02-19 10:50:00"``, optionally with fractions) as datetime64[us]."""
    return np.array(values, dtype=_TIME_UNIT)


def load_windows(path: Path) -> dict[str, list[Window]]:
    """The anomaly windows of a NAB ``combined_windows.json``, by file key (``"category/file.csv"``)."""
    raw: dict[str, list[list[str]]] = json.loads(Path(path).read_text())
    windows: dict[str, list[Window]] = {}
    for key, limits in raw.items():
        times = parse_timestamps([t for pair in limits for t in pair])
        windows[key] = [(times[2 * k], times[2 * k + 1]) for k in range(len(limits))]
    return windows


def probation_length(num_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Number of leading rows NAB does not score: ``min(floor(percent * n), percent * 5000)``.

    NAB scores row ``i`` when ``i >= min(...)``; the bound is rounded up so that the same rows are
    scored with an integer comparison.
    """
    return math.ceil(min(math.floor(percent * num_rows), percent * 5000))


def _scaled_sigmoid_scalar(x: float) -> float:
    """NAB's ``scaledSigmoid`` with Python floats and ``math.exp``, for bit-identical weights."""
    if x > 3.0:
        return -1.0
    return 2.0 * (1.0 / (1.0 + math.exp(5.0 * x))) - 1.0


def scaled_sigmoid(position: npt.ArrayLike) -> FloatArray:
    """NAB's scaled sigmoid ``2 / (1 + exp(5x)) - 1`` (``-1`` for ``x > 3``), element-wise.

    ``S(-1) = 0.98661`` (window start), ``S(-0.5) = 0.84828``, ``S(0) = 0``, ``S(1) = -0.98661``.
    """
    x = np.asarray(position, dtype=np.float64)
    # Few distinct positions once everything past 3 is folded together: evaluate each once.
    distinct, inverse = np.unique(np.where(x > 3.0, np.inf, x), return_inverse=True)
    values = np.array([_scaled_sigmoid_scalar(float(v)) for v in distinct], dtype=np.float64)
    return values[inverse].reshape(x.shape)


_MAX_TP = _scaled_sigmoid_scalar(-1.0)


# --- Series -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """What NAB's ``calcSweepScore`` derives from the timestamps and windows alone."""

    window_of_row: IntArray  # index of the row's window, -1 outside every window
    unweighted: FloatArray  # S(x) of the row's relative position (before the profile weights)
    scorable: BoolArray  # not probationary


def _first_index(timestamps: TimeArray, t: np.datetime64, name: str) -> int:
    hits = np.flatnonzero(timestamps == t)
    if hits.size == 0:
        raise ValueError(f"{name}: window limit {t} is not a timestamp of the series")
    return int(hits[0])


def _window_rows(name: str, timestamps: TimeArray, windows: Sequence[Window]) -> tuple[IntArray, IntArray]:
    """First and last row of every window (first occurrence of each limit, as NAB's ``list.index``)."""
    starts = np.array([_first_index(timestamps, s, name) for s, _ in windows], dtype=np.intp)
    ends = np.array([_first_index(timestamps, e, name) for _, e in windows], dtype=np.intp)
    if np.any(ends - starts < 1):
        raise ValueError(f"{name}: every window must span at least two rows (NAB divides by width - 1)")
    if np.any(starts[1:] <= ends[:-1]):
        raise ValueError(f"{name}: windows must be sorted and must not overlap")
    return starts, ends


def _compute_layout(series: Series) -> _Layout:
    n = series.scores.size
    rows = np.arange(n, dtype=np.intp)
    starts, ends = _window_rows(series.name, series.timestamps, series.windows)
    widths = (ends - starts + 1).astype(np.float64)

    window_of_row = np.full(n, -1, dtype=np.intp)
    for k, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        window_of_row[lo : hi + 1] = k
    inside = window_of_row >= 0
    # Inside window k: x = -(r_k - i + 1) / w_k, from -1 on the first row to -1/w_k on the last.
    k_in = np.maximum(window_of_row, 0)
    x_in = -(ends[k_in] - rows + 1).astype(np.float64) / widths[k_in] if ends.size else np.zeros(n)
    # Outside: x = (i - r') / (w' - 1) from the closest preceding window; -1 weight before any window.
    prev = np.searchsorted(ends, rows, side="left") - 1
    k_prev = np.maximum(prev, 0)
    x_out = (rows - ends[k_prev]).astype(np.float64) / (widths[k_prev] - 1.0) if ends.size else np.zeros(n)
    position = np.where(inside, x_in, np.where(prev >= 0, x_out, np.inf))  # S(inf) = -1

    scorable = rows >= probation_length(n, series.probation_percent)
    return _Layout(window_of_row=window_of_row, unweighted=scaled_sigmoid(position), scorable=scorable)


@dataclass(frozen=True, eq=False)
class Series:
    """One scored series: its timestamps, a detector's anomaly scores in ``[0, 1]`` and its windows.

    ``windows`` are ``(start, end)`` timestamps of rows of the series, sorted and disjoint, each at
    least two rows wide. ``probation_percent`` is NAB's 0.15; tests may set it to 0.
    """

    name: str
    timestamps: TimeArray
    scores: FloatArray
    windows: list[Window]
    probation_percent: float = PROBATION_PERCENT
    _layout: _Layout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        timestamps = np.asarray(self.timestamps, dtype=_TIME_UNIT)
        scores = np.asarray(self.scores, dtype=np.float64)
        if timestamps.ndim != 1 or scores.shape != timestamps.shape:
            raise ValueError(
                f"{self.name}: timestamps and scores must be 1-D of equal length, "
                f"got {timestamps.shape} and {scores.shape}"
            )
        if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also rejects NaN
            raise ValueError(f"{self.name}: anomaly scores must lie in [0, 1] (NAB's sweep starts at 1.1)")
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "windows", list(self.windows))
        object.__setattr__(self, "_layout", _compute_layout(self))

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """1 for rows whose timestamp lies in a window (``start <= t <= end``), else 0, as NAB labels."""
        inside = np.zeros(self.timestamps.size, dtype=np.bool_)
        for start, end in self.windows:
            inside |= (self.timestamps >= start) & (self.timestamps <= end)
        return inside.astype(np.int64)

    def with_scores(self, scores: npt.ArrayLike) -> Series:
        """The same series and windows with another detector's scores."""
        return Series(self.name, self.timestamps, np.asarray(scores), self.windows, self.probation_percent)

    def weights(self, profile: Profile) -> FloatArray:
        """NAB's weighted per-row score (the ``S(t)_<profile>`` column of its results files)."""
        u = self._layout.unweighted
        return np.where(self._layout.window_of_row >= 0, u * profile.tp / _MAX_TP, u * profile.fp)


# --- The sweep --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """The raw score and row counts at every candidate threshold, highest threshold first.

    ``thresholds[0]`` is :data:`NO_DETECTION_THRESHOLD`; the others are the distinct scores of the
    scorable rows, descending. Entry ``j`` is the outcome of detecting every row scoring
    ``>= thresholds[j]`` (NAB's ``ThresholdScore`` rows).
    """

    thresholds: FloatArray
    scores: FloatArray
    tp: IntArray
    fp: IntArray
    fn: IntArray
    tn: IntArray


def _sweep(scores: FloatArray, weights: FloatArray, window_ids: IntArray, fn_weight: float) -> Sweep:
    """NAB's ``calcScoreByThreshold`` over scorable rows, vectorised over the candidate thresholds.

    Rows are sorted by score (descending, stable); candidate 0 detects nothing and candidate
    ``c >= 1`` detects the rows of the first ``c`` distinct scores. NAB's score of a candidate is
    ``fp + window_1 + window_2 + ...`` summed left to right, with the windows in order of first
    appearance in the sorted rows; it is accumulated here in the same order, one window at a time
    over all candidates at once.
    """
    order = np.argsort(-scores, kind="stable")
    s, w, g = scores[order], weights[order], window_ids[order]
    inside = g >= 0
    new_score = np.concatenate(([True], s[1:] != s[:-1])) if s.size else np.zeros(0, dtype=np.bool_)
    candidate = np.cumsum(new_score)  # candidate index from which each sorted row is detected
    last_row = np.concatenate((np.flatnonzero(new_score[1:]), [s.size - 1])) if s.size else candidate
    n_candidates = last_row.size + 1

    # FP part: NAB's running sum over the detected rows outside windows (adding 0.0 is exact).
    total = np.concatenate(([0.0], np.cumsum(np.where(inside, 0.0, w))[last_row]))
    # Window parts, each max(-A_FN, best weight detected so far): a running max over candidates.
    win_rows = np.flatnonzero(inside)
    first_seen = np.unique(g[win_rows], return_index=True)[1] if win_rows.size else np.zeros(0, np.intp)
    for k in g[win_rows[np.sort(first_seen)]]:
        rows = win_rows[g[win_rows] == k]
        best = np.maximum.accumulate(np.maximum(w[rows], -fn_weight))
        # Piecewise constant over candidates: -A_FN, then the best value from each candidate on.
        changes = np.flatnonzero(np.append(candidate[rows][1:] != candidate[rows][:-1], True))
        edges = np.concatenate(([0], candidate[rows][changes], [n_candidates]))
        total += np.repeat(np.concatenate(([-fn_weight], best[changes])), np.diff(edges))

    detected = np.concatenate(([0], last_row + 1))
    tp = np.concatenate(([0], np.cumsum(inside)[last_row]))
    n_inside = win_rows.size
    return Sweep(
        thresholds=np.concatenate(([NO_DETECTION_THRESHOLD], s[last_row])),
        scores=total,
        tp=tp,
        fp=detected - tp,
        fn=n_inside - tp,
        tn=(s.size - n_inside) - (detected - tp),
    )


def _pooled_rows(corpus: Sequence[Series], profile: Profile) -> tuple[FloatArray, FloatArray, IntArray]:
    """Scorable rows of the corpus in corpus order: scores, weights and corpus-wide window ids."""
    scores, weights, ids = [], [], []
    offset = 0
    for series in corpus:
        keep = series._layout.scorable
        local = series._layout.window_of_row[keep]
        scores.append(series.scores[keep])
        weights.append(series.weights(profile)[keep])
        ids.append(np.where(local >= 0, local + offset, -1))
        offset += len(series.windows)
    if not corpus:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.intp)
    return np.concatenate(scores), np.concatenate(weights), np.concatenate(ids).astype(np.intp)


def threshold_sweep(corpus: Sequence[Series], profile: Profile) -> Sweep:
    """The corpus-wide sweep NAB's optimiser runs: the summed raw score at every candidate threshold."""
    return _sweep(*_pooled_rows(corpus, profile), fn_weight=profile.fn)


def optimise_threshold(corpus: Sequence[Series], profile: Profile) -> tuple[float, float]:
    """NAB's ``optimizeThreshold``: ``(threshold, summed raw score)`` of the best candidate.

    Ties go to the highest threshold (NAB takes the first of a stable sort by score).
    """
    sweep = threshold_sweep(corpus, profile)
    best = int(np.argmax(sweep.scores))
    return float(sweep.thresholds[best]), float(sweep.scores[best])


# --- Scoring a series and a corpus ------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesScore:
    """NAB's result for one file at one threshold: raw score and non-probationary *row* counts."""

    name: str
    threshold: float
    raw: float
    tp: int
    fp: int
    fn: int
    tn: int


def score_series(series: Series, threshold: float, profile: Profile) -> SeriesScore:
    """Score one series at ``threshold`` (a row is a detection when its score is ``>= threshold``).

    This is NAB's ``Sweeper.scoreDataSet``: the file's own sweep, read at ``threshold``.
    """
    keep = series._layout.scorable
    sweep = _sweep(
        series.scores[keep], series.weights(profile)[keep], series._layout.window_of_row[keep], profile.fn
    )
    j = max(int(np.count_nonzero(sweep.thresholds >= threshold)) - 1, 0)
    return SeriesScore(
        name=series.name,
        threshold=float(threshold),
        raw=float(sweep.scores[j]),
        tp=int(sweep.tp[j]),
        fp=int(sweep.fp[j]),
        fn=int(sweep.fn[j]),
        tn=int(sweep.tn[j]),
    )


@dataclass(frozen=True)
class ProfileResult:
    """A detector's NAB result for one profile over a corpus.

    ``raw`` is the summed file score at the optimised ``threshold``, ``null`` the same for NAB's
    null detector, ``perfect`` is ``A_TP`` times the number of windows, and ``score`` the
    normalised ``100 * (raw - null) / (perfect - null)`` of the NAB scoreboard.
    """

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float


def _corpus_raw(corpus: Sequence[Series], profile: Profile) -> tuple[float, float]:
    """Optimise the threshold, score every file at it and sum (``optimize`` then ``score``)."""
    threshold, _ = optimise_threshold(corpus, profile)
    raw = 0.0
    for series in corpus:  # sequentially, as NAB's "Totals" row
        raw += score_series(series, threshold, profile).raw
    return threshold, raw


def score_corpus(corpus: Sequence[Series], profiles: Mapping[str, Profile]) -> dict[str, ProfileResult]:
    """The NAB scoreboard entry of the detector whose scores ``corpus`` holds, for every profile."""
    n_windows = sum(len(s.windows) for s in corpus)
    if n_windows == 0:
        raise ValueError("the corpus has no anomaly windows: the normalised NAB score is undefined")
    null_corpus = [s.with_scores(np.full(s.scores.size, NULL_DETECTOR_SCORE)) for s in corpus]
    results: dict[str, ProfileResult] = {}
    for name, profile in profiles.items():
        threshold, raw = _corpus_raw(corpus, profile)
        _, null = _corpus_raw(null_corpus, profile)
        perfect = n_windows * profile.tp
        score = 100 * (raw - null) / (perfect - null)
        results[name] = ProfileResult(name, threshold, raw, null, perfect, score)
    return results


def round_as_published(scores: npt.ArrayLike) -> FloatArray:
    """Scores rounded to 12 significant digits, as in the results files behind NAB's scoreboard.

    Those files were written with Python 2's ``str(float)`` (``%.12g``). For detectors whose
    scores crowd just below 1 the optimised threshold, hence the score, depends on this rounding:
    NAB's Windowed Gaussian detector scores 39.6/20.9/47.4 (the published entry) when rounded and
    40.1/23.9/47.7 at full precision. Round before comparing with :data:`PUBLISHED`.
    """
    flat = np.asarray(scores, dtype=np.float64)
    return np.array([float(f"{v:.12g}") for v in flat.ravel().tolist()], dtype=np.float64).reshape(flat.shape)


# --- The NAB corpus on disk -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CorpusFile:
    """One NAB data file with its windows; :meth:`series` attaches a detector's scores."""

    key: str
    timestamps: TimeArray
    values: FloatArray
    windows: list[Window]

    def series(self, scores: npt.ArrayLike, probation_percent: float = PROBATION_PERCENT) -> Series:
        return Series(self.key, self.timestamps, np.asarray(scores), self.windows, probation_percent)


def _read_data_csv(path: Path) -> tuple[TimeArray, FloatArray]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected columns timestamp,value, got {header}")
        rows = list(reader)
    return parse_timestamps([r[0] for r in rows]), np.array([float(r[1]) for r in rows], dtype=np.float64)


def load_corpus(nab_root: Path) -> dict[str, CorpusFile]:
    """Every file of ``labels/combined_windows.json`` with its data (``data/<key>``) and windows."""
    root = Path(nab_root)
    files: dict[str, CorpusFile] = {}
    for key, windows in load_windows(root / "labels" / "combined_windows.json").items():
        timestamps, values = _read_data_csv(root / "data" / key)
        files[key] = CorpusFile(key, timestamps, values, windows)
    return files


def load_corpus_labels(nab_root: Path) -> dict[str, tuple[TimeArray, list[Window]]]:
    """Per file key: its timestamps (from the data CSV) and its windows."""
    return {key: (f.timestamps, f.windows) for key, f in load_corpus(nab_root).items()}


def write_results_csv(path: Path, series: Series, values: npt.ArrayLike) -> None:
    """Write ``series`` in NAB's results format: ``timestamp,value,anomaly_score,label``.

    ``label`` is 1 for rows inside a window. Parent directories are created.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.shape != series.scores.shape:
        raise ValueError(f"{series.name}: {vals.size} values for {series.scores.size} rows")
    whole_seconds = bool(np.all(series.timestamps == series.timestamps.astype("datetime64[s]")))
    stamps = np.datetime_as_string(series.timestamps, unit="s" if whole_seconds else "us")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score", "label"])
        for t, v, s, label in zip(stamps, vals, series.scores, series.labels, strict=True):
            writer.writerow([str(t).replace("T", " "), repr(float(v)), repr(float(s)), int(label)])
