"""Partition state in Kafka: a compacted changelog topic, so a partition's state follows it to a
replica on another machine from Kafka alone (the convention of Kafka Streams and Quix Streams).

Each snapshot of a partition (the signed bytes of :mod:`monitor.state.snapshot`) is written to the
changelog topic (``kafka.state_topic``, default ``telemon.state``, ``cleanup.policy=compact``) as
records on the changelog partition ``partition % changelog partitions`` (telemon creates the
topic with as many partitions as the readings topic: partition ``p``'s state is on ``p``)::

    key <group>/<topic>/<partition>/<generation>/<i>   chunk i of the snapshot (at most 512 KiB)
    key <group>/<topic>/<partition>                    the manifest (JSON), written after its chunks
    key <group>/<topic>/<partition>/<generation>/<i>   null: the previous generation's chunks, once
                                                       the new manifest is written (compaction
                                                       then drops them)

The generation is the first 16 hex digits of the snapshot's SHA-256; the manifest records the
whole digest, the chunk count and size, and the source offset (the next offset of the readings
partition the state reflects), which every record also carries in its ``telemon.source.offset``
header. A snapshot is restored from the latest manifest whose chunks are all there: since chunk
keys name their generation, compaction can never mix two snapshots, and a writer that crashed
between its chunks and its manifest leaves the previous snapshot whole (a restore tombstones the
orphaned chunks). The snapshot's own HMAC is checked when it is decoded, as for a file.

Reading a changelog partition "to its end" does not trust the broker's high watermark (the
embedded broker's is wrong): the reader first writes a tombstone under the partition's fence key
and reads until it has passed that record's offset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from monitor.errors import ConfigError, KafkaUnavailable, SnapshotError
from monitor.ingest import kafka
from monitor.settings import KafkaSettings

log = logging.getLogger(__name__)

#: A chunk's bytes: well under Kafka's default record limit (1 MB) with its key and headers.
CHUNK_BYTES = 512 * 1024
FORMAT = 1
#: Topic configs of the changelog telemon creates (a delete policy would expire idle partitions' state).
TOPIC_CONFIG = {"cleanup.policy": "compact"}
Record = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


@dataclass(frozen=True)
class Manifest:
    """What the changelog says of a partition's latest snapshot."""

    group: str
    topic: str
    partition: int
    next_offset: int  # the source offset: the readings partition's next offset the state reflects
    created_ms: int
    sha256: str
    chunks: int
    size: int

    @property
    def generation(self) -> str:
        return self.sha256[:16]

    def encode(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        try:
            d = json.loads(raw)
            fmt = d.pop("format", None)
            if fmt != FORMAT:
                raise ValueError(f"unsupported changelog format {fmt!r}")
            return cls(**d)
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"unreadable changelog manifest: {exc}") from None


def ensure_topic(s: KafkaSettings) -> None:
    """Create the changelog topic, compacted, with as many partitions as the readings topic; refuse
    an existing one whose cleanup policy would delete state (:class:`ConfigError`)."""
    admin = AdminClient(kafka.client_config(s))
    count = s.partitions
    for _ in range(50):  # a topic just created may show no partitions for a moment
        readings = kafka.list_topics(admin, s).topics.get(s.readings_topic)
        if readings is None or (readings.error is None and readings.partitions):
            count = len(readings.partitions) if readings is not None else s.partitions
            break
        time.sleep(0.1)
    kafka.ensure_topics(
        s.model_copy(update={"partitions": count}), [s.state_topic], configs={s.state_topic: TOPIC_CONFIG}
    )
    policy = kafka.topic_config(s, s.state_topic, "cleanup.policy")
    if policy is not None and "compact" not in policy:
        raise ConfigError(
            f"the state changelog topic {s.state_topic} has cleanup.policy={policy}: it would delete the "
            "state of partitions that stay unchanged longer than its retention; set cleanup.policy=compact "
            "on it (kafka-configs --alter --add-config cleanup.policy=compact), or name another topic "
            "(kafka.state_topic)"
        )


def partition_key(group: str, topic: str, partition: int) -> str:
    return f"{group}/{topic}/{partition}"


def chunk_key(m: Manifest, i: int) -> bytes:
    return f"{partition_key(m.group, m.topic, m.partition)}/{m.generation}/{i}".encode()


