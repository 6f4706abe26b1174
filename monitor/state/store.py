"""Per-device state, stored as struct-of-arrays slabs so its size is known and small.

A device gets a *slot* the first time it is seen. Everything the monitor keeps about a
(device, sensor) pair lives at ``[slot, sensor_index]`` in fixed-size numpy arrays (score
windows, the frozen reference, PSI bins, the recent raw readings for retraining and their Kafka
offsets, integrity counters, the novelty stage's state), plus two small River objects (the model
and an ADWIN). Arrays grow by doubling; released slots (evicted devices, revoked partitions) are reused first.
:meth:`StateStore.array_bytes_per_device` reports the footprint; the README's budget table comes
from it. :meth:`StateStore.export` and :meth:`StateStore.load` move the devices of a partition in
and out (snapshots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river import drift

from monitor.schema import SENSOR_NAMES

N_SENSORS = len(SENSOR_NAMES)
#: A pair's model: the detect stage's object (:class:`monitor.detect.model.AdaptiveGaussian`); the
#: store only keeps it.
Model = Any
#: The per-device data-integrity checks, in the order of the ``integrity`` counters.
CHECKS = ("stuck_at", "gap", "duplicate", "out_of_order", "clock_skew")
N_CHECKS = len(CHECKS)
#: Memory a device takes beyond its slab rows: its models and ADWINs (which grow slowly with the
#: length of their windows), its id and the index entries. ``bench/state_memory.py --devices 1024
#: --readings N`` measures it (resident growth beyond the slab arrays): 7.5 KB for N = 1, 12.1 KB
#: for 300, 13.3 KB for 1,500; this leaves headroom.
OBJECT_BYTES_PER_DEVICE = 16 * 1024
#: Arrays that mean something in this process only: never exported (snapshots, fingerprints).
LOCAL_ARRAYS = frozenset({"touched"})


@dataclass(frozen=True)
class Shapes:
    reference: int
    window: int
    psi_bins: int
    retrain_window: int
    novelty: int = 0  # floats of novelty-stage state per pair (0: the stage is off)


class StateStore:
    """Slot allocation plus the per-pair arrays every stage reads and writes."""

    def __init__(
        self, shapes: Shapes, adwin_delta: float, capacity: int = 64, limit: int | None = None
    ) -> None:
        self.shapes = shapes
        self.adwin_delta = adwin_delta
        self.limit = limit  # the slabs never grow past this many slots (None: no bound)
        self.slots: dict[str, int] = {}
        self.device_ids: list[str] = []
        self.models: list[list[Model | None]] = []
        self.adwins: list[list[drift.ADWIN | None]] = []
        self.versions: dict[tuple[int, int], int] = {}  # pairs retrained at least once
        self._free: list[int] = []  # released slots, reused before the arrays grow
        self._arrays: dict[str, NDArray[np.generic]] = {}
        self._fill: dict[str, float] = {}
        self._alloc(capacity)

    def _alloc(self, cap: int) -> None:
        s, p = self.shapes, (cap, N_SENSORS)
        spec: dict[str, tuple[tuple[int, ...], type[np.generic], float]] = {
            "last_seq": ((cap,), np.int64, -1),
            "last_offset": ((cap,), np.int64, -1),  # Kafka offset of the last applied reading
            "last_seen": ((cap,), np.int64, 0),  # Kafka timestamp (ms) of the device's last message
            "touched": ((cap,), np.int64, 0),  # when this process last applied a reading of it
            "partition": ((cap,), np.int32, -1),
            "quarantined": ((cap,), np.int8, 0),  # 1: the device's models do not learn
            "latest_version": (p, np.int32, 1),  # highest version number given to the pair
            "n_scored": (p, np.int64, 0),
            "since_eval": (p, np.int32, 0),
            "anomalies": (p, np.int32, 0),
            "last_ts": (p, np.int64, 0),
            "interval": (p, np.float32, 0),
            "stuck_run": (p, np.int32, 0),
            "adwin_hits": (p, np.int32, 0),
            "score_sum": (p, np.float32, 0),
            "score_count": (p, np.int32, 0),
            "integrity": ((*p, N_CHECKS), np.int32, 0),
            "last_vals": ((*p, 3), np.float64, np.nan),
            "raw_n": (p, np.int64, 0),
            "raw": ((*p, s.retrain_window, 3), np.float32, 0),
            "raw_off": ((*p, s.retrain_window), np.int64, -1),
            "raw_ts": ((*p, s.retrain_window), np.int64, 0),
            "ref": ((*p, s.reference), np.uint16, 0),
            "cur": ((*p, s.window), np.uint16, 0),
            "edges": ((*p, s.psi_bins - 1), np.float64, 0),
            "ref_frac": ((*p, s.psi_bins), np.float32, 0),
            "novelty": ((*p, s.novelty), np.float64, 0),
        }
        old = self._arrays
        self._arrays = {}
        for name, (shape, dtype, fill) in spec.items():
            arr = np.full(shape, fill, dtype=dtype)
            if name in old:
                arr[: len(old[name])] = old[name]
            self._arrays[name] = arr
            self._fill[name] = fill
            setattr(self, name, arr)

    # Typed views of the slabs (set by _alloc).
    last_seq: NDArray[np.int64]
    last_offset: NDArray[np.int64]
    last_seen: NDArray[np.int64]
    touched: NDArray[np.int64]  # a counter of readings, not a time: the capacity eviction's order
    partition: NDArray[np.int32]
    quarantined: NDArray[np.int8]
    latest_version: NDArray[np.int32]
    n_scored: NDArray[np.int64]
    since_eval: NDArray[np.int32]
    anomalies: NDArray[np.int32]
    last_ts: NDArray[np.int64]
    interval: NDArray[np.float32]
    stuck_run: NDArray[np.int32]
    adwin_hits: NDArray[np.int32]
    score_sum: NDArray[np.float32]
    score_count: NDArray[np.int32]
    integrity: NDArray[np.int32]
    last_vals: NDArray[np.float64]
    raw_n: NDArray[np.int64]
    raw: NDArray[np.float32]
    raw_off: NDArray[np.int64]
    raw_ts: NDArray[np.int64]
    ref: NDArray[np.uint16]  # scores quantised to 1/65535 (see drift.quantise)
    cur: NDArray[np.uint16]
    edges: NDArray[np.float64]  # float64: a score on an edge must bin the same way every time
    ref_frac: NDArray[np.float32]
    novelty: NDArray[np.float64]  # the novelty stage's per-pair state (monitor.detect.novelty)

    @property
    def capacity(self) -> int:
        return len(self.last_seq)

    def __len__(self) -> int:
        """Devices with state (released slots do not count)."""
        return len(self.slots)

    @property
    def used(self) -> int:
        """Slots handed out so far, released ones included: live slots are all below this."""
        return len(self.device_ids)

    def slot(self, device_id: str, partition: int) -> int:
        """The slot of ``device_id``, allocated on first sight."""
        slot = self.slots.get(device_id)
        if slot is not None:
            return slot
        if self._free:
            slot = self._free.pop()
            self.device_ids[slot] = device_id
        else:
            slot = len(self.device_ids)
            if slot == self.capacity:
                grown = 2 * self.capacity
                # Only a restore may take the store past its limit (the pipeline evicts after it).
                self._alloc(grown if self.limit is None or slot >= self.limit else min(grown, self.limit))
            self.device_ids.append(device_id)
            self.models.append([None] * N_SENSORS)
            self.adwins.append([None] * N_SENSORS)
        self.slots[device_id] = slot
        self.partition[slot] = partition
        return slot

    def live(self) -> NDArray[np.intp]:
        """The slots that hold a device, in ascending order."""
        return np.fromiter(sorted(self.slots.values()), np.intp, len(self.slots))

    def in_partition(self, partition: int) -> list[int]:
        """The live slots of the devices read from ``partition``."""
        return [slot for slot in sorted(self.slots.values()) if self.partition[slot] == partition]

    def release(self, slots: Sequence[int]) -> None:
        """Forget the devices in ``slots`` and make the slots reusable."""
        for slot in slots:
            del self.slots[self.device_ids[slot]]
            self.device_ids[slot] = ""
            for name, arr in self._arrays.items():
                arr[slot] = self._fill[name]
            self.models[slot] = [None] * N_SENSORS
            self.adwins[slot] = [None] * N_SENSORS
            for s in range(N_SENSORS):
                self.versions.pop((slot, s), None)
            self._free.append(slot)

    def export(self, slots: Sequence[int]) -> DeviceStates:
        """A copy of everything kept about the devices in ``slots``."""
        idx = np.asarray(slots, np.intp)
        return DeviceStates(
            device_ids=[self.device_ids[i] for i in slots],
            arrays={name: arr[idx].copy() for name, arr in self._arrays.items() if name not in LOCAL_ARRAYS},
            models=[list(self.models[i]) for i in slots],
            adwins=[list(self.adwins[i]) for i in slots],
            versions={
                (j, s): v
                for j, i in enumerate(slots)
                for s in range(N_SENSORS)
                if (v := self.versions.get((i, s))) is not None
            },
        )

    def mismatch(self, states: DeviceStates) -> str | None:
        """Why ``states`` cannot be loaded here (an array kept with another per-device shape, as
        after a change of ``drift`` window sizes or of the novelty stage), or None."""
        for name, arr in self._arrays.items():
            theirs = states.arrays.get(name)
            if theirs is not None and theirs.shape[1:] != arr.shape[1:]:
                return f"{name} has per-device shape {theirs.shape[1:]}, this configuration {arr.shape[1:]}"
        return None

    def load(self, states: DeviceStates) -> list[int]:
        """Install exported devices (replacing any state they have here); returns their slots."""
        stale = [self.slots[d] for d in states.device_ids if d in self.slots]
        self.release(stale)
        slots = [self.slot(d, 0) for d in states.device_ids]
        idx = np.asarray(slots, np.intp)
        for name, arr in self._arrays.items():
            if name in states.arrays:
                arr[idx] = states.arrays[name]
        for j, slot in enumerate(slots):
            self.models[slot] = list(states.models[j])
            self.adwins[slot] = list(states.adwins[j])
        for (j, s), v in states.versions.items():
            self.versions[(slots[j], s)] = v
        return slots

    def adwin(self, slot: int, s: int) -> drift.ADWIN:
        a = self.adwins[slot][s]
        if a is None:
            a = self.adwins[slot][s] = drift.ADWIN(delta=self.adwin_delta)
        return a

    def version(self, slot: int, s: int) -> int:
        return self.versions.get((slot, s), 1)

    def reset_detectors(self, slot: int, s: int) -> None:
        """Forget the score history of a pair: a new model starts a new reference."""
        self.n_scored[slot, s] = 0
        self.since_eval[slot, s] = 0
        self.anomalies[slot, s] = 0
        self.adwin_hits[slot, s] = 0
        self.score_sum[slot, s] = 0
        self.score_count[slot, s] = 0
        self.adwins[slot][s] = None

    def array_bytes_per_device(self) -> int:
        return sum(a.nbytes for a in self._arrays.values()) // self.capacity

    def bytes_per_device(self) -> int:
        """The memory one device takes: its slab rows and :data:`OBJECT_BYTES_PER_DEVICE`."""
        return self.array_bytes_per_device() + OBJECT_BYTES_PER_DEVICE


@dataclass
class DeviceStates:
    """Everything kept about some devices, detached from any store (row ``j`` = ``device_ids[j]``)."""

    device_ids: list[str]
    arrays: dict[str, NDArray[np.generic]]
    models: list[list[Model | None]]
    adwins: list[list[drift.ADWIN | None]]
    versions: dict[tuple[int, int], int] = field(default_factory=dict)  # (row, sensor) -> version


@dataclass
class PartitionState:
    """Everything kept about the devices of one partition (what a snapshot holds)."""

    devices: DeviceStates
    episodes: list[dict[str, Any]] = field(default_factory=list)  # their rule episodes
    governance: list[dict[str, Any]] = field(default_factory=list)  # their retrains in progress
