"""A fleet that spans replicas (``fleet.span``): the fleet and cohort rules on the merged view.

Each replica of the group reads only its partitions of the readings topic, so on its own it sees
a share of the fleet: N replicas would detect a fleet-wide drift up to N times, or not at all when
a share is too small. With ``fleet.span``:

1. **Publish.** Every batch's pipeline result carries the partial aggregates of its partitions
   (:mod:`monitor.detect.span`): per event-time window, group (fleet, each cohort) and sensor,
   counts, sums and a score histogram. The service produces them to ``kafka.fleet_topic`` with the
   batch's alerts, before it commits the batch's offsets (:func:`produce`).
2. **Merge.** On every replica, this worker reads the whole fleet topic from its beginning, in
   one order (the topic has one partition), and sums the partials into windows
   (:class:`~monitor.detect.span.Merger`): a window closes when every partition heard from within
   ``fleet.lateness_s`` has passed its end. The merge is a sum, so it does not depend on which
   replica read which partition, nor on how many replicas there are: one replica and three give
   the same windows.
3. **Evaluate.** Each closed window is one evaluation per (group, sensor) of the fleet and cohort
   rules (:class:`~monitor.detect.spandrift.MergedDrift`), in this worker's own rules engine. Every
   replica computes the same episodes from the same log.
4. **Alert once.** Only the *leader*, the replica that owns partition 0 of the readings topic
   (:meth:`SpanWorker.lead`, told by the service on each rebalance), produces the alerts, then
   acknowledges them on the fleet topic (an :class:`Ack` record). Every replica keeps the alert
   records it computed and no leader acknowledged (:attr:`SpanWorker.owed`): a replica that
   becomes leader (a rebalance, the leader stopped or crashed) reads the fleet topic up to its end,
   then produces what is still owed. So an alert is produced once; twice only when a leader
   crashes between producing an alert and its acknowledgement, or loses partition 0 with an
   acknowledgement in flight, and then with the same alert id: the id hashes the rule, the group
   key, the sensor and the event time of the episode's first window, so consumers that dedupe by
   ``alert_id`` (Alertmanager, the feedback ledger) see one alert. The leader then posts them to
   Alertmanager (``alerts.alertmanager_url``; its own sink, kept alive by its own heartbeat; an
   Alertmanager that is down gets them at a later turn) and counts them in ``telemon_alerts_total``.

Restarts: a worker reads the fleet topic from its beginning, rebuilding the same windows,
references and episodes; what was acknowledged is not produced again. The topic's retention must
cover the reference windows (``drift.fleet_reference_size`` scores); older partials are gone, and
the reference is then rebuilt from what is left (compare the ``telemon_fleet_span_*`` metrics of
the replicas: they agree when their logs agree).

Fleet-scope ``lag``, ``input_adwin_*``, and cohort ``cohort_input_*`` and ``bias_*`` signals are
not merged: they stay per replica and are absent from the merged view (a condition on them is
false there; a rule reading them logs a warning at start).
"""

from __future__ import annotations

import logging
import threading

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from monitor import errors
from monitor.detect import span
from monitor.detect.spandrift import MergedDrift
from monitor.govern import alerts
from monitor.govern.rules.engine import RuleEngine, Transition
from monitor.govern.rules.model import DRIFT_SIGNALS, Evaluation, RuleSet
from monitor.ingest import kafka
from monitor.serve.metrics import Metrics
from monitor.serve.sinks import AlertmanagerSink
from monitor.settings import Settings

log = logging.getLogger(__name__)

BATCH, POLL_S = 1000, 0.2
LOOKUP_ATTEMPTS = 10
#: The signals the merged view gives (the fleet and cohort signals not in it stay per replica).
MERGED_SIGNALS = DRIFT_SIGNALS | {"devices"}


def produce(
    producer: Producer, tracker: kafka.DeliveryTracker, settings: Settings, parts: list[span.Partial]
) -> int:
    """Produce a batch's partials to the fleet topic (keyed by their readings partition); returns
    their bytes."""
    size = 0
    for part in parts:
        value = span.encode(part, settings.fleet.bins)
        size += len(value)
        kafka.produce(
            producer, tracker, settings.kafka.fleet_topic, key=str(part.partition).encode(), value=value
        )
    return size


