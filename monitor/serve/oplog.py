"""What ``telemon run`` tells its log as it goes: each retrain, promotion and rejection the batch
results carry (one INFO line each), and every :data:`SUMMARY_INTERVAL_S` one line of throughput and
lag.

The decisions come from :class:`~monitor.pipeline.BatchResult`: a retrained candidate is a
registered version with a parent (``versions``; the online model registered as v1 on a pair's first
retrain is not a retrain), promotions and rejections are its ``promoted`` and ``rejected`` audit
events. The summary counts batches as the service records them and is due on an injected monotonic
clock, so tests drive it without waiting.

>>> s = Summary(interval_s=60, clock=iter([0.0, 30.0, 61.0]).__next__)
>>> s.add(BatchResult(), lag=0, wall_ms=0)
>>> s.due(degraded=False) is None
True
>>> line = s.due(degraded=False)
>>> line[:35], line[-40:]
('last 61 s: 0.0 readings/s (0 valid)', 'consumer lag 0, event lag -, degraded no')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from monitor.govern.registry import AuditEvent, ModelVersion
from monitor.pipeline import BatchResult

log = logging.getLogger(__name__)

#: Seconds between two summary lines (a module constant: no setting for it).
SUMMARY_INTERVAL_S = 60.0


def retrain_line(v: ModelVersion) -> str:
    """A candidate trained: which pair, its number over the serving one, on what, why."""
    t = v.trained_on
    why = f"rule {v.trigger_rule}" if v.trigger_rule else "no rule"
    source = f", rows from the {v.source}" if v.source else ""
    rows = f"{t.readings} readings of {t.topic}/{t.partition} offsets {t.first_offset}-{t.last_offset}"
    pair = f"{v.device_id}/{v.sensor}"
    return f"retrained {pair}: candidate v{v.version} (serving v{v.parent}) on {rows}{source}; {why}"


def decision_line(e: AuditEvent) -> str:
    """A promotion or a rejection, with the governor's reason."""
    who = f"{e.device_id}/{e.sensor}"
    if e.kind == "promoted":
        return f"promoted {who}: v{e.version} replaces v{e.previous} ({e.reason})"
    if e.version == e.previous:  # the job failed: no candidate was registered
        return f"rejected the retrain of {who}: v{e.previous} keeps serving ({e.reason})"
    return f"rejected {who}: candidate v{e.version}, v{e.previous} keeps serving ({e.reason})"


def decision_lines(result: BatchResult) -> Iterator[str]:
    """The batch's retrains, then its promotions and rejections, in the order decided."""
    for v in result.versions:
        if v.parent:
            yield retrain_line(v)
    for e in result.audit:
        if e.kind in ("promoted", "rejected"):
            yield decision_line(e)


def log_decisions(result: BatchResult) -> None:
    for line in decision_lines(result):
        log.info("%s", line)


@dataclass
class Window:
    """What the batches recorded since the last summary line."""

    batches: int = 0
    valid: int = 0
    messages: int = 0
    dead_letters: int = 0
    alerts: int = 0
    retrains: int = 0
    promoted: int = 0
    rejected: int = 0
    lag_sum_s: float = 0.0  # event lag of the valid readings, summed (the histogram's _sum)
    lag_count: int = 0

    def add(self, result: BatchResult, wall_ms: float) -> None:
        self.batches += 1
        valid = int(result.valid.sum())
        self.valid += valid
        self.messages += valid + len(result.dead_letters)
        self.dead_letters += len(result.dead_letters)
        self.alerts += len(result.alerts)
        self.retrains += sum(1 for v in result.versions if v.parent)
        self.promoted += sum(1 for e in result.audit if e.kind == "promoted")
        self.rejected += sum(1 for e in result.audit if e.kind == "rejected")
        if result.event_ts.size:
            lags = (wall_ms - result.event_ts.astype(float)).clip(min=0.0) / 1000.0
            self.lag_sum_s += float(lags.sum())
            self.lag_count += int(lags.size)


def format_summary(w: Window, seconds: float, lag: int | None, degraded: bool) -> str:
    """One line: rates over ``seconds``, counts, the consumer lag (messages; ``-`` before the
    first fetch) and the mean event lag of the window's readings (``-`` without readings)."""
    s = max(seconds, 1e-9)
    event_lag = f"{w.lag_sum_s / w.lag_count:.3g} s" if w.lag_count else "-"
    consumer_lag = "-" if lag is None else str(lag)
    return (
        f"last {seconds:.0f} s: {w.valid / s:.1f} readings/s ({w.valid} valid), "
        f"{w.messages / s:.1f} messages/s, {w.batches} batches, {w.dead_letters} dead letters, "
        f"{w.alerts} alerts, {w.retrains} retrains ({w.promoted} promoted, {w.rejected} rejected), "
        f"consumer lag {consumer_lag}, event lag {event_lag}, degraded {'yes' if degraded else 'no'}"
    )


class Summary:
    """Counts batches and says, every ``interval_s`` of ``clock``, what they amounted to."""

    def __init__(
        self, interval_s: float = SUMMARY_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.since = clock()
        self.window = Window()
        self.lag: int | None = None  # the latest consumer lag, summed over the assigned partitions

    def add(self, result: BatchResult, lag: int | None, wall_ms: float | None = None) -> None:
        """A recorded batch; ``wall_ms`` (epoch ms, default the wall clock) dates its event lag."""
        self.window.add(result, time.time() * 1000.0 if wall_ms is None else wall_ms)
        self.lag = lag

    def due(self, degraded: bool) -> str | None:
        """The summary line once ``interval_s`` has passed since the last (which starts a new
        window), else None."""
        now = self.clock()
        if now - self.since < self.interval_s:
            return None
        line = format_summary(self.window, now - self.since, self.lag, degraded)
        self.since, self.window = now, Window()
        return line

    def log_if_due(self, degraded: bool) -> None:
        line = self.due(degraded)
        if line is not None:
            log.info("%s", line)
