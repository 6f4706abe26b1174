"""The naive per-record pipeline ``bench/compare.py`` holds telemon against: what a River user
would write first, record by record.

Per message: validate with pydantic; per device, a ``MinMaxScaler | HalfSpaceTrees`` model scores
the reading (its values keyed ``sensor.axis``) and learns it; per (device, sensor), an ADWIN
watches the scores, and every 32 scores a two-sample KS test (``scipy.stats.ks_2samp``) and a PSI
compare the latest 96 with the first 96; a labelled Prometheus counter counts every reading.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ValidationError
from river import anomaly, compose, drift, preprocessing
from scipy import stats

WINDOW, EVERY, BINS = 96, 32, 10


class NaiveReading(BaseModel):
    device_id: str
    sensor: str
    ts: int
    seq: int
    values: dict[str, float]
    unit: str
    schema_version: int


class _Pair:
    def __init__(self) -> None:
        self.adwin = drift.ADWIN()
        self.reference: list[float] = []
        self.current: deque[float] = deque(maxlen=WINDOW)
        self.seen = 0
        self.drifts = 0


class NaivePipeline:
    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.readings = Counter("naive_readings", "", ["sensor"], registry=registry)
        self.drifts = Counter("naive_drifts", "", ["sensor", "detector"], registry=registry)
        self.models: dict[str, compose.Pipeline] = {}
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.rejected = 0

    def process(self, values: list[bytes]) -> None:
        for value in values:
            self.one(value)

    def one(self, value: bytes) -> None:
        try:
            r = NaiveReading.model_validate_json(value)
        except ValidationError:
            self.rejected += 1
            return
        x = {f"{r.sensor}.{k}": v for k, v in r.values.items()}
        model = self.models.get(r.device_id)
        if model is None:
            model = self.models[r.device_id] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=1)
        score = model.score_one(x)
        model.learn_one(x)
        self.readings.labels(r.sensor).inc()
        self._drift(self.pairs.setdefault((r.device_id, r.sensor), _Pair()), r.sensor, score)

    def _drift(self, pair: _Pair, sensor: str, score: float) -> None:
        pair.adwin.update(score)
        if pair.adwin.drift_detected:
            self.drifts.labels(sensor, "adwin").inc()
        if len(pair.reference) < WINDOW:
            pair.reference.append(score)
            return
        pair.current.append(score)
        pair.seen += 1
        if pair.seen % EVERY or len(pair.current) < WINDOW:
            return
        if stats.ks_2samp(pair.reference, list(pair.current)).pvalue < 1e-6:
            self.drifts.labels(sensor, "ks").inc()
        if _psi(np.asarray(pair.reference), np.asarray(pair.current)) > 0.5:
            self.drifts.labels(sensor, "psi").inc()


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, 1e-4), np.maximum(cur, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
