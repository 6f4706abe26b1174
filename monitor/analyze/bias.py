"""Cohort bias: does the monitor treat a cohort (a firmware, a site, a hardware revision, ...)
differently from the rest of the fleet?

Per window of ``bias.window_s`` of event time (tumbling, aligned to the epoch), for each cohort
``label=value`` of the configured labels (``cohorts_file`` and ``channels.declare``) and each
sensor, against the rest of the fleet's pairs of that sensor:

- **Alert rate.** The cohort's alerts (firing records of device-scope rules that alert) per
  reading against the rest's: ``bias_alert_ratio`` = ``(a_c / n_c) / (a_r / n_r)`` (each count
  plus 0.5, so that no side's zero makes it infinite), and the exact conditional test of two
  Poisson rates: given ``a_c + a_r`` alerts, ``a_c`` is binomial with the cohort's share of the
  readings under equal rates (``bias_alert_pvalue``, two-sided; present once the window holds
  ``bias.min_alerts`` alerts of the sensor). Readings are the exposure.
- **Scores.** Each device's mean anomaly score of the window; the cohort's devices against the
  rest's by the Mann-Whitney U test (``bias_score_pvalue``, two-sided) and the difference of the
  two medians (``bias_score_shift``; > 0: the cohort's devices look more anomalous to the model).
  Devices, not readings, are the units: a device's readings are not independent draws, so a test
  on readings would call every difference between two devices significant. Present once each
  side has ``bias.min_devices`` devices.
- ``bias_devices``, ``bias_readings``, ``bias_alerts`` of the cohort in the window, and ``bias``: 1
  when a present p-value is under ``bias.alpha``.

A pair's evaluation interval counts in the window of its last reading's event time, an alert in
the window of its own. A window closes once the latest event time seen is ``bias.lateness_s``
past its end, so partitions read unevenly (a consumer catching up reads some ahead of others)
still count in their windows; what arrives for a closed window is left out (``late``). Windows
close in order, and one that received nothing gives nothing.

These are the signals of the cohort's next evaluations (until the next window closes), so a
cohort rule can alert on them, and the service's gauges (``telemon_cohort_bias_*``). Feedback
precision per cohort comes from the verdicts on alerts, which carry their cohorts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from monitor.settings import BiasSettings

#: The signals a window's comparison gives a cohort's evaluations.
SIGNALS = frozenset(
    {
        "bias",
        "bias_devices",
        "bias_readings",
        "bias_alerts",
        "bias_alert_ratio",
        "bias_alert_pvalue",
        "bias_score_shift",
        "bias_score_pvalue",
    }
)


Counts = defaultdict[int, Counter[str]]


@dataclass
class _Window:
    """One window's tallies, per sensor index."""

    readings: Counts = field(default_factory=lambda: defaultdict(Counter))  # sensor -> device -> n
    alerts: Counts = field(default_factory=lambda: defaultdict(Counter))
    # per sensor: device -> [score sum, scores]
    scores: defaultdict[int, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(dict))


