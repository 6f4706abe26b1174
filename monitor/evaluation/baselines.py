"""Two baseline detectors scored through the same harness as telemon: per-channel rules that read
the same readings and whose flags become detections like telemon's alerts.

- **3sigma** (``three_sigma``): the static 3-sigma rule. Per channel (one sensor of one device)
  and axis, the mean and standard deviation of its first :data:`WARMUP` readings, then fixed; a
  reading's score is its largest ``|z|`` over the axes (0 during the warm-up), flagged when > 3.
  A standard deviation of 0 (a constant warm-up) is floored at 1e-12: any other value is flagged.
- **hst** (``half_space_trees``): River's ``anomaly.HalfSpaceTrees`` per channel, in River's recipe
  ``preprocessing.MinMaxScaler() | anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=42), q)``:
  the axes min-max scaled as features, the default trees (10 trees, height 8, window 250), seed
  :data:`SEED`; a reading is flagged when its score is at or over the running :data:`HST_QUANTILE`
  quantile of the scores so far (the tail telemon's ``model.anomaly_threshold`` flags on
  Gaussian noise), and, as the filter does, a flagged reading is not learned. Its score is the
  trees' score in [0, 1]; no flags during the first :data:`WARMUP` readings. (The filter is
  inlined so that each reading walks the trees once.)

**Detections.** A channel's flags are debounced with the cooldown of telemon's ``anomaly_burst``
rule: a flag is a detection, and the channel then stays quiet for :data:`COOLDOWN_MS` (the rule's
``cooldown_s``, 300 s): the next detection is its first flag after that. Each detection names its rule
``NAME.SENSOR`` (e.g. ``3sigma.pressure``).

**Recall at equal false alarms** (:func:`recall_at_rate`): the baseline's threshold (flag when
score >= threshold) is swept over :data:`SWEEP_QUANTILES` of its own scores; the point reported
is the one with the highest recall among those with at most the target false alarms per
device-day (ties: fewest false alarms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from monitor.evaluation.quality import AnomalyQuality, Detection, Key

Name = Literal["3sigma", "hst"]
NAMES: Final[tuple[Name, ...]] = ("3sigma", "hst")
#: Readings of a channel that learn before it can flag: HalfSpaceTrees' first window (it scores
#: nothing before the window is full); the 3-sigma rule's mean and deviation are those of them.
WARMUP: Final = 250
SIGMA: Final = 3.0
#: HalfSpaceTrees flags scores at or over this running quantile of its scores.
HST_QUANTILE: Final = 0.9999
SEED: Final = 42
#: After a detection, a channel's flags are not detections for this long (anomaly_burst's cooldown).
COOLDOWN_MS: Final = 300_000
#: Thresholds tried by :func:`recall_at_rate`: these quantiles of the positive scores (every 2.5 %,
#: and 30 more in the top 5 %), or every distinct score when there are at most 200.
SWEEP_QUANTILES: Final = np.unique(np.r_[np.linspace(0.0, 1.0, 41), 1.0 - np.geomspace(1e-6, 0.05, 30)])


@dataclass(frozen=True)
class Channel:
    """One sensor of one device: its readings' times (in stream order), the detector's score and
    flag of each; ``key`` is the key its detections are scored on."""

    key: Key
    sensor: str
    ts: NDArray[np.int64]
    scores: NDArray[np.float64]
    flags: NDArray[np.bool_]


def run(
    name: Name, values: NDArray[np.float64], axes: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The baseline's score and flag of each reading of one channel (``values``: readings x axes)."""
    if name == "3sigma":
        z = three_sigma(values)
        return z, z > SIGMA
    return half_space_trees(values, axes)


def three_sigma(values: NDArray[np.float64], warmup: int = WARMUP) -> NDArray[np.float64]:
    """Largest ``|z|`` over the axes against the mean and deviation of the first ``warmup`` readings.

    >>> three_sigma(np.array([[0.0], [2.0], [0.0], [2.0], [7.0]]), warmup=4).tolist()
    [0.0, 0.0, 0.0, 0.0, 6.0]
    """
    out = np.zeros(len(values))
    if len(values) <= warmup:
        return out
    head = values[:warmup]
    mean, std = head.mean(axis=0), np.maximum(head.std(axis=0), 1e-12)
    out[warmup:] = np.abs((values[warmup:] - mean) / std).max(axis=1)
    return out


