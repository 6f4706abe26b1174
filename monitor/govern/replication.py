"""A registry every replica shares: Kafka is its system of record, each directory a copy.

With ``registry.shared`` the model registry lives in two topics every replica already reaches:

- ``kafka.artifacts_topic`` (compacted): each registered version's signed files (``manifest.json``,
  its artifact ``model.json``, or ``model.pkl`` for an older one, and ``signature``: what
  :meth:`~monitor.govern.registry.ModelRegistry.version_files` reads), with the settings and rules
  its manifest names by digest (``blobs/<sha256>``, what rebuilds it), as one msgpack bundle, cut
  into chunks of at most :data:`CHUNK_BYTES` (a model with River tiers pickles to more than a
  megabyte, Kafka's default record limit). A chunk's key is ``<device>/<sensor>/v<N>/<part>``:
  compaction keeps one copy of each; its value names the bundle's SHA-256, so the chunks of two
  different bundles of a version are never mixed;
- ``kafka.audit_topic`` (kept forever): the audit events, each with its identity
  (:func:`~monitor.govern.registry.event_id`).

A :class:`RegistryReplica` publishes what its :class:`~monitor.govern.registry.ModelRegistry`
stores and makes (it is the registry's :class:`~monitor.govern.registry.Publisher`) and keeps the
registry's directory current: a consumer outside every group, assigned every partition of both
topics from the beginning, installs each version it has not got (verified with the configured key,
as a load is: a version signed with another key is refused and logged with what to fix) and
appends the events its audit log lacks. :meth:`RegistryReplica.catch_up` reads up to the topics'
current ends (a starting service, the ``telemon registry`` command); :meth:`RegistryReplica.start`
follows them in a thread. Without ``registry.shared`` the directory alone is the registry.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from monitor.errors import ArtifactError, KafkaUnavailable, RegistryError
from monitor.govern.registry import (
    BLOBS,
    MANIFEST,
    AuditEvent,
    Manifest,
    ModelRegistry,
    VersionRef,
    decode_event,
    encode_event,
    stamped,
)
from monitor.ingest import kafka
from monitor.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

#: The largest piece of a bundle in one record (Kafka's default limit is 1 MB per record batch).
CHUNK_BYTES = 512 * 1024
#: Records per poll, and how long a poll waits (a stop request is seen within this).
BATCH, POLL_S = 500, 0.2
_NO_LEADER = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
)
#: Tries to read a partition's end offsets (0.5 s apart) before Kafka counts as unavailable.
LOOKUP_ATTEMPTS = 20


class Bundle(msgspec.Struct, frozen=True):
    """One version's stored files."""

    device_id: str
    sensor: str
    version: int
    files: dict[str, bytes]


class Chunk(msgspec.Struct, frozen=True):
    """A piece of a bundle: ``part`` of ``parts`` of the bundle whose SHA-256 is ``digest``."""

    digest: str
    part: int
    parts: int
    data: bytes


def topic_configs(k: KafkaSettings) -> dict[str, dict[str, str]]:
    """How the registry's topics are created: artifacts compacted, the audit trail kept forever."""
    return {
        k.artifacts_topic: {"cleanup.policy": "compact"},
        k.audit_topic: {"retention.ms": "-1"},
    }


