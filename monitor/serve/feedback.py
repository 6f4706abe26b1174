"""Operators' feedback, live: a background thread keeps the ledger of alerts and verdicts current,
exports its precision, records verdicts in the registry and dead-letters bad feedback records.

Two consumers, off the service's poll loop and outside its consumer group:

- the *reader* is assigned every partition of the alerts topic and of the feedback topic (no
  group, nothing committed), from ``feedback.lookback_hours`` back; it feeds the
  :class:`~monitor.analyze.ledger.Ledger`. Every replica reads everything, so every replica
  exports the same deployment-wide precision: aggregate the precision metrics with ``max()``;
- the *checker* is a member of the group ``<kafka.group_id>.feedback`` on the feedback topic: it
  validates the records of the partitions it owns, dead-letters the bad ones (key, raw value and
  ``telemon.*`` headers, as for readings) and commits after the dead letters are acknowledged, so
  a bad record is dead-lettered by one replica, at least once.

A verdict joined to a device-scope alert is appended to the registry's audit trail as a
``verdict`` event of the pair's version, unless the trail has it already. Every replica joins the
same verdicts and makes the same events, with the same identity: a trail holds each once
(:meth:`~monitor.govern.registry.ModelRegistry.record`), and the registry counts the latest
verdict per alert (:func:`monitor.govern.registry.feedback`).

Metrics are updated once per batch of records. An unexpected error stops the thread, logged with
its traceback; the service goes on without live precision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from monitor import errors
from monitor.analyze import feedback
from monitor.analyze.ledger import Judged, Ledger, decode_alert
from monitor.govern.registry import AuditEvent, ModelRegistry
from monitor.ingest import kafka
from monitor.records import DeadLetter
from monitor.schema import Rejection
from monitor.serve.deadletters import DeadLetterProducer
from monitor.serve.metrics import Metrics
from monitor.settings import Settings

log = logging.getLogger(__name__)

#: Records per poll, and how long a poll waits (the stop request is seen within twice this).
BATCH, POLL_S = 1000, 0.2
LOOKUP_ATTEMPTS = 5


class FeedbackWorker:
    def __init__(self, settings: Settings, metrics: Metrics, registry: ModelRegistry) -> None:
        self.settings, self.metrics, self.registry = settings, metrics, registry
        self.ledger = Ledger(settings.feedback.max_alerts)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="telemon-feedback", daemon=True)
        self._recorded: set[tuple[str, str, int]] = set()  # verdict events in the audit trail
        self._audit_position = 0

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        k = self.settings.kafka
        reader = Consumer(kafka.consumer_config(k, **{"group.id": f"{k.group_id}.feedback-reader"}))
        checker = Consumer(kafka.consumer_config(k, **{"group.id": f"{k.group_id}.feedback"}))
        producer = Producer(kafka.producer_config(k, **{"linger.ms": 2}))
        dead_letters = DeadLetterProducer(
            producer,
            kafka.DeliveryTracker(),
            k.dead_letter_topic,
            self.settings.consume.dead_letter_max_bytes,
        )
        try:
            reader.assign(self._start_positions(reader))
            checker.subscribe([k.feedback_topic])
            log.info(
                "feedback: reading %s and %s (lookback %gh)",
                k.alerts_topic,
                k.feedback_topic,
                self._lookback_h,
            )
            while not self.stop.is_set():
                self._read(reader.consume(BATCH, POLL_S))
                self._check(checker, dead_letters, checker.consume(BATCH, POLL_S))
        except Exception:
            log.exception("feedback worker failed: precision metrics and verdicts are no longer updated")
        finally:
            reader.close()
            checker.close()
            producer.flush(self.settings.consume.delivery_timeout_s)

    @property
    def _lookback_h(self) -> float:
        return self.settings.feedback.lookback_hours

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of the alerts and feedback topics, at the first record of the lookback
        (the end with lookback 0, the beginning if the broker cannot look times up)."""
        k = self.settings.kafka
        since = int((time.time() - self._lookback_h * 3600) * 1000)
        wanted = []
        for topic in (k.alerts_topic, k.feedback_topic):
            meta = consumer.list_topics(topic, timeout=kafka.CONNECT_TIMEOUT_S).topics[topic]
            wanted += [TopicPartition(topic, p, since) for p in sorted(meta.partitions)]
        if self._lookback_h == 0:
            return [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in wanted]
        for attempt in range(LOOKUP_ATTEMPTS):  # a topic just created may have no leader yet
            try:
                found = consumer.offsets_for_times(wanted, timeout=kafka.CONNECT_TIMEOUT_S)
                break
            except KafkaException as exc:
                if attempt + 1 < LOOKUP_ATTEMPTS and not self.stop.wait(1.0):
                    continue
                log.warning("feedback: cannot look up offsets by time (%s): reading from the beginning", exc)
                found = [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in wanted]
                break
        # A partition with no record since: its end (-1); one the broker could not look up: the start.
        return [
            tp if tp.error is None else TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
            for tp in found
        ]

    def _read(self, messages: list[Message]) -> None:
        """Feed the ledger; record the verdicts that joined; update the metrics."""
        if not messages:
            return
        alerts_topic, now = self.settings.kafka.alerts_topic, int(time.time() * 1000)
        joined: list[Judged] = []
        verdicts: Counter[str] = Counter()
        for m in messages:
            if m.error() is not None:
                log.warning("feedback: consumer error: %s", m.error())
            elif m.topic() == alerts_topic:
                alert = decode_alert(m.value() or b"")
                if alert is not None:
                    joined += self.ledger.add_alert(alert)
            else:
                v = feedback.decode(m.value(), m.key(), now)
                if isinstance(v, feedback.Verdict):
                    verdicts[v.verdict] += 1
                    joined += self.ledger.add_verdict(v)
        self._record(joined)
        self.metrics.record_feedback(verdicts, {})
        self.metrics.record_ledger(self.ledger)

    def _record(self, joined: list[Judged]) -> None:
        """Append the joined verdicts of device-scope alerts to the audit trail (those it lacks)."""
        events, self._audit_position = self.registry.events(self._audit_position)
        self._recorded.update((e.alert_id, e.verdict, e.event_ts) for e in events if e.kind == "verdict")
        new = [_event(j) for j in joined if j.episode.scope == "device" and j.episode.model_version >= 1]
        new = [e for e in new if (e.alert_id, e.verdict, e.event_ts) not in self._recorded]
        try:
            self.registry.record(*new)
        except errors.RegistryError as exc:
            log.error("feedback: %d verdict(s) not in the registry's trail: %s", len(new), exc)
            return
        self._recorded.update((e.alert_id, e.verdict, e.event_ts) for e in new)

    def _check(self, consumer: Consumer, dead_letters: DeadLetterProducer, messages: list[Message]) -> None:
        """Dead-letter the bad records of the feedback partitions this replica owns, then commit."""
        good = [m for m in messages if m.error() is None]
        if not good:
            return
        now = int(time.time() * 1000)
        bad = [
            DeadLetter(m, r)
            for m in good
            if isinstance(r := feedback.decode(m.value(), m.key(), now), Rejection)
        ]
        while bad and not self._dead_lettered(dead_letters, bad):
            if self.stop.wait(1.0):
                return  # not committed: the group's next owner checks them again
        for d in bad:
            log.warning(
                "feedback: dead-lettered %s/%s@%s: %s",
                d.message.topic(),
                d.message.partition(),
                d.message.offset(),
                d.rejection.detail,
            )
        self.metrics.record_feedback({}, Counter(d.rejection.reason.value for d in bad))
        ends: dict[tuple[str, int], int] = {}
        for m in good:
            key = (str(m.topic()), int(m.partition() or 0))
            ends[key] = max(ends.get(key, 0), int(m.offset() or 0) + 1)
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False
            )
        except KafkaException as exc:  # a rebalance: the next owner checks them again
            log.warning("feedback: commit failed (%s); the records are checked again", exc)

    def _dead_lettered(self, dead_letters: DeadLetterProducer, bad: list[DeadLetter]) -> bool:
        timeout = self.settings.consume.delivery_timeout_s
        try:
            dead_letters.produce(bad)
            kafka.flush(dead_letters.producer, dead_letters.tracker, timeout)
            if dead_letters.retry_refused():
                kafka.flush(dead_letters.producer, dead_letters.tracker, timeout)
        except errors.KafkaUnavailable as exc:
            log.warning("feedback: dead letters not delivered (%s): retrying", exc)
            dead_letters.tracker.errors = []
            return False
        self.metrics.record_dead_letters_failed(dead_letters.take_failed())
        return True


def _event(j: Judged) -> AuditEvent:
    e, v = j.episode, j.verdict
    return AuditEvent(
        kind="verdict",
        device_id=e.device_id,
        sensor=e.sensor,
        version=e.model_version,
        actor=f"operator:{v.by}" if v.by else "operator",
        reason=v.note,
        rule=e.rule,
        alert_id=e.alert_id,
        verdict=v.verdict,
        event_ts=v.ts,
    )
