"""The govern stage's per-pair state: the recent readings a retrain learns from (with their Kafka
offsets), the serving and latest model versions, and the quarantine flag."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from monitor.schema import MAX_AXES
from monitor.state.store import PAIRS, Columns, DeviceStates, Slab


class GovernState(Slab):
    """A ring of the last ``retrain_window`` readings per pair, version numbers, quarantine."""

    quarantined: NDArray[np.int8]  # per device, 1: its models do not learn
    latest_version: NDArray[np.int32]  # highest version number given to the pair
    raw_n: NDArray[np.int64]
    raw: NDArray[np.float32]
    raw_off: NDArray[np.int64]
    raw_ts: NDArray[np.int64]

    def __init__(self, n_sensors: int, retrain_window: int) -> None:
        self.retrain_window = retrain_window
        self.versions: dict[tuple[int, int], int] = {}  # (slot, sensor) of pairs retrained at least once
        super().__init__(n_sensors)

    def columns(self) -> Columns:
        p, w = (PAIRS,), self.retrain_window
        return {
            "quarantined": ((), np.int8, 0),
            "latest_version": (p, np.int32, 1),
            "raw_n": (p, np.int64, 0),
            "raw": ((*p, w, MAX_AXES), np.float32, 0),
            "raw_off": ((*p, w), np.int64, -1),
            "raw_ts": ((*p, w), np.int64, 0),
        }

    def version(self, slot: int, s: int) -> int:
        """The version serving the pair."""
        return self.versions.get((slot, s), 1)

    def remember(self, slot: int, s: int, ts: int, f: tuple[float, ...], offset: int) -> None:
        """Keep a reading in the pair's retraining ring, with its Kafka offset."""
        i = int(self.raw_n[slot, s]) % self.retrain_window
        self.raw[slot, s, i, : len(f)] = f
        self.raw_off[slot, s, i] = offset
        self.raw_ts[slot, s, i] = ts
        self.raw_n[slot, s] += 1

    def clear_objects(self, slot: int) -> None:
        for s in range(self.n_sensors):
            self.versions.pop((slot, s), None)

    def export_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        states.versions = {
            (j, s): v
            for j, i in enumerate(slots)
            for s in range(self.n_sensors)
            if (v := self.versions.get((i, s))) is not None
        }

    def load_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        for (j, s), v in states.versions.items():
            self.versions[(slots[j], s)] = v
