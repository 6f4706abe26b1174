"""The held-out slice: where a window is cut, the labelled spikes injected into a copy of its newest
readings, scoring replayed the way the live pipeline scores, and the metrics read off it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from monitor.detect.model import AdaptiveGaussian
from monitor.govern.training.job import (
    MIN_HOLDOUT_ROWS,
    MIN_TRAIN_ROWS,
    TOLERANCE,
    BoolArray,
    FloatArray,
    Metrics,
)
from monitor.settings import Flagged

#: Normal-law consistency factor of the median absolute deviation, and 1/sqrt(2) because the
#: difference of two readings carries the noise twice.
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)


def split_point(n: int, holdout_fraction: float) -> int:
    """Rows of the train slice: the oldest ``1 - holdout_fraction`` of ``n`` (at least
    ``MIN_TRAIN_ROWS``, with at least ``MIN_HOLDOUT_ROWS`` held out)."""
    held = math.ceil(n * holdout_fraction - TOLERANCE)
    if held < MIN_HOLDOUT_ROWS or n - held < MIN_TRAIN_ROWS:
        raise ValueError(
            f"a window of {n} rows with holdout_fraction {holdout_fraction} leaves {n - held} to train "
            f"and {held} to test; need {MIN_TRAIN_ROWS} and {MIN_HOLDOUT_ROWS}: retrain on a longer window"
        )
    return n - held


def noise_sigma(rows: FloatArray, floor: float) -> FloatArray:
    """Per-feature noise standard deviation, from the median absolute deviation of successive
    differences: a level shift or a slow trend inside the window barely moves it, where it would
    inflate a plain standard deviation. Floored at the sensor's resolution (quantised readings)."""
    diffs = np.diff(rows, axis=0)
    mad = stats.median_abs_deviation(diffs, axis=0, scale=1.0)
    return np.maximum(np.asarray(mad, np.float64) * _MAD_TO_SIGMA, floor)


def inject_anomalies(
    rows: FloatArray,
    rng: np.random.Generator,
    count: int,
    min_sigma: float = 3.0,
    max_sigma: float = 12.0,
    sigma: FloatArray | None = None,
) -> tuple[FloatArray, BoolArray]:
    """A copy of ``rows`` with ``count`` spikes added, and the labels (True = spike).

    Each spike is a copy of a random reading with one random feature moved by a log-uniform
    ``min_sigma``..``max_sigma`` noise standard deviations, up or down, inserted just before that
    reading: a one-reading glitch in its context. Every original reading stays (as a negative), so
    a short held-out slice still has enough of both classes. ``sigma`` defaults to
    :func:`noise_sigma` of ``rows`` with no floor.
    """
    n, k = rows.shape
    scale = noise_sigma(rows, 0.0) if sigma is None else np.asarray(sigma, np.float64)
    at = np.sort(rng.integers(0, n, size=count))
    feature = rng.integers(0, k, size=count)
    sign = rng.choice(np.array([-1.0, 1.0]), size=count)
    size = np.exp(rng.uniform(math.log(min_sigma), math.log(max_sigma), size=count))
    spikes = rows[at].copy()
    spikes[np.arange(count), feature] += sign * size * scale[feature]
    labels = np.insert(np.zeros(n, np.bool_), at, True)
    return np.insert(rows, at, spikes, axis=0), labels


def _classes(scores: FloatArray, labels: BoolArray) -> tuple[FloatArray, FloatArray]:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.bool_)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need both classes: {len(pos)} anomalies, {len(neg)} normal readings")
    return pos, neg


def roc_auc(scores: FloatArray, labels: BoolArray) -> float:
    """ROC AUC: the chance that a random anomaly outscores a random normal reading, a tie counting
    one half (the Mann-Whitney U over average ranks, divided by the number of pairs)."""
    pos, neg = _classes(scores, labels)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = float(ranks[: len(pos)].sum()) - len(pos) * (len(pos) + 1) / 2.0
    return u / (len(pos) * len(neg))


def detection_rate(scores: FloatArray, labels: BoolArray, false_alarm_rate: float) -> float:
    """Share of anomalies scored above the threshold that lets at most ``false_alarm_rate`` of the
    normal readings through: the (m+1)-th highest normal score, m = floor(rate x normals). A score
    tied with the threshold is no detection, so the realised false-alarm rate never exceeds the
    target (with 8 normal readings and a 1 % target the threshold is the highest normal score)."""
    pos, neg = _classes(scores, labels)
    allowed = math.floor(false_alarm_rate * len(neg) + TOLERANCE)
    threshold = np.sort(neg)[::-1][min(allowed, len(neg) - 1)]
    return float(np.mean(pos > threshold))


def step(m: AdaptiveGaussian, f: Sequence[float], threshold_d2: float, flagged: Flagged) -> float:
    """Score one reading as the live pipeline does (:meth:`AdaptiveGaussian.step`). A candidate
    under shadow is stepped with this too, so it keeps learning like a serving model."""
    return m.step(tuple(f), threshold_d2, flagged)


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The injected held-out slice and how to score it.

    Models are ranked by distance, which orders readings exactly as the chi-square score does but
    does not round to 1.0 for far outliers (a model far off the current level would otherwise tie
    every reading at 1.0)."""

    rows: FloatArray
    labels: BoolArray
    threshold_d2: float
    flagged: Flagged
    false_alarm_rate: float

    def evaluate(self, m: AdaptiveGaussian) -> Metrics:
        """Metrics of ``m`` replayed over the slice (``m`` learns on the way: pass a copy)."""
        d2 = np.array([step(m, row, self.threshold_d2, self.flagged) for row in self.rows.tolist()])
        alarms = float(np.mean(d2[~self.labels] > self.threshold_d2))
        return Metrics(
            roc_auc(d2, self.labels), detection_rate(d2, self.labels, self.false_alarm_rate), alarms
        )
