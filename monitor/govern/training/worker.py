"""Where jobs run: :class:`TrainingWorker` (a background thread; the consumer goes on polling) or
:class:`InlineTrainer` (in the caller, for offline evaluation: the same results)."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Protocol

from monitor.govern.training.job import TrainingJob, TrainingResult
from monitor.govern.training.search import run_job
from monitor.govern.training.source import Sourced, TopicSource
from monitor.settings import RetrainSettings

log = logging.getLogger(__name__)


def run_job_safely(job: TrainingJob, settings: RetrainSettings) -> TrainingResult:
    """:func:`run_job`, with any exception turned into a failed result (logged with the window)."""
    try:
        return run_job(job, settings)
    except Exception as exc:  # a failed retrain must never stop the worker nor the monitor
        first, last = (int(job.offsets[0]), int(job.offsets[-1])) if len(job.offsets) else (-1, -1)
        where = f"{job.topic}[{job.partition}] offsets {first}..{last}"
        log.exception("retrain of %s/%s on %s failed", job.device_id, job.sensor, where)
        return TrainingResult(job=job, error=f"{type(exc).__name__}: {exc}", metric=settings.metric)


def run_sourced(job: TrainingJob, sourced: Sourced, settings: RetrainSettings) -> TrainingResult:
    """:func:`run_job_safely` on the rows ``sourced`` found for ``job``; the result is ``job``'s
    (the governor waits for that one), its window says where the rows came from."""
    result = run_job_safely(sourced.job, settings)
    window = result.window
    if window is not None:
        window = dataclasses.replace(
            window, note=sourced.note, skipped=sourced.skipped, read_s=sourced.read_s
        )
    return dataclasses.replace(result, job=job, window=window)


class Trainer(Protocol):
    """What the pipeline holds: submit jobs, collect finished results between batches."""

    @property
    def pending(self) -> int: ...
    @property
    def history(self) -> int:
        """Readings each job re-reads from the readings topic (0: it trains on the ring's window)."""
        ...

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

    def __init__(self, settings: RetrainSettings, source: TopicSource | None = None) -> None:
        self.settings = settings
        self.source = source  # re-reads each job's window from the readings topic (None: the ring's)
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

    @property
    def history(self) -> int:
        return 0 if self.source is None else self.source.retrain.history_readings

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
        stopped = not self._thread.is_alive()
        if stopped and self.source is not None:
            self.source.close()
        return stopped

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._results.put(run_sourced(job, self._window(job), self.settings))
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _window(self, job: TrainingJob) -> Sourced:
        if self.source is None:
            return Sourced(job)
        try:
            return self.source.window(job)
        except Exception as exc:  # the ring's window is still there: never lose the job
            log.exception("re-reading the window of %s/%s failed", job.device_id, job.sensor)
            return Sourced(job, f"reading the topic failed ({type(exc).__name__}: {exc}): ring buffer used")


class InlineTrainer:
    """The same interface, running each job inside :meth:`submit` (offline evaluation, replays)."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self._results: list[TrainingResult] = []

    @property
    def pending(self) -> int:
        return 0

    @property
    def history(self) -> int:
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
