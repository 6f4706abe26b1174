"""The Kafka side of every source: validated readings, keyed by device id, with delivery checks.

:class:`Publisher` wraps one ``confluent_kafka.Producer`` (``monitor.ingest.kafka.producer_config``:
idempotent, ``acks=all``, lz4, ``linger.ms`` batching). Messages are produced without waiting;
every :data:`CHECK_EVERY` messages it serves delivery reports and raises
:class:`~monitor.errors.KafkaUnavailable` on the first failed delivery, and :meth:`Publisher.close`
(also on leaving a ``with`` block, normally or through an exception) waits until everything
produced is acknowledged or raises. Nothing is lost silently: a source either ends with every
message acknowledged or with an error.

:class:`Sequencer` turns a :class:`Sample` (device, sensor, event time, values in the wire
format's units) into wire bytes: it numbers each device's messages (``seq`` = start, start + 1,
...) and validates with :func:`monitor.schema.validate`, so a source never publishes a message the
monitor would reject. Only accepted samples consume a number.

>>> seq = Sequencer()
>>> raw = seq.encode(Sample("pi-1", "temperature", 1_700_000_000_000, {"value": 21.5}))
>>> raw[:60]
b'{"device_id":"pi-1","sensor":"temperature","ts":170000000000'
>>> seq.encode(Sample("pi-1", "humidity", 1_700_000_000_000, {"value": 140.0})).reason
<Reason.OUT_OF_RANGE: 'out_of_range'>
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from monitor.errors import KafkaUnavailable
from monitor.ingest.kafka import ensure_topics, producer_config
from monitor.schema import DEFAULT_CATALOG, SCHEMA_VERSION, Catalog, Reading, Rejection, validate
from monitor.settings import KafkaSettings

#: Every this many produced messages: serve delivery reports and fail on the first error.
CHECK_EVERY: Final = 10_000
DeliveryCallback = Callable[[KafkaError | None, Message], None]
Headers = Sequence[tuple[str, bytes]]

_ENCODER: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading before it is numbered: values already in the wire format's unit."""

    device_id: str
    sensor: str
    ts: int  # UTC epoch milliseconds, event time
    values: dict[str, float]


class Sequencer:
    """Numbers, validates and encodes samples; ``seq`` counts each device's accepted messages."""

    def __init__(self, start: int = 0, catalog: Catalog = DEFAULT_CATALOG) -> None:
        self.start = start
        self.catalog = catalog  # the sensors the monitor is configured for
        self._next: defaultdict[str, int] = defaultdict(lambda: self.start)

    def encode(self, sample: Sample) -> bytes | Rejection:
        """The wire bytes of ``sample``, or why the monitor would reject it (no number used)."""
        spec = self.catalog.by_name.get(sample.sensor)
        reading = Reading(
            device_id=sample.device_id,
            sensor=sample.sensor,
            ts=sample.ts,
            seq=self._next[sample.device_id],
            values=sample.values,
            unit=spec.unit if spec is not None else "",
            schema_version=SCHEMA_VERSION,
        )
        checked = validate(reading, None, catalog=self.catalog)
        if isinstance(checked, Rejection):
            return checked
        self._next[sample.device_id] += 1
        return _ENCODER.encode(checked)


class Publisher:
    """A batching producer that proves delivery: see the module docstring.

    Thread-safe: messages may be produced from one thread while another serves delivery reports
    (the MQTT bridge does). ``on_delivery`` callbacks run in whichever thread polls.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        flush_timeout_s: float = 30.0,
        create_topics: Sequence[str] = (),
        topics_timeout_s: float = 15.0,
        **overrides: Any,
    ) -> None:
        if create_topics:  # also the reachability check: KafkaUnavailable after topics_timeout_s
            ensure_topics(kafka, create_topics, timeout=topics_timeout_s)
        self.kafka = kafka
        self.flush_timeout_s = flush_timeout_s
        self.producer = Producer(producer_config(kafka, **overrides))
        self.sent = 0
        self.delivered = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        ts: int | None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue one message; blocks only while the local queue is full.

        ``ts`` is the Kafka timestamp (epoch ms); None: the producer's clock.
        """

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            if on_delivery is not None:
                on_delivery(err, msg)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": delivered}
        if ts is not None:
            kwargs["timestamp"] = ts
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)  # serve delivery reports until there is room
        with self._lock:
            self.sent += 1
            due = self.sent % CHECK_EVERY == 0
        if due:
            self.check()

    def check(self, timeout: float = 0.0) -> None:
        """Serve delivery reports (waiting up to ``timeout``); raise if any delivery failed."""
        self.producer.poll(timeout)
        with self._lock:
            if self.errors:
                raise KafkaUnavailable(f"{len(self.errors)} deliveries failed, first: {self.errors[0]}")

    def close(self) -> None:
        """Wait until every message is acknowledged; raise :class:`KafkaUnavailable` if not."""
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining:
            raise KafkaUnavailable(
                f"{remaining} messages not delivered to {self.kafka.bootstrap_servers} "
                f"within {self.flush_timeout_s:g}s"
            )
        self.check()

    def abort(self) -> int:
        """Drop what is not delivered yet (after a failure, so shutdown is quick); the count dropped."""
        queued = len(self.producer)
        self.producer.purge()
        self.producer.poll(0)  # the purged messages' reports: failures, never acknowledgements
        return queued

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
            elif err.code() != KafkaError._PURGE_QUEUE and err.code() != KafkaError._PURGE_INFLIGHT:
                self.errors.append(f"{msg.topic()}: {err.str()}")


class SampleSink(Protocol):
    """Where a source puts its samples (a :class:`ReadingPublisher`; a list in unit tests)."""

    def publish(self, sample: Sample) -> Rejection | None:
        """Publish ``sample``, or return why it is not valid (then nothing is published)."""

    def check(self) -> None:
        """Raise if an earlier publication failed."""


class ReadingPublisher:
    """Validated readings onto ``kafka.readings_topic``, keyed by device id (iio, replay)."""

    def __init__(self, publisher: Publisher, seq_start: int = 0, catalog: Catalog = DEFAULT_CATALOG) -> None:
        self.publisher = publisher
        self.sequencer = Sequencer(seq_start, catalog)
        self.topic = publisher.kafka.readings_topic

    def publish(self, sample: Sample) -> Rejection | None:
        """Produce ``sample``; a :class:`Rejection` (nothing produced) if it is not valid."""
        value = self.sequencer.encode(sample)
        if isinstance(value, Rejection):
            return value
        self.publisher.send(self.topic, sample.device_id.encode(), value, sample.ts)
        return None

    def check(self) -> None:
        self.publisher.check()