def chunks(ref: VersionRef, files: dict[str, bytes]) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of a version's files.

    >>> records = chunks(VersionRef("dev-0001", "temperature", 2), {"model.json": bytes(600_000)})
    >>> [key.decode() for key, _ in records]
    ['dev-0001/temperature/v2/0', 'dev-0001/temperature/v2/1']
    """
    bundle = msgspec.msgpack.encode(Bundle(ref.device_id, ref.sensor, ref.version, files))
    digest = hashlib.sha256(bundle).hexdigest()
    pieces = [bundle[i : i + CHUNK_BYTES] for i in range(0, len(bundle), CHUNK_BYTES)]
    return [
        (
            f"{ref.device_id}/{ref.sensor}/v{ref.version}/{i}".encode(),
            _CHUNK.encode(Chunk(digest, i, len(pieces), p)),
        )
        for i, p in enumerate(pieces)
    ]


_CHUNK = msgspec.msgpack.Encoder()
_CHUNK_DECODER = msgspec.msgpack.Decoder(Chunk)
_BUNDLE_DECODER = msgspec.msgpack.Decoder(Bundle)


class Assembler:
    """Joins chunks, in any order and across partitions, into bundles."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[int, bytes]] = {}  # digest -> part -> data

    def add(self, value: bytes) -> Bundle | None:
        """The bundle ``value`` completes, if any. Raises ``ValueError`` for a record that is no
        chunk or a bundle that does not match its digest."""
        try:
            chunk = _CHUNK_DECODER.decode(value)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"not a chunk: {exc}") from None
        got = self.parts.setdefault(chunk.digest, {})
        got[chunk.part] = chunk.data
        if len(got) < chunk.parts:
            return None
        del self.parts[chunk.digest]
        data = b"".join(got[i] for i in range(chunk.parts))
        if hashlib.sha256(data).hexdigest() != chunk.digest:
            raise ValueError(f"bundle {chunk.digest[:12]} does not match its digest")
        try:
            return _BUNDLE_DECODER.decode(data)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"bundle {chunk.digest[:12]} does not decode: {exc}") from None


