"""MQTT edge bridge: readings published by devices over MQTT, validated, forwarded to Kafka.

Needs the ``mqtt`` extra (paho-mqtt); only ``telemon bridge mqtt`` imports this module.

The bridge subscribes to a topic filter such as ``telemetry/+/+`` with QoS 1. The first ``+`` level
of the filter is the device id and the second the sensor (``telemetry/<device_id>/<sensor>``;
a filter with one ``+`` names only the device, one without ``+`` neither). Each payload must be
one reading in the wire format; it is checked with :func:`monitor.schema.decode` using the topic's
device id as the key, and the topic's sensor must equal the payload's.

- valid: forwarded unchanged to ``kafka.readings_topic``, key = device id. The Kafka timestamp is
  the bridge's receive time, so the monitor's ``clock_skew`` check sees devices whose clock is off.
- invalid: to ``kafka.dead_letter_topic`` with the original bytes (at most :data:`MAX_DLQ_BYTES`),
  key = the topic's device id, and headers ``telemon.reason``, ``telemon.detail`` (as the monitor
  writes them) and ``telemon.mqtt_topic``.

At least once: the session is persistent (``clean_session=False``, a fixed client id) and a
message is acknowledged to the MQTT broker (PUBACK, paho's ``manual_ack``) only after Kafka
acknowledged it, in arrival order as MQTT requires. A message that is not acknowledged stays in
the broker's session and is delivered again when the bridge reconnects, so a crash, a Kafka
outage or a stop before delivery causes duplicates, never loss. A failed Kafka delivery stops the
bridge (exit 1, nothing acknowledged past it). On stop (SIGTERM/SIGINT) the bridge stops
forwarding, waits for Kafka to acknowledge what it already sent, acknowledges that, disconnects.

Messages published with QoS 0 are forwarded but cannot be acknowledged (MQTT has nothing to
acknowledge): they are at most once. Mosquitto holds at most ``max_inflight_messages`` (default
20) unacknowledged messages per client in flight and queues ``max_queued_messages`` (default
1000) more; beyond that it drops messages, so size those for bursts and outages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from monitor.errors import MqttUnavailable
from monitor.schema import DEFAULT_CATALOG, MAX_MESSAGE_BYTES, Catalog, Reading, Reason, Rejection, decode
from monitor.settings import KafkaSettings
from producers.publisher import Publisher

log = logging.getLogger(__name__)

MAX_DLQ_BYTES: Final = 65_536
QOS: Final = 1


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Where to subscribe and as whom."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = "telemetry/+/+"
    client_id: str = "telemon-bridge"  # the persistent session's name: keep it fixed per bridge
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None  # CA bundle: connect with TLS
    keepalive: int = 30


class TopicLayout:
    """Where the device id and the sensor sit in a topic: the filter's first and second ``+``."""

    def __init__(self, topic_filter: str) -> None:
        levels = topic_filter.split("/")
        for i, level in enumerate(levels):
            wildcard = level in ("+", "#")
            if (("+" in level or "#" in level) and not wildcard) or (level == "#" and i != len(levels) - 1):
                raise ValueError(f"invalid MQTT topic filter {topic_filter!r}")
        plus = [i for i, level in enumerate(levels) if level == "+"]
        self.filter = topic_filter
        self.device_level = plus[0] if plus else None
        self.sensor_level = plus[1] if len(plus) > 1 else None

    def parse(self, topic: str) -> tuple[str | None, str | None]:
        """The device id and sensor a topic names (None where the filter has no such level)."""
        levels = topic.split("/")
        device = levels[self.device_level] if self.device_level is not None else None
        sensor = levels[self.sensor_level] if self.sensor_level is not None else None
        return device, sensor


def check(
    payload: bytes,
    topic: str,
    layout: TopicLayout,
    max_bytes: int = MAX_MESSAGE_BYTES,
    catalog: Catalog = DEFAULT_CATALOG,
) -> Reading | Rejection:
    """Validate one MQTT message: the wire format (sensors of ``catalog``), and the topic's device
    and sensor."""
    device, sensor = layout.parse(topic)
    key = None if device is None else device.encode()
    result = decode(payload, key, max_bytes, catalog=catalog)
    if isinstance(result, Rejection):
        if result.reason is Reason.KEY_MISMATCH:
            return Rejection(Reason.KEY_MISMATCH, f"topic {topic[:128]!r} names device {device!r}")
        return result
    if sensor is not None and result.sensor != sensor:
        return Rejection(Reason.KEY_MISMATCH, f"topic {topic[:128]!r} names sensor {sensor[:64]!r}")
    return result


