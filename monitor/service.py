"""The live service: a consumer-group member that runs the pipeline batch by batch.

Per batch: consume -> :meth:`Pipeline.process` -> produce dead letters, alerts and model versions
-> wait for every delivery report -> append versions to the registry -> commit the batch's offsets.
Offsets never move past a batch whose outputs were not delivered. A stop request (SIGTERM/SIGINT)
takes effect between batches: the current batch is finished, delivered and committed first.

The loop also keeps :class:`~monitor.health.Health` current (loop ticks, group membership, broker
reachability, delivery) and hands the metrics their per-batch numbers, consumer lag included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from monitor import alerts, kafka, registry
from monitor.health import Health, HttpEndpoint
from monitor.metrics import Metrics
from monitor.pipeline import BatchResult, DeadLetter, Pipeline
from monitor.settings import Settings

log = logging.getLogger(__name__)

BatchHook = Callable[[BatchResult, "Totals"], None]
_REBALANCE_ERRORS = frozenset(
    {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS}
)


@dataclass
class Totals:
    """Running totals for progress displays and the run summary."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    messages: int = 0
    valid: int = 0
    quarantined: int = 0
    anomalies: int = 0
    drift_detections: int = 0
    alerts: list[alerts.Alert] = field(default_factory=list)
    versions: list[registry.ModelVersion] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition

    def add(self, result: BatchResult, messages: int) -> None:
        self.batches += 1
        self.messages += messages
        self.valid += int(result.valid.sum())
        self.quarantined += len(result.dead_letters)
        self.anomalies += int(result.anomalies.sum())
        self.drift_detections += sum(result.drift.values())
        self.alerts.extend(result.alerts)
        self.versions.extend(result.versions)
        self.positions.update(result.offsets)

    @property
    def rate(self) -> float:
        return self.messages / max(time.monotonic() - self.started, 1e-9)


def partition_lag(high: int, next_offset: int | None) -> int | None:
    """Messages of a partition not consumed yet: the high watermark (last offset + 1) minus the next
    offset to consume. ``None`` when either is unknown (nothing consumed yet, no fetch response:
    librdkafka's negative logical offsets). Never negative: a cached high watermark older than the
    position means caught up.

    >>> partition_lag(120, 100), partition_lag(100, 100), partition_lag(90, 100), partition_lag(-1001, 5)
    (20, 0, 0, None)
    """
    if next_offset is None or next_offset < 0 or high < 0:
        return None
    return max(high - next_offset, 0)


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    m = d.message
    return [
        ("telemon.reason", d.rejection.reason.value.encode()),
        ("telemon.detail", d.rejection.detail.encode("utf-8", "replace")[:512]),
        ("telemon.topic", str(m.topic()).encode()),
        ("telemon.partition", str(m.partition()).encode()),
        ("telemon.offset", str(m.offset()).encode()),
    ]


