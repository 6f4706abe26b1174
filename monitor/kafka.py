"""Kafka plumbing shared by the monitor and the producers: client configs, topics, delivery."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # stubs lack re-export

from monitor.settings import KafkaSettings

log = logging.getLogger(__name__)

# librdkafka properties that load or execute code: never accepted through `kafka.extra`.
FORBIDDEN_KEYS = frozenset({"sasl.kerberos.kinit.cmd", "plugin.library.paths", "ssl.engine.location"})


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached or refused an operation."""


def client_config(s: KafkaSettings) -> dict[str, Any]:
    """Common librdkafka properties: servers, security and the pass-through extras."""
    bad = FORBIDDEN_KEYS & set(s.extra)
    if bad:
        raise ValueError(f"kafka.extra may not set {sorted(bad)}: these load or run code")
    conf: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "security.protocol": s.security_protocol,
    }
    if s.sasl_mechanism:
        conf["sasl.mechanism"] = s.sasl_mechanism
    if s.sasl_username:
        conf["sasl.username"] = s.sasl_username
    if s.sasl_password is not None:
        conf["sasl.password"] = s.sasl_password.get_secret_value()
    if s.ssl_ca_location:
        conf["ssl.ca.location"] = s.ssl_ca_location
    conf.update(s.extra)
    return conf


def producer_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = client_config(s) | {
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "acks": "all",
    }
    return conf | overrides


def consumer_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = client_config(s) | {
        "group.id": s.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": s.auto_offset_reset,
        "session.timeout.ms": s.session_timeout_ms,
        # librdkafka's default (3000 ms) would equal a small session timeout and expire the member.
        "heartbeat.interval.ms": max(100, s.session_timeout_ms // 3),
        "max.poll.interval.ms": s.max_poll_interval_ms,
        # The default (1000 ms) stalls a busy consumer; batches need the queue refilled at once.
        "fetch.queue.backoff.ms": 5,
        "queued.max.messages.kbytes": 65536,
    }
    return conf | overrides


def ensure_topics(s: KafkaSettings, names: Iterable[str], timeout: float = 15.0) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    admin = AdminClient(client_config(s))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {s.bootstrap_servers}: {exc}") from exc
    wanted = [NewTopic(n, num_partitions=s.partitions, replication_factor=1) for n in names]
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    for topic, fut in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaUnavailable(f"cannot create topic {topic}: {exc}") from exc


@dataclass
class DeliveryTracker:
    """Counts delivery reports so a caller can prove that everything it produced arrived."""

    pending: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")
            return
        self.delivered += 1
        # A delivered message always has a topic, partition and offset.
        key = (cast(str, msg.topic()), cast(int, msg.partition()))
        self.last_offsets[key] = max(self.last_offsets.get(key, -1), cast(int, msg.offset()))


def produce(producer: Producer, tracker: DeliveryTracker, topic: str, **kwargs: Any) -> None:
    """Produce one message, serving delivery callbacks while the local queue is full."""
    while True:
        try:
            producer.produce(topic, on_delivery=tracker.on_delivery, **kwargs)
            tracker.pending += 1
            return
        except BufferError:
            producer.poll(0.05)


def flush(producer: Producer, tracker: DeliveryTracker, timeout: float) -> None:
    """Wait until every produced message is acknowledged; raise if any failed or timed out."""
    remaining = producer.flush(timeout)
    if remaining or tracker.pending:
        raise KafkaUnavailable(f"{max(remaining, tracker.pending)} messages not delivered in {timeout}s")
    if tracker.errors:
        errors, tracker.errors = tracker.errors, []
        raise KafkaUnavailable(f"{len(errors)} deliveries failed, first: {errors[0]}")
