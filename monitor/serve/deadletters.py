"""Dead letters: every rejected record reaches the dead-letter topic, whatever its size.

A dead letter is the rejected record's key and value, unchanged, with ``telemon.*`` headers: the
reason, a detail, and where it came from (topic, partition, offset). A record whose key and value
together exceed ``consume.dead_letter_max_bytes`` is dead-lettered *truncated*: reason
``too_large``, the first bytes of its key and value, and headers with the original reason, sizes
and SHA-256 digests (``telemon.original_reason``, ``telemon.original_bytes``,
``telemon.original_key_bytes``, ``telemon.sha256``, ``telemon.key_sha256``), so the record can
still be found in, and matched against, the source topic.

The broker may refuse a record the producer accepted (a topic whose ``max.message.bytes`` is
lower than the producer's): such a dead letter is produced again cut to :data:`MIN_KEPT_BYTES`.
If even that is refused, or the producer refuses the record outright, the dead letter is given up:
logged with its source topic, partition, offset and digest, and counted
(``telemon_dead_letters_failed_total``), so that one record never holds up its batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from monitor.ingest import kafka
from monitor.records import DeadLetter
from monitor.schema import Reason

log = logging.getLogger(__name__)

#: What a dead letter cut a second time keeps of the record's value (and of its key, a quarter).
MIN_KEPT_BYTES = 1024
#: Errors that refuse one record for its size or shape: producing it again as it is cannot help.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError._INVALID_ARG,
    }
)
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: Headers


def record(d: DeadLetter, max_bytes: int) -> Record:
    """The dead letter of ``d``: whole if its key and value fit ``max_bytes``, else truncated."""
    key, value = d.message.key(), d.message.value()
    if len(key or b"") + len(value or b"") <= max_bytes:
        return Record(key, value, _headers(d))
    return truncated(d, max_bytes)


def truncated(d: DeadLetter, max_bytes: int) -> Record:
    """``d`` cut to ``max_bytes`` of key and value together (a key keeps at most a quarter)."""
    m = d.message
    key, value = m.key(), m.value()
    kept_key = None if key is None else key[: max_bytes // 4]
    kept_value = None if value is None else value[: max_bytes - len(kept_key or b"")]
    headers = [
        *_headers(d, Reason.TOO_LARGE),
        ("telemon.original_reason", d.rejection.reason.value.encode()),
        ("telemon.original_bytes", str(len(value or b"")).encode()),
        ("telemon.original_key_bytes", str(len(key or b"")).encode()),
        ("telemon.sha256", hashlib.sha256(value or b"").hexdigest().encode()),
        ("telemon.key_sha256", hashlib.sha256(key or b"").hexdigest().encode()),
    ]
    return Record(kept_key, kept_value, headers)


def _headers(d: DeadLetter, reason: Reason | None = None) -> Headers:
    m = d.message
    return [
        ("telemon.reason", (reason or d.rejection.reason).value.encode()),
        ("telemon.detail", d.rejection.detail.encode("utf-8", "replace")[:512]),
        ("telemon.topic", str(m.topic()).encode()),
        ("telemon.partition", str(m.partition()).encode()),
        ("telemon.offset", str(m.offset()).encode()),
    ]


def where(d: DeadLetter) -> str:
    m = d.message
    return f"{m.topic()}/{m.partition()}@{m.offset()}"


@dataclass
class DeadLetterProducer:
    """Produces a batch's dead letters through the service's producer and delivery tracker."""

    producer: Producer
    tracker: kafka.DeliveryTracker
    topic: str
    max_bytes: int
    refused: list[DeadLetter] = field(default_factory=list)  # refused by the broker, to cut again
    failed: int = 0  # dead letters given up since the last call to take_failed()

    def produce(self, dead_letters: Iterable[DeadLetter]) -> None:
        """Produce a batch's dead letters (again, after an outage: what was refused before is
        produced again too)."""
        self.refused = []
        for d in dead_letters:
            self._produce(d, record(d, self.max_bytes))

    def retry_refused(self) -> bool:
        """Produce the dead letters the broker refused again, cut to :data:`MIN_KEPT_BYTES`;
        False if there were none."""
        refused, self.refused = self.refused, []
        for d in refused:
            self._produce(d, truncated(d, MIN_KEPT_BYTES), last=True)
        return bool(refused)

    def take_failed(self) -> int:
        failed, self.failed = self.failed, 0
        return failed

    def _produce(self, d: DeadLetter, r: Record, last: bool = False) -> None:
        try:
            kafka.produce(
                self.producer,
                self.tracker,
                self.topic,
                key=r.key,
                value=r.value,
                headers=r.headers,
                on_delivery=self._report(d, last),
            )
        except KafkaException as exc:
            if exc.args[0].code() not in RECORD_ERRORS:
                raise
            if last or len(r.value or b"") + len(r.key or b"") <= MIN_KEPT_BYTES:
                self._give_up(d, exc.args[0].str())
            else:
                self._produce(d, truncated(d, MIN_KEPT_BYTES), last=True)

    def _report(self, d: DeadLetter, last: bool) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None or err.code() not in RECORD_ERRORS:
                self.tracker.on_delivery(err, msg)
                return
            self.tracker.pending -= 1
            if last:
                self._give_up(d, err.str())
            else:
                self.refused.append(d)

        return on_delivery

    def _give_up(self, d: DeadLetter, why: str) -> None:
        self.failed += 1
        digest = hashlib.sha256(d.message.value() or b"").hexdigest()
        log.error(
            "dead letter of %s (%s, value sha256 %s) refused by Kafka even cut to %d bytes (%s): "
            "given up, the record stays in its source topic",
            where(d),
            d.rejection.reason.value,
            digest,
            MIN_KEPT_BYTES,
            why,
        )
