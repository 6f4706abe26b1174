"""Per-device data-integrity checks, run on every valid reading before it reaches a model.

- ``duplicate``: the device's ``seq`` equals the last applied one. The reading is not applied again.
- ``out_of_order``: ``seq`` went backwards (a late message, or a reboot that reset the counter).
- ``gap``: the interval since the pair's previous reading exceeds ``gap_factor`` times its usual
  interval (an exponentially weighted mean of past intervals).
- ``stuck_at``: ``stuck_run`` identical consecutive values (reported once per run).
- ``clock_skew``: the reading's ``ts`` differs from the Kafka message timestamp by more than
  ``max_clock_skew_ms``.

Each check increments a counter of the pair; the rules read the counts at each evaluation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from monitor.ingest.features import Features
from monitor.ingest.state import IngestState
from monitor.schema import ReadingLike
from monitor.settings import IntegritySettings
from monitor.state.store import CHECKS

STUCK, GAP, DUPLICATE, OUT_OF_ORDER, CLOCK_SKEW = range(len(CHECKS))
INTERVAL_WEIGHT = 0.05


class IntegrityChecker:
    def __init__(self, state: IngestState, settings: IntegritySettings) -> None:
        self.state = state
        self.settings = settings
        self.events = np.zeros((state.n_sensors, len(CHECKS)), np.int64)  # since take_events()

    def take_events(self) -> NDArray[np.int64]:
        """Events per (sensor, check) since the last call (for metrics)."""
        events, self.events = self.events, np.zeros_like(self.events)
        return events

    def _flag(self, slot: int, s: int, check: int) -> None:
        self.state.integrity[slot, s, check] += 1
        self.events[s, check] += 1

    def check_seq(self, slot: int, s: int, r: ReadingLike) -> bool:
        """Track the device's sequence number; False if the reading was already applied."""
        st = self.state
        last = int(st.last_seq[slot])
        if r.seq == last:
            self._flag(slot, s, DUPLICATE)
            return False
        if r.seq < last:
            self._flag(slot, s, OUT_OF_ORDER)
        st.last_seq[slot] = r.seq
        return True

    def check_values(self, slot: int, s: int, ts: int, f: Features, kafka_ts: int) -> None:
        """Gap, stuck-at and clock-skew checks for an applied reading (``f``: its features)."""
        st, cfg = self.state, self.settings
        last_ts = int(st.last_ts[slot, s])
        if last_ts:
            self._check_gap(slot, s, ts - last_ts)
        st.last_ts[slot, s] = ts
        last = st.last_vals[slot, s]
        if all(float(last[i]) == v for i, v in enumerate(f)):
            st.stuck_run[slot, s] += 1
            if st.stuck_run[slot, s] == cfg.stuck_run - 1:
                self._flag(slot, s, STUCK)
        else:
            st.stuck_run[slot, s] = 0
            last[: len(f)] = f
        if cfg.max_clock_skew_ms and kafka_ts > 0 and abs(ts - kafka_ts) > cfg.max_clock_skew_ms:
            self._flag(slot, s, CLOCK_SKEW)

    def _check_gap(self, slot: int, s: int, dt: int) -> None:
        st = self.state
        usual = float(st.interval[slot, s])
        if usual > 0 and dt > self.settings.gap_factor * usual:
            self._flag(slot, s, GAP)
            return  # a gap does not teach the usual interval
        if dt > 0:
            st.interval[slot, s] = dt if usual == 0 else usual + INTERVAL_WEIGHT * (dt - usual)
