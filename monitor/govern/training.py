"""Retraining off the poll loop: window, hyperparameter search, held-out test, shadow, promotion.

The pipeline drives these steps; nothing here touches Kafka.

1. A rule fires ``retrain`` for a (device, sensor) pair. The pipeline builds a :class:`TrainingJob`
   (the pair's window in time order with its Kafka offsets and timestamps, taken from the ring
   buffer or re-read from the topic, plus a copy of the serving model) and submits it to a
   :class:`TrainingWorker`; the consumer goes on polling.
2. :func:`run_job` splits the window in time order: the oldest ``1 - holdout_fraction`` trains, the
   newest is held out. It adds labelled synthetic spikes to a copy of the held-out slice, runs the
   hyperparameter search (each trial fits on the train slice and is scored on the injected slice),
   scores the incumbent on the same injected slice, and refits the best parameters on the whole
   window: that model is the candidate.
3. Between batches the pipeline collects results (:meth:`TrainingWorker.poll`). :func:`decide`
   without a shadow rejects a candidate that does not beat the incumbent on the held-out slice by
   the margin; otherwise a :class:`Shadow` collects both models' scores on the pair's next live
   readings and :func:`decide` promotes the candidate only if its live scores are calibrated at
   least as well as the incumbent's. Every outcome carries a reason with its numbers.

Scoring replays the held-out slice the way the live pipeline scores: each reading is scored, then
learned unless flagged (:func:`step`), so the search tunes the online behaviour that will serve.

>>> import numpy as np
>>> scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])
>>> roc_auc(scores, labels), detection_rate(scores, labels, false_alarm_rate=0.01)
(0.75, 0.5)
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from monitor.detect.model import AdaptiveGaussian, distance_threshold
from monitor.govern.registry import TrainingData
from monitor.settings import LogUniform, RetrainSettings

log = logging.getLogger(__name__)

MetricName = Literal["auc", "detection_rate"]
WindowSource = Literal["buffer", "topic"]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Space = Mapping[str, Sequence[float] | LogUniform]

#: Model constructor parameters a job must give (the search overrides some of them).
BASE_PARAMS = ("fading", "var_fading", "resolution")
#: Fewest rows of each slice: a variance from fewer readings is noise, and so is a test on fewer.
MIN_TRAIN_ROWS = 8
MIN_HOLDOUT_ROWS = 4
#: Normal-law consistency factor of the median absolute deviation, and 1/sqrt(2) because the
#: difference of two readings carries the noise twice.
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)
_TOLERANCE = 1e-12
#: Beyond the calibrated limit a candidate must at least halve the incumbent's excess over it:
#: clearly better than a broken incumbent, not merely different from it.
LIVE_IMPROVEMENT = 0.5


# --- records ----------------------------------------------------------------------------------------


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
    learn_anomalies: bool
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
    """Where the training data came from: ``train`` fitted the trials, ``holdout`` tested them."""

    source: WindowSource
    topic: str
    partition: int
    train: Span
    holdout: Span

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
    """Held-out quality of one model: ROC AUC and detection rate at the target false-alarm rate."""

    auc: float
    detection_rate: float

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


# --- held-out slice ---------------------------------------------------------------------------------


def split_point(n: int, holdout_fraction: float) -> int:
    """Rows of the train slice: the oldest ``1 - holdout_fraction`` of ``n`` (at least
    ``MIN_TRAIN_ROWS``, with at least ``MIN_HOLDOUT_ROWS`` held out)."""
    held = math.ceil(n * holdout_fraction - _TOLERANCE)
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


# --- metrics ----------------------------------------------------------------------------------------


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
    allowed = math.floor(false_alarm_rate * len(neg) + _TOLERANCE)
    threshold = np.sort(neg)[::-1][min(allowed, len(neg) - 1)]
    return float(np.mean(pos > threshold))


def step(m: AdaptiveGaussian, f: Sequence[float], threshold_d2: float, learn_anomalies: bool) -> float:
    """Score one reading as the live pipeline does: its distance, then learn it unless flagged.
    A candidate under shadow is stepped with this too, so it keeps learning like a serving model."""
    row = tuple(f)
    d2 = m.distance(row)
    if learn_anomalies or d2 <= threshold_d2:
        m.learn(row)
    return d2


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The injected held-out slice and how to score it.

    Models are ranked by distance, which orders readings exactly as the chi-square score does but
    does not round to 1.0 for far outliers (a model far off the current level would otherwise tie
    every reading at 1.0)."""

    rows: FloatArray
    labels: BoolArray
    threshold_d2: float
    learn_anomalies: bool
    false_alarm_rate: float

    def evaluate(self, m: AdaptiveGaussian) -> Metrics:
        """Metrics of ``m`` replayed over the slice (``m`` learns on the way: pass a copy)."""
        d2 = np.array([step(m, row, self.threshold_d2, self.learn_anomalies) for row in self.rows.tolist()])
        return Metrics(roc_auc(d2, self.labels), detection_rate(d2, self.labels, self.false_alarm_rate))


