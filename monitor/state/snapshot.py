"""Per-partition state snapshots: what lets a partition move between replicas, or survive a crash,
with its state.

A snapshot holds every device read from one partition of the readings topic (its rows of every
stage's slab, model versions and rule episodes) and the offset of the next message to apply. The
service writes one after its outputs are delivered and its offsets committed, on partition
revocation and at shutdown; it reads it back when the partition is assigned and seeks there, so
the state and the position always agree.

File layout (``<state.snapshot_dir>/<group id>/<topic>/<partition>.snap``, written to a temporary
file, fsynced, renamed)::

    b"TLMSNAP1"  header length (8 bytes, big-endian)  header (JSON)  HMAC (32 bytes)
    arrays (.npz, no pickles)  objects (pickle: River tiers' per-device models; older models, ADWINs)

The header records the consumer group, topic, partition, next offset, creation time, device ids,
model versions, rule episodes, the catalog the arrays are laid out by (every sensor's name and
spec in index order, and its spare indices: :mod:`monitor.state.layout` imports the state under
another catalog by channel name) and the byte lengths of the two parts; the HMAC-SHA256 covers the
header and both parts. Loading checks that the file is a regular one, verifies the HMAC, then that
the snapshot is the one of the group, topic and partition it is loaded for (a snapshot copied over
another partition's is refused), and unpickles the objects with :mod:`monitor.common.safepickle` (model,
ADWIN and the allow-listed River classes only). Snapshots written when models and ADWINs were
objects load: the detect stage converts them into its slab rows
(:class:`monitor.detect.state.DetectState`; a River ADWIN it cannot convert makes the snapshot a
mismatch, and the partition's state is rebuilt from its committed offset).

The header's ``format`` is 2 since the slabs' layouts changed (the govern stage's ring per axis,
with the low 32 bits of offsets and timestamps; the joint model's upper triangles): a format-1
snapshot loads, its arrays converted by the slabs (:meth:`monitor.state.store.Slab.upgrade`); a
process of an earlier version refuses a format-2 one (its partition's state is then rebuilt).

Next to each snapshot, ``<partition>.head`` (signed JSON) records the last snapshot written: its
next offset, creation time and SHA-256. A signed snapshot older than that one (a backup copied
back, or a replayed file) loads (its partition is re-read from its offset), but is reported:
:attr:`PartitionSnapshot.older_than` names the newer one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.common import files, safepickle
from monitor.errors import SnapshotError, TelemonError
from monitor.schema import SENSOR_NAMES, SensorSpec
from monitor.state import signing
from monitor.state.store import DeviceStates, PartitionState

log = logging.getLogger(__name__)

MAGIC = b"TLMSNAP1"
FORMAT = 2
#: Formats this version reads (1: the slabs' earlier layouts, converted on load).
READABLE = (1, 2)


@dataclass
class PartitionSnapshot:
    topic: str
    partition: int
    next_offset: int  # the first message the state has not seen
    state: PartitionState
    created_ms: int = 0
    group: str = ""  # the consumer group whose state it is
    older_than: Head | None = None  # set by SnapshotStore.load: the newer snapshot last written


@dataclass(frozen=True)
class Head:
    """What ``<partition>.head`` records of the last snapshot written."""

    next_offset: int
    created_ms: int
    sha256: str


Parts = tuple[bytes | memoryview, ...]


def encode(snap: PartitionSnapshot, key: bytes, objects: bytes | None = None) -> bytes:
    """The snapshot's bytes, signed with ``key``. ``objects``: its Python objects already pickled
    (:func:`pickle_objects`, by the thread that owns them), when another thread encodes."""
    with encoded(snap, key, objects) as parts:
        return b"".join(parts)


@contextlib.contextmanager
def encoded(snap: PartitionSnapshot, key: bytes, objects: bytes | None = None) -> Iterator[Parts]:
    """:func:`encode`'s bytes in parts, to write one after the other: the encoded arrays (the
    bulk of a snapshot) are a view of the encoder's buffer, valid inside the ``with`` block."""
    d = snap.state.devices
    arrays = io.BytesIO()
    np.savez(arrays, allow_pickle=False, **d.arrays)
    if objects is None:
        objects = pickle_objects(d)
    with arrays.getbuffer() as npz:
        raw = _encode_header(snap, key, npz.nbytes, len(objects))
        mac = hmac.new(key, raw, hashlib.sha256)
        mac.update(npz)
        mac.update(objects)
        yield MAGIC + struct.pack(">Q", len(raw)) + raw + mac.digest(), npz, objects