def records(
    manifest: Manifest, data: Sequence[bytes | memoryview], previous: Manifest | None
) -> list[Record]:
    """The records that write a snapshot (``data``: its bytes, in parts): its chunks, its manifest,
    then tombstones for ``previous``'s chunks (none if it is the same generation)."""
    headers = [
        ("telemon.source.offset", str(manifest.next_offset).encode()),
        ("telemon.generation", manifest.generation.encode()),
    ]
    blob = memoryview(b"".join(data))
    out: list[Record] = [
        (chunk_key(manifest, i), bytes(blob[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]), headers)
        for i in range(manifest.chunks)
    ]
    out.append(
        (
            partition_key(manifest.group, manifest.topic, manifest.partition).encode(),
            manifest.encode(),
            headers,
        )
    )
    if previous is not None and previous.generation != manifest.generation:
        out.extend((chunk_key(previous, i), None, headers) for i in range(previous.chunks))
    return out


def manifest_of(
    group: str,
    topic: str,
    partition: int,
    next_offset: int,
    created_ms: int,
    data: Iterable[bytes | memoryview],
) -> Manifest:
    digest, size = hashlib.sha256(), 0
    for part in data:
        digest.update(part)
        size += len(part)
    return Manifest(
        group,
        topic,
        partition,
        next_offset,
        created_ms,
        digest.hexdigest(),
        max(1, -(-size // CHUNK_BYTES)),
        size,
    )


class Changelog:
    """Writes and reads the changelog of one consumer group's partitions, with a producer of its
    own (idempotent), or the caller's (:meth:`publish`)."""

    def __init__(self, settings: KafkaSettings, group: str, timeout_s: float) -> None:
        self.settings = settings
        self.topic = settings.state_topic
        self.group = group
        self.timeout_s = timeout_s
        self.producer = Producer(kafka.producer_config(settings, **{"linger.ms": 5}))
        self.tracker = kafka.DeliveryTracker()
        self.previous: dict[tuple[str, int], Manifest] = {}  # latest written or restored, per partition
        self._partitions: int | None = None
        self._reader: Consumer | None = None

    def partition_of(self, partition: int) -> int:
        """The changelog partition holding a readings partition's state."""
        deadline = time.monotonic() + self.timeout_s
        while self._partitions is None:  # a topic just created may be missing from metadata a moment
            meta = kafka.list_topics(self.producer, self.settings).topics.get(self.topic)
            if meta is not None and meta.error is None and meta.partitions:
                self._partitions = len(meta.partitions)
            elif time.monotonic() > deadline:
                raise KafkaUnavailable(f"the state changelog topic {self.topic} is missing")
            else:
                time.sleep(0.2)
        return partition % self._partitions

    def publish(
        self,
        manifest: Manifest,
        data: Sequence[bytes | memoryview],
        producer: Producer | None = None,
        tracker: kafka.DeliveryTracker | None = None,
    ) -> None:
        """Produce a snapshot's records. With this changelog's own producer, wait until Kafka
        acknowledged them (raises :class:`KafkaUnavailable`); with the caller's (exactly_once: the
        transactional one), its ``tracker`` counts them and the caller commits."""
        key = (manifest.topic, manifest.partition)
        where = self.partition_of(manifest.partition)
        own = producer is None
        p = self.producer if producer is None else producer
        t = self.tracker if own else (tracker or kafka.DeliveryTracker())
        for k, v, headers in records(manifest, data, self.previous.get(key)):
            kafka.produce(p, t, self.topic, key=k, value=v, partition=where, headers=headers)
        if own:
            kafka.flush(self.producer, self.tracker, self.timeout_s)
        self.previous[key] = manifest

    def forget(self, topic: str, partition: int) -> None:
        self.previous.pop((topic, partition), None)

    def read(
        self, topic: str, partition: int, have: str | None = None
    ) -> tuple[Manifest | None, bytes | None]:
        """The partition's latest snapshot in the changelog: its manifest (None: none written) and
        its bytes (None when its digest is ``have``: the caller holds that snapshot already).
        Raises :class:`SnapshotError` when the latest manifest's chunks are missing or do not add
        up to its digest; :class:`KafkaUnavailable` when the changelog cannot be read in time."""
        where = self.partition_of(partition)
        prefix = partition_key(self.group, topic, partition).encode()
        end = self._fence(prefix, where)
        chunks: dict[str, dict[int, bytes]] = {}  # generation -> index -> bytes
        latest: Manifest | None = None
        for key, value in self._scan(where, end):
            if key == prefix:
                if value is None:
                    latest = None
                    continue
                latest = Manifest.decode(value)
                chunks = {g: c for g, c in chunks.items() if g == latest.generation}
            elif key.startswith(prefix + b"/") and value is not None:
                generation, _, index = key[len(prefix) + 1 :].decode(errors="replace").partition("/")
                if index.isdigit() and generation != (have or "")[:16]:
                    chunks.setdefault(generation, {})[int(index)] = value
        if latest is None:
            return None, None
        self.previous[(topic, partition)] = latest
        self._tombstone_orphans(latest, chunks, where)
        if latest.sha256 == have:
            return latest, None
        return latest, self._assemble(latest, chunks.get(latest.generation, {}))

    def _assemble(self, m: Manifest, parts: dict[int, bytes]) -> bytes:
        missing = [i for i in range(m.chunks) if i not in parts]
        if missing:
            raise SnapshotError(
                f"the changelog's snapshot of {m.topic}/{m.partition} (offset {m.next_offset}) lacks "
                f"{len(missing)} of its {m.chunks} chunks"
            )
        data = b"".join(parts[i] for i in range(m.chunks))
        if hashlib.sha256(data).hexdigest() != m.sha256:
            raise SnapshotError(
                f"the changelog's snapshot of {m.topic}/{m.partition} does not match its digest"
            )
        return data

    def _tombstone_orphans(self, latest: Manifest, chunks: dict[str, dict[int, bytes]], where: int) -> None:
        """Chunks of generations no manifest names any more (a writer stopped between its chunks
        and its manifest): tombstoned, so that compaction drops them."""
        prefix = partition_key(self.group, latest.topic, latest.partition)
        orphans = [
            f"{prefix}/{g}/{i}".encode() for g, c in chunks.items() if g != latest.generation for i in c
        ]
        if not orphans:
            return
        tracker = kafka.DeliveryTracker()
        for key in orphans:
            kafka.produce(self.producer, tracker, self.topic, key=key, value=None, partition=where)
        log.info(
            "tombstoned %d orphaned changelog chunk(s) of %s/%d", len(orphans), latest.topic, latest.partition
        )

    def _fence(self, prefix: bytes, where: int) -> int:
        """Write the partition's fence tombstone; its offset is where the changelog "ends" now."""
        offsets: list[int] = []
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                offsets.append(int(msg.offset()))

        self.producer.produce(  # this changelog's own producer: outside any transaction
            self.topic, key=prefix + b"/fence", value=None, partition=where, on_delivery=on_delivery
        )
        self.producer.flush(self.timeout_s)
        if not offsets:
            reason = errors[0] if errors else f"no acknowledgement in {self.timeout_s:g}s"
            raise KafkaUnavailable(f"cannot write to the state changelog {self.topic}: {reason}")
        return offsets[0]

    def _scan(self, where: int, end: int) -> Iterable[tuple[bytes, bytes | None]]:
        """Every record of changelog partition ``where`` up to offset ``end`` (inclusive)."""
        if self._reader is None:  # one for every restore: no group, nothing committed
            conf = {"group.id": f"{self.group}.changelog-reader", "fetch.wait.max.ms": 50}
            self._reader = Consumer(kafka.consumer_config(self.settings, **conf))
        consumer = self._reader
        consumer.assign([TopicPartition(self.topic, where, OFFSET_BEGINNING)])
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                for m in consumer.consume(1000, 0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaUnavailable(f"cannot read the state changelog {self.topic}: {err.str()}")
                    deadline = time.monotonic() + self.timeout_s
                    key = m.key()
                    if key is not None:
                        yield bytes(key), m.value()
                    if (m.offset() or 0) >= end:
                        return
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"the state changelog {self.topic} partition {where} was not read to offset {end} "
                        f"within {self.timeout_s:g}s of its last record"
                    )
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read the state changelog {self.topic}: {exc}") from None
        finally:
            consumer.unassign()

    def close(self) -> None:
        self.producer.flush(self.timeout_s)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
