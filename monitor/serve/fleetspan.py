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
   (:meth:`SpanWorker.lead`, told by the service on each rebalance), produces the alerts. Partition
   0 has one owner at a time, so an alert is produced once. Around a rebalance the old and the new
   owner may both produce one, or neither: a replica that becomes leader re-produces the alerts of
   the episodes firing in its (identical) state, and every record of an episode has the same alert
   id (rule, group key, sensor and the event time of the episode's first window), so consumers
   that dedupe by ``alert_id`` (Alertmanager, the feedback ledger) see one alert.

Restarts: a worker starts from the fleet topic's beginning and re-evaluates its history without
producing (as the service re-applies readings up to its committed offset), then produces from
the records that were new when it started. The topic's retention must cover the reference windows
(``drift.fleet_reference_size`` scores); older partials are simply gone, and the reference is then
rebuilt from what is left.

Fleet-scope ``lag``, ``input_adwin_*``, and cohort ``cohort_input_*`` and ``bias_*`` signals are
not merged: they stay per replica and are absent from the merged view (a rule on them logs a
warning at start and never fires with ``fleet.span``).
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from monitor import errors
from monitor.detect import span
from monitor.detect.spandrift import MergedDrift
from monitor.govern import alerts
from monitor.govern.rules.engine import RuleEngine, Transition
from monitor.govern.rules.model import Evaluation, RuleSet
from monitor.ingest import kafka
from monitor.serve.metrics import Metrics
from monitor.settings import Settings

log = logging.getLogger(__name__)

BATCH, POLL_S = 1000, 0.2
#: The signals the merged view gives (the fleet and cohort signals not in it stay per replica).
MERGED_SIGNALS = frozenset(
    {
        "readings",
        "anomalies",
        "anomaly_rate",
        "score_mean",
        "devices",
        "adwin_detections",
        "adwin_drift",
        "ks_stat",
        "ks_pvalue",
        "ks_drift",
        "psi",
        "psi_drift",
    }
)


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
                "rule %s reads %s: per replica, not in the merged view of fleet.span (never true there)",
                r.name,
                ", ".join(missing),
            )
    return RuleSet(rules=mine)


class SpanWorker:
    """The merge, evaluation and alerts of the merged view, on a background thread."""

    def __init__(self, settings: Settings, metrics: Metrics, rules: RuleSet) -> None:
        f = settings.fleet
        self.settings, self.metrics = settings, metrics
        self.merger = span.Merger(int(f.window_s * 1000), int(f.lateness_s * 1000), f.bins)
        self.engine = RuleEngine(group_rules(rules))
        self.detectors: dict[tuple[str, str], MergedDrift] = {}
        self.firing: dict[str, alerts.Alert] = {}  # alert id -> its latest firing record
        self.unsent: list[alerts.Alert] = []  # alerts the leader has not delivered yet
        self.leading = threading.Event()
        self._gained = threading.Event()  # became leader since the last turn
        self.replay_until = 0  # fleet-topic offset from which alerts are produced (set at start)
        self.position = 0  # the next fleet-topic offset to read
        self.partitions = 0  # readings partitions in the latest closed window
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
            tp = TopicPartition(k.fleet_topic, 0)
            self.replay_until = consumer.get_watermark_offsets(tp, timeout=kafka.CONNECT_TIMEOUT_S)[1]
            meta = consumer.list_topics(k.readings_topic, timeout=kafka.CONNECT_TIMEOUT_S)
            self.merger.expected = frozenset(meta.topics[k.readings_topic].partitions)
            consumer.assign([TopicPartition(k.fleet_topic, 0, OFFSET_BEGINNING)])
            log.info(
                "fleet span: merging %s (%d records before this start)", k.fleet_topic, self.replay_until
            )
            while not self.stop.is_set():
                self.read(consumer.consume(BATCH, POLL_S))
                self._deliver(producer, tracker)
        except Exception:
            log.exception("fleet span worker failed: the fleet and cohort rules are no longer evaluated")
        finally:
            consumer.close()
            producer.flush(self.settings.consume.delivery_timeout_s)

    def read(self, messages: list[Message]) -> None:
        """Merge the records, evaluate the windows they close; the leader's alerts wait in
        :attr:`unsent`."""
        if not messages:
            return
        bins, merged, malformed, windows = self.settings.fleet.bins, 0, 0, 0
        dups, late = self.merger.duplicates, self.merger.late
        for m in messages:
            if m.error() is not None:
                log.warning("fleet span: consumer error: %s", m.error())
                continue
            offset = m.offset() or 0
            self.position = offset + 1
            part = span.decode(m.value(), bins)
            if part is None:
                malformed += 1
                log.warning("fleet span: record %d is not a partial of this version and bins", offset)
                continue
            merged += 1
            for w in self.merger.add_all([part]):
                windows += 1
                self._evaluate(w, replayed=offset < self.replay_until)
        new_dups, new_late = self.merger.duplicates - dups, self.merger.late - late
        self.metrics.record_span_merged(merged, new_dups, malformed, new_late, windows, self.partitions)

    def _evaluate(self, w: span.Window, replayed: bool) -> None:
        """One evaluation per (group, sensor) of the window, in sorted order."""
        self.partitions = w.partitions
        evaluations = []
        for key, sensor in sorted(w.cells):
            det = self.detectors.get((key, sensor))
            if det is None:
                det = self.detectors[(key, sensor)] = MergedDrift(
                    self.settings.drift, self.settings.fleet.bins
                )
            sig = det.push(w.cells[(key, sensor)], w.devices.get(key, 0))
            evaluations.append(Evaluation("fleet" if key == "*" else "cohort", key, sensor, sig, w.end))
        for t in self.engine.evaluate(evaluations):
            self._transition(t, replayed)

    def _transition(self, t: Transition, replayed: bool) -> None:
        ev = t.evaluation
        label, _, value = ev.device_id.partition("=")
        alert = alerts.from_transition(t, 0, {label: value} if ev.scope == "cohort" else {})
        if t.status == "firing":
            self.firing[alert.alert_id] = alert
        elif t.status == "resolved":
            self.firing.pop(alert.alert_id, None)
        if "alert" in t.rule.actions and not replayed and self.leading.is_set():
            self.unsent.append(alert)

    def _deliver(self, producer: Producer, tracker: kafka.DeliveryTracker) -> None:
        """Produce the leader's alerts (after gaining leadership: the firing ones first)."""
        caught_up = self.position >= self.replay_until
        if self._gained.is_set() and self.leading.is_set() and caught_up:
            self._gained.clear()
            self.unsent[:0] = [a for a in self.firing.values() if "alert" in a.actions]
        if not self.unsent or not self.leading.is_set():
            self.unsent.clear()
            return
        k = self.settings.kafka
        for a in self.unsent:
            kafka.produce(producer, tracker, k.alerts_topic, key=a.key, value=alerts.encode(a))
        try:
            kafka.flush(producer, tracker, self.settings.consume.delivery_timeout_s)
        except (errors.KafkaUnavailable, KafkaException) as exc:
            log.warning("fleet span: %d alert(s) not delivered (%s): retrying", len(self.unsent), exc)
            tracker.errors = []
            return
        for a in self.unsent:
            log.info("alert %s %s %s/%s (fleet span)", a.status, a.rule, a.device_id, a.sensor)
        self.unsent.clear()