class Service:
    """``endpoint``, if given, is the HTTP endpoint serving ``health`` (the service does not own it)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        health: Health | None = None,
        endpoint: HttpEndpoint | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health or Health(settings.metrics.liveness_timeout_s)
        self.endpoint = endpoint
        self.registry = registry.ModelRegistry(settings.state_dir)
        self.totals = Totals()
        self.positions: dict[tuple[str, int], int | None] = {}  # assigned partition -> next offset
        k = settings.kafka
        self.consumer = Consumer(kafka.consumer_config(k, error_cb=self._on_error))
        self.producer = Producer(kafka.producer_config(k, **{"linger.ms": 2}))
        self.tracker = kafka.DeliveryTracker()

    def run(self, stop: threading.Event, on_batch: BatchHook | None = None) -> Totals:
        """Consume until ``stop`` is set; always finishes, delivers and commits the current batch."""
        k, c = self.settings.kafka, self.settings.consume
        self.consumer.subscribe(
            [k.readings_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("consuming %s as group %s from %s", k.readings_topic, k.group_id, k.bootstrap_servers)
        try:
            while not stop.is_set():
                self.health.tick()
                messages = self.consumer.consume(c.batch_size, c.poll_timeout_s)
                if messages:
                    result = self._batch(messages)
                    if on_batch is not None:
                        on_batch(result, self.totals)
                elif self.health.broker_error is not None:
                    self._probe_broker()
        finally:
            self.health.stopped = True
            self.consumer.close()
            self.producer.flush(self.settings.consume.delivery_timeout_s)
        return self.totals

    def _batch(self, messages: list[Message]) -> BatchResult:
        t0 = time.perf_counter()
        good = []
        for m in messages:
            err = m.error()
            if err is None:
                good.append(m)
            else:
                log.warning("consumer error: %s", err)
        result = self.pipeline.process(good)
        try:
            self._deliver(result)
        except kafka.KafkaUnavailable as exc:
            self.health.delivery_error = str(exc)
            raise
        self.registry.append(result.versions)
        self._commit(result)
        self.health.broker_error = None  # the broker acknowledged the outputs and the commit
        self.totals.add(result, len(good))
        for tp, offset in result.offsets.items():
            if tp in self.positions:
                self.positions[tp] = offset
        self._record(result, time.perf_counter() - t0)
        for a in result.alerts:
            log.info("alert %s %s %s/%s", a.status, a.rule, a.device_id, a.sensor)
        return result

    def _record(self, result: BatchResult, seconds: float) -> None:
        """The batch's metrics: counts, latencies, state size, model versions, firing rules, lag."""
        m, st = self.metrics, self.pipeline.store
        m.record_batch(result, self.pipeline.integrity.take_events(), seconds)
        n = len(st)
        m.record_state(n, st.array_bytes_per_device() * n, (st.raw_n[:n] > 0).sum(axis=0))
        m.record_firing(self.pipeline.engine.firing_by_rule())
        m.record_consumer(self._lags(), len(self.positions))

    def _lags(self) -> dict[tuple[str, int], int]:
        """Lag per assigned partition from the service's own positions and the high watermark
        librdkafka cached from its last fetch response (no broker round trip)."""
        lags: dict[tuple[str, int], int] = {}
        for (topic, p), position in self.positions.items():
            if position is None:
                continue
            try:
                watermarks = self.consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            except KafkaException:
                continue
            lag = partition_lag(watermarks[1], position) if watermarks else None
            if lag is not None:
                lags[(topic, p)] = lag
        return lags

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions[(tp.topic, tp.partition)] = None
        self.health.assigned(len(self.positions))
        log.info("assigned %d partition(s), %d in all", len(partitions), len(self.positions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
        if self.positions:
            self.health.assigned(len(self.positions))
        else:
            self.health.revoked()
        self.metrics.record_consumer({}, len(self.positions))

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (served by ``consume``); it retries by itself. A lost
        connection is routine (librdkafka logs it too); losing every broker makes us unready."""
        down = err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal()
        if down:
            self.health.broker_error = err.str()
        transient = err.code() == KafkaError._TRANSPORT and not down
        log.log(logging.DEBUG if transient else logging.WARNING, "kafka: %s", err.str())

    def _probe_broker(self) -> None:
        """While idle after "all brokers down": a metadata request tells whether they are back."""
        try:
            self.consumer.list_topics(
                topic=self.settings.kafka.readings_topic, timeout=self.settings.consume.poll_timeout_s
            )
        except KafkaException:
            return
        self.health.broker_error = None

    def _deliver(self, result: BatchResult) -> None:
        """Produce the batch's outputs and wait for every acknowledgement.

        Raises :class:`kafka.KafkaUnavailable` if anything was not delivered: the batch's offsets
        are then not committed and the batch is processed again after a restart.
        """
        k, p, t = self.settings.kafka, self.producer, self.tracker
        for d in result.dead_letters:
            kafka.produce(
                p,
                t,
                k.dead_letter_topic,
                key=d.message.key(),
                value=d.message.value(),
                headers=dead_letter_headers(d),
            )
        for a in result.alerts:
            kafka.produce(p, t, k.alerts_topic, key=a.key, value=alerts.encode(a))
        for v in result.versions:
            kafka.produce(p, t, k.models_topic, key=v.key, value=registry.encode(v))
        kafka.flush(p, t, self.settings.consume.delivery_timeout_s)

    def _commit(self, result: BatchResult) -> None:
        """Commit the batch's offsets. A commit refused because the group rebalanced is not fatal:
        the partitions' new owner re-reads the batch from the last commit (at-least-once)."""
        if not result.offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in result.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_ERRORS:
                raise
            log.warning("commit refused after a rebalance (%s); the batch will be re-delivered", exc)
