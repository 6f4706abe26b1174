"""The hyperparameter search (grid or random, seeded per job) and :func:`run_job`, which runs it on a
job's train slice, scores each trial and the incumbent on the held-out slice and refits the best."""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

from monitor.detect.model import AdaptiveGaussian, distance_threshold
from monitor.govern.training.heldout import HeldOut, inject_anomalies, noise_sigma, split_point
from monitor.govern.training.job import (
    FloatArray,
    MetricName,
    Space,
    Span,
    TrainingJob,
    TrainingResult,
    TrainingWindow,
    Trial,
)
from monitor.settings import LogUniform, RetrainSettings


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
    return HeldOut(rows, labels, threshold, job.flagged, settings.target_false_alarm_rate)


def _window(job: TrainingJob, cut: int) -> TrainingWindow:
    train = Span.of(job.offsets[:cut], job.timestamps[:cut])
    holdout = Span.of(job.offsets[cut:], job.timestamps[cut:])
    return TrainingWindow(job.source, job.topic, job.partition, train, holdout)
