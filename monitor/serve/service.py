"""The live service: a consumer-group member that runs the pipeline batch by batch.

Per batch (a checkpoint): consume -> :meth:`Pipeline.process` -> produce dead letters, alerts and
model versions -> wait for every delivery report -> append versions to the registry -> commit the
batch's offsets -> checkpoint the state of its partitions (at most every
``state.snapshot_interval_s``; to the changelog topic and the local cache, by a background thread).
Under ``processing.guarantee: exactly_once`` the outputs, the due checkpoints and the offsets are
one Kafka transaction (``send_offsets_to_transaction``). Offsets never move past a batch whose
outputs were not delivered: while a delivery fails the service is *degraded* (readiness fails),
pauses its partitions, keeps polling so it stays in the group, and retries until the outputs are
delivered, then resumes where it stopped.

State follows partitions (:mod:`monitor.serve.partitions`): restored on assignment (from the
changelog), checkpointed on revocation, dropped unsaved on loss. Each device also remembers the
offset of its last applied reading, so a re-delivered reading is never applied twice. A stop
request (SIGTERM/SIGINT) takes effect between batches: the current batch is finished, delivered
and committed, and every partition checkpointed.

The loop also keeps :class:`~monitor.serve.health.Health` current (loop ticks, group membership, broker
reachability, delivery) and hands the metrics their per-batch numbers, consumer lag included.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from monitor import errors
from monitor.errors import SinkUnavailable
from monitor.govern import alerts, registry, replication
from monitor.ingest import kafka
from monitor.pipeline import BatchResult, Pipeline
from monitor.serve import changelog, fleetspan, oplog
from monitor.serve.changelog import Changelog
from monitor.serve.deadletters import DeadLetterProducer
from monitor.serve.feedback import FeedbackWorker
from monitor.serve.health import Health, HttpEndpoint
from monitor.serve.metrics import Metrics
from monitor.serve.partitions import Partitions, log_registrations
from monitor.serve.sinks import AlertmanagerSink
from monitor.settings import Settings
from monitor.state.snapshot import Parts
from monitor.state.store import PartitionState

log = logging.getLogger(__name__)

BatchHook = Callable[[BatchResult, "Totals"], None]
_REBALANCE_ERRORS = frozenset(
    {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS}
)
# A commit that failed because the broker (the group coordinator) could not be reached.
_UNREACHABLE_ERRORS = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
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
    decisions: list[registry.AuditEvent] = field(default_factory=list)  # promotions and rejections
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
        self.decisions.extend(e for e in result.audit if e.kind in ("promoted", "rejected"))
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


class Service:
    """``endpoint``, if given, is the HTTP endpoint serving ``health`` (the service does not own it);
    ``feedback``, if given, the operators' feedback worker it runs beside its loop; ``start``, the
    offsets partitions the group never committed start at (a shadow run's; default
    ``kafka.auto_offset_reset``)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        health: Health | None = None,
        endpoint: HttpEndpoint | None = None,
        feedback: FeedbackWorker | None = None,
        span: fleetspan.SpanWorker | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health or Health(settings.metrics.liveness_timeout_s)
        self.endpoint = endpoint
        self.feedback = feedback
        self.span = span  # fleet.span: the merged fleet and cohort view (monitor.serve.fleetspan)
        self.registry = registry.open_registry(settings)
        self.replica = self._share_registry()
        self.totals = Totals()
        self.summary = oplog.Summary()  # the periodic throughput and lag line
        self.pending: BatchResult | None = None  # a processed batch whose outputs are not delivered
        self.in_kafka = False  # the pending batch's outputs are all acknowledged by Kafka
        self.posted = False  # ... and its alerts accepted by Alertmanager
        self.abandoned = False  # stopping while `pending` could not be delivered
        self.rewind: dict[tuple[str, int], int] = {}  # offsets consumed (and dropped) while paused
        k, c = settings.kafka, settings.consume
        # A batch closes at consume.max_batch_age_ms: the broker must answer a fetch by then too.
        fetch_wait = {"fetch.wait.max.ms": min(500, c.max_batch_age_ms)}
        self.consumer = Consumer(kafka.consumer_config(k, **fetch_wait, error_cb=self._on_error))
        largest = max(1_000_000, c.dead_letter_max_bytes + 65_536)  # a dead letter and its headers
        p = settings.processing
        self.eos = p.guarantee == "exactly_once"
        transactions = {
            "transactional.id": p.transactional_id or default_transactional_id(settings),
            "transaction.timeout.ms": p.transaction_timeout_ms,
        }
        extra = {"linger.ms": 2, "message.max.bytes": largest} | (transactions if self.eos else {})
        self.producer_config = kafka.producer_config(k, **extra)
        self.producer = Producer(self.producer_config)
        self.producer_stale = False  # exactly_once: replace it before the next transaction
        self.txn_open = False  # exactly_once: a transaction is begun and not committed or aborted
        self.txn_committing = False  # ... and its commit is under way (timed out: to be resumed)
        self.txn_snapshots: list[tuple[str, int]] = []  # partitions checkpointed in the open transaction
        if self.eos:
            self._init_transactions(str(transactions["transactional.id"]))
        self.tracker = kafka.DeliveryTracker()
        self.dead_letters = DeadLetterProducer(
            self.producer, self.tracker, k.dead_letter_topic, c.dead_letter_max_bytes
        )
        a = settings.alerts
        self.sink = (
            AlertmanagerSink(a.alertmanager_url, a.timeout_s, a.resend_interval_s)
            if a.alertmanager_url
            else None
        )
        self.changelog = Changelog(k, k.group_id, c.delivery_timeout_s) if settings.state.changelog else None
        self.partitions = Partitions(settings, pipeline, metrics, self.registry.key, self.changelog, start)
        audit = self.registry.audit_path
        self.audit_position = audit.stat().st_size if audit.exists() else 0  # follow new commands
        self._ts_warned = False  # the first ignored Kafka timestamp is logged, the rest counted
        metrics.record_device_cap(pipeline.max_devices)
        metrics.record_channels(pipeline.catalog.names, pipeline.catalog.spare)
        log.info(
            "state: at most %d devices (state.memory_budget_mb %g over %d bytes per device%s)",
            pipeline.max_devices,
            settings.state.memory_budget_mb,
            pipeline.store.bytes_per_device(),
            f", state.max_devices {settings.state.max_devices}" if settings.state.max_devices else "",
        )

    def run(self, stop: threading.Event, on_batch: BatchHook | None = None) -> Totals:
        """Consume until ``stop`` is set; always finishes, delivers and commits the current batch."""
        k, c = self.settings.kafka, self.settings.consume
        self.consumer.subscribe(
            [k.readings_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("consuming %s as group %s from %s", k.readings_topic, k.group_id, k.bootstrap_servers)
        if self.feedback is not None:
            self.feedback.start()
        if self.replica is not None:
            self.replica.start()
        if self.span is not None:
            self.span.start()
        try:
            while not stop.is_set() or (self.pending is not None and not self.abandoned):
                self.health.tick()
                self.summary.log_if_due(degraded=self.pending is not None)
                self._heartbeat()
                self._follow_registry()
                if self.pending is not None:
                    self._retry(stop)
                    continue
                messages = self.consumer.consume(c.batch_size, c.max_batch_age_ms / 1000)
                if messages:
                    result = self._batch(messages)
                    if result is not None and on_batch is not None:
                        on_batch(result, self.totals)
                else:
                    self.partitions.snapshot_due()
                    if self.health.broker_error is not None:
                        self._probe_broker()
        finally:
            self._close()
        return self.totals

    def _close(self) -> None:
        """Stop: abort an open transaction, revoke (checkpointing), drain the writers, flush."""
        self.health.stopped = True
        if self.txn_open:
            self._abort()
        if self.feedback is not None:
            self.feedback.close()
        if self.replica is not None:
            self.replica.close()
        if self.span is not None:
            self.span.close()
        self.consumer.close()  # revokes the assignment: checkpoints every partition
        self.partitions.writer.close()
        if self.changelog is not None:
            self.changelog.close()
        self.pipeline.trainer.close()
        if self.sink is not None:
            self.sink.close()
        try:
            self.producer.flush(self.settings.consume.delivery_timeout_s)
        except KafkaException as exc:  # a producer that failed for good (fenced) says so here
            log.warning("outputs not flushed at exit: %s", exc.args[0].str())

    def _batch(self, messages: list[Message]) -> BatchResult | None:
        t0 = time.perf_counter()
        good = []
        for m in messages:
            err = m.error()
            if err is None:
                good.append(m)
                self.partitions.check_restart(m)
            else:
                log.warning("consumer error: %s", err)
        if self.partitions.replay_until:
            good = self.partitions.replay(good)
            self._settle()
        result = self.pipeline.process(good)
        self.totals.add(result, len(good))
        if not self.eos:  # under exactly_once, _delivered produces them in the batch's transaction
            self._produce(result)
        if not self._delivered(result):
            self._degrade(result)
            return None
        self._checkpoint(result)
        self._record(result, time.perf_counter() - t0)
        return result

    def _register(self, result: BatchResult) -> None:
        """Put the batch's new versions and audit events in the registry, then carry out the
        rollbacks its rules asked for."""
        if result.versions:
            self._store_lineage()
        for version, model in zip(result.versions, result.models, strict=True):
            try:
                self.registry.register(version, model)
            except errors.RegistryError as exc:
                log.error(
                    "cannot register %s/%s v%d: %s", version.device_id, version.sensor, version.version, exc
                )
        try:
            self.registry.record(*result.audit)
        except errors.RegistryError as exc:  # they are on the audit topic already
            log.error("%d audit event(s) not in the registry's trail: %s", len(result.audit), exc)
        for rb in result.rollbacks:
            if self.pipeline.serving(rb.device_id, rb.sensor) != rb.version:
                log.info(
                    "%s/%s: rollback of v%d superseded by a newer version",
                    rb.device_id,
                    rb.sensor,
                    rb.version,
                )
                continue
            self._switch(
                rb.device_id, rb.sensor, None, f"rule {rb.rule} fired (alert {rb.alert_id})", rb.rule
            )
        if self.replica is not None and (result.versions or result.rollbacks):
            try:
                self.replica.flush()
            except errors.KafkaUnavailable as exc:  # still queued: librdkafka keeps retrying
                log.error("the shared registry lacks this batch's versions or rollbacks for now: %s", exc)

    # --- the shared registry (registry.shared, monitor.govern.replication) ------------------------

    def _store_lineage(self) -> None:
        """The settings and rules the versions name by digest, stored once in the registry."""
        for blob in self.pipeline.governor.provenance.blobs():
            try:
                self.registry.put_blob(blob)
            except OSError as exc:
                log.error("cannot store the versions' settings and rules in the registry: %s", exc)

    def _share_registry(self) -> replication.RegistryReplica | None:
        """With ``registry.shared``: bring the registry's directory up to date with Kafka's
        topics before anything reads it, and publish what it stores from now on."""
        if not self.settings.registry.shared:
            return None
        replica = replication.RegistryReplica(self.settings, self.registry)
        began = time.monotonic()
        read = replica.catch_up()
        log.info(
            "registry: shared through %s and %s; %d record(s) read, %d version(s) installed in %.1fs",
            self.settings.kafka.artifacts_topic,
            self.settings.kafka.audit_topic,
            read,
            replica.installed,
            time.monotonic() - began,
        )
        published = replica.publish_missing()
        if published:
            log.info("registry: %d version(s) of this directory published: %s", len(published), published)
            try:
                replica.flush()
            except errors.KafkaUnavailable as exc:
                log.error("registry: versions of this directory not published yet: %s", exc)
        return replica

    def _switch(
        self, device_id: str, sensor: str, event: registry.AuditEvent | None, reason: str, rule: str
    ) -> None:
        """Serve another version of a pair: the parent (a rule's rollback, ``event`` None) or the
        one a ``telemon registry promote|rollback`` command recorded. The artifact is verified
        first; a refused one leaves the current model serving (and a ``rejected`` event)."""
        try:
            if event is None:
                event = self.registry.rollback(device_id, sensor, reason=reason, actor=f"rule:{rule}")
                if self.replica is None:  # a shared registry published it
                    self._publish_event(event)
        except errors.RegistryError as exc:
            log.error("%s/%s keeps its current model: %s", device_id, sensor, exc)
            return
        self._serve(device_id, sensor, event.version, f"{event.kind} by {event.actor}")

    def _serve(self, device_id: str, sensor: str, version: int, why: str) -> None:
        """Serve a registered version of a pair, verified first (refused: the current one stays)."""
        try:
            model = self.registry.load(device_id, sensor, version)
        except errors.RegistryError as exc:
            log.error("%s/%s keeps its current model: %s", device_id, sensor, exc)
            return
        if self.pipeline.install(device_id, sensor, model, version):
            log.info("%s/%s now serves v%d (%s)", device_id, sensor, version, why)

    def _settle(self) -> None:
        """Restored partitions, once re-read up to their committed offset, serve the versions the
        registry's audit trail says serve. A snapshot older than the trail (a backup copied back,
        or taken before a ``telemon registry promote``) would otherwise serve stale models. A
        rule's decision later in the stream than the pair's last reading is left to the stream,
        which makes it again."""
        for _topic, p in self.partitions.settled():
            for device, sensor, version, last_ts in self.pipeline.serving_pairs(p):
                event = self.registry.serving_event(device, sensor)
                if event is None or (event.actor.startswith("rule:") and event.event_ts > last_ts):
                    continue
                target = event.previous if event.kind == "rejected" else event.version
                if target != version:
                    log.warning(
                        "%s/%s: the restored state served v%d, the audit trail says v%d (%s by %s)",
                        device,
                        sensor,
                        version,
                        target,
                        event.kind,
                        event.actor,
                    )
                    self._serve(device, sensor, target, "as the audit trail says")

    def _follow_registry(self) -> None:
        """Apply promotions and rollbacks made with the ``telemon registry`` command (the
        service's own are recorded by ``rule:<name>`` actors). A shared registry's command
        published them and the replica's follower appended them to the directory's trail;
        otherwise the service publishes them to the audit topic."""
        events, self.audit_position = self.registry.events(self.audit_position)
        for e in events:
            if e.kind in ("promoted", "rolled_back") and not e.actor.startswith("rule:"):
                if self.replica is None:
                    self._publish_event(e)
                self._switch(e.device_id, e.sensor, e, e.reason, "")

    def _checkpoint(self, result: BatchResult) -> None:
        """After delivery: registry, commit (under exactly_once, the transaction has), then (when
        due) the partitions' snapshots."""
        self._register(result)
        if not self.eos:
            self._commit(result)
        self.health.broker_error = None  # the broker acknowledged the outputs and the commit
        self.health.delivery_error = None
        self.partitions.applied(result.offsets)
        for a in result.alerts:
            log.info("alert %s %s %s/%s", a.status, a.rule, a.device_id, a.sensor)
        oplog.log_decisions(result)
        if not self.eos:  # under exactly_once, in the transaction
            self.partitions.snapshot_due()

    def _record(self, result: BatchResult, seconds: float) -> None:
        """The batch's metrics: counts, latencies, state size, model versions, firing rules, lag."""
        m, st = self.metrics, self.pipeline.store
        self._log_anomalies(result)
        m.record_channels(self.pipeline.catalog.names, self.pipeline.catalog.spare)
        m.record_batch(result, self.pipeline.integrity.take_events(), seconds)
        m.record_dead_letters_failed(self.dead_letters.take_failed())
        n = len(st)
        models = (self.pipeline.govern_state.raw_n[: st.used] > 0).sum(axis=0)
        m.record_state(n, st.array_bytes_per_device() * n, models)
        m.record_firing(self.pipeline.engine.firing_by_rule())
        lags = self._lags()
        m.record_consumer(lags, len(self.partitions))
        self.pipeline.lag = sum(lags.values())
        self.summary.add(result, self.pipeline.lag if lags else None)

    def _log_anomalies(self, result: BatchResult) -> None:
        """What an operator must hear about: channels registered, eviction waves, devices read
        astray, ignored Kafka timestamps."""
        log_registrations(result.registered, self.pipeline.catalog.spare)
        for w in result.evictions:
            if w.reason == "idle":
                since = w.clock_ms - int(self.settings.state.evict_idle_s * 1000)
                log.info(
                    "evicted %d idle device(s) of partition %d: silent since before %s (Kafka time)",
                    w.devices,
                    w.partition,
                    alerts.rfc3339(since),
                )
        waves = [w for w in result.evictions if w.reason == "capacity"]
        if waves:
            log.warning(
                "evicted %d device(s) read least recently, in %d wave(s): at the cap of %d devices "
                "(state.memory_budget_mb / state.max_devices)",
                sum(w.devices for w in waves),
                len(waves),
                self.pipeline.max_devices,
            )
        for stray in result.new_strays:
            log.warning(
                "device %s read from partition %d, its state is on partition %d: its producer does not "
                "key by device id, or a record was forged (applied, counted; logged once per device)",
                stray.device_id,
                stray.partition,
                stray.home,
            )
        if result.kafka_ts_ignored and not self._ts_warned:
            self._ts_warned = True
            log.warning(
                "%d message(s) with a Kafka timestamp missing or more than consume.max_future_ms ahead: "
                "ignored for device idle times (counted in telemon_kafka_timestamps_ignored_total)",
                result.kafka_ts_ignored,
            )

    def _lags(self) -> dict[tuple[str, int], int]:
        """Lag per assigned partition from the service's own positions and the high watermark
        librdkafka cached from its last fetch response (no broker round trip)."""
        lags: dict[tuple[str, int], int] = {}
        for (topic, p), position in self.partitions.positions.items():
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore the partitions' state and start each where its state stopped
        (:meth:`Partitions.assign`)."""
        restored = self.partitions.assign(consumer, partitions, self._adopt)
        self.metrics.record_channels(self.pipeline.catalog.names, self.pipeline.catalog.spare)
        self._settle()
        consumer.assign(partitions)
        if self.pending is None:  # partitions paused by an outage that ended with their loss
            consumer.resume(partitions)
        self._span_lead()
        self.health.assigned(len(self.partitions))
        self.metrics.record_restored(restored)
        log.info(
            "assigned %d partition(s), %d in all; %d device state(s) restored",
            len(partitions),
            len(self.partitions),
            restored,
        )

    def _adopt(self, state: PartitionState) -> None:
        """Keep restored firing alerts alive in Alertmanager (it resolves what is not re-posted)."""
        if self.sink is None:
            return
        self.sink.adopt(self.pipeline.firing_alerts(state))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Snapshot the revoked partitions (unless outputs are still undelivered: then their state
        is ahead of what may be committed, and the next owner re-applies from the last snapshot).
        Under exactly_once an undelivered batch is abandoned: its transaction is aborted, and the
        next owner produces its outputs."""
        self._release([(tp.topic, tp.partition) for tp in partitions], save=self.pending is None)
        self._abandon()

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group reassigned these partitions without us: drop their state, write nothing."""
        log.warning("lost %d partition(s) to the group; their state is dropped", len(partitions))
        self.health.lost()
        self._release([(tp.topic, tp.partition) for tp in partitions], save=False)
        self._abandon()
        self.producer_stale = self.eos  # the group moved on without us: a new producer (see _begin)

    def _abandon(self) -> None:
        """Under exactly_once, partitions given up while a batch is undelivered take the batch
        along: its transaction is aborted (its offsets could no longer be committed by this
        member), and the partitions' next owner posts and produces its outputs."""
        if not self.eos or self.pending is None or self.in_kafka:
            return
        if self.txn_open:
            self._abort()
        self.producer_stale = True
        log.warning("partitions given up during an outage: the undelivered batch is left to their next owner")
        self.pending, self.in_kafka, self.posted, self.rewind = None, False, False, {}
        self.metrics.record_degraded(False)

    def _release(self, keys: list[tuple[str, int]], save: bool) -> None:
        self.partitions.release(keys, save)
        self._span_lead()
        if len(self.partitions):
            self.health.assigned(len(self.partitions))
        else:
            self.health.revoked()
        self.metrics.record_consumer({}, len(self.partitions))

    # --- fleet.span: the hooks of the merged fleet view (monitor.serve.fleetspan) ---------------

    def _span_lead(self) -> None:
        """The owner of partition 0 of the readings topic alerts on the merged view."""
        if self.span is not None:
            self.span.lead((self.settings.kafka.readings_topic, 0) in self.partitions.positions)

    def _span_produce(self, result: BatchResult) -> None:
        """The batch's partial aggregates, delivered (and so published) before its offsets commit."""
        if self.span is not None and result.span:
            size = fleetspan.produce(self.producer, self.tracker, self.settings, result.span)
            self.metrics.record_span_published(len(result.span), size)

    # --- end fleet.span ---------------------------------------------------------------------

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

    def _produce(self, result: BatchResult) -> None:
        """Produce the batch's outputs: dead letters, alerts, model versions."""
        k, p, t = self.settings.kafka, self.producer, self.tracker
        self.dead_letters.produce(result.dead_letters)
        for a in result.alerts:
            kafka.produce(p, t, k.alerts_topic, key=a.key, value=alerts.encode(a))
        for v in result.versions:
            kafka.produce(p, t, k.models_topic, key=v.key, value=registry.encode(v))
        for e in result.audit:
            self._publish_event(e)
        self._span_produce(result)

    def _publish_event(self, e: registry.AuditEvent) -> None:
        """Produce an audit event (under exactly_once outside a batch: in a transaction of its own)."""
        k = self.settings.kafka
        alone = self.eos and not self.txn_open
        if alone and not self._begin_or_degrade():
            log.error("audit event of %s/%s not published: no transaction", e.device_id, e.sensor)
            return
        kafka.produce(
            self.producer,
            self.tracker,
            k.audit_topic,
            key=e.device_id.encode(),
            value=registry.encode_event(e),
        )
        if alone:
            try:
                self._end_transaction([])
            except errors.KafkaUnavailable as exc:
                log.error("audit event of %s/%s not published: %s", e.device_id, e.sensor, exc)

    def _delivered(self, result: BatchResult) -> bool:
        """Deliver the batch's outputs: wait for Kafka's acknowledgements and hand the alerts to
        Alertmanager (if configured). Under exactly_once, Alertmanager first, then the batch's
        transaction (begun, its outputs produced, committed with its offsets): Alertmanager is
        outside the transaction, so the alerts must be there before the offsets are committed
        (a crash in between posts them again, and Alertmanager deduplicates them by labels), and
        no transaction stays open while Alertmanager is down. A failure marks the service
        degraded and returns False: nothing of the batch may be committed yet."""
        try:
            if self.eos:
                self._post(result)
                if not self.in_kafka:
                    if not self.txn_open:  # the first attempt, or after an abort: (again) in a new one
                        self.tracker.errors = []
                        self._begin()
                        self._produce(result)
                    self._commit_transaction(result)
                    self.in_kafka = True
            else:
                if not self.in_kafka:
                    timeout = self.settings.consume.delivery_timeout_s
                    kafka.flush(self.producer, self.tracker, timeout)
                    if self.dead_letters.retry_refused():  # the broker refused some for their size
                        kafka.flush(self.producer, self.tracker, timeout)
                    self.in_kafka = True
                self._post(result)
        except errors.TransactionsFailed:
            self.pending, self.abandoned = result, True  # its state is ahead: never checkpointed
            raise
        except (errors.KafkaUnavailable, SinkUnavailable) as exc:
            self.health.delivery_error = str(exc)
            log.warning("outputs not delivered (%s): degraded, retrying", exc)
            return False
        self.in_kafka = self.posted = False
        return True

    def _post(self, result: BatchResult) -> None:
        """Hand the batch's alerts to Alertmanager, once (raises SinkUnavailable)."""
        if self.sink is not None and not self.posted:
            self.sink.send(result.alerts)
        self.posted = True

    def _heartbeat(self) -> None:
        """Keep Alertmanager's firing alerts alive (a failure is retried at the next turn)."""
        if self.sink is None:
            return
        try:
            self.sink.heartbeat()
        except SinkUnavailable as exc:
            log.warning("alertmanager heartbeat failed: %s", exc)

    def _degrade(self, result: BatchResult) -> None:
        """Hold the undelivered batch and pause every partition until it is delivered."""
        self.pending = result
        self.metrics.record_degraded(True)
        self.consumer.pause(self.consumer.assignment())

    def _retry(self, stop: threading.Event) -> None:
        """One degraded-mode turn: stay in the group, then deliver what is still undelivered.
        Failed messages are produced again (consumers dedupe alerts by ``alert_id``); messages
        still queued in the producer are simply awaited."""
        result = self.pending
        assert result is not None
        c = self.settings.consume
        for m in self.consumer.consume(c.batch_size, c.poll_timeout_s):
            if m.error() is None:  # paused partitions deliver nothing; were a message to slip
                self._rewind(m)  # through, consumption restarts at it after the outage
        if self.pending is not result:  # abandoned by a rebalance meanwhile (exactly_once)
            return
        self._produce_again(result)
        if not self._delivered(result):
            if stop.is_set():  # keep `pending`: the revocation then drops the state unsaved
                log.error("stopping with undelivered outputs: their batch stays uncommitted")
                self.abandoned = True
            return
        self.pending = None
        self.metrics.record_degraded(False)
        log.info("outputs delivered after an outage: resuming")
        self._checkpoint(result)
        assigned = self.consumer.assignment()
        self.consumer.resume(assigned)
        for tp in assigned:
            position = self.rewind.pop((tp.topic, tp.partition), None)
            if position is not None:
                tp.offset = position
                self.consumer.seek(tp)

    def _produce_again(self, result: BatchResult) -> None:
        """The outputs of an undelivered batch, again once they failed for good and nothing is in
        flight (under exactly_once, :meth:`_delivered` produces them again in a new transaction)."""
        if not self.in_kafka and not self.eos and self.tracker.pending == 0:
            self.tracker.errors = []
            self._produce(result)

    def _rewind(self, m: Message) -> None:
        tp, offset = (str(m.topic()), int(m.partition() or 0)), m.offset()
        if offset is not None:
            self.rewind[tp] = min(offset, self.rewind.get(tp, offset))

    def _commit(self, result: BatchResult) -> None:
        """Commit the batch's offsets. A commit refused because the group rebalanced is not fatal:
        the partitions' new owner re-reads the batch from the last commit (at-least-once). Nor is
        one that failed because the broker is unreachable (its outputs are delivered): the next
        commit covers the batch, and a process that stops first resumes from its snapshots."""
        if not result.offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in result.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in _UNREACHABLE_ERRORS:
                log.warning("commit failed, the broker is unreachable (%s); the next commit covers it", exc)
                return
            if code not in _REBALANCE_ERRORS:
                raise
            log.warning("commit refused after a rebalance (%s); the batch will be re-delivered", exc)

    # --- exactly_once: one Kafka transaction per batch -----------------------------------------

    def _init_transactions(self, transactional_id: str) -> None:
        try:
            self.producer.init_transactions(self.settings.consume.delivery_timeout_s)
        except KafkaException as exc:
            raise errors.KafkaUnavailable(
                f"processing.guarantee exactly_once: cannot start transactions as {transactional_id} "
                f"({exc.args[0].str()}); the brokers must support transactions (Kafka >= 2.5)"
            ) from None
        log.info("exactly_once: transactional id %s", transactional_id)

    def _begin_or_degrade(self) -> bool:
        """:meth:`_begin`; False (the reason in the health report) if Kafka refused."""
        try:
            self._begin()
        except errors.KafkaUnavailable as exc:
            self.health.delivery_error = str(exc)
            log.warning("no transaction begun (%s): degraded, retrying", exc)
            return False
        return True

    def _begin(self) -> None:
        """Open the batch's transaction (exactly_once; a no-op otherwise), with a new producer
        first if the last one's transaction was given up during an outage: librdkafka's state of
        it may still wait for the broker, and a new producer with the same transactional id
        (``init_transactions``) aborts it at the coordinator and starts afresh."""
        if self.eos and self.producer_stale:
            self.producer.purge()
            self.producer = Producer(self.producer_config)
            self.dead_letters.producer = self.producer
            self._init_transactions(str(self.producer_config["transactional.id"]))
            self.producer_stale = False
        if self.eos and not self.txn_open:
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                raise _failed(exc.args[0]) from None
            self.txn_open = True

    def _commit_transaction(self, result: BatchResult) -> None:
        """Put the due partitions' state on the changelog, then commit the transaction with the
        batch's offsets: its outputs, changelog records and offsets become visible together. A
        commit that timed out is resumed by the next call (librdkafka's rule), nothing added."""
        if not self.txn_committing:
            self.partitions.applied(result.offsets)
            self.txn_snapshots += self.partitions.snapshot_due(into=self._changelog_record)
            offsets = [TopicPartition(t, p, o) for (t, p), o in result.offsets.items()]
            self._end_transaction(offsets)
        else:
            self._end_transaction([])

    def _changelog_record(self, manifest: changelog.Manifest, parts: Parts) -> None:
        assert self.changelog is not None
        self.changelog.publish(manifest, parts, self.producer, self.tracker)

    def _end_transaction(self, offsets: list[TopicPartition]) -> None:
        """Commit the open transaction (with ``offsets``). A failure that needs an abort aborts
        it (its outputs are produced again in a new one); any failure raises KafkaUnavailable.
        A fatal one (this transactional id fenced by a newer producer) stops the service
        (:class:`~monitor.errors.TransactionsFailed`)."""
        timeout = self.settings.consume.delivery_timeout_s
        try:
            if offsets:
                metadata = self.consumer.consumer_group_metadata()
                self.producer.send_offsets_to_transaction(offsets, metadata, timeout)
            self.txn_committing = True
            self.producer.commit_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise _failed(err) from None
            if err.txn_requires_abort():
                fatal = self._abort()
                if fatal is not None:
                    raise _failed(fatal) from None
            raise errors.KafkaUnavailable(f"transaction not committed: {err.str()}") from None
        self.txn_open = self.txn_committing = False
        self.txn_snapshots = []
        self.tracker.errors = []

    def _abort(self) -> KafkaError | None:
        """End the open transaction without its batch: abort it (a commit already under way is
        finished instead, if it can be: librdkafka allows no abort then). The state it
        checkpointed is due again. Returns the error if the producer failed for good meanwhile."""
        timeout = self.settings.consume.delivery_timeout_s
        fatal = None
        try:
            if self.txn_committing:
                try:
                    self.producer.commit_transaction(timeout)
                    log.warning("a transaction under way when its batch was given up committed")
                except KafkaException as exc:
                    if not exc.args[0].txn_requires_abort():
                        raise
                    self.producer.abort_transaction(timeout)
            else:
                self.producer.abort_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            fatal = err if err.fatal() else None
            log.warning("ending the transaction failed (%s): the broker aborts it at its timeout", err)
        self.txn_open = self.txn_committing = False
        self.partitions.due_again(self.txn_snapshots)
        self.txn_snapshots = []
        self.tracker.errors = []
        return fatal


def _failed(err: KafkaError) -> errors.Unavailable:
    """The error for a transactional producer that failed: for good (fenced) or not."""
    if not err.fatal():
        return errors.KafkaUnavailable(f"cannot begin a transaction: {err.str()}")
    return errors.TransactionsFailed(
        f"exactly_once: the transactional producer failed for good ({err.str()}): another process "
        "uses the same processing.transactional_id, or this one's transaction timed out; restart it"
    )


def default_transactional_id(settings: Settings) -> str:
    """``telemon-<group>-<host>-<state folder digest>``: stable across a replica's restarts (same
    host, same folder), distinct for replicas sharing a host."""
    where = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:8]
    return f"telemon-{settings.kafka.group_id}-{socket.gethostname()}-{where}"
