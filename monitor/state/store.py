"""Per-device state: a slot directory, and one struct-of-arrays slab per stage.

A device gets a *slot* the first time it is seen. Each stage keeps what it knows about a (device,
sensor) pair at ``[slot, sensor_index]`` of its own fixed-size numpy arrays, a :class:`Slab`
(:class:`monitor.ingest.state.IngestState`, :class:`monitor.detect.state.DetectState`,
:class:`monitor.govern.state.GovernState`); a stage reads and writes its own slab only, and reads
earlier stages' ones. The :class:`StateStore` hands out slots, keeps each device's id, home
partition and recency, and grows, clears, exports and loads every slab's rows together: arrays grow
by doubling, released slots (evicted devices, revoked partitions) are reused first.

Memory: an array of :data:`MAPPED_BYTES` or more lives in its own anonymous memory map. Its pages
take memory once written: a slot's rows are written when the slot is first handed out, so a slab
takes memory for the slots in use, not for its capacity; and the whole map goes back to the system
when a slab outgrows it (from the C heap, a freed array can stay resident for good, as a hole
below newer allocations).

:meth:`StateStore.export` and :meth:`StateStore.load` move the devices of a partition in and out
(snapshots: every slab's arrays under their names, which are unique across slabs).
:meth:`StateStore.array_bytes_per_device` reports the footprint; the memory figures of
docs/results/performance.md come from it.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from monitor.schema import SENSOR_NAMES, Catalog, SensorSpec

#: The per-device data-integrity checks, in the order of the ``integrity`` counters.
CHECKS = ("stuck_at", "gap", "duplicate", "out_of_order", "clock_skew")
N_CHECKS = len(CHECKS)
#: Memory a device takes beyond its slab rows (every per-pair state, ADWINs included, is in the
#: slabs, whatever the length of the stream): its id, its index entries, allocator slack.
#: ``bench/state_memory.py --devices 1024 --readings N`` measures it (resident growth beyond the
#: slab arrays, three runs each): 0.4 KB for N = 300, 1.3-3.9 KB for 1,500 (the process-wide
#: memo of KS p-values grows with N); ``--trace`` counts what Python and numpy allocate (1.5 KB a
#: device).
OBJECT_BYTES_PER_DEVICE = 4 * 1024
#: Arrays at least this large get a memory map of their own (see the module docstring).
MAPPED_BYTES = 64 * 1024
#: A pair's model: the detect stage's object (:class:`monitor.detect.model.AdaptiveGaussian`); the
#: store only keeps it.
Model = Any

#: ``name -> (shape after the slot axis, dtype, fill)``: the arrays of a slab. In a shape,
#: :data:`PAIRS` stands for the catalog's capacity (an entry per sensor index: a per-pair array)
#: and :data:`AXES` for its axes (every sensor's, at the catalog's offsets): what
#: :mod:`monitor.state.layout` moves when a snapshot is imported under another catalog.
#: :data:`TRIANGLE` stands for the upper triangle of a symmetric ``AXES`` x ``AXES`` matrix
#: (``dims (dims + 1) / 2`` entries, row by row: :func:`triangle`).
Columns = dict[str, tuple[tuple[int, ...], type[np.generic], float]]
PAIRS, AXES, TRIANGLE = -1, -2, -3


class Slab:
    """One stage's per-slot arrays (row ``i`` belongs to slot ``i``), with their fill values.

    A subclass declares its arrays in :meth:`columns` (per pair: :data:`PAIRS` wide, one per
    sensor index of the deployment's catalog, ``n_sensors`` of them; per axis: :data:`AXES`,
    ``dims``; a symmetric matrix over the axes: :data:`TRIANGLE`, its upper triangle) and, for
    Python objects kept per slot, overrides :meth:`clear_objects`,
    :meth:`export_objects` and :meth:`load_objects`.
    """

    #: Arrays that mean something in this process only: never exported (snapshots, fingerprints).
    local: frozenset[str] = frozenset()

    def __init__(self, n_sensors: int = 0, dims: int = 0) -> None:
        self.n_sensors = n_sensors
        self.dims = dims
        self.arrays: dict[str, NDArray[np.generic]] = {}
        self._fill: dict[str, float] = {}

    def columns(self) -> Columns:
        raise NotImplementedError

    def shape(
        self, template: tuple[int, ...], n_sensors: int | None = None, dims: int | None = None
    ) -> tuple[int, ...]:
        """A column's shape after the slot axis, for this slab's catalog (or for one of
        ``n_sensors`` indices and ``dims`` axes)."""
        n = self.n_sensors if n_sensors is None else n_sensors
        d = self.dims if dims is None else dims
        sizes = {PAIRS: n, AXES: d, TRIANGLE: triangle(d)}
        return tuple(sizes.get(x, x) for x in template)

    def grow(self, capacity: int) -> None:
        """Reallocate every array with ``capacity`` rows, keeping the rows it has (the new rows
        hold the fill value; zeros take no memory until written)."""
        old, self.arrays = self.arrays, {}
        for name, (template, dtype, fill) in self.columns().items():
            arr = zeros((capacity, *self.shape(template)), dtype)
            kept = len(old[name]) if name in old else 0
            if kept:
                arr[:kept] = old[name]
            if fill != 0:
                arr[kept:] = fill
            self.arrays[name] = arr
            self._fill[name] = fill
            setattr(self, name, arr)

    def clear(self, slot: int) -> None:
        for name, arr in self.arrays.items():
            arr[slot] = self._fill[name]
        self.clear_objects(slot)

    def clear_objects(self, slot: int) -> None:
        """Forget the slot's Python objects (none by default)."""

    def export(self, slots: Sequence[int]) -> dict[str, NDArray[np.generic]]:
        idx = np.asarray(slots, np.intp)
        return {name: arr[idx] for name, arr in self.arrays.items() if name not in self.local}  # copies

    def export_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        """Add the slots' Python objects to ``states`` (none by default)."""

    def load(self, slots: Sequence[int], states: DeviceStates) -> None:
        idx = np.asarray(slots, np.intp)
        for name, arr in self.arrays.items():
            if name in states.arrays:
                arr[idx] = states.arrays[name]
        self.load_objects(slots, states)

    def load_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        """Take the slots' Python objects from ``states`` (none by default)."""

    def upgrade(self, states: DeviceStates, source: Catalog) -> None:
        """Convert arrays ``states`` (kept under the catalog ``source``) holds in an older layout
        of this slab (a snapshot written before it changed) into the current one, in place (none
        by default). Arrays already in the current layout are left as they are."""

    def mismatch(
        self, states: DeviceStates, n_sensors: int | None = None, dims: int | None = None
    ) -> str | None:
        """Why ``states`` (kept under a catalog of ``n_sensors`` indices and ``dims`` axes, by
        default this slab's) cannot be loaded: an array of another shape than this configuration
        gives it there (other window sizes, another novelty stage), or None."""
        for name, (template, _, _) in self.columns().items():
            theirs, mine = states.arrays.get(name), self.shape(template, n_sensors, dims)
            if theirs is not None and theirs.shape[1:] != mine:
                return f"{name} has per-device shape {theirs.shape[1:]}, this configuration {mine}"
        return None

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