# --- search -----------------------------------------------------------------------------------------


def search_points(
    space: Space, strategy: str, budget: int, rng: np.random.Generator
) -> list[dict[str, float]]:
    """The parameter sets to try. Grid: every combination, in order (it must fit the budget). Random:
    ``budget`` seeded draws; a space of lists only is sampled without repetition (the whole grid,
    shuffled, when it fits), a ``LogUniform`` range log-uniformly."""
    names = sorted(space)
    lists = [v for n in names if not isinstance(v := space[n], LogUniform)]
    if len(lists) < len(names):
        if strategy != "random":
            raise ValueError("a grid takes lists of values only; sample ranges with strategy random")
        return [{n: _draw(space[n], rng) for n in names} for _ in range(budget)]
    grid = [dict(zip(names, map(float, p), strict=True)) for p in itertools.product(*lists)]
    if strategy == "grid":
        if len(grid) > budget:
            raise ValueError(f"the grid has {len(grid)} points but the budget is {budget}")
        return grid
    return [grid[i] for i in rng.permutation(len(grid))[:budget]]


def _draw(values: Sequence[float] | LogUniform, rng: np.random.Generator) -> float:
    if isinstance(values, LogUniform):
        return float(np.exp(rng.uniform(math.log(values.low), math.log(values.high))))
    return float(values[int(rng.integers(len(values)))])


def search(
    train: FloatArray, held: HeldOut, base: Mapping[str, float], points: list[dict[str, float]]
) -> list[Trial]:
    """Fit one model per parameter set on ``train`` and score it on the held-out slice."""
    rows = [tuple(r) for r in train.tolist()]
    trials = []
    for point in points:
        params = {**base, **point}
        trials.append(Trial(params, held.evaluate(AdaptiveGaussian.fit(rows, **params))))
    return trials


def best_trial(trials: Sequence[Trial], metric: MetricName) -> Trial:
    """The trial with the highest ``metric``; the other metric breaks ties, then the earlier trial."""
    other: MetricName = "detection_rate" if metric == "auc" else "auc"
    return max(trials, key=lambda t: (t.metrics.get(metric), t.metrics.get(other)))


def run_job(job: TrainingJob, settings: RetrainSettings) -> TrainingResult:
    """Search, test and refit: the candidate for ``job``, with the evidence to judge it.
    Deterministic for a given job and settings (all randomness comes from ``job.seed``)."""
    start = time.perf_counter()
    cut = split_point(len(job.rows), settings.holdout_fraction)
    inject_rng, search_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(job.seed).spawn(2))
    held = held_out(job, cut, settings, inject_rng)
    points = search_points(settings.space, settings.strategy, settings.budget, search_rng)
    trials = search(job.rows[:cut], held, job.base_params, points)
    best = best_trial(trials, settings.metric)
    return TrainingResult(
        job=job,
        window=_window(job, cut),
        candidate=AdaptiveGaussian.fit([tuple(r) for r in job.rows.tolist()], **best.params),
        params=best.params,
        trials=tuple(trials),
        candidate_metrics=best.metrics,
        incumbent_metrics=held.evaluate(copy.deepcopy(job.incumbent)),
        metric=settings.metric,
        duration_s=time.perf_counter() - start,
    )


def held_out(job: TrainingJob, cut: int, settings: RetrainSettings, rng: np.random.Generator) -> HeldOut:
    """The rows after ``cut`` with spikes sized by the train slice's noise, scored with the job's
    anomaly threshold. The incumbent has already learned these readings live (they are its recent
    past), so the comparison leans towards keeping it: a bias on the safe side."""
    sigma = noise_sigma(job.rows[:cut], job.base_params["resolution"])
    lo, hi = settings.anomaly_min_sigma, settings.anomaly_max_sigma
    rows, labels = inject_anomalies(job.rows[cut:], rng, settings.anomalies, lo, hi, sigma)
    threshold = distance_threshold(job.anomaly_threshold, job.incumbent.n_features)
    return HeldOut(rows, labels, threshold, job.learn_anomalies, settings.target_false_alarm_rate)


