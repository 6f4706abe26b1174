"""Kafka plumbing shared by the monitor and the producers: client configs, topics, delivery.

:class:`~monitor.settings.KafkaSettings` has already vetted ``kafka.extra`` (no code-loading
properties, credentials as secrets, certificate checks on unless allowed); here the secrets are
unwrapped for librdkafka, and librdkafka's error texts are cleaned of them before anything logs or
stores those texts (its OAUTHBEARER config parser, for one, quotes the config it rejects).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stubs lack re-export
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
)
from pydantic import SecretStr

from monitor.errors import KafkaUnavailable
from monitor.settings import KafkaSettings

log = logging.getLogger(__name__)

# librdkafka properties that load or execute code: never accepted through `kafka.extra`.
FORBIDDEN_KEYS = KafkaSettings.CODE_LOADING_KEYS
REDACTED = "[redacted]"
# Parts of a secret shorter than this are left alone: they would blank out ordinary words.
_MIN_REDACTED_PART = 4

ErrorCallback = Callable[[KafkaError], None]
#: How long the first metadata request may take before "cannot reach Kafka" (the broker answers
#: in milliseconds when it is up).
CONNECT_TIMEOUT_S = 5.0


class _RateLimited(logging.Filter):
    """librdkafka retries a lost connection every few hundred milliseconds and logs each attempt:
    a line is let through once per ``interval_s`` per kind of message (its text without the
    numbers), with the count of the lines held back since."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (last let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        kind = re.sub(r"\d+", "#", str(record.msg))[:200]
        now = time.monotonic()
        last, held = self._last.get(kind, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[kind] = (last, held + 1)
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - last:.0f}s)"
        return True


#: librdkafka's own log lines, as Python log records (rate-limited), not raw lines on stderr.
LIBRDKAFKA_LOG = logging.getLogger("monitor.librdkafka")
LIBRDKAFKA_LOG.addFilter(_RateLimited())