class RegistryReplica:
    """Publishes a shared registry's versions and events, and keeps its directory current."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings, self.registry = settings, registry
        k = settings.kafka
        self.producer = Producer(kafka.producer_config(k))
        self.tracker = kafka.DeliveryTracker()
        self.consumer = Consumer(kafka.consumer_config(k, **{"group.id": f"{k.group_id}.registry-reader"}))
        self.assembler = Assembler()
        self.installed = 0  # versions this copy got from the topic
        self.seen: set[VersionRef] = set()  # versions read from the topic
        self.refused = 0  # versions that did not verify (another key, tampered)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="telemon-registry", daemon=True)
        self._assigned = False
        registry.publisher = self

    # --- publishing -------------------------------------------------------------------------------

    def publish_version(self, ref: VersionRef, files: dict[str, bytes]) -> None:
        for key, value in chunks(ref, files | self._blobs(files)):
            kafka.produce(
                self.producer, self.tracker, self.settings.kafka.artifacts_topic, key=key, value=value
            )

    def publish_events(self, events: Sequence[AuditEvent]) -> None:
        now = int(time.time() * 1000)
        for e in events:
            value = encode_event(stamped(e, now))
            kafka.produce(
                self.producer,
                self.tracker,
                self.settings.kafka.audit_topic,
                key=e.device_id.encode(),
                value=value,
            )

    def flush(self) -> None:
        """Wait until Kafka has everything published; raises :class:`KafkaUnavailable`."""
        kafka.flush(self.producer, self.tracker, self.settings.consume.delivery_timeout_s)

    # --- following --------------------------------------------------------------------------------

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Read both topics up to their ends as of now into the directory; returns the records
        read. Raises :class:`KafkaUnavailable` if Kafka does not answer or the read takes longer
        than ``timeout_s``."""
        ends = self._ends(self._partitions())  # before the assignment: no fetch holds the connection
        self._assign()
        deadline, read = time.monotonic() + timeout_s, 0
        while True:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in ends])
            behind = [tp for tp in positions if tp.offset < ends[(tp.topic, tp.partition)]]
            if not behind:
                return read
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"the registry's topics not read in {timeout_s:g}s ({len(behind)} partitions behind)"
                )
            messages = self.consumer.consume(BATCH, POLL_S)
            self._apply(messages)
            read += len(messages)

    def publish_missing(self) -> list[VersionRef]:
        """After :meth:`catch_up`: publish the versions of the directory the topic lacks (stored
        before the registry was shared, or by a replica that stopped between its commit and the
        versions' acknowledgement); only those that verify with the configured key."""
        missing = []
        for ref in self.registry.versions():
            if ref in self.seen:
                continue
            try:
                self.registry.manifest(*ref)
            except RegistryError as exc:
                log.warning("registry: %s not published: %s", ref, exc)
                continue
            self.publish_version(ref, self.registry.version_files(*ref))
            missing.append(ref)
        return missing

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self.consumer.close()
        self.producer.flush(self.settings.consume.delivery_timeout_s)

    def _follow(self) -> None:
        try:
            self._assign()
            while not self.stop.is_set():
                self._apply(self.consumer.consume(BATCH, POLL_S))
        except Exception:
            log.exception(
                "registry: following the shared registry failed: versions and commands of other "
                "replicas no longer reach this one"
            )

    def _assign(self) -> None:
        if not self._assigned:
            self.consumer.assign(self._partitions())
            self._assigned = True

    def _partitions(self) -> list[TopicPartition]:
        """Every partition of the registry's topics, from the beginning."""
        k = self.settings.kafka
        meta = kafka.list_topics(self.consumer, k).topics
        missing = [t for t in (k.artifacts_topic, k.audit_topic) if t not in meta]
        if missing:
            raise KafkaUnavailable(
                f"the shared registry's topics {', '.join(missing)} do not exist: `telemon run` "
                "creates them (or create them as compose.yaml's kafka-init does)"
            )
        return [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in (k.artifacts_topic, k.audit_topic)
            for p in sorted(meta[t].partitions)
        ]

    def _ends(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The end offset of each partition holding records (a position before it: not read yet,
        a negative one: nothing fetched yet)."""
        ends = {}
        for tp in partitions:
            low, high = self._watermarks(tp)
            if high > low:  # an empty partition is read already
                ends[(tp.topic, tp.partition)] = high
        return ends

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """A partition's first and end offsets; a topic just created may have no leader yet."""
        for attempt in range(LOOKUP_ATTEMPTS):
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=kafka.CONNECT_TIMEOUT_S)
                return low, high
            except KafkaException as exc:
                err = exc.args[0]
                if attempt + 1 == LOOKUP_ATTEMPTS or not (err.retriable() or err.code() in _NO_LEADER):
                    raise KafkaUnavailable(
                        f"cannot read the end of {tp.topic} [{tp.partition}]: {exc}"
                    ) from None
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _apply(self, messages: Iterable[Message]) -> None:
        """Install the versions these records complete, then append the events."""
        artifacts_topic = self.settings.kafka.artifacts_topic
        bundles: list[Bundle] = []
        events: list[AuditEvent] = []
        for m in messages:
            if m.error() is not None:
                log.warning("registry: consumer error: %s", m.error())
                continue
            try:
                if m.topic() == artifacts_topic:
                    bundle = self.assembler.add(m.value() or b"")
                    if bundle is not None:
                        bundles.append(bundle)
                else:
                    events.append(decode_event(m.value() or b""))
            except (ValueError, msgspec.MsgspecError) as exc:
                log.warning("registry: skipping %s [%s] @%s: %s", m.topic(), m.partition(), m.offset(), exc)
        for b in bundles:
            ref = VersionRef(b.device_id, b.sensor, b.version)
            self.seen.add(ref)
            self._install(ref, b.files)
        if events:
            try:
                self.registry.record(*events)
            except RegistryError as exc:
                log.error(
                    "registry: %d event(s) of the audit topic not in the local trail: %s", len(events), exc
                )

    def _blobs(self, files: dict[str, bytes]) -> dict[str, bytes]:
        """The settings and rules a version's manifest names by digest, as ``blobs/<sha256>`` files
        (those this directory has: versions registered before lineage name none)."""
        try:
            m = msgspec.json.decode(files[MANIFEST], type=Manifest).model
        except (KeyError, msgspec.MsgspecError):
            return {}
        out = {}
        for digest in filter(None, (m.settings_sha256, m.rules_sha256)):
            try:
                out[f"{BLOBS}/{digest}"] = self.registry.blob(digest)
            except RegistryError as exc:
                log.warning("registry: %s not published with its version: %s", digest[:12], exc)
        return out

    def _install(self, ref: VersionRef, files: dict[str, bytes]) -> None:
        try:
            if self.registry.install(ref, files):
                self.installed += 1
                log.info("registry: %s installed from %s", ref, self.settings.kafka.artifacts_topic)
            for name, data in files.items():  # the version verified: its blobs, each by its digest
                if (
                    name.startswith(f"{BLOBS}/")
                    and hashlib.sha256(data).hexdigest() == name[len(BLOBS) + 1 :]
                ):
                    self.registry.put_blob(data)
        except ArtifactError as exc:
            self.refused += 1
            log.error("registry: %s refused: %s", ref, exc)
        except (RegistryError, OSError) as exc:
            log.error("registry: %s not stored: %s", ref, exc)