def _window(job: TrainingJob, cut: int) -> TrainingWindow:
    train = Span.of(job.offsets[:cut], job.timestamps[:cut])
    holdout = Span.of(job.offsets[cut:], job.timestamps[cut:])
    return TrainingWindow(job.source, job.topic, job.partition, train, holdout)


def run_job_safely(job: TrainingJob, settings: RetrainSettings) -> TrainingResult:
    """:func:`run_job`, with any exception turned into a failed result (logged with the window)."""
    try:
        return run_job(job, settings)
    except Exception as exc:  # a failed retrain must never stop the worker nor the monitor
        first, last = (int(job.offsets[0]), int(job.offsets[-1])) if len(job.offsets) else (-1, -1)
        where = f"{job.topic}[{job.partition}] offsets {first}..{last}"
        log.exception("retrain of %s/%s on %s failed", job.device_id, job.sensor, where)
        return TrainingResult(job=job, error=f"{type(exc).__name__}: {exc}", metric=settings.metric)


# --- workers ----------------------------------------------------------------------------------------


class Trainer(Protocol):
    """What the pipeline holds: submit jobs, collect finished results between batches."""

    @property
    def pending(self) -> int: ...
    def submit(self, job: TrainingJob) -> None: ...
    def poll(self) -> list[TrainingResult]: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def close(self, timeout: float | None = None) -> bool: ...