def group_rules(rules: RuleSet) -> RuleSet:
    """The fleet and cohort rules, with a warning for each signal the merged view lacks."""
    mine = [r for r in rules.rules if r.scope in ("fleet", "cohort")]
    for r in mine:
        missing = sorted(r.signal_names() - MERGED_SIGNALS)
        if missing:
            log.warning(
                "rule %s reads %s: per replica, absent from the merged view of fleet.span (a condition "
                "on them is false there)",
                r.name,
                ", ".join(missing),
            )
    return RuleSet(rules=mine)


class MergedView:
    """The merged windows of every replica's partials and the fleet and cohort rules on them:
    partials in, the alert records of the rules' transitions out (no Kafka: the worker feeds it
    the fleet topic, a replay its own partials)."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        f = settings.fleet
        self.settings = settings
        self.merger = span.Merger(int(f.window_s * 1000), int(f.lateness_s * 1000), f.bins)
        self.engine = RuleEngine(group_rules(rules))
        self.detectors: dict[tuple[str, str], MergedDrift] = {}
        self.partitions = 0  # readings partitions in the latest closed window
        self.windows = 0  # windows closed

    def add(self, parts: list[span.Partial]) -> list[alerts.Alert]:
        """Merge partials, in order; the alert records of the windows they close."""
        out: list[alerts.Alert] = []
        for w in self.merger.add_all(parts):
            out += self._evaluate(w)
        return out

    def _evaluate(self, w: span.Window) -> list[alerts.Alert]:
        """One evaluation per (group, sensor) of the window, in sorted order."""
        self.partitions, self.windows = w.partitions, self.windows + 1
        evaluations = []
        for key, sensor in sorted(w.cells):
            det = self.detectors.get((key, sensor))
            if det is None:
                det = self.detectors[(key, sensor)] = MergedDrift(
                    self.settings.drift, self.settings.fleet.bins
                )
            sig = det.push(w.cells[(key, sensor)], w.devices.get(key, 0))
            evaluations.append(Evaluation("fleet" if key == "*" else "cohort", key, sensor, sig, w.end))
        return [_alert(t) for t in self.engine.evaluate(evaluations) if "alert" in t.rule.actions]


def _alert(t: Transition) -> alerts.Alert:
    ev = t.evaluation
    label, _, value = ev.device_id.partition("=")
    return alerts.from_transition(t, 0, {label: value} if ev.scope == "cohort" else {})


class Ack(msgspec.Struct):
    """A leader's record on the fleet topic: the alert records it delivered, (alert id, status)."""

    acked: list[tuple[str, str]]


_ACK_ENCODER = msgspec.json.Encoder()
_ACK_DECODER = msgspec.json.Decoder(Ack)


