"""The govern stage's per-pair state: the recent readings a retrain learns from (with their Kafka
offsets), the serving and latest model versions, and the quarantine flag.

The ring keeps each axis of the device once (``raw``: one row of ``retrain_window`` values per
axis of the catalog, a sensor's axes at its offset, as the other per-axis arrays: see
:class:`monitor.schema.Catalog`), and of each reading's timestamp and
Kafka offset the low 32 bits (``raw_ts``, ``raw_off``), beside the pair's latest full values
(``raw_last_ts``, ``raw_last_off``): :meth:`GovernState.window` restores the full values, exact
for readings within ``2**31`` ms (24.8 days) and ``2**31`` offsets of the pair's latest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit
from numpy.typing import NDArray

from monitor.schema import Catalog
from monitor.state.store import AXES, PAIRS, Columns, DeviceStates, Slab

#: Offsets and timestamps are kept modulo this, centred on 0 (an int32).
WRAP = 2**32


@njit(cache=True)
def low32(v: int) -> int:
    """``v`` modulo ``2**32``, as a signed 32-bit number (what the ring keeps of it)."""
    return (v + WRAP // 2) % WRAP - WRAP // 2


def widen(low: NDArray[np.int32], latest: int) -> NDArray[np.int64]:
    """The full values whose low 32 bits are ``low``, given the latest full value: each is the
    value nearest to ``latest`` with those bits."""
    return latest + (low.astype(np.int64) - low32(latest) + WRAP // 2) % WRAP - WRAP // 2


def axis_widths(catalog: Catalog) -> list[int]:
    """The rows of each sensor index of ``catalog`` in the per-axis arrays (a declared sensor's
    axes; ``MAX_AXES`` for one registered on its first reading, or a spare index)."""
    ends = [*catalog.offsets[1:], catalog.dims]
    return [end - first for first, end in zip(catalog.offsets, ends, strict=True)]


def _offsets(axes: Sequence[int]) -> NDArray[np.int64]:
    return np.concatenate([[0], np.cumsum(axes)[:-1]]).astype(np.int64) if axes else np.zeros(0, np.int64)


class GovernState(Slab):
    """A ring of the last ``retrain_window`` readings per pair, version numbers, quarantine."""

    quarantined: NDArray[np.int8]  # per device, 1: its models do not learn
    latest_version: NDArray[np.int32]  # highest version number given to the pair
    raw_n: NDArray[np.int64]
    raw: NDArray[np.float32]  # per axis
    raw_off: NDArray[np.int32]
    raw_ts: NDArray[np.int32]
    raw_last_off: NDArray[np.int64]
    raw_last_ts: NDArray[np.int64]

    def __init__(self, axes: Sequence[int], retrain_window: int) -> None:
        """``axes``: the rows of each sensor index of the catalog in the per-axis arrays, in its
        order (:func:`axis_widths`)."""
        self.retrain_window = retrain_window
        self.axes = tuple(int(k) for k in axes)
        #: The first axis of each sensor in ``raw`` (the catalog's offsets).
        self.first_axis = _offsets(self.axes)
        self.versions: dict[tuple[int, int], int] = {}  # (slot, sensor) of pairs retrained at least once
        super().__init__(len(self.axes), sum(self.axes))

    def columns(self) -> Columns:
        p, w = (PAIRS,), self.retrain_window
        return {
            "quarantined": ((), np.int8, 0),
            "latest_version": (p, np.int32, 1),
            "raw_n": (p, np.int64, 0),
            "raw": ((AXES, w), np.float32, 0),
            "raw_off": ((*p, w), np.int32, 0),
            "raw_ts": ((*p, w), np.int32, 0),
            "raw_last_off": (p, np.int64, 0),
            "raw_last_ts": (p, np.int64, 0),
        }

    def version(self, slot: int, s: int) -> int:
        """The version serving the pair."""
        return self.versions.get((slot, s), 1)

    def remember(self, slot: int, s: int, ts: int, f: tuple[float, ...], offset: int) -> None:
        """Keep a reading in the pair's retraining ring, with its Kafka offset."""
        i = int(self.raw_n[slot, s]) % self.retrain_window
        a = int(self.first_axis[s])
        self.raw[slot, a : a + len(f), i] = f
        self.raw_off[slot, s, i] = low32(offset)
        self.raw_ts[slot, s, i] = low32(ts)
        self.raw_last_off[slot, s] = offset
        self.raw_last_ts[slot, s] = ts
        self.raw_n[slot, s] += 1

    def window(
        self, slot: int, s: int, k: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
        """The pair's readings in the ring, oldest first: values (one column per axis, ``k`` of
        them: the sensor's, by default as many as its index has rows), Kafka offsets and
        timestamps."""
        w, n = self.retrain_window, int(self.raw_n[slot, s])
        idx = (n - min(n, w) + np.arange(min(n, w))) % w
        a = int(self.first_axis[s])
        rows = self.raw[slot, a : a + (self.axes[s] if k is None else k)][:, idx].T.astype(np.float64)
        offsets = widen(self.raw_off[slot, s, idx], int(self.raw_last_off[slot, s]))
        return rows, offsets, widen(self.raw_ts[slot, s, idx], int(self.raw_last_ts[slot, s]))

    def upgrade(self, states: DeviceStates, source: Catalog) -> None:
        """Rings of snapshots written before this layout (``raw`` per sensor with ``MAX_AXES``
        columns, full int64 offsets and timestamps) into it, laid out by ``source``, the catalog
        they were kept under."""
        a = states.arrays
        raw = a.get("raw")
        if raw is not None and raw.ndim == 4:  # (devices, sensors, window, MAX_AXES)
            out = np.zeros((len(raw), source.dims, raw.shape[2]), np.float32)
            for s, (first, k) in enumerate(zip(source.offsets, axis_widths(source), strict=True)):
                out[:, first : first + k] = raw[:, s, :, :k].transpose(0, 2, 1)
            a["raw"] = out
        for name in ("raw_off", "raw_ts"):
            old = a.get(name)
            if old is None or old.dtype != np.int64:
                continue
            full, n = np.asarray(old, np.int64), np.asarray(a["raw_n"], np.int64)
            newest = np.take_along_axis(full, ((n - 1) % full.shape[2])[..., None], axis=2)[..., 0]
            a[name.replace("raw_", "raw_last_")] = np.where(n > 0, newest, 0)
            unused = np.arange(full.shape[2]) >= n[..., None]  # -1 there, the former fill
            a[name] = np.where(unused, 0, (full + WRAP // 2) % WRAP - WRAP // 2).astype(np.int32)

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
