"""Retraining off the poll loop: window, hyperparameter search, held-out test, shadow, promotion.

The pipeline drives these steps; only :mod:`~monitor.govern.training.source` reads Kafka (through
:mod:`monitor.ingest.history`), on the worker's thread.

1. A rule fires ``retrain`` for a (device, sensor) pair. The pipeline builds a :class:`TrainingJob`
   (the pair's window in time order with its Kafka offsets and timestamps, taken from the ring
   buffer, plus a copy of the serving model) and submits it to a :class:`TrainingWorker`; the
   consumer goes on polling. The worker's :class:`TopicSource` first replaces the ring's window by
   the pair's last ``retrain.history_readings`` readings re-read from the readings topic (the ring
   stays the fallback: retention, timeout, no broker).
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

from monitor.govern.training.heldout import (
    HeldOut,
    detection_rate,
    inject_anomalies,
    noise_sigma,
    roc_auc,
    split_point,
    step,
)
from monitor.govern.training.job import (
    BASE_PARAMS,
    MIN_HOLDOUT_ROWS,
    MIN_TRAIN_ROWS,
    MetricName,
    Metrics,
    Space,
    Span,
    TrainingJob,
    TrainingResult,
    TrainingWindow,
    Trial,
    WindowSource,
    job_seed,
)
from monitor.govern.training.promotion import Decision, Shadow, decide
from monitor.govern.training.search import best_trial, run_job, search, search_points
from monitor.govern.training.source import Sourced, TopicSource
from monitor.govern.training.worker import InlineTrainer, Trainer, TrainingWorker, run_job_safely, run_sourced

__all__ = [
    "BASE_PARAMS", "MIN_HOLDOUT_ROWS", "MIN_TRAIN_ROWS", "Decision", "HeldOut", "InlineTrainer",
    "MetricName", "Metrics", "Shadow", "Sourced", "Space", "Span", "TopicSource", "Trainer", "TrainingJob",
    "TrainingResult",
    "TrainingWindow", "TrainingWorker", "Trial", "WindowSource", "best_trial", "decide",
    "detection_rate", "inject_anomalies", "job_seed", "noise_sigma", "roc_auc", "run_job",
    "run_job_safely", "run_sourced", "search", "search_points", "split_point", "step",
]  # fmt: skip