def half_space_trees(
    values: NDArray[np.float64],
    axes: Sequence[str],
    warmup: int = WARMUP,
    q: float = HST_QUANTILE,
    seed: int = SEED,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """River's min-max scaled HalfSpaceTrees behind its quantile filter: each reading's score and
    flag (score >= the running ``q`` quantile of the scores before it); flagged readings are not
    learned."""
    from river import anomaly, preprocessing, stats

    scaler, trees = preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed)
    quantile = stats.Quantile(q)
    out, flags = np.zeros(len(values)), np.zeros(len(values), np.bool_)
    for i, row in enumerate(values.tolist()):
        x = dict(zip(axes, row, strict=True))
        scaled = scaler.transform_one(x)
        score = float(trees.score_one(scaled))
        flagged = score >= (quantile.get() or np.inf)
        if i >= warmup:
            out[i], flags[i] = score, flagged
        if not flagged:
            trees.learn_one(scaled)
        quantile.update(score)
        scaler.learn_one(x)
    return out, flags


def episode_starts(
    ts: NDArray[np.int64], flags: NDArray[np.bool_], cooldown_ms: int = COOLDOWN_MS
) -> NDArray[np.intp]:
    """Indices of the flags that are detections: the first flag, then each first flag more than
    ``cooldown_ms`` after the previous detection (the channel stays quiet that long after one).

    >>> flags = np.array([True, True, False, True, True, True])
    >>> episode_starts(np.array([0, 1, 2, 6, 7, 13]), flags, 5).tolist()
    [0, 3, 5]
    """
    flagged = np.flatnonzero(flags)
    at = ts[flagged]
    out: list[int] = []
    k = 0
    while k < len(flagged):
        out.append(int(flagged[k]))
        k = int(np.searchsorted(at, at[k] + cooldown_ms, side="right"))
    return np.asarray(out, np.intp)


def detections(channels: Sequence[Channel], name: str, at: float | None = None) -> list[Detection]:
    """The debounced detections of every channel: of its flags, or with its readings flagged at
    score >= ``at``."""
    out: list[Detection] = []
    for c in channels:
        starts = episode_starts(c.ts, c.flags if at is None else c.scores >= at)
        out += [Detection(c.key, t, f"{name}.{c.sensor}") for t in c.ts[starts].tolist()]
    return out


@dataclass(frozen=True)
class RatePoint:
    """The baseline at a swept threshold: its recall and false alarms per device-day there."""

    threshold: float
    recall: float | None
    false_alarms_per_device_day: float | None
    f1: float | None


def recall_at_rate(
    channels: Sequence[Channel],
    name: str,
    quality: Callable[[list[Detection]], AnomalyQuality],
    rate: float,
) -> RatePoint:
    """The best recall of the baseline with at most ``rate`` false alarms per device-day."""
    pooled = np.unique(np.concatenate([c.scores[c.scores > 0] for c in channels] or [np.zeros(0)]))
    if len(pooled) > 200:
        pooled = np.unique(np.quantile(pooled, SWEEP_QUANTILES, method="higher"))
    candidates = np.r_[pooled, np.inf]
    best: RatePoint | None = None
    for at in candidates.tolist():
        q = quality(detections(channels, name, at))
        fa = q.false_alarms_per_device_day or 0.0
        if fa > rate:
            continue
        point = RatePoint(at, q.recall, fa, q.f1)
        if best is None or _rank(point) > _rank(best):
            best = point
    if best is None:  # unreachable: the infinite threshold has no detection
        raise AssertionError("no threshold meets the rate")
    return best


def _rank(p: RatePoint) -> tuple[float, float]:
    return (p.recall or 0.0, -(p.false_alarms_per_device_day or 0.0))