class _Inflight:
    __slots__ = ("delivered", "generation", "mid")

    def __init__(self, mid: int, generation: int) -> None:
        self.mid = mid
        self.generation = generation
        self.delivered = False


class AckQueue:
    """PUBACKs in arrival order, each released once its message is delivered to Kafka.

    Thread-safe. :meth:`reset` on every (re)connect: the broker resends whatever was not
    acknowledged on the old connection, so acknowledgements still pending for it are dropped.
    """

    def __init__(self, ack: Callable[[int, int], object]) -> None:
        self._ack = ack
        self._lock = threading.Lock()
        self._pending: deque[_Inflight] = deque()
        self._generation = 0
        self.acked = 0

    def add(self, mid: int) -> _Inflight:
        with self._lock:
            entry = _Inflight(mid, self._generation)
            self._pending.append(entry)
            return entry

    def done(self, entry: _Inflight) -> None:
        with self._lock:
            if entry.generation != self._generation:
                return
            entry.delivered = True
            while self._pending and self._pending[0].delivered:
                self._ack(self._pending.popleft().mid, QOS)
                self.acked += 1

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


@dataclass
class BridgeReport:
    forwarded: int = 0
    dead_lettered: int = 0
    acknowledged: int = 0
    not_acknowledged: int = 0  # arrived while stopping, or not delivered: the broker redelivers

    def summary(self) -> str:
        return (
            f"{self.forwarded} readings forwarded, {self.dead_lettered} dead-lettered, "
            f"{self.acknowledged} acknowledged, {self.not_acknowledged} left for redelivery"
        )


class Bridge:
    """One MQTT client (paho network thread) feeding one Kafka publisher."""

    def __init__(
        self,
        publisher: Publisher,
        options: MqttOptions,
        max_bytes: int = MAX_MESSAGE_BYTES,
        catalog: Catalog = DEFAULT_CATALOG,
    ) -> None:
        self.publisher = publisher
        self.options = options
        self.layout = TopicLayout(options.topic)
        self.max_bytes = max_bytes
        self.catalog = catalog
        self.report = BridgeReport()
        self.failure: Exception | None = None  # set in paho's thread, raised by the main loop
        self.ready = threading.Event()  # set once the subscription is granted
        self._stopping = False
        self._forward_lock = threading.Lock()
        self.client = _client(options)
        self.acks = AckQueue(self.client.ack)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail

    def connect(self) -> None:
        o = self.options
        try:
            self.client.connect(o.host, o.port, keepalive=o.keepalive)
        except OSError as exc:
            raise MqttUnavailable(f"cannot reach the MQTT broker at {o.host}:{o.port}: {exc}") from exc
        self.client.loop_start()

    def stop_forwarding(self) -> None:
        """From now on arriving messages are left unacknowledged, for redelivery."""
        with self._forward_lock:
            self._stopping = True

    def disconnect(self) -> None:
        self.client.disconnect()  # queued after the last PUBACKs, so those go out first
        self.client.loop_stop()
        self.report.acknowledged = self.acks.acked
        self.report.not_acknowledged += len(self.acks)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self._fail(MqttUnavailable(f"the MQTT broker refused the connection: {rc}"))
            return
        self.acks.reset()
        client.subscribe(self.options.topic, qos=QOS)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, codes: list[ReasonCode], _p: Any) -> None:
        if any(rc.is_failure for rc in codes):
            topic = self.options.topic
            self._fail(MqttUnavailable(f"the MQTT broker refused the subscription to {topic!r}: {codes}"))
            return
        log.info("subscribed to %s (QoS %d)", self.options.topic, QOS)
        self.ready.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure and self.failure is None:
            log.warning("MQTT connection lost (%s); reconnecting", rc)

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        o = self.options
        log.warning("cannot reconnect to the MQTT broker at %s:%d; retrying", o.host, o.port)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            with self._forward_lock:
                if self._stopping:
                    self.report.not_acknowledged += 1
                    return
                self._forward(msg)
        except Exception as exc:  # in paho's thread: record it, the main loop stops the bridge
            log.exception("forwarding a message from %s failed", msg.topic)
            self._fail(exc)

    def _forward(self, msg: mqtt.MQTTMessage) -> None:
        entry = self.acks.add(msg.mid) if msg.qos > 0 else None
        payload = bytes(msg.payload)
        result = check(payload, msg.topic, self.layout, self.max_bytes, self.catalog)
        kafka = self.publisher.kafka

        def delivered(err: KafkaError | None, _m: Message) -> None:
            if err is None and entry is not None:
                self.acks.done(entry)

        if isinstance(result, Reading):
            self.publisher.send(
                kafka.readings_topic, result.device_id.encode(), payload, None, None, delivered
            )
            self.report.forwarded += 1
            return
        device, _ = self.layout.parse(msg.topic)
        key = device.encode() if device else None
        headers = dead_letter_headers(result, msg.topic, len(payload))
        value = payload[:MAX_DLQ_BYTES]
        self.publisher.send(kafka.dead_letter_topic, key, value, None, headers, delivered)
        self.report.dead_lettered += 1

    def _fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc


