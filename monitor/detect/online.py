"""One River anomaly detector, ready for the stream: scaling, flags, warm-up and a guard on input.

:class:`OnlineModel` wraps a River anomaly detector named by its class path (see
:mod:`monitor.common.riverpath`) and is itself a River ``AnomalyDetector`` (``learn_one`` /
``score_one``, ``clone()`` from its constructor arguments, stored under the same names):

- **preprocessing**: ``standard`` or ``minmax`` puts River's ``preprocessing.StandardScaler`` or
  ``MinMaxScaler`` in front of it, in a ``compose.Pipeline`` (the scaler learns online with it);
- **flags**: River's ``anomaly.QuantileFilter`` (``quantile``: a score at or over the running
  quantile of the scores seen so far) or ``anomaly.ThresholdFilter`` (``threshold``) decides which
  scores are anomalous; with ``protect`` the detector does not learn the readings it flags;
- **warm-up**: the first ``warmup`` readings are learned, none flagged; their scores only go to
  the ``QuantileFilter``'s running quantile, so that it is estimated from many scores when the
  first flags count;
- **the guard**: a reading with a NaN or infinite value is never learned (River's running
  statistics would keep the NaN forever) and gets no score.

A *supervised* River detector (``GaussianScorer``, ``StandardAbsoluteDeviation``) scores the value
of a scalar reading as its target (``score_one({}, y)``). Detectors that draw random numbers are
seeded with ``seed=0`` unless ``params`` names a seed, so a stream always gets the same scores.

:meth:`OnlineModel.step` is the stream's one call per reading: score, flag, then learn (as River's
``learn_one`` of a filter does, without scoring twice).

>>> m = OnlineModel("river.anomaly.GaussianScorer", {"grace_period": 10}, threshold=0.999, warmup=20)
>>> for i in range(40):
...     _ = m.step({"value": 20.0 + (i % 5) * 0.1}, learn=True)
>>> score, flagged = m.step({"value": 20.3}, learn=True)
>>> round(score, 3), flagged
(0.515, False)
>>> m.step({"value": 35.0}, learn=True)
(1.0, True)
>>> m.step({"value": float("nan")}, learn=True) is None
True
"""

from __future__ import annotations

import functools
import gc
import inspect
import io
import math
import pickle
import random
import tracemalloc
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from river import anomaly, base, compose, preprocessing

from monitor.common import riverpath
from monitor.settings import RiverTierSettings

SCALERS: dict[str, type[base.Transformer]] = {
    "standard": preprocessing.StandardScaler,
    "minmax": preprocessing.MinMaxScaler,
}
#: Readings a model learns before its size is measured (:func:`measured_bytes`).
MEASURE_READINGS = 1000


