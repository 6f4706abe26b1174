"""Fleet and cohort windows over every replica of the group: partial aggregates and their merge.

With ``fleet.span``, each replica cuts the scores its partitions feed the pooled detectors (the
fleet, each cohort) into tumbling windows of ``fleet.window_s`` of event time and publishes, per
batch and per readings partition, a :class:`Partial`: per (window, group key, sensor) a
:class:`Cell` (scored readings, anomalous ones, the sum of the scores and a histogram of the
scores on ``fleet.bins`` equal bins of [0, 1]), the CRC-32s of the devices seen per (window, key),
and the partition's offsets and event-time watermark. Every field adds up, so the merge of the
partials of a window is exact: the same whatever the number of replicas and whoever read which
partition, in whatever order. The only rounding is the histogram's (a score is known to within
1/bins, see :mod:`monitor.detect.spandrift`) and the device count's (distinct CRC-32s: two
devices collide with probability about n^2 / 2^33, 0.01 for 10,000 devices).

:class:`Merger` sums them into windows and closes a window once every partition heard from within
``fleet.lateness_s`` of event time of the latest has passed the window's end: a slow replica holds
windows back, a dead one (or a partition whose devices fell silent) only for ``lateness_s``. What
arrives for a closed window is left out and counted (``late``).

Each partial covers offsets ``[since, upto)`` of its partition. Partials are produced with the
batch's alerts, before its offsets are committed, so a batch re-delivered after a crash may
publish the same readings again: :class:`Merger` drops a partial whose offsets of its partition
are all counted already (``duplicates``). (Readings the service re-applies from a snapshot up to
the committed offset publish nothing: their outputs are discarded.) A re-delivered batch cut
differently from the first (overlapping it only in part) is counted again: at most one batch
per crash.

The partials are JSON (:func:`encode`, :func:`decode`): a histogram is sent sparse, as
(bin, count) pairs, and each device once per window and partition.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
CellKey = tuple[int, str, str]  # (window start, group key, sensor)
FORMAT = 1


@dataclass
class Cell:
    """What the scores of one (window, group key, sensor) add up to."""

    n: int
    anomalies: int
    score_sum: float
    hist: IntArray

    @classmethod
    def empty(cls, bins: int) -> Cell:
        return cls(0, 0, 0.0, np.zeros(bins, np.int64))

    def add(self, other: Cell) -> None:
        self.n += other.n
        self.anomalies += other.anomalies
        self.score_sum += other.score_sum
        self.hist += other.hist


@dataclass
class Partial:
    """One partition's share of a batch: offsets ``[since, upto)``, its latest event time."""

    partition: int
    since: int
    upto: int
    watermark: int
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    devices: dict[tuple[int, str], set[int]] = field(default_factory=dict)


def device_hashes(devices: list[str]) -> IntArray:
    """The CRC-32 of each device id (the device count's unit: the same on every replica)."""
    return np.array([zlib.crc32(d.encode()) for d in devices], np.int64)


class Collector:
    """A replica's partials of the batch under way, per partition (:meth:`take` hands them over).

    ``window_ms``: the windows' length; ``bins``: the histograms'. Devices already sent for a
    (partition, window, key) are not sent again (remembered until the partition's watermark is
    ``forget_ms`` past the window)."""

    def __init__(self, window_ms: int, bins: int, forget_ms: int) -> None:
        self.window_ms, self.bins, self.forget_ms = window_ms, bins, forget_ms
        self.parts: dict[int, Partial] = {}
        self._sent: dict[tuple[int, int, str], set[int]] = {}

    def add(
        self,
        key: str,
        sensor: str,
        partition: IntArray,
        ts: IntArray,
        scores: FloatArray,
        anomalous: NDArray[np.bool_],
        devices: IntArray,
    ) -> None:
        """The scores of one (group key, sensor) of the batch, with their readings' partitions,
        event times, flags and device hashes: a few array operations per (partition, window)."""
        if not len(scores):
            return
        window = ts // self.window_ms
        first = int(window.min())
        span = int(window.max()) - first + 1
        bins = np.minimum((scores * self.bins).astype(np.int64), self.bins - 1)
        codes, inverse = np.unique(partition * span + (window - first), return_inverse=True)
        for j, code in enumerate(codes.tolist()):
            p, w = code // span, (first + code % span) * self.window_ms
            part = self.parts.get(p)
            if part is None:  # a device read astray, scored in Python: its home partition is not in the batch
                continue
            at = inverse == j
            cell = part.cells.get((w, key, sensor))
            if cell is None:
                cell = part.cells[(w, key, sensor)] = Cell.empty(self.bins)
            cell.n += int(at.sum())
            cell.anomalies += int(anomalous[at].sum())
            cell.score_sum += float(scores[at].sum())
            cell.hist += np.bincount(bins[at], minlength=self.bins)
            sent = self._sent.setdefault((p, w, key), set())
            new = set(np.unique(devices[at]).tolist()) - sent
            if new:
                sent |= new
                part.devices.setdefault((w, key), set()).update(new)

    def mark(self, partition: IntArray, offset: IntArray, ts: IntArray) -> None:
        """The batch's readings (every one, scored or not): each partition's offsets and clock.
        Called before :meth:`add`."""
        for p in np.unique(partition).tolist():
            at = partition == p
            lo, hi, wm = int(offset[at].min()), int(offset[at].max()) + 1, int(ts[at].max())
            part = self.parts.get(p)
            if part is None:
                self.parts[p] = Partial(p, lo, hi, wm)
            else:
                part.since, part.upto = min(part.since, lo), max(part.upto, hi)
                part.watermark = max(part.watermark, wm)

    def take(self) -> list[Partial]:
        """The partials gathered since the last call, by partition."""
        out = [self.parts[p] for p in sorted(self.parts)]
        self.parts = {}
        for part in out:
            old = part.watermark - self.forget_ms
            for k in [k for k in self._sent if k[0] == part.partition and k[1] < old]:
                del self._sent[k]
        return out