def dead_letter_headers(rejection: Rejection, topic: str, size: int) -> list[tuple[str, bytes]]:
    headers = [
        ("telemon.reason", rejection.reason.value.encode()),
        ("telemon.detail", rejection.detail.encode("utf-8", "replace")[:512]),
        ("telemon.mqtt_topic", topic.encode("utf-8", "replace")[:512]),
    ]
    if size > MAX_DLQ_BYTES:
        headers.append(("telemon.truncated", str(size).encode()))
    return headers


def _client(o: MqttOptions) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=o.client_id, clean_session=False, manual_ack=True
    )
    if o.username is not None:
        client.username_pw_set(o.username, o.password)
    if o.tls_ca is not None:
        client.tls_set(ca_certs=str(o.tls_ca))
    return client


def run_bridge(
    kafka: KafkaSettings,
    options: MqttOptions,
    stop: threading.Event,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    catalog: Catalog = DEFAULT_CATALOG,
    flush_timeout_s: float = 30.0,
    create_topics: bool = True,
    on_ready: Callable[[Bridge], object] | None = None,
) -> BridgeReport:
    """Bridge until ``stop`` is set; raise :class:`MqttUnavailable` or ``KafkaUnavailable`` on failure.

    Kafka is checked (topics created) before the MQTT connection, so an unreachable Kafka fails
    before anything is taken from the MQTT broker. ``on_ready`` is called with the bridge once the
    subscription is active.
    """
    topics = [kafka.readings_topic, kafka.dead_letter_topic] if create_topics else []
    publisher = Publisher(kafka, flush_timeout_s=flush_timeout_s, create_topics=topics)
    bridge = Bridge(publisher, options, max_bytes, catalog)
    bridge.connect()
    try:
        _serve(bridge, stop, on_ready)
    except BaseException:
        bridge.stop_forwarding()
        dropped = publisher.abort()
        if dropped:
            log.warning("%d messages not delivered to Kafka: left unacknowledged, for redelivery", dropped)
        raise
    finally:
        bridge.disconnect()
    return bridge.report


def _serve(bridge: Bridge, stop: threading.Event, on_ready: Callable[[Bridge], object] | None) -> None:
    """Serve delivery reports (which release PUBACKs) until stopped; then deliver what was sent."""
    while not stop.is_set():
        if bridge.failure is not None:
            raise bridge.failure
        if on_ready is not None and bridge.ready.is_set():
            on_ready(bridge)
            on_ready = None
        bridge.publisher.check(0.1)
    bridge.stop_forwarding()
    started = time.monotonic()
    bridge.publisher.close()  # raises KafkaUnavailable if Kafka does not acknowledge in time
    log.info("delivered the in-flight messages in %.1fs", time.monotonic() - started)