def _encode_header(snap: PartitionSnapshot, key: bytes, arrays_bytes: int, objects_bytes: int) -> bytes:
    """The header's JSON (see the module docstring)."""
    d = snap.state.devices
    header = {
        "format": FORMAT,
        "group": snap.group,
        "key_id": signing.key_id(key),
        "topic": snap.topic,
        "partition": snap.partition,
        "next_offset": snap.next_offset,
        "created_ms": snap.created_ms or int(time.time() * 1000),
        "device_ids": d.device_ids,
        "versions": [[j, s, v] for (j, s), v in sorted(d.versions.items())],
        "rules": snap.state.episodes,
        "governance": snap.state.governance,
        "sensors": list(snap.state.sensors),
        "channels": [dataclasses.asdict(spec) for spec in snap.state.channels],
        "spare": snap.state.spare,
        "arrays_bytes": arrays_bytes,
        "objects_bytes": objects_bytes,
    }
    return json.dumps(header, separators=(",", ":")).encode()


def pickle_objects(d: DeviceStates) -> bytes:
    """The part of a snapshot that holds Python objects (models, ADWINs, River tiers' per-device
    models), which the consume
    loop goes on changing: pickled before the rest is encoded elsewhere."""
    return pickle.dumps((d.models, d.adwins, d.river), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes, key: bytes) -> PartitionSnapshot:
    """The snapshot in ``data``; raises :class:`SnapshotError` unless it is intact and signed."""
    start = len(MAGIC) + 8
    if not data.startswith(MAGIC) or len(data) < start:
        raise SnapshotError("not a telemon snapshot (bad magic)")
    (n,) = struct.unpack(">Q", data[len(MAGIC) : start])
    raw, mac, body = data[start : start + n], data[start + n : start + n + 32], data[start + n + 32 :]
    if not hmac.compare_digest(hmac.new(key, raw + body, hashlib.sha256).digest(), mac):
        raise SnapshotError(f"snapshot signature mismatch ({_why_unverified(raw, key)})")
    header = json.loads(raw)
    if header.get("format") not in READABLE:
        raise SnapshotError(f"unsupported snapshot format {header.get('format')!r}")
    split = header["arrays_bytes"]
    try:
        with np.load(io.BytesIO(body[:split]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        models, adwins, *river = safepickle.loads(body[split:])  # river: since River tiers
    except (pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise SnapshotError(f"unreadable snapshot content: {exc}") from exc
    versions = {(int(j), int(s)): int(v) for j, s, v in header["versions"]}
    devices = DeviceStates(
        list(header["device_ids"]), arrays, models, adwins, river[0] if river else [], versions
    )
    sensors = tuple(header.get("sensors", SENSOR_NAMES))  # before channels: the built-in kinds
    channels, spare = _channels(header)
    state = PartitionState(
        devices, list(header["rules"]), list(header["governance"]), sensors, channels, spare
    )
    topic, partition, offset = header["topic"], int(header["partition"]), int(header["next_offset"])
    created, group = int(header["created_ms"]), str(header.get("group", ""))
    return PartitionSnapshot(topic, partition, offset, state, created, group)


def _channels(header: dict[str, Any]) -> tuple[tuple[SensorSpec, ...], int]:
    """The specs of the sensors the snapshot's arrays are laid out for, and its catalog's spare
    indices (none recorded: a snapshot from before channels could be registered)."""
    try:
        specs = tuple(SensorSpec(**(c | {"keys": tuple(c["keys"])})) for c in header.get("channels", ()))
        spare = int(header.get("spare", 0))
    except (TypeError, KeyError, ValueError) as exc:
        raise SnapshotError(f"unreadable channels in the snapshot header: {exc}") from exc
    if specs and tuple(s.name for s in specs) != tuple(header.get("sensors", ())):
        raise SnapshotError("the snapshot header's channels are not its sensors")
    return specs, spare


def _why_unverified(raw: bytes, key: bytes) -> str:
    """Another key's signature, when the header says so (it is not trusted for anything else)."""
    try:
        theirs = json.loads(raw).get("key_id")
    except (ValueError, AttributeError):
        theirs = None
    mine = signing.key_id(key)
    if isinstance(theirs, str) and theirs != mine:
        return f"signed with another key: key id {theirs[:16]}, the configured key's is {mine}"
    return "tampered or truncated"


def _header(data: bytes) -> dict[str, Any]:
    """The header of snapshot bytes this process just encoded (not verified)."""
    (n,) = struct.unpack(">Q", data[len(MAGIC) : len(MAGIC) + 8])
    header: dict[str, Any] = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + n])
    return header


class SnapshotStore:
    """Snapshot files under one directory (shared by the replicas of a group so that a partition's
    state follows it to its next owner). ``group`` is the consumer group the snapshots belong to."""

    def __init__(self, root: Path, key: bytes, group: str = "") -> None:
        self.root = root
        self.key = key
        self.group = group

    def path(self, topic: str, partition: int) -> Path:
        return self.root / topic / f"{partition}.snap"

    def encode(self, snap: PartitionSnapshot) -> bytes:
        """``snap``'s bytes, as this store's group's."""
        snap.group = self.group
        return encode(snap, self.key)

    def save(self, snap: PartitionSnapshot) -> None:
        self.write(snap.topic, snap.partition, self.encode(snap))

    def write(self, topic: str, partition: int, data: bytes | Parts) -> None:
        """Replace the partition's snapshot atomically (temporary file, fsync, rename), then its
        head. ``data``: the snapshot's bytes, or :func:`encoded`'s parts."""
        parts = (data,) if isinstance(data, bytes) else data
        path = self.path(topic, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, parts)
        header = _header(bytes(parts[0]))
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        head = {
            "next_offset": header["next_offset"],
            "created_ms": header["created_ms"],
            "sha256": digest.hexdigest(),
        }
        raw = json.dumps(head, sort_keys=True).encode()
        _replace(path.with_suffix(".head"), (raw + b"\n" + signing.sign(self.key, raw).encode() + b"\n",))

    def read(self, topic: str, partition: int) -> bytes | None:
        """The bytes of the partition's snapshot file, unverified (None: there is none)."""
        try:
            return files.read_bytes(self.path(topic, partition), None)
        except FileNotFoundError:
            return None

    def verified(self, topic: str, partition: int, data: bytes) -> PartitionSnapshot:
        """The snapshot in ``data``, verified as this group's snapshot of ``topic``/``partition``;
        raises :class:`SnapshotError` otherwise."""
        snap = decode(data, self.key)
        # A snapshot written before groups were recorded has none: its topic and partition must fit.
        if (snap.topic, snap.partition) != (topic, partition) or snap.group not in ("", self.group):
            raise SnapshotError(
                f"it is the snapshot of group {snap.group!r}, topic {snap.topic!r}, partition "
                f"{snap.partition}, not of {self.group!r}, {topic!r}, {partition} (copied over it?)"
            )
        return snap

    def load(self, topic: str, partition: int) -> PartitionSnapshot | None:
        """The partition's snapshot, or None if there is none. Raises :class:`SnapshotError`
        (or ``OSError``) for one that is not a verified snapshot of this group, topic and
        partition."""
        data = self.read(topic, partition)
        if data is None:
            return None
        snap = self.verified(topic, partition, data)
        head = self._head(self.path(topic, partition))
        newer = head is not None and head.sha256 != hashlib.sha256(data).hexdigest()
        if newer and head and (snap.next_offset, snap.created_ms) < (head.next_offset, head.created_ms):
            snap.older_than = head
        return snap

    def _head(self, path: Path) -> Head | None:
        """The signed record of the last snapshot written at ``path`` (None: none, or unusable)."""
        try:
            raw, mac = files.read_bytes(path.with_suffix(".head"), 4096).rstrip(b"\n").split(b"\n")
            if not signing.verify(self.key, raw, mac.decode("ascii", "replace")):
                log.warning("%s: the head record does not verify: ignored", path.with_suffix(".head"))
                return None
            h = json.loads(raw)
            return Head(int(h["next_offset"]), int(h["created_ms"]), str(h["sha256"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable head record (%s): ignored", path.with_suffix(".head"), exc)
            return None

    def __iter__(self) -> Iterator[PartitionSnapshot]:
        for path in sorted(self.root.glob("*/*.snap")):
            yield decode(files.read_bytes(path, None), self.key)


def _replace(path: Path, parts: Parts) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        for part in parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


#: Called by the writer's thread before a snapshot's file is written, with its encoded parts: it
#: raises if the snapshot could not be put where it must be first (the changelog).
Publish = Callable[[PartitionSnapshot, Parts], None]


class SnapshotWriter:
    """Encodes, signs and writes snapshots from a background thread, so that neither the encoding
    nor the disk stalls polling: the loop only copies the state (:meth:`submit`). Only the latest
    pending snapshot of a partition is kept: an older one is obsolete. ``publish``, if given, gets
    each encoded snapshot before its file is written (a failure: the file is not written either).
    ``done`` is called from the thread with each snapshot's topic, partition and size in bytes, or
    None as size when it could not be published or written."""

    def __init__(
        self,
        store: SnapshotStore,
        done: Callable[[str, int, int | None], None] | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.store = store
        self.done = done
        self.publish = publish
        self._pending: dict[tuple[str, int], tuple[PartitionSnapshot, bytes]] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="telemon-snapshots", daemon=True)
        self._thread.start()

    def submit(self, snap: PartitionSnapshot) -> None:
        """Queue ``snap`` (its arrays are copies; its Python objects are pickled here)."""
        objects = pickle_objects(snap.state.devices)
        with self._cond:
            self._pending[(snap.topic, snap.partition)] = (snap, objects)
            self._cond.notify_all()

    def discard(self, keys: list[tuple[str, int]]) -> None:
        """Forget the pending snapshots of partitions this process no longer owns."""
        with self._cond:
            for key in keys:
                self._pending.pop(key, None)

    def idle(self) -> bool:
        """Nothing is waiting to be written."""
        with self._cond:
            return not self._pending and not self._busy

    def drain(self) -> None:
        """Wait until everything submitted is on disk."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._busy)

    def close(self) -> None:
        self.drain()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                _, (snap, objects) = self._pending.popitem()
                self._busy = True
            size: int | None = None
            try:
                snap.group = self.store.group
                snap.created_ms = snap.created_ms or int(time.time() * 1000)
                with encoded(snap, self.store.key, objects) as parts:
                    if self.publish is not None:
                        self.publish(snap, parts)
                    self.store.write(snap.topic, snap.partition, parts)
                    size = sum(len(part) for part in parts)
            except TelemonError as exc:  # the changelog could not take it
                self.errors += 1
                log.error("cannot checkpoint the state of %s/%d: %s", snap.topic, snap.partition, exc)
            except OSError as exc:
                self.errors += 1
                log.error("cannot write the snapshot of %s/%d: %s", snap.topic, snap.partition, exc)
            except Exception:  # never let the thread die: drain() would wait for it forever
                self.errors += 1
                log.exception("cannot encode the snapshot of %s/%d", snap.topic, snap.partition)
            if self.done is not None:
                self.done(snap.topic, snap.partition, size)
            with self._cond:
                self._busy = False
                self._cond.notify_all()


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """A pending retrain without what two runs that applied the same readings may differ in: the
    topic its readings came from (a replay of a stream on another topic) and how long its
    training took (wall time)."""
    out = dict(item)
    if isinstance(out.get("job"), dict):
        out["job"] = {k: v for k, v in out["job"].items() if k != "topic"}
    if isinstance(out.get("result"), dict):
        out["result"] = _comparable({k: v for k, v in out["result"].items() if k != "duration_s"})
    return out


def fingerprints(snapshots: Iterator[PartitionSnapshot] | list[PartitionSnapshot]) -> dict[str, str]:
    """A digest of each device's whole state (arrays, models, ADWINs, River tiers' models, versions,
    rule episodes, retrains in progress): two runs that applied the same readings in the same order give equal
    digests."""
    out: dict[str, str] = {}
    for snap in snapshots:
        d = snap.state.devices
        episodes: dict[str, list[dict[str, Any]]] = {}
        for e in snap.state.episodes:
            episodes.setdefault(str(e.get("device_id")), []).append(e)
        for g in snap.state.governance:
            episodes.setdefault(str(g["device"]), []).append(_comparable(g))
        for j, device in enumerate(d.device_ids):
            h = hashlib.sha256()
            for name in sorted(d.arrays):
                h.update(name.encode())
                h.update(np.ascontiguousarray(d.arrays[name][j]).tobytes())
            for s in range(len(snap.state.sensors)):
                m = d.models[j][s] if d.models else None
                h.update(b"-" if m is None else m._state.tobytes())
                h.update(str(d.versions.get((j, s), 1)).encode())
                r = d.river[j][s] if d.river else None  # a River tier's (name, model) of the device
                h.update(b"-" if r is None else r[0].encode() + r[1].digest())
            h.update(json.dumps(sorted(episodes.get(device, []), key=json.dumps), sort_keys=True).encode())
            out[device] = h.hexdigest()
    return out