class SpanWorker:
    """The merge, evaluation and alerts of the merged view, on a background thread."""

    def __init__(self, settings: Settings, metrics: Metrics, rules: RuleSet) -> None:
        self.settings, self.metrics = settings, metrics
        self.view = MergedView(settings, rules)
        # Alert records of the merged view no leader acknowledged yet, and those this one sent.
        self.owed: dict[tuple[str, str], alerts.Alert] = {}
        self.sent: set[tuple[str, str]] = set()
        a = settings.alerts
        self.sink = (
            AlertmanagerSink(a.alertmanager_url, a.timeout_s, a.resend_interval_s)
            if a.alertmanager_url
            else None
        )
        self.unposted: list[alerts.Alert] = []  # delivered to Kafka, not yet to Alertmanager
        self.leading = threading.Event()
        self._gained = threading.Event()  # became leader since the last turn
        self.catch_up_to = 0  # the fleet topic's end when this replica last became leader
        self.position = 0  # the next fleet-topic offset to read
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="telemon-fleet-span", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def lead(self, leading: bool) -> None:
        """Whether this replica owns partition 0 of the readings topic now (from the service)."""
        if leading and not self.leading.is_set():
            self._gained.set()
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        self.metrics.record_span_leader(leading)

    def _run(self) -> None:
        k = self.settings.kafka
        consumer = Consumer(kafka.consumer_config(k, **{"group.id": f"{k.group_id}.fleet-reader"}))
        producer = Producer(kafka.producer_config(k, **{"linger.ms": 2}))
        tracker = kafka.DeliveryTracker()
        try:
            meta = consumer.list_topics(k.readings_topic, timeout=kafka.CONNECT_TIMEOUT_S)
            self.view.merger.expected = frozenset(meta.topics[k.readings_topic].partitions)
            consumer.assign([TopicPartition(k.fleet_topic, 0, OFFSET_BEGINNING)])
            log.info("fleet span: merging %s", k.fleet_topic)
            while not self.stop.is_set():
                self.read(consumer.consume(BATCH, POLL_S))
                self._deliver(consumer, producer, tracker)
                self._post()
        except Exception:
            log.exception("fleet span worker failed: the fleet and cohort rules are no longer evaluated")
        finally:
            consumer.close()
            producer.flush(self.settings.consume.delivery_timeout_s)
            if self.sink is not None:
                self.sink.close()

    def _end(self, consumer: Consumer) -> int:
        """The fleet topic's end now."""
        tp = TopicPartition(self.settings.kafka.fleet_topic, 0)
        for attempt in range(LOOKUP_ATTEMPTS):  # a topic just created may have no leader yet
            try:
                return int(consumer.get_watermark_offsets(tp, timeout=kafka.CONNECT_TIMEOUT_S)[1])
            except KafkaException:
                if attempt + 1 == LOOKUP_ATTEMPTS or self.stop.wait(1.0):
                    raise
        raise AssertionError("unreachable")

    def read(self, messages: list[Message]) -> None:
        """Merge the partials, evaluate the windows they close, and take the leaders'
        acknowledgements: what is left unacknowledged is :attr:`owed`."""
        if not messages:
            return
        bins, merged, malformed, acks = self.settings.fleet.bins, 0, 0, 0
        merger, windows = self.view.merger, self.view.windows
        dups, late = merger.duplicates, merger.late
        for m in messages:
            if m.error() is not None:
                log.warning("fleet span: consumer error: %s", m.error())
                continue
            offset, value = m.offset() or 0, m.value() or b""
            self.position = offset + 1
            if value.startswith(b"{"):
                self._acknowledged(value, offset)
                acks += 1
                continue
            part = span.decode(value, bins)
            if part is None:
                malformed += 1
                log.warning("fleet span: record %d is not a partial of this version and bins", offset)
                continue
            merged += 1
            for a in self.view.add([part]):
                self.owed[(a.alert_id, a.status)] = a
        new_dups, new_late, closed = merger.duplicates - dups, merger.late - late, self.view.windows - windows
        partitions = self.view.partitions
        self.metrics.record_span_merged(merged, new_dups, malformed, acks, new_late, closed, partitions)

    def _acknowledged(self, value: bytes, offset: int) -> None:
        try:
            ack = _ACK_DECODER.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("fleet span: record %d is not an acknowledgement", offset)
            return
        for key in ack.acked:
            self.owed.pop(key, None)
            self.sent.discard(key)

    def _deliver(self, consumer: Consumer, producer: Producer, tracker: kafka.DeliveryTracker) -> None:
        """The leader produces the alert records no leader acknowledged, then acknowledges them
        on the fleet topic. A new leader first reads the fleet topic up to its end: what the
        previous leader acknowledged is not produced again."""
        if not self.leading.is_set():
            return
        if self._gained.is_set():
            self._gained.clear()
            self.sent.clear()
            self.catch_up_to = self._end(consumer)
        if self.position < self.catch_up_to:
            return
        new = [key for key in self.owed if key not in self.sent]
        if not new:
            return
        k, timeout = self.settings.kafka, self.settings.consume.delivery_timeout_s
        for key in new:
            a = self.owed[key]
            kafka.produce(producer, tracker, k.alerts_topic, key=a.key, value=alerts.encode(a))
        try:
            kafka.flush(producer, tracker, timeout)
            ack = _ACK_ENCODER.encode(Ack(acked=new))
            kafka.produce(producer, tracker, k.fleet_topic, key=b"ack", value=ack)
            kafka.flush(producer, tracker, timeout)
        except errors.KafkaUnavailable as exc:
            log.warning("fleet span: %d alert record(s) not delivered (%s): retrying", len(new), exc)
            tracker.errors = []
            return
        self.sent.update(new)
        delivered = [self.owed[key] for key in new]
        for a in delivered:
            log.info("alert %s %s %s/%s (fleet span)", a.status, a.rule, a.device_id, a.sensor)
        self.metrics.record_alerts(delivered)
        if self.sink is not None:
            self.unposted += delivered

    def _post(self) -> None:
        """The leader posts the alerts it delivered to Alertmanager and keeps the firing ones alive
        (a failure is retried at the next turn; a refusal is logged and not retried)."""
        if self.sink is None or not self.leading.is_set():
            return
        try:
            if self.unposted:
                self.sink.send(self.unposted)
                self.unposted = []
            self.sink.heartbeat()
        except errors.SinkRejected as exc:
            log.error("fleet span: %s: not retried", exc)
            self.unposted = []
        except errors.SinkUnavailable as exc:
            log.warning("fleet span: %s: retrying", exc)