class Directory(Slab):
    """Which partition a device's state belongs to, and when this process last applied a reading
    of it (a counter of readings, not a time: the capacity eviction's order)."""

    local = frozenset({"touched"})
    partition: NDArray[np.int32]
    touched: NDArray[np.int64]

    def columns(self) -> Columns:
        return {"partition": ((), np.int32, -1), "touched": ((), np.int64, 0)}


S = TypeVar("S", bound=Slab)


class StateStore:
    """Slot allocation, and the slabs of every stage, grown and cleared together."""

    def __init__(self, capacity: int = 64, limit: int | None = None) -> None:
        self.limit = limit  # the slabs never grow past this many slots (None: no bound)
        self.slots: dict[str, int] = {}
        self.device_ids: list[str] = []
        self.capacity = capacity
        self._free: list[int] = []  # released slots, reused before the arrays grow
        self.slabs: list[Slab] = []
        self.directory = self.add(Directory())

    def add(self, slab: S) -> S:
        """Keep ``slab``'s rows in step with the slots from now on."""
        slab.grow(self.capacity)
        self.slabs.append(slab)
        return slab

    @property
    def partition(self) -> NDArray[np.int32]:
        return self.directory.partition

    @property
    def touched(self) -> NDArray[np.int64]:
        return self.directory.touched

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
                # Only a restore may take the store past its limit (the pipeline evicts after it).
                grown = 2 * self.capacity
                if self.limit is not None and slot < self.limit:
                    grown = min(grown, self.limit)
                self._grow(grown)
            self.device_ids.append(device_id)
            for slab in self.slabs:  # its rows take memory now, as the memory budget counts them
                slab.clear(slot)
        self.slots[device_id] = slot
        self.partition[slot] = partition
        return slot

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        for slab in self.slabs:
            slab.grow(capacity)

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
            for slab in self.slabs:
                slab.clear(slot)
            self._free.append(slot)

    def export(self, slots: Sequence[int]) -> DeviceStates:
        """A copy of everything kept about the devices in ``slots``."""
        states = DeviceStates(device_ids=[self.device_ids[i] for i in slots], arrays={})
        for slab in self.slabs:
            states.arrays.update(slab.export(slots))
            slab.export_objects(slots, states)
        return states

    def upgrade(self, states: DeviceStates, source: Catalog) -> None:
        """Convert the arrays of ``states`` (kept under the catalog ``source``) that an older
        version laid out otherwise into the current layouts, in place (:meth:`Slab.upgrade`): before
        :meth:`mismatch`, :meth:`load` or a remap to another catalog."""
        for slab in self.slabs:
            slab.upgrade(states, source)

    def mismatch(
        self, states: DeviceStates, n_sensors: int | None = None, dims: int | None = None
    ) -> str | None:
        """Why ``states`` (kept under a catalog of ``n_sensors`` indices and ``dims`` axes, by
        default the slabs') cannot be loaded here (an array kept with another per-device shape, as
        after a change of ``drift`` window sizes or of the novelty stage), or None."""
        return next(
            (why for slab in self.slabs if (why := slab.mismatch(states, n_sensors, dims)) is not None), None
        )

    def load(self, states: DeviceStates) -> list[int]:
        """Install exported devices (replacing any state they have here); returns their slots."""
        self.release([self.slots[d] for d in states.device_ids if d in self.slots])
        slots = [self.slot(d, 0) for d in states.device_ids]
        for slab in self.slabs:
            slab.load(slots, states)
        return slots

    def columns(self) -> Columns:
        """Every slab's columns (their names are unique across slabs)."""
        return {name: c for slab in self.slabs for name, c in slab.columns().items()}

    def array_bytes_per_device(self) -> int:
        return sum(slab.nbytes() for slab in self.slabs) // self.capacity

    def bytes_per_device(self) -> int:
        """The memory one device takes: its slab rows and :data:`OBJECT_BYTES_PER_DEVICE`."""
        return self.array_bytes_per_device() + OBJECT_BYTES_PER_DEVICE


