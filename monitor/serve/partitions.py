"""The partitions a replica owns, and their state on disk.

State follows partitions: on assignment a partition's snapshot is loaded into the pipeline and
consumption starts at the snapshot's offset, so the state and the position always agree. With
``state.changelog`` (the default) the snapshot comes from the compacted changelog topic
(:mod:`monitor.serve.changelog`), so a replica on another machine restores a moved partition
from Kafka alone; the local snapshot file is a cache, used when its digest equals the
changelog's latest (and the changelog then needs not be sent), else replaced. A cache without a
changelog record (a deployment that kept its snapshots in files until now) is restored, and
reaches the changelog with the partition's next snapshot. The
messages between that offset and the group's committed offset had their outputs delivered before
the commit: they are re-applied to the state without outputs. A partition without a snapshot
gets an empty one at its starting position first, so a crash before its first real snapshot
restarts from there instead of from a commit the state never saw.

While owned, a partition changed by a batch is snapshotted ``state.snapshot_interval_s`` later
(one partition per loop turn, copied in the loop once the writer is idle, encoded, put on the
changelog and written by a background thread, which then hands the memory freed since to the system:
:func:`monitor.serve.memory.release`). On revocation its state is snapshotted and dropped; on loss
(the group moved on without us) it is dropped unsaved.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from monitor.errors import KafkaUnavailable, SnapshotError
from monitor.govern.alerts import rfc3339
from monitor.pipeline import Pipeline
from monitor.records import Registration
from monitor.schema import SensorSpec
from monitor.serve import memory
from monitor.serve.changelog import Changelog, Manifest, manifest_of
from monitor.serve.metrics import Metrics
from monitor.settings import Settings
from monitor.state.snapshot import PartitionSnapshot, Parts, SnapshotStore, SnapshotWriter, encoded
from monitor.state.store import PartitionState

log = logging.getLogger(__name__)
#: Times the committed offsets of assigned partitions are asked for before the service gives up.
COMMITTED_ATTEMPTS = 3

Key = tuple[str, int]  # (topic, partition)


class Partitions:
    """``changelog``: where state is checkpointed first (None: the snapshot files alone)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        key: bytes,
        changelog: Changelog | None = None,
        start: Mapping[Key, int] | None = None,
    ) -> None:
        self.settings = settings
        self.start = dict(start or {})  # where a partition the group never committed starts
        self.pipeline = pipeline
        self.metrics = metrics
        self.changelog = changelog
        root = settings.state.snapshot_dir or settings.state_dir / "snapshots"
        group = settings.kafka.group_id
        self.store = SnapshotStore(root / group, key, group)  # state belongs to a group
        publish = None if changelog is None else self._publish
        self.writer = SnapshotWriter(self.store, self._written, publish)
        self.failed: deque[Key] = deque()  # snapshots the writer could not put out: due again
        self.positions: dict[Key, int | None] = {}  # owned partition -> next offset (None: none yet)
        self.restored_at: dict[Key, int] = {}  # snapshot offsets, until the first message
        self.replay_until: dict[Key, int] = {}  # committed offsets ahead of snapshots
        self.dirty: dict[Key, float] = {}  # partition -> first change since its snapshot
        self.unsettled: set[Key] = set()  # restored partitions whose versions are not yet checked

    def __len__(self) -> int:
        return len(self.positions)

    def _written(self, topic: str, partition: int, size: int | None) -> None:
        """From the writer's thread, after each snapshot: count it (a failed one is due again), and
        hand what encoding it freed (and what the loop freed since the last one) to the system."""
        self.metrics.record_snapshot(size)
        if size is None:
            self.failed.append((topic, partition))
        memory.release()

    def _manifest(self, snap: PartitionSnapshot, parts: Parts) -> Manifest:
        g = self.store.group
        return manifest_of(g, snap.topic, snap.partition, snap.next_offset, snap.created_ms, parts)

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions``: asked again while the broker times out
        (a coordinator loading after a restart), then :class:`KafkaUnavailable` (the service
        stops with the reason and its partitions go to another member), never a traceback."""
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        timeout = self.settings.consume.delivery_timeout_s
        for attempt in range(1, COMMITTED_ATTEMPTS + 1):
            try:
                return list(consumer.committed(asked, timeout=timeout))
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError._TIMED_OUT or attempt == COMMITTED_ATTEMPTS:
                    raise KafkaUnavailable(
                        f"the committed offsets of {len(asked)} assigned partition(s) could not be "
                        f"read ({err.str()}, attempt {attempt}): the partitions are left to the group"
                    ) from None
                log.warning("committed offsets not read within %gs: asking again", timeout)
        raise AssertionError("unreachable")

    def _publish(self, snap: PartitionSnapshot, parts: Parts) -> None:
        """Put an encoded snapshot on the changelog (from the writer's thread)."""
        assert self.changelog is not None
        self.changelog.publish(self._manifest(snap, parts), parts)

    def assign(
        self,
        consumer: Consumer,
        partitions: list[TopicPartition],
        on_restore: Callable[[PartitionState], None],
    ) -> int:
        """Take over ``partitions`` (setting their start offsets); returns the devices restored."""
        committed = self._committed(consumer, partitions)
        restored = 0
        for tp, c in zip(partitions, committed, strict=True):
            key = (tp.topic, tp.partition)
            self.positions[key] = None
            snap = self._load(tp.topic, tp.partition)
            if snap is None:
                self._start_fresh(tp, c.offset)
                continue
            registered = self.pipeline.import_partition(snap.state)
            for i, spec in enumerate(registered):
                log.info(
                    "channel %s registered automatically: %s (the snapshot of %s/%d holds its state); "
                    "room for %d more (channels.auto_register)",
                    spec.name,
                    describe(spec),
                    tp.topic,
                    tp.partition,
                    self.pipeline.catalog.spare + len(registered) - 1 - i,
                )
            self.unsettled.add(key)
            on_restore(snap.state)
            tp.offset = snap.next_offset
            if snap.next_offset >= 0:
                self.restored_at[key] = snap.next_offset
                if c.offset > snap.next_offset:
                    self.replay_until[key] = c.offset
            restored += len(snap.state.devices.device_ids)
        return restored

    def _start_fresh(self, tp: TopicPartition, committed: int) -> None:
        """An empty snapshot for a partition that has none, at the committed offset if the group
        has one (state starts empty there), else at its given start (a shadow run's), else at the
        ``auto_offset_reset`` end of the log."""
        reset = OFFSET_BEGINNING if self.settings.kafka.auto_offset_reset == "earliest" else OFFSET_END
        tp.offset = committed if committed >= 0 else self.start.get((tp.topic, tp.partition), reset)
        empty = PartitionSnapshot(tp.topic, tp.partition, tp.offset, self.pipeline.export_partition(None))
        if self.changelog is None:
            self.store.save(empty)
            return
        empty.group, empty.created_ms = self.store.group, int(time.time() * 1000)
        with encoded(empty, self.store.key) as parts:
            self._publish(empty, parts)
            self.store.write(tp.topic, tp.partition, parts)

    def _load(self, topic: str, partition: int) -> PartitionSnapshot | None:
        """The partition's snapshot, or None if it has none or one this process cannot use."""
        try:
            snap = self._restore(topic, partition)
            why = None if snap is None else self.pipeline.mismatch(snap.state)
            if why is not None:
                raise SnapshotError(f"taken with other settings: {why}")
            if snap is not None and snap.older_than is not None:
                newer = snap.older_than
                log.error(
                    "the snapshot of %s/%d is older than the last one written (offset %d, %s; the last: "
                    "offset %d, %s): restored, and its partition re-read from offset %d",
                    topic,
                    partition,
                    snap.next_offset,
                    rfc3339(snap.created_ms),
                    newer.next_offset,
                    rfc3339(newer.created_ms),
                    snap.next_offset,
                )
                self.metrics.record_stale_snapshot()
            return snap
        except (SnapshotError, OSError) as exc:
            log.error("ignoring the snapshot of %s/%d (%s): its state is rebuilt", topic, partition, exc)
            self.metrics.record_snapshot_error()
            return None

    def _restore(self, topic: str, partition: int) -> PartitionSnapshot | None:
        """The partition's latest snapshot: the changelog's (the local file if it is the same),
        else the local file's; without a changelog, the file's."""
        if self.changelog is None:
            return self.store.load(topic, partition)
        t0 = time.perf_counter()
        try:
            cached = self.store.read(topic, partition)
        except OSError as exc:
            log.warning(
                "ignoring the local snapshot of %s/%d (%s): the changelog's is used", topic, partition, exc
            )
            cached = None
        have = None if cached is None else hashlib.sha256(cached).hexdigest()
        manifest, data = self.changelog.read(topic, partition, have)
        if manifest is None:
            source = "none" if cached is None else "cache"
            if cached is not None:
                log.warning(
                    "%s/%d has no state in the changelog %s: restored from the local snapshot, which "
                    "reaches the changelog with the partition's next snapshot",
                    topic,
                    partition,
                    self.changelog.topic,
                )
            data = cached
        elif data is None:
            source, data = "cache", cached
        else:
            source = "changelog"
            self.store.write(topic, partition, data)  # the cache follows the changelog
        self.metrics.record_restore(source, time.perf_counter() - t0)
        return None if data is None else self.store.verified(topic, partition, data)

    def release(self, keys: list[Key], save: bool) -> None:
        """Give partitions up: snapshot them first if ``save``, then forget their devices."""
        if save:
            self.snapshot([k for k in keys if k in self.positions], wait=True)
        else:
            self.writer.discard(keys)
        for key in keys:
            if self.changelog is not None:
                self.changelog.forget(*key)
            self.positions.pop(key, None)
            self.restored_at.pop(key, None)
            self.replay_until.pop(key, None)
            self.dirty.pop(key, None)
            self.unsettled.discard(key)
            self.pipeline.drop_partition(key[1])

    def settled(self) -> list[Key]:
        """Restored partitions now re-read up to their committed offset (each returned once): the
        state has seen everything the registry's audit trail may say of their devices."""
        done = sorted(k for k in self.unsettled if k not in self.replay_until)
        self.unsettled.difference_update(done)
        return done

    def check_restart(self, m: Message) -> None:
        """A partition whose first message is below its snapshot's offset was recreated (its log
        restarted): its devices must accept the new, lower offsets."""
        tp = (str(m.topic()), int(m.partition() or 0))
        expected = self.restored_at.pop(tp, None)
        offset = m.offset()
        if expected is not None and offset is not None and offset < expected:
            log.warning("%s/%d restarted at offset %d below its snapshot's %d", *tp, offset, expected)
            self.pipeline.restart_offsets(tp[1])

    def replay(self, messages: list[Message]) -> list[Message]:
        """Re-apply, without outputs, the messages below their partition's committed offset
        (after a restore from an older snapshot); return the others."""
        old: list[Message] = []
        new: list[Message] = []
        for m in messages:
            until = self.replay_until.get((str(m.topic()), int(m.partition() or 0)))
            (old if until is not None and int(m.offset() or 0) < until else new).append(m)
        if old:
            result = self.pipeline.process(old)
            log_registrations(result.registered, self.pipeline.catalog.spare)
            offsets = result.offsets
            self.applied(offsets)
            for tp, offset in offsets.items():
                if offset >= self.replay_until.get(tp, offset + 1):
                    del self.replay_until[tp]
            log.info("re-applied %d message(s) whose outputs were delivered before a restart", len(old))
        for m in new:
            self.replay_until.pop((str(m.topic()), int(m.partition() or 0)), None)
        return new

    def applied(self, offsets: dict[Key, int]) -> None:
        """The state now reflects every message before ``offsets`` (next offset per partition)."""
        for tp, offset in offsets.items():
            if tp in self.positions:
                self.positions[tp] = offset
                self.dirty.setdefault(tp, time.monotonic())

    def snapshot_due(self, into: Callable[[Manifest, Parts], None] | None = None) -> list[Key]:
        """Snapshot a partition changed ``state.snapshot_interval_s`` ago or more: one per call
        (the longest due), after each batch and each idle poll, which spreads the cost; every due
        partition if the interval is 0. Otherwise a due partition waits while the writer is busy
        with an earlier snapshot: the state is copied for one snapshot at a time. ``into``: encode
        now and hand the changelog records to it (exactly_once: the open transaction) instead of
        the writer. Returns the partitions snapshotted."""
        self.due_again(self.failed)
        self.failed.clear()
        interval = self.settings.state.snapshot_interval_s
        if interval and not self.writer.idle():
            return []
        now = time.monotonic()
        due = [tp for tp, since in self.dirty.items() if now - since >= interval]
        if not due:
            return []
        chosen = due if interval == 0 else [min(due, key=self.dirty.__getitem__)]
        if into is None:
            self.snapshot(chosen)
            return chosen
        for topic, p in chosen:
            self.dirty.pop((topic, p), None)
            position = self.positions[(topic, p)]
            assert position is not None
            snap = PartitionSnapshot(topic, p, position, self.pipeline.export_partition(p))
            snap.group, snap.created_ms = self.store.group, int(time.time() * 1000)
            with encoded(snap, self.store.key) as parts:
                into(self._manifest(snap, parts), parts)
        return chosen

    def due_again(self, keys: Iterable[Key]) -> None:
        """Partitions whose snapshot did not reach the changelog: due at the next call."""
        for key in keys:
            if key in self.positions:
                self.dirty.setdefault(key, 0.0)

    def snapshot(self, partitions: list[Key], wait: bool = False) -> None:
        """Copy the state of ``partitions`` now (consistent with the committed offsets) and let
        the writer thread encode it and put it on disk (``wait``: before returning)."""
        for topic, p in partitions:
            position = self.positions.get((topic, p))
            self.dirty.pop((topic, p), None)
            if position is None:
                continue  # nothing applied since the assignment: the snapshot on disk is current
            self.writer.submit(PartitionSnapshot(topic, p, position, self.pipeline.export_partition(p)))
        if wait:
            self.writer.drain()


def describe(spec: SensorSpec) -> str:
    """A channel registered automatically, for the log: what its readings must be."""
    return f"axes {', '.join(spec.keys)}; unit {spec.unit!r}; resolution {spec.resolution:g}; no range"


def log_registrations(registered: list[Registration], spare: int) -> None:
    """A line per channel a batch registered on its first reading (``spare``: the room left after)."""
    for i, r in enumerate(registered):
        log.info(
            "channel %s registered automatically: %s (its first reading: %s, %s/%s offset %s); "
            "room for %d more (channels.auto_register)",
            r.spec.name,
            describe(r.spec),
            r.device_id,
            r.topic,
            r.partition,
            r.offset,
            spare + len(registered) - 1 - i,
        )
