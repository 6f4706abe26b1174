"""The ingest stage's per-pair state: where each device's stream stands, and its integrity counts."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from monitor.schema import MAX_AXES
from monitor.state.store import N_CHECKS, PAIRS, Columns, Slab


class IngestState(Slab):
    """Per device: the last applied ``seq``, Kafka offset and Kafka timestamp. Per pair: the last
    reading's ``ts`` and values, the usual interval, the run of identical values and the
    integrity counters of the current evaluation interval."""

    last_seq: NDArray[np.int64]
    last_offset: NDArray[np.int64]  # Kafka offset of the last applied reading
    last_seen: NDArray[np.int64]  # Kafka timestamp (ms) of the device's last message
    last_ts: NDArray[np.int64]
    interval: NDArray[np.float32]
    stuck_run: NDArray[np.int32]
    integrity: NDArray[np.int32]
    last_vals: NDArray[np.float64]

    def columns(self) -> Columns:
        p = (PAIRS,)
        return {
            "last_seq": ((), np.int64, -1),
            "last_offset": ((), np.int64, -1),
            "last_seen": ((), np.int64, 0),
            "last_ts": (p, np.int64, 0),
            "interval": (p, np.float32, 0),
            "stuck_run": (p, np.int32, 0),
            "integrity": ((*p, N_CHECKS), np.int32, 0),
            "last_vals": ((*p, MAX_AXES), np.float64, np.nan),
        }

    def reset_interval(self, slot: int, s: int) -> None:
        """A new evaluation interval: the integrity counts start again."""
        self.integrity[slot, s] = 0
