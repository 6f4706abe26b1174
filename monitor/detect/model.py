"""The per-device model tier: an adaptive Gaussian baseline per (device, sensor).

Each pair owns one :class:`AdaptiveGaussian`, a River anomaly detector (``learn_one`` /
``score_one``) whose whole state is one packed ``array('d')``: the count, and per feature an
exponentially weighted level, residual variance and trend. The weights are ``max(fading, 1/n)``
for the level and ``max(var_fading, 1/n)`` for the variance, so the first readings give the exact
running mean and variance, and later ones adapt: the level with a memory of ~``1/fading`` readings
(it follows slow changes such as weather), the noise level with a longer one (a variance estimated
from few readings would make the scores heavy-tailed).

The trend is Holt's linear trend in error-correction form: the forecast of a reading is ``level +
trend``; its error ``e`` moves the level by ``fading * e`` and the trend by ``trend * fading * e``.
A level alone lags a steady ramp (a morning's warming, a pressure front) by ``slope / fading``, so
every reading of the ramp sits on the same side of it and the scores drift up with no change in the
sensor's behaviour; the trend removes that lag. ``trend`` = 0 is the level alone. About 300 bytes
per pair, where River's ``stats`` objects would take ~500 bytes per feature.

Its distance ``d2 = sum((f - forecast)**2 / var)`` is a diagonal Mahalanobis distance; under a Gaussian
baseline it follows a chi-square law with ``k`` = number of features, so the anomaly score
``chi2.cdf(d2, k)`` is uniform on [0, 1] for normal data and close to 1 for outliers. One
threshold (e.g. 0.9999: one false positive in 10,000 normal readings) then means the same for
every sensor, and the drift detectors watch a score stream with a known shape.

The model learns only from readings it does not flag, so a persistent change keeps scoring high
until the governance rules retrain it (:meth:`AdaptiveGaussian.fit`), while changes slower than
its memory are followed.

>>> m = AdaptiveGaussian.fit([(1.0,), (2.0,), (3.0,)], resolution=0.01)
>>> m.n, round(m.distance((2.0,)), 6), round(m.distance((2.0 + 1.5,)), 6)
(3, 0.0, 3.375)
>>> round(m.score_one({"value": 2.0}), 6)
0.0
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from river.base import AnomalyDetector
from scipy import special

from monitor.ingest.features import Features
from monitor.schema import MAX_AXES, features_of
from monitor.settings import Flagged


class AdaptiveGaussian(AnomalyDetector):
    """Exponentially weighted level, trend and variance per feature; scores in [0, 1] (chi-square
    CDF)."""

    def __init__(
        self,
        n_features: int = 1,
        fading: float = 0.05,
        var_fading: float = 0.005,
        resolution: float = 1e-3,
        trend: float = 0.0,
    ) -> None:
        self.n_features = n_features
        self.fading = fading
        self.var_fading = var_fading
        self.resolution = resolution
        self.trend = trend
        self._state = array("d", bytes(8 * (1 + 3 * n_features)))  # n, levels, variances, trends

    @classmethod
    def fit(cls, rows: Iterable[Features], **params: float) -> AdaptiveGaussian:
        """A fresh model trained on ``rows`` in order (the retraining path)."""
        rows = list(rows)
        model = cls(len(rows[0]), **params)
        for row in rows:
            model.learn(row)
        return model

    @property
    def n(self) -> int:
        return int(self._state[0])

    def learn(self, f: Features) -> None:
        s, k = self._state, self.n_features
        n = s[0] + 1.0
        s[0] = n
        a = self.fading if n * self.fading > 1.0 else 1.0 / n
        b = self.var_fading if n * self.var_fading > 1.0 else 1.0 / n
        g = a * self.trend if n * self.fading > 1.0 else 0.0  # none while the level is a running mean
        for i, x in enumerate(f):
            t = 1 + 2 * k + i
            diff = x - (s[1 + i] + s[t])
            s[1 + i] += s[t] + a * diff
            s[t] += g * diff
            s[1 + k + i] = (1.0 - b) * (s[1 + k + i] + b * diff * diff)

    def nudge(self, f: Features, scale: float) -> None:
        """Move the level toward a flagged reading ``f`` as if its forecast error were ``scale``
        times what it is; the count, the variance and the trend stay (a step must not become a
        ramp). See :meth:`step`."""
        s, k = self._state, self.n_features
        n = s[0]
        if n < 1.0:  # nothing learned: no level to move
            return
        a = self.fading if n * self.fading > 1.0 else 1.0 / n
        for i, x in enumerate(f):
            t = 1 + 2 * k + i
            s[1 + i] += s[t] + a * scale * (x - (s[1 + i] + s[t]))

    def step(self, f: Features, threshold_d2: float, flagged: Flagged) -> float:
        """Score ``f`` as the live pipeline does (its distance), then learn it: fully unless it is
        over ``threshold_d2``; a flagged reading is learned fully, clipped to the threshold's
        boundary (:meth:`nudge`), or skipped, as ``flagged`` says."""
        d2 = self.distance(f)
        if d2 <= threshold_d2 or flagged == "learn":
            self.learn(f)
        elif flagged == "clip":
            self.nudge(f, math.sqrt(threshold_d2 / d2))
        return d2

    def distance(self, f: Features) -> float:
        """Squared standardised distance of ``f`` from its forecast (variance floored)."""
        s, k = self._state, self.n_features
        floor = self.resolution * self.resolution
        d2 = 0.0
        for i, x in enumerate(f):
            var = s[1 + k + i]
            d = x - (s[1 + i] + s[1 + 2 * k + i])
            d2 += d * d / (var if var > floor else floor)
        return d2

    def state(self) -> list[float]:
        """``[n, levels..., variances..., trends...]``: the whole learned state."""
        return list(self._state)

    def set_state(self, state: Sequence[float]) -> None:
        """The whole state; one without trends (``[n, levels..., variances...]``, from before the
        model had them) gets zero trends."""
        k = self.n_features
        if len(state) == 1 + 2 * k:
            state = [*state, *([0.0] * k)]
        if len(state) != len(self._state):
            raise ValueError(f"a {k}-feature model has {len(self._state)} state values, not {len(state)}")
        self._state = array("d", state)

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        """Learn ``x``; a NaN or infinite value leaves the model unchanged (it would stay forever)."""
        f = features_of(cast("dict[str, float]", x))
        if all(math.isfinite(v) for v in f):
            self.learn(f)

    def score_one(self, x: dict[Hashable, Any]) -> float:
        return score(self.distance(features_of(cast("dict[str, float]", x))), self.n_features)

    def dump(self) -> dict[str, Any]:
        """The whole model as plain JSON values (exact: floats round-trip through JSON)."""
        return {
            "n_features": self.n_features,
            "fading": self.fading,
            "var_fading": self.var_fading,
            "resolution": self.resolution,
            "trend": self.trend,
            "state": list(self._state),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> AdaptiveGaussian:
        m = cls(
            int(data["n_features"]),
            float(data["fading"]),
            float(data["var_fading"]),
            float(data["resolution"]),
            float(data.get("trend", 0.0)),
        )
        m.set_state([float(x) for x in data["state"]])
        return m

    def params(self) -> dict[str, list[float]]:
        """The learned baseline, recorded with every model version."""
        s, k = self._state, self.n_features
        return {"mean": list(s[1 : 1 + k]), "var": list(s[1 + k : 1 + 2 * k]), "trend": list(s[1 + 2 * k :])}


def score(d2: float, k: int) -> float:
    """Anomaly score in [0, 1] of one distance: the chi-square CDF with ``k`` degrees of freedom
    (closed forms for 1, 2 and 3 features, the kernels' too)."""
    if k == 2:
        return -math.expm1(-d2 / 2.0)
    e = math.erf(math.sqrt(d2 / 2.0))
    if k == 1:
        return e
    if k == 3:
        return max(0.0, e - math.sqrt(2.0 * d2 / math.pi) * math.exp(-d2 / 2.0))
    return float(special.gammainc(k / 2.0, d2 / 2.0))


def distance_threshold(score_threshold: float, k: int) -> float:
    """The distance above which a reading scores over ``score_threshold`` (``k`` features)."""
    return float(special.gammaincinv(k / 2.0, score_threshold) * 2.0)


def distance_thresholds(score_threshold: float) -> tuple[float, ...]:
    """:func:`distance_threshold` for every number of features a reading can have (index ``k``;
    index 0 unused)."""
    return (math.inf, *(distance_threshold(score_threshold, k) for k in range(1, MAX_AXES + 1)))


def window_rows(raw: NDArray[np.float32], n_features: int) -> Sequence[Features]:
    """Rows of a raw-feature window (``(n, 3)``, scalars in column 0) as model features."""
    return [tuple(float(v) for v in row[:n_features]) for row in raw]
