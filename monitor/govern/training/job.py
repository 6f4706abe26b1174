"""A retraining job and what it produces: the window (rows in time order with their Kafka offsets
and timestamps), the job itself, the trials of a search and the result."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from monitor.detect.model import AdaptiveGaussian
from monitor.govern.registry import TrainingData
from monitor.settings import Flagged, LogUniform

MetricName = Literal["auc", "detection_rate"]
WindowSource = Literal["buffer", "topic"]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Space = Mapping[str, Sequence[float] | LogUniform]

#: Model constructor parameters a job must give (the search overrides some of them).
BASE_PARAMS = ("fading", "var_fading", "resolution", "trend")
#: Fewest rows of each slice: a variance from fewer readings is noise, and so is a test on fewer.
MIN_TRAIN_ROWS = 8
MIN_HOLDOUT_ROWS = 4
#: Slack for comparisons of floats that are equal in exact arithmetic.
TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """One retrain of one pair: its window (rows in time order, n x k) and a copy of the serving model.

    Pass the serving model itself: the arrays and the incumbent are copied at construction, so the
    live model and ring buffer may change while the job waits or runs. ``seed`` fixes the injected
    anomalies and the random search (:func:`job_seed` derives one per pair and version).
    """

    device_id: str
    sensor: str
    rows: FloatArray
    offsets: NDArray[np.int64]
    timestamps: NDArray[np.int64]
    topic: str
    partition: int
    incumbent: AdaptiveGaussian
    incumbent_version: int
    base_params: Mapping[str, float]
    anomaly_threshold: float
    flagged: Flagged
    seed: int
    trigger_rule: str
    trigger_alert_id: str
    source: WindowSource = "buffer"

    def __post_init__(self) -> None:
        rows = np.array(self.rows, dtype=np.float64, ndmin=2)
        offsets = np.array(self.offsets, dtype=np.int64)
        timestamps = np.array(self.timestamps, dtype=np.int64)
        _check_window(rows, offsets, timestamps, self.incumbent.n_features)
        _check_params(self.base_params, self.anomaly_threshold)
        for name, array in (("rows", rows), ("offsets", offsets), ("timestamps", timestamps)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        object.__setattr__(self, "incumbent", copy.deepcopy(self.incumbent))
        object.__setattr__(self, "base_params", dict(self.base_params))


def _check_window(rows: FloatArray, offsets: NDArray[np.int64], ts: NDArray[np.int64], k: int) -> None:
    if rows.ndim != 2 or rows.shape[1] != k:
        raise ValueError(f"rows must be (n, {k}) for a {k}-feature incumbent, got shape {rows.shape}")
    if offsets.shape != (len(rows),) or ts.shape != (len(rows),):
        raise ValueError(f"{len(rows)} rows need as many offsets and timestamps: {offsets.shape}, {ts.shape}")
    if not np.isfinite(rows).all():
        raise ValueError("rows contain NaN or infinity: a training window holds validated readings only")


def _check_params(params: Mapping[str, float], anomaly_threshold: float) -> None:
    missing = [p for p in BASE_PARAMS if p not in params]
    if missing:
        raise ValueError(f"base_params lacks {missing}: give {list(BASE_PARAMS)}")
    if not 0.0 < anomaly_threshold < 1.0:
        raise ValueError(f"anomaly_threshold must be in (0, 1), got {anomaly_threshold}")


def job_seed(seed: int, device_id: str, sensor: str, version: int) -> int:
    """The seed of one retrain: stable across processes (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}/{device_id}/{sensor}/{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True, slots=True)
class Span:
    """Part of a training window, by Kafka offset and event time (epoch ms)."""

    rows: int
    first_offset: int
    last_offset: int
    first_ts: int
    last_ts: int

    @classmethod
    def of(cls, offsets: NDArray[np.int64], timestamps: NDArray[np.int64]) -> Span:
        return cls(
            len(offsets), int(offsets.min()), int(offsets.max()), int(timestamps.min()), int(timestamps.max())
        )


@dataclass(frozen=True, slots=True)
class TrainingWindow:
    """Where the training data came from: ``train`` fitted the trials, ``holdout`` tested them;
    ``note`` says why the ring buffer was used rather than the topic (or how the topic fell
    short), ``skipped`` counts the device's records in the range read that failed the checks."""

    source: WindowSource
    topic: str
    partition: int
    train: Span
    holdout: Span
    note: str = ""
    skipped: int = 0
    read_s: float = 0.0  # seconds spent reading the topic (0: the ring's rows)

    def training_data(self) -> TrainingData:
        """The whole window as the registry records it (the candidate is refitted on all of it)."""
        t, h = self.train, self.holdout
        return TrainingData(
            topic=self.topic,
            partition=self.partition,
            first_offset=min(t.first_offset, h.first_offset),
            last_offset=max(t.last_offset, h.last_offset),
            readings=t.rows + h.rows,
            first_ts=min(t.first_ts, h.first_ts),
            last_ts=max(t.last_ts, h.last_ts),
        )


@dataclass(frozen=True, slots=True)
class Metrics:
    """Held-out quality of one model: ROC AUC and detection rate at the target false-alarm rate,
    and the share of the slice's real (normal) readings it flags at the serving threshold."""

    auc: float
    detection_rate: float
    alarm_rate: float = 0.0  # 0 in records from before it was measured

    def get(self, name: MetricName) -> float:
        return self.auc if name == "auc" else self.detection_rate


@dataclass(frozen=True, slots=True)
class Trial:
    """One point of the search: the model parameters and their held-out metrics."""

    params: dict[str, float]
    metrics: Metrics


@dataclass(frozen=True, eq=False)
class TrainingResult:
    """What a job produced. ``error`` is set (and the rest empty) when the job failed.

    ``trials`` and ``candidate_metrics`` come from fits on the train slice; ``candidate`` is the
    best parameters refitted on the whole window, so it serves from the newest readings.
    """

    job: TrainingJob
    error: str | None = None
    window: TrainingWindow | None = None
    candidate: AdaptiveGaussian | None = None
    params: dict[str, float] = field(default_factory=dict)
    trials: tuple[Trial, ...] = ()
    candidate_metrics: Metrics | None = None
    incumbent_metrics: Metrics | None = None
    metric: MetricName = "auc"
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