class TrainingWorker:
    """Runs jobs one at a time on a background thread; :meth:`submit` and :meth:`poll` never block.

    A thread, not a process: a job is milliseconds of Python (a 32-row window and 16 trials take a
    few ms), and while it runs the consumer thread gets the interpreter back at least every switch
    interval (5 ms), and ``poll()`` waits inside librdkafka without holding it, so polls stay far
    inside ``max.poll.interval.ms`` (10 s at the least). A process would add a pickle round trip per
    job, seconds of start-up, and cannot be forked safely from a process running librdkafka's
    threads. The thread starts at the first job and is a daemon, so an unclosed worker does not
    keep the process alive.
    """

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self._jobs: queue.SimpleQueue[TrainingJob | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[TrainingResult] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished yet."""
        return self._pending

    def submit(self, job: TrainingJob) -> None:
        if self._closed:
            raise RuntimeError("the training worker is closed; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="telemon-training", daemon=True)
            self._thread.start()
        with self._idle:
            self._pending += 1
        self._jobs.put(job)

    def poll(self) -> list[TrainingResult]:
        """The results finished since the last poll, in completion order (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has finished (True) or ``timeout`` passes (False).
        For shutdown and tests, never the poll loop."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking jobs, finish the queued ones and stop the thread; True once it stopped.
        Results stay available to :meth:`poll`."""
        self._closed = True
        if self._thread is None:
            return True
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._results.put(run_job_safely(job, self.settings))
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


class InlineTrainer:
    """The same interface, running each job inside :meth:`submit` (offline evaluation, replays)."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self._results: list[TrainingResult] = []

    @property
    def pending(self) -> int:
        return 0

    def submit(self, job: TrainingJob) -> None:
        self._results.append(run_job_safely(job, self.settings))

    def poll(self) -> list[TrainingResult]:
        out, self._results = self._results, []
        return out

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


# --- shadow and promotion ---------------------------------------------------------------------------


class Shadow:
    """Both models' scores on the pair's next ``readings`` live readings.

    Per reading of the pair, the incumbent serves as usual and the candidate is stepped beside it::

        d2 = step(candidate, f, threshold_d2, learn_anomalies)
        shadow.push(incumbent_score, model.score(d2, len(f)))
    """

    def __init__(self, readings: int, anomaly_threshold: float) -> None:
        if readings < 1:
            raise ValueError(f"a shadow needs at least one reading, got {readings}")
        self.readings = readings
        self.anomaly_threshold = anomaly_threshold
        self.incumbent = np.zeros(readings)
        self.candidate = np.zeros(readings)
        self.n = 0

    @property
    def done(self) -> bool:
        return self.n >= self.readings

    def push(self, incumbent_score: float, candidate_score: float) -> None:
        if self.done:
            raise ValueError(f"the shadow already holds its {self.readings} readings: decide() now")
        self.incumbent[self.n] = incumbent_score
        self.candidate[self.n] = candidate_score
        self.n += 1


@dataclass(frozen=True, slots=True)
class Decision:
    """Promote or keep the incumbent, why (a sentence with the numbers), and those numbers."""

    promote: bool
    reason: str
    metrics: dict[str, float]


_LABELS = {"auc": "AUC", "detection_rate": "detection rate"}


def decide(
    result: TrainingResult, shadow: Shadow | None, margin: float, calibration_alpha: float = 0.01
) -> Decision:
    """Whether the candidate replaces the incumbent.

    Held out: the candidate's metric must exceed the incumbent's by more than ``margin``. Without a
    shadow (``None``: before one starts, or shadowing is off) that decides alone. Live, both models'
    scores are chi-square CDFs, uniform on normal data, and two checks must pass:

    - calibration: the KS distance of the candidate's scores from Uniform(0, 1) is within the
      ``calibration_alpha`` critical value;
    - alarms: the candidate's alarms (scores over the anomaly threshold) are within the binomial
      ``1 - calibration_alpha`` quantile of a calibrated model's;

    or, for either, the candidate's excess over that limit is at most half the incumbent's. A
    calibrated candidate passes. After a drift the incumbent is far off (every reading an alarm),
    and a candidate that is still catching up with a ramp, or whose scores are autocorrelated so
    that the KS test is strict, passes when it is clearly better; a candidate about as broken as
    the incumbent, or one that raises alarms a calibrated incumbent does not, is rejected.
    """
    if not result.ok:
        return Decision(False, f"training failed: {result.error}", {})
    held_ok, held_reason, numbers = _held_out(result, margin)
    if not held_ok or shadow is None:
        suffix = "" if not held_ok else "; no shadow evaluation"
        return Decision(held_ok, held_reason + suffix, numbers)
    if not shadow.done:
        raise ValueError(f"the shadow has {shadow.n} of {shadow.readings} readings: decide once it is done")
    live_ok, live_reason, live = _calibration(shadow, calibration_alpha)
    return Decision(live_ok, f"{held_reason}; {live_reason}", numbers | live)


def _held_out(result: TrainingResult, margin: float) -> tuple[bool, str, dict[str, float]]:
    if result.candidate_metrics is None or result.incumbent_metrics is None:
        raise ValueError("a successful result carries both models' held-out metrics")
    name = result.metric
    c, i = result.candidate_metrics.get(name), result.incumbent_metrics.get(name)
    beats = c - i > margin + _TOLERANCE
    sign = ">" if beats else ("<=" if abs(c - i - margin) <= _TOLERANCE else "<")
    reason = f"candidate {_LABELS[name]} {c:.3f} {sign} incumbent {i:.3f} + margin {margin:.3f}"
    return beats, reason, {"candidate_metric": c, "incumbent_metric": i, "margin": margin}


def _passes(candidate: float, incumbent: float, limit: float) -> bool:
    """Within the limit, or at least ``LIVE_IMPROVEMENT`` of the incumbent's excess removed."""
    return candidate <= limit or candidate - limit <= LIVE_IMPROVEMENT * (incumbent - limit)


def _calibration(shadow: Shadow, alpha: float) -> tuple[bool, str, dict[str, float]]:
    n = shadow.readings
    ks_c = float(stats.kstest(shadow.candidate, "uniform").statistic)
    ks_i = float(stats.kstest(shadow.incumbent, "uniform").statistic)
    ks_max = float(stats.kstwo.ppf(1.0 - alpha, n))
    alarms_c = int(np.sum(shadow.candidate > shadow.anomaly_threshold))
    alarms_i = int(np.sum(shadow.incumbent > shadow.anomaly_threshold))
    alarms_max = int(stats.binom.ppf(1.0 - alpha, n, 1.0 - shadow.anomaly_threshold))
    ks_ok, alarms_ok = _passes(ks_c, ks_i, ks_max), _passes(alarms_c, alarms_i, alarms_max)
    reason = (
        f"on {n} live readings the candidate's KS distance from uniform is {ks_c:.3f} (incumbent {ks_i:.3f},"
        f" acceptable up to {ks_max:.3f}) and it raised {alarms_c} alarms (incumbent {alarms_i},"
        f" a calibrated model up to {alarms_max})"
    )
    if not ks_ok:
        reason += ": its live scores are not calibrated and do not halve the incumbent's excess"
    elif not alarms_ok:
        reason += ": too many alarms, not half the incumbent's excess"
    numbers = {
        "shadow_readings": float(n),
        "candidate_ks": ks_c,
        "incumbent_ks": ks_i,
        "ks_critical": ks_max,
        "candidate_alarms": float(alarms_c),
        "incumbent_alarms": float(alarms_i),
        "alarms_allowed": float(alarms_max),
    }
    return ks_ok and alarms_ok, reason, numbers