class CohortBias:
    """The windows' tallies and the latest closed window's signals per (cohort key, sensor index).

    >>> from monitor.settings import BiasSettings
    >>> bias = CohortBias(BiasSettings(window_s=60, lateness_s=0, min_alerts=2, min_devices=2))
    >>> labels = {"d1": {"fw": "2.1"}, "d2": {"fw": "2.1"}, "d3": {"fw": "1.0"}, "d4": {"fw": "1.0"}}
    >>> for d, mean in (("d1", 0.9), ("d2", 0.8), ("d3", 0.5), ("d4", 0.4)):
    ...     bias.on_interval(d, labels[d], 0, readings=100, score_sum=100 * mean, scored=100, ts=1_000)
    >>> for d in ("d1", "d1", "d2", "d2", "d3"):
    ...     bias.on_alert(d, labels[d], 0, ts=2_000)
    >>> bias.on_interval("d1", labels["d1"], 0, 1, 0.5, 1, ts=61_000)  # closes the first window
    >>> sig = bias.signals("fw=2.1", 0)
    >>> sig["bias_alerts"], round(sig["bias_alert_ratio"], 2), sig["bias_score_shift"]
    (4.0, 3.0, 0.4)
    """

    def __init__(self, settings: BiasSettings) -> None:
        self.settings = settings
        self._window_ms = int(settings.window_s * 1000)
        self._lateness_ms = int(settings.lateness_s * 1000)
        self._open: dict[int, _Window] = {}  # by window index: windows not closed yet
        self._closed_below = -1 << 62  # windows below this index are closed
        self._max_ts = -1 << 62  # the latest event time seen
        self._labels: dict[str, dict[str, str]] = {}  # device -> its pair's labels, as last seen
        self.latest: dict[tuple[str, int], dict[str, float]] = {}  # (cohort key, sensor) -> signals
        self.closed: list[tuple[str, int, dict[str, float]]] = []  # windows closed since last taken
        self.late = 0  # readings and alerts of windows already closed: left out

    def _window(self, ts: int) -> _Window | None:
        """The open window of event time ``ts`` (None: it closed), after closing every window whose
        end is more than ``bias.lateness_s`` behind the latest event time."""
        if ts > self._max_ts:
            self._max_ts = ts
            due = (ts - self._lateness_ms) // self._window_ms  # windows below this index are over
            for w in sorted(i for i in self._open if i < due):
                self._close(self._open.pop(w))
            self._closed_below = max(self._closed_below, due)
        w = ts // self._window_ms
        if w < self._closed_below:
            return None
        return self._open.setdefault(w, _Window())

    def on_interval(
        self,
        device: str,
        labels: dict[str, str],
        s: int,
        readings: int,
        score_sum: float,
        scored: int,
        ts: int,
    ) -> None:
        """A pair's evaluation interval ending at event time ``ts``: its readings, and the sum and
        count of its scores (counted in the window of ``ts``)."""
        window = self._window(ts)
        if not readings:
            return
        if window is None:
            self.late += readings
            return
        self._labels[device] = labels
        window.readings[s][device] += readings
        if scored:
            acc = window.scores[s].setdefault(device, [0.0, 0.0])
            acc[0] += score_sum
            acc[1] += scored

    def on_alert(self, device: str, labels: dict[str, str], s: int, ts: int) -> None:
        """A firing alert of a device-scope rule that alerts, at event time ``ts``."""
        window = self._window(ts)
        if window is None:
            self.late += 1
            return
        self._labels[device] = labels
        window.alerts[s][device] += 1

    def signals(self, key: str, s: int) -> dict[str, float]:
        """The latest closed window's signals of cohort ``key`` and sensor ``s`` (none before)."""
        return self.latest.get((key, s), {})

    def take_closed(self) -> list[tuple[str, int, dict[str, float]]]:
        """The comparisons of the windows closed since the last call (for the metrics)."""
        out, self.closed = self.closed, []
        return out

    def _close(self, now: _Window) -> None:
        cfg = self.settings
        self.latest = {}
        for s, per_device in now.readings.items():
            cohorts: defaultdict[str, list[str]] = defaultdict(list)
            for device in per_device:
                for label, value in self._labels.get(device, {}).items():
                    if cfg.labels is None or label in cfg.labels:
                        cohorts[f"{label}={value}"].append(device)
            for key in sorted(cohorts)[: cfg.max_cohorts]:
                sig = self._compare(now, set(cohorts[key]), s)
                self.latest[(key, s)] = sig
                self.closed.append((key, s, sig))

    def _compare(self, now: _Window, members: set[str], s: int) -> dict[str, float]:
        cfg = self.settings
        readings, alerts, scores = now.readings[s], now.alerts[s], now.scores[s]
        n_c = sum(readings[d] for d in members)
        n_r = readings.total() - n_c
        a_c = sum(n for d, n in alerts.items() if d in members)
        a_r = alerts.total() - a_c
        sig = {"bias_devices": float(len(members)), "bias_readings": float(n_c), "bias_alerts": float(a_c)}
        p_values = []
        if n_r:
            sig["bias_alert_ratio"] = ((a_c + 0.5) / n_c) / ((a_r + 0.5) / n_r)
            if a_c + a_r >= cfg.min_alerts:
                p = float(sps.binomtest(a_c, a_c + a_r, n_c / (n_c + n_r)).pvalue)
                sig["bias_alert_pvalue"] = p
                p_values.append(p)
        mine = [acc[0] / acc[1] for d, acc in scores.items() if d in members and acc[1]]
        rest = [acc[0] / acc[1] for d, acc in scores.items() if d not in members and acc[1]]
        if min(len(mine), len(rest)) >= cfg.min_devices:
            sig["bias_score_shift"] = round(float(np.median(mine) - np.median(rest)), 9)
            p = float(sps.mannwhitneyu(mine, rest, alternative="two-sided").pvalue)
            sig["bias_score_pvalue"] = p
            p_values.append(p)
        sig["bias"] = float(any(p < cfg.alpha for p in p_values))
        return sig
