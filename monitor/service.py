"""The live service: a consumer-group member that runs the pipeline batch by batch.

Per batch: consume -> :meth:`Pipeline.process` -> produce dead letters, alerts and model versions
-> wait for every delivery report -> append versions to the registry -> commit the batch's offsets.
Offsets never move past a batch whose outputs were not delivered. A stop request (SIGTERM/SIGINT)
takes effect between batches: the current batch is finished, delivered and committed first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from monitor import alerts, kafka, registry
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
    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.registry = registry.ModelRegistry(settings.state_dir)
        self.totals = Totals()
        k = settings.kafka
        self.consumer = Consumer(kafka.consumer_config(k))
        self.producer = Producer(kafka.producer_config(k, **{"linger.ms": 2}))
        self.tracker = kafka.DeliveryTracker()

    def run(self, stop: threading.Event, on_batch: BatchHook | None = None) -> Totals:
        """Consume until ``stop`` is set; always finishes, delivers and commits the current batch."""
        k, c = self.settings.kafka, self.settings.consume
        self.consumer.subscribe([k.readings_topic])
        log.info("consuming %s as group %s from %s", k.readings_topic, k.group_id, k.bootstrap_servers)
        try:
            while not stop.is_set():
                messages = self.consumer.consume(c.batch_size, c.poll_timeout_s)
                if messages:
                    result = self._batch(messages)
                    if on_batch is not None:
                        on_batch(result, self.totals)
        finally:
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
        self._deliver(result)
        self.registry.append(result.versions)
        self._commit(result)
        self.totals.add(result, len(good))
        integrity = self.pipeline.integrity.take_events()
        self.metrics.record_batch(result, integrity, time.perf_counter() - t0)
        st = self.pipeline.store
        self.metrics.record_state(len(st), st.array_bytes_per_device() * len(st))
        for a in result.alerts:
            log.info("alert %s %s %s/%s", a.status, a.rule, a.device_id, a.sensor)
        return result

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