def client_config(s: KafkaSettings) -> dict[str, Any]:
    """Common librdkafka properties: servers, security and the pass-through extras."""
    conf: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "security.protocol": s.security_protocol,
        "logger": LIBRDKAFKA_LOG,
    }
    if s.sasl_mechanism:
        conf["sasl.mechanism"] = s.sasl_mechanism
    if s.sasl_username:
        conf["sasl.username"] = s.sasl_username
    if s.sasl_password is not None:
        conf["sasl.password"] = s.sasl_password.get_secret_value()
    if s.ssl_ca_location:
        conf["ssl.ca.location"] = s.ssl_ca_location
    for key, value in s.extra.items():
        conf[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
    insecure = s.insecure_tls_keys()
    if insecure:
        log.warning("broker certificate checks are off (%s, kafka.allow_insecure_tls)", ", ".join(insecure))
    for key in s.override_keys():
        log.warning("kafka.extra overrides %s (kafka.allow_insecure_tls)", key)
    return conf


def secret_values(s: KafkaSettings) -> list[str]:
    """The credentials in ``s``: the texts :func:`redact` removes."""
    secrets = [v for v in s.extra.values() if isinstance(v, SecretStr)]
    if s.sasl_password is not None:
        secrets.append(s.sasl_password)
    return [v.get_secret_value() for v in secrets if v.get_secret_value()]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and every whitespace-separated part of one, replaced.

    Parts matter because librdkafka quotes the rest of a config value from where its parser
    stopped (``Unrecognized sasl.oauthbearer.config beginning at: ...``).
    """
    needles: set[str] = set()
    for secret in secrets:
        needles.add(secret)
        needles.update(part for part in secret.split() if len(part) >= _MIN_REDACTED_PART)
    for needle in sorted(needles, key=len, reverse=True):
        text = text.replace(needle, REDACTED)
    return text


def redacting(callback: ErrorCallback, secrets: Iterable[str]) -> ErrorCallback:
    """``callback`` fed errors whose text went through :func:`redact` (same code and flags)."""
    kept = list(secrets)

    def on_error(err: KafkaError) -> None:
        text = err.str()
        clean = redact(text, kept)
        if clean != text:
            err = KafkaError(
                err.code(),
                clean,
                fatal=err.fatal(),
                retriable=err.retriable(),
                txn_requires_abort=err.txn_requires_abort(),
            )
        callback(err)

    return on_error


def _with_overrides(s: KafkaSettings, conf: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``conf | overrides``, an ``error_cb`` among them wrapped by :func:`redacting`."""
    conf = conf | overrides
    callback = conf.get("error_cb")
    if callback is not None:
        conf["error_cb"] = redacting(callback, secret_values(s))
    return conf


def producer_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = client_config(s) | {
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "acks": "all",
    }
    return _with_overrides(s, conf, overrides)


def consumer_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = client_config(s) | {
        "group.id": s.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Outputs of telemon's transactions (exactly_once) count once committed; librdkafka's default.
        "isolation.level": "read_committed",
        "auto.offset.reset": s.auto_offset_reset,
        "session.timeout.ms": s.session_timeout_ms,
        # librdkafka's default (3000 ms) would equal a small session timeout and expire the member.
        "heartbeat.interval.ms": max(100, s.session_timeout_ms // 3),
        "max.poll.interval.ms": s.max_poll_interval_ms,
        # The default (1000 ms) stalls a busy consumer; batches need the queue refilled at once.
        "fetch.queue.backoff.ms": 5,
        # A few dozen batches ahead, not 64 MB: the prefetch queue is resident memory.
        "queued.max.messages.kbytes": 16384,
    }
    return _with_overrides(s, conf, overrides)


def list_topics(client: AdminClient | Consumer | Producer, s: KafkaSettings) -> ClusterMetadata:
    """The cluster's topics as ``client`` sees them; raises :class:`KafkaUnavailable` (naming the
    servers, secrets left out) if the brokers do not answer within :data:`CONNECT_TIMEOUT_S`."""
    try:
        return client.list_topics(timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        err = exc.args[0]
        reason = redact(err.str() if isinstance(err, KafkaError) else str(exc), secret_values(s))
        raise KafkaUnavailable(
            f"cannot reach Kafka at {s.bootstrap_servers} within {CONNECT_TIMEOUT_S:g}s ({reason}); "
            "check kafka.bootstrap_servers (TELEMON_KAFKA__BOOTSTRAP_SERVERS or --bootstrap)"
        ) from None


def ensure_topics(
    s: KafkaSettings,
    names: Iterable[str],
    timeout: float = 15.0,
    configs: dict[str, dict[str, str]] | None = None,
    partitions: int | None = None,
) -> None:
    """Create the topics that do not exist yet (idempotent), each with its ``configs`` if given,
    with ``partitions`` partitions (default ``kafka.partitions``). Raises :class:`KafkaUnavailable`
    if the brokers do not answer within :data:`CONNECT_TIMEOUT_S`."""
    admin = AdminClient(client_config(s))
    existing = set(list_topics(admin, s).topics)
    configs = configs or {}
    n_partitions = s.partitions if partitions is None else partitions
    wanted = [
        NewTopic(n, num_partitions=n_partitions, replication_factor=1, config=configs.get(n, {}))
        for n in names
    ]
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    for topic, fut in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                reason = redact(str(exc), secret_values(s))
                raise KafkaUnavailable(f"cannot create topic {topic}: {reason}") from None


def topic_config(s: KafkaSettings, topic: str, name: str, timeout: float = 15.0) -> str | None:
    """The value of a topic's config ``name`` as the broker reports it (None: it does not say)."""
    admin = AdminClient(client_config(s))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout)
    except KafkaException:
        return None
    entry = entries.get(name)
    return None if entry is None or entry.value is None else str(entry.value)


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
    """Produce one message, serving delivery callbacks while the local queue is full. Its
    delivery report goes to ``tracker`` (or to an ``on_delivery`` callback that informs it)."""
    kwargs.setdefault("on_delivery", tracker.on_delivery)
    while True:
        try:
            producer.produce(topic, **kwargs)
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