def triangle(d: int) -> int:
    """Entries in the upper triangle of a ``d`` x ``d`` matrix."""
    return d * (d + 1) // 2


def packing(d: int) -> NDArray[np.int64]:
    """``[i, j]``: where entry ``(i, j)`` (or ``(j, i)``) of a symmetric ``d`` x ``d`` matrix is
    in its upper triangle, row by row."""
    at = np.zeros((d, d), np.int64)
    rows, cols = np.triu_indices(d)
    at[rows, cols] = at[cols, rows] = np.arange(len(rows))
    return at


def zeros(shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[np.generic]:
    """A zero-filled array; from :data:`MAPPED_BYTES` on, in an anonymous private memory map of its
    own (unmapped when the array is freed)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size < MAPPED_BYTES:
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype).reshape(shape)


@dataclass
class DeviceStates:
    """Everything kept about some devices, detached from any store (row ``j`` = ``device_ids[j]``)."""

    device_ids: list[str]
    arrays: dict[str, NDArray[np.generic]]
    models: list[list[Model | None]] = field(default_factory=list)
    adwins: list[list[Any]] = field(default_factory=list)  # River ADWINs of older snapshots, or None
    river: list[list[Any]] = field(default_factory=list)  # River tiers' per-device (tier, model), or None
    versions: dict[tuple[int, int], int] = field(default_factory=dict)  # (row, sensor) -> version


@dataclass
class PartitionState:
    """Everything kept about the devices of one partition (what a snapshot holds)."""

    devices: DeviceStates
    episodes: list[dict[str, Any]] = field(default_factory=list)  # their rule episodes
    governance: list[dict[str, Any]] = field(default_factory=list)  # their retrains in progress
    #: The sensors of the per-pair columns, in index order (the catalog the state was kept under).
    sensors: tuple[str, ...] = SENSOR_NAMES
    #: Their specs (empty in a snapshot from before they were recorded: the names alone), and the
    #: catalog's spare indices (channels.auto_register's room left): what lays the arrays out.
    channels: tuple[SensorSpec, ...] = ()
    spare: int = 0