# --- the wire format ---------------------------------------------------------------------------


class _Record(msgspec.Struct, array_like=True):
    v: int
    p: int
    since: int
    upto: int
    wm: int
    bins: int
    cells: list[tuple[int, str, str, int, int, float, list[int]]]
    devices: list[tuple[int, str, list[int]]]


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_Record)


def encode(part: Partial, bins: int) -> bytes:
    """A partial as compact JSON: histograms as flat (bin, count, bin, count, ...) lists."""
    cells = []
    for (w, key, sensor), c in sorted(part.cells.items()):
        nz = np.flatnonzero(c.hist)
        sparse = np.stack([nz, c.hist[nz]], 1).reshape(-1).tolist()
        cells.append((w, key, sensor, c.n, c.anomalies, c.score_sum, sparse))
    devices = [(w, key, sorted(ids)) for (w, key), ids in sorted(part.devices.items())]
    record = _Record(FORMAT, part.partition, part.since, part.upto, part.watermark, bins, cells, devices)
    return _ENCODER.encode(record)


def decode(raw: bytes | None, bins: int) -> Partial | None:
    """The partial of a record; None for one that is not a partial of this format and binning
    (another version, or a replica configured with other bins: left out, counted malformed)."""
    try:
        r = _DECODER.decode(raw or b"")
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        return None
    if r.v != FORMAT or r.bins != bins or r.upto <= r.since:
        return None
    part = Partial(r.p, r.since, r.upto, r.wm)
    for w, key, sensor, n, anomalies, total, sparse in r.cells:
        pairs = np.asarray(sparse, np.int64).reshape(-1, 2)
        if len(pairs) and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= bins or pairs[:, 1].min() < 0):
            return None
        hist = np.zeros(bins, np.int64)
        hist[pairs[:, 0]] = pairs[:, 1]
        if int(hist.sum()) != n or not math.isfinite(total):
            return None
        part.cells[(w, key, sensor)] = Cell(n, anomalies, total, hist)
    for w, key, ids in r.devices:
        part.devices[(w, key)] = set(ids)
    return part


# --- the merge ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A closed window: its cells by (group key, sensor), its devices by key, and how many
    partitions contributed to it."""

    start: int
    end: int
    cells: dict[tuple[str, str], Cell]
    devices: dict[str, int]
    partitions: int


@dataclass
class Merger:
    """The partials of every replica, read from the fleet topic in its order, summed per window."""

    window_ms: int
    lateness_ms: int
    bins: int
    counted: dict[int, int] = field(default_factory=dict)  # partition -> offsets counted below
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> latest event time
    expected: frozenset[int] = frozenset()  # the readings topic's partitions
    horizon: int | None = None  # windows ending at or before this are closed
    first: int | None = None  # the start of the first window heard of: the partitions' not heard yet
    late: int = 0  # scores that arrived for a closed window
    duplicates: int = 0  # partials whose offsets were all counted
    _cells: dict[int, dict[tuple[str, str], Cell]] = field(default_factory=dict)
    _devices: dict[int, dict[str, set[int]]] = field(default_factory=dict)
    _partitions: dict[int, set[int]] = field(default_factory=dict)

    def add(self, part: Partial) -> None:
        p = part.partition
        if part.upto <= self.counted.get(p, -1):
            self.duplicates += 1
            return
        self.counted[p] = part.upto
        if self.first is None:  # the start of the first window heard of
            self.first = min((w for w, _, _ in part.cells), default=part.watermark)
        self.watermarks[p] = max(self.watermarks.get(p, part.watermark), part.watermark)
        for (w, key, sensor), cell in part.cells.items():
            if self.closed(w):
                self.late += cell.n
                continue
            self._partitions.setdefault(w, set()).add(p)
            self._cells.setdefault(w, {}).setdefault((key, sensor), Cell.empty(self.bins)).add(cell)
        for (w, key), ids in part.devices.items():
            if not self.closed(w):
                self._devices.setdefault(w, {}).setdefault(key, set()).update(ids)

    def closed(self, start: int) -> bool:
        return self.horizon is not None and start + self.window_ms <= self.horizon

    def edge(self) -> int | None:
        """The event time every live partition has passed: the earliest watermark among those
        within ``lateness_ms`` of the latest. An expected partition not heard from yet counts as
        at the start of the first window heard of: at start, a replica that has not published yet holds the
        windows back for ``lateness_ms``, as one that fell silent does."""
        if self.first is None:
            return None
        unheard = [self.first] if self.expected - self.watermarks.keys() else []
        marks = [*self.watermarks.values(), *unheard]
        latest = max(marks)
        return min(wm for wm in marks if wm >= latest - self.lateness_ms)

    def close(self) -> list[Window]:
        """The windows that can close now, in order."""
        edge = self.edge()
        if edge is None:
            return []
        self.horizon = edge if self.horizon is None else max(self.horizon, edge)
        out = []
        for w in sorted(w for w in self._cells.keys() | self._devices.keys() if self.closed(w)):
            devices = {k: len(ids) for k, ids in self._devices.pop(w, {}).items()}
            parts = len(self._partitions.pop(w, set()))
            out.append(Window(w, w + self.window_ms, self._cells.pop(w, {}), devices, parts))
        return out

    def add_all(self, parts: Iterable[Partial]) -> list[Window]:
        """:meth:`add` then :meth:`close` for each partial in turn: windows close at the same
        record of the fleet topic however a replica's reads happen to batch it."""
        out: list[Window] = []
        for part in parts:
            self.add(part)
            out += self.close()
        return out