class OnlineModel(base.AnomalyDetector):
    """A River anomaly detector with optional scaling, a River anomaly filter, warm-up and a guard
    against non-finite input."""

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any] | None = None,
        preprocessing: str = "none",
        quantile: float | None = None,
        threshold: float | None = None,
        protect: bool = True,
        warmup: int = 0,
    ) -> None:
        self.model = model
        self.params = dict(params or {})
        self.preprocessing = preprocessing
        self.quantile = quantile
        self.threshold = threshold
        self.protect = protect
        self.warmup = warmup
        cls = riverpath.resolve(model)
        self.supervised = riverpath.is_supervised(cls)
        args = dict(self.params)
        if "seed" in inspect.signature(cls).parameters and "seed" not in args:
            args["seed"] = 0
        detector: Any = cls(**args)
        if preprocessing != "none":
            detector = compose.Pipeline(SCALERS[preprocessing](), detector)
        self.detector = detector
        if quantile is not None:
            self.filter: base.AnomalyFilter = anomaly.QuantileFilter(
                detector, q=quantile, protect_anomaly_detector=protect
            )
        elif threshold is not None:
            self.filter = anomaly.ThresholdFilter(
                detector, threshold=threshold, protect_anomaly_detector=protect
            )
        else:
            raise ValueError("give quantile or threshold: how a score becomes a flag")
        self.n = 0  # readings learned

    @classmethod
    def from_settings(cls, tier: RiverTierSettings) -> OnlineModel:
        return cls(
            tier.model,
            tier.params,
            tier.preprocessing,
            tier.quantile,
            tier.threshold,
            tier.protect,
            tier.warmup,
        )

    def step(self, x: dict[str, float], learn: bool) -> tuple[float, bool] | None:
        """Score ``x`` and flag it, then learn it (if ``learn``: not while its device is
        quarantined; not if flagged and ``protect``). None: not scored (non-finite, warming up)."""
        if not _finite(x):
            return None
        warming = self.n < self.warmup
        quantile = self.filter.quantile if isinstance(self.filter, anomaly.QuantileFilter) else None
        score = self._score(x) if quantile is not None or not warming else 0.0
        if not math.isfinite(score):
            return None
        flagged = not warming and bool(self.filter.classify(score))
        if learn:
            if not (flagged and self.protect):
                self._learn(x)
            if quantile is not None:
                quantile.update(score)  # what QuantileFilter.learn_one does after scoring
        return None if warming else (score, flagged)

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        """Learn ``x`` (River's API); a non-finite value leaves the model unchanged."""
        self.step(x, learn=True)  # type: ignore[arg-type]

    def score_one(self, x: dict[Hashable, Any]) -> float:
        """The detector's score of ``x`` (NaN for a non-finite value); nothing is learned."""
        return self._score(x) if _finite(x) else math.nan  # type: ignore[arg-type]

    def _score(self, x: dict[str, float]) -> float:
        if self.supervised:
            return float(self.detector.score_one({}, _target(x)))
        return float(self.detector.score_one(x))

    def _learn(self, x: dict[str, float]) -> None:
        if self.supervised:
            self.detector.learn_one({}, _target(x))
        else:
            self.detector.learn_one(x)
        self.n += 1

    def digest(self) -> bytes:
        """The learned state as bytes, equal for equal states: a pickle without a memo in which
        every ``random.Random`` counts the same (River's ``proba.Gaussian``, inside ``GaussianScorer``,
        holds an unseeded generator it never draws from when scoring)."""
        out = io.BytesIO()
        pickler = _StatePickler(out, protocol=4)
        pickler.fast = True  # no memo: the bytes do not depend on which equal objects are shared
        pickler.dump(self)
        return out.getvalue()

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments: two models with equal specs are clones of each other."""
        return dict(self._get_params())


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return (str, ("random.Random",)) if isinstance(obj, random.Random) else NotImplemented


def _finite(x: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in x.values())


def _target(x: Mapping[str, float]) -> float:
    (y,) = x.values()
    return y


@functools.lru_cache(maxsize=64)
def _measured(tier_json: str, keys: tuple[str, ...]) -> int:
    tier = RiverTierSettings.model_validate_json(tier_json)
    rng = random.Random(0)
    rows = [{k: rng.gauss(0.5, 0.1) for k in keys} for _ in range(MEASURE_READINGS)]
    warm = OnlineModel.from_settings(tier)  # what River allocates once per process is not the model's
    for x in rows[:10]:
        warm.step(x, learn=True)
    del warm
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    m = OnlineModel.from_settings(tier)
    for x in rows:
        m.step(x, learn=True)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    if not tracing:
        tracemalloc.stop()
    return max(size, 1)


def measured_bytes(tier: RiverTierSettings, keys: Sequence[str]) -> int:
    """The memory one of ``tier``'s models takes for a sensor with ``keys`` (its axes): what Python
    allocated to build it and have it learn :data:`MEASURE_READINGS` readings (``tracemalloc``),
    measured once per process."""
    return _measured(tier.model_dump_json(), tuple(keys))
