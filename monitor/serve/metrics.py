"""Every Prometheus metric telemon exports, declared here and only here (docs/reference/metrics.md
is generated from it).

The registry is injected (tests build a fresh ``CollectorRegistry``). Domain code never touches
``prometheus_client``: the service calls the ``record_*`` hooks once per batch, never per reading.
Label values come from small fixed sets (sensor kinds, rejection reasons, checks, detectors,
scopes, rule names, severities, partitions of the readings topic, verdicts, the cohort keys of the
cohort rules' labels); never device ids or model versions. Children of
the fixed sets are created up front, so a counter is 0 before its first event and ``increase()``
sees that first event. The sensor label's values are the catalog's: the built-in kinds, the
declared channels, and the channels registered automatically (:meth:`Metrics.record_channels`,
at most ``channels.auto_register`` of them), whose children are created as they are registered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

import monitor
from monitor.analyze import feedback
from monitor.analyze.ledger import Ledger, PrecisionRow
from monitor.govern.alerts import Alert
from monitor.pipeline import BatchResult
from monitor.schema import SENSOR_NAMES, Reason
from monitor.state.store import CHECKS

SCORE_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Event-time lag (now - reading ts): sub-second for a live fleet, hours for a replayed backlog.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
DETECTORS = (
    "ks",
    "psi",
    "adwin",
    "input",
    "peer",
    "input_adwin",
    "cohort_input",
)  # input*, peer, cohort_input: inputs
SCOPES = ("device", "fleet", "cohort")
STATUSES = ("pending", "firing", "resolved")
RETRAIN_OUTCOMES = ("promoted", "rejected", "skipped")
EVICTION_REASONS = ("idle", "capacity")


class BatchHistogram(Collector):
    """A histogram, one child per value of at most one label, fed a numpy array per batch.

    ``observe`` costs one ``searchsorted`` and one ``bincount`` per batch instead of a Python
    call per reading.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        label: str = "",
        values: Sequence[str] = (),
    ) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.values = tuple(values) if label else ("",)
        self.edges = np.asarray(buckets, np.float64)
        self.counts = np.zeros((len(self.values), len(buckets) + 1), np.int64)  # last: above every edge
        self.sums = np.zeros(len(self.values))
        self._lock = threading.Lock()  # scrapes run on the HTTP threads

    def add_values(self, values: Sequence[str]) -> None:
        """Children for more values of the label (channels registered since)."""
        with self._lock:
            self.values += tuple(values)
            self.counts = np.vstack([self.counts, np.zeros((len(values), self.counts.shape[1]), np.int64)])
            self.sums = np.concatenate([self.sums, np.zeros(len(values))])

    def observe(self, values: NDArray[np.float64], child: int = 0) -> None:
        if values.size == 0:
            return
        n = np.bincount(np.searchsorted(self.edges, values, side="left"), minlength=len(self.edges) + 1)
        with self._lock:
            self.counts[child] += n
            self.sums[child] += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=[self.label] if self.label else [])
        with self._lock:
            cumulative, sums = np.cumsum(self.counts, axis=1), self.sums.copy()
        for i, value in enumerate(self.values):
            buckets = [(f"{e:g}", float(c)) for e, c in zip(self.edges, cumulative[i], strict=False)]
            buckets.append(("+Inf", float(cumulative[i, -1])))
            fam.add_metric([value] if self.label else [], buckets, float(sums[i]))
        yield fam


class Metrics:
    """The metric catalog. ``rules`` maps rule names to severities (for the per-rule children)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        rules: Mapping[str, str] | None = None,
        sensors: Sequence[str] = SENSOR_NAMES,
        cohorts: Sequence[str] = (),
    ) -> None:
        # No <name>_created series: one per counter and histogram child (four series in ten), the time
        # the process made it, which rate() and increase() never read. The switch is
        # prometheus_client's, for the whole process (whose only metrics are these).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        self.registry = r = registry
        self.rules = dict(rules or {})
        self.sensors = tuple(sensors)  # the catalog's, in index order: the sensor label's values
        self.cohorts = frozenset(cohorts)  # cohort keys (label=value) with a precision child
        # Input: what arrived, what was valid, what was quarantined and why.
        self.received = Counter(
            "telemon_messages_received", "Messages consumed from the readings topic.", registry=r
        )
        self.readings = Counter("telemon_readings", "Valid readings received.", ["sensor"], registry=r)
        self.quarantined = Counter(
            "telemon_messages_quarantined", "Messages sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.integrity = Counter(
            "telemon_integrity_events", "Data-integrity check events.", ["sensor", "check"], registry=r
        )
        # Latency and the consumer.
        self.batch_seconds = Histogram(
            "telemon_batch_duration_seconds",
            "Time to process and deliver one batch, commit included.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.event_lag = BatchHistogram(
            "telemon_event_lag_seconds",
            "Event-time latency of valid readings: processing time minus the reading's ts (>= 0).",
            LAG_BUCKETS,
        )
        r.register(self.event_lag)
        self.consumer_lag = Gauge(
            "telemon_consumer_lag",
            "Messages behind the partition's high watermark (next offset to consume to the end).",
            ["topic", "partition"],
            registry=r,
        )
        self.partitions = Gauge(
            "telemon_assigned_partitions", "Partitions assigned to this consumer.", registry=r
        )
        # Detection.
        self.anomalies = Counter("telemon_anomalies", "Readings scored as anomalous.", ["sensor"], registry=r)
        self.river_anomalies = Counter(
            "telemon_river_anomalies", "Readings a River tier flagged.", ["sensor"], registry=r
        )
        self.scores = BatchHistogram(
            "telemon_anomaly_score",
            "Anomaly score of scored readings (0..1).",
            SCORE_BUCKETS,
            "sensor",
            self.sensors,
        )
        r.register(self.scores)
        self.drift = Counter(
            "telemon_drift_detections",
            "Drift detections by detector (ks, psi, adwin on scores; input, peer, input_adwin, "
            "cohort_input on inputs) and scope.",
            ["detector", "scope", "sensor"],
            registry=r,
        )
        self.fleet_ks = Gauge(
            "telemon_fleet_ks_statistic", "Latest fleet KS statistic.", ["sensor"], registry=r
        )
        self.fleet_psi = Gauge("telemon_fleet_psi", "Latest fleet PSI.", ["sensor"], registry=r)
        # One child per cohort key of the rules' labels (label=value, from the configured labels) and sensor.
        self.cohort_input_ks = Gauge(
            "telemon_cohort_input_ks_statistic",
            "Latest binned KS statistic of a cohort's inputs against the rest of the fleet's (worst axis).",
            ["cohort", "sensor"],
            registry=r,
        )
        self.cohort_input_psi = Gauge(
            "telemon_cohort_input_psi",
            "Latest PSI of a cohort's inputs against the rest of the fleet's (largest over the axes).",
            ["cohort", "sensor"],
            registry=r,
        )
        # One child per compared cohort (label=value of the configured labels, bias.max_cohorts at
        # most per sensor) and sensor: the latest closed window of bias.window_s.
        self.cohort_bias = Gauge(
            "telemon_cohort_bias",
            "1 when a cohort's alert rate or device scores differ from the rest of the fleet's (a test's "
            "p-value under bias.alpha) in the latest window.",
            ["cohort", "sensor"],
            registry=r,
        )
        self.cohort_alert_ratio = Gauge(
            "telemon_cohort_bias_alert_ratio",
            "A cohort's alerts per reading over the rest of the fleet's, in the latest window.",
            ["cohort", "sensor"],
            registry=r,
        )
        self.cohort_score_shift = Gauge(
            "telemon_cohort_bias_score_shift",
            "Median device mean score of a cohort minus the rest of the fleet's, in the latest window.",
            ["cohort", "sensor"],
            registry=r,
        )
        self.cohort_bias_pvalue = Gauge(
            "telemon_cohort_bias_pvalue",
            "p-value of a cohort's comparison with the rest of the fleet (test: alert_rate, scores).",
            ["cohort", "sensor", "test"],
            registry=r,
        )
        # Governance: alerts, retrains, model versions.
        self.alerts = Counter(
            "telemon_alerts", "Alert records published.", ["rule", "severity", "status"], registry=r
        )
        self.firing = Gauge(
            "telemon_alerts_firing",
            "Alert episodes firing now (one per rule and key).",
            ["rule", "severity"],
            registry=r,
        )
        self.retrains = Counter(
            "telemon_retrains",
            "Retrains a rule asked for, by outcome: promoted, rejected (the incumbent kept), skipped.",
            ["sensor", "outcome"],
            registry=r,
        )
        self.models = Gauge(
            "telemon_models", "Models in memory (one per device and sensor).", ["sensor"], registry=r
        )
        self.version_max = Gauge(
            "telemon_model_version_max",
            "Highest model version of the sensor's models.",
            ["sensor"],
            registry=r,
        )
        self.version_mean = Gauge(
            "telemon_model_version_mean", "Mean model version of the sensor's models.", ["sensor"], registry=r
        )
        self._declare_feedback(r)
        # State and build.
        self.devices = Gauge("telemon_devices", "Devices with state in this process.", registry=r)
        self.state_bytes = Gauge("telemon_state_bytes", "Bytes of per-device state arrays.", registry=r)
        self.evicted = Counter(
            "telemon_devices_evicted",
            "Devices whose state was forgotten: silent too long (idle) or at the device cap (capacity).",
            ["reason"],
            registry=r,
        )
        self.replayed = Counter(
            "telemon_readings_replayed",
            "Re-delivered readings skipped because their device had already applied them.",
            registry=r,
        )
        self.strays = Counter(
            "telemon_readings_astray",
            "Readings of a device on another partition than the one holding its state (applied).",
            registry=r,
        )
        self.kafka_ts_ignored = Counter(
            "telemon_kafka_timestamps_ignored",
            "Kafka timestamps missing or further ahead than consume.max_future_ms: they date nothing.",
            registry=r,
        )
        self.dead_letters_failed = Counter(
            "telemon_dead_letters_failed",
            "Rejected records Kafka refused to take as dead letters even truncated (logged with offsets).",
            registry=r,
        )
        self.device_cap = Gauge(
            "telemon_device_cap",
            "Most devices kept: state.memory_budget_mb over one device's size, or state.max_devices.",
            registry=r,
        )
        self.snapshots = Counter("telemon_snapshots", "Partition snapshots taken.", registry=r)
        self.snapshot_bytes = Counter(
            "telemon_snapshot_bytes", "Bytes of partition snapshots taken.", registry=r
        )
        self.snapshot_write_errors = Counter(
            "telemon_snapshot_write_errors",
            "Snapshots that could not be written (the previous one stays; the log says why).",
            registry=r,
        )
        self.snapshot_errors = Counter(
            "telemon_snapshot_errors", "Snapshots that could not be loaded (state rebuilt).", registry=r
        )
        self.stale_snapshots = Counter(
            "telemon_snapshots_stale",
            "Signed snapshots older than the last one written (restored; their partition re-read).",
            registry=r,
        )
        self.restored = Counter(
            "telemon_devices_restored", "Device states restored from snapshots on assignment.", registry=r
        )
        self.restores = Counter(
            "telemon_state_restores",
            "Partition states restored on assignment, by source: changelog (read from Kafka), cache "
            "(the local snapshot, equal to the changelog's latest or the only one), none (a fresh state).",
            ["source"],
            registry=r,
        )
        self.restore_seconds = Counter(
            "telemon_state_restore_seconds",
            "Seconds spent restoring partition states on assignment (reading the changelog included).",
            registry=r,
        )
        self.degraded = Gauge(
            "telemon_degraded", "1 while outputs cannot be delivered (consumption paused).", registry=r
        )
        self.channels_registered = Counter(
            "telemon_channels_registered",
            "Channels registered automatically (channels.auto_register): on a first reading, or with the "
            "state of a snapshot that held them.",
            registry=r,
        )
        self.channels_free = Gauge(
            "telemon_channels_auto_free",
            "Channels auto-registration has room for still (0: readings of further unknown sensors are "
            "dead-lettered).",
            registry=r,
        )
        self.build = Gauge("telemon_build_info", "Build information.", ["version"], registry=r)
        self.build.labels(monitor.__version__).set(1)
        self._retrained = np.zeros(len(self.sensors), np.int64)  # retrains per sensor in this process
        self._max_version = np.ones(len(self.sensors), np.int64)
        self._lag_children: set[tuple[str, str]] = set()
        self._precreate()

    def _declare_feedback(self, r: CollectorRegistry) -> None:
        """Operators' verdicts and the precision of the alerts (every replica reads every alert and
        verdict: aggregate these with max(), not sum(), except telemon_feedback_invalid_total)."""
        self.verdicts = Counter(
            "telemon_feedback_verdicts",
            "Valid verdict records read from the feedback topic.",
            ["verdict"],
            registry=r,
        )
        self.feedback_invalid = Counter(
            "telemon_feedback_invalid",
            "Feedback records dead-lettered by this replica (the owner of their partition), by reason.",
            ["reason"],
            registry=r,
        )
        self.precision = Gauge(
            "telemon_alert_precision",
            "Precision of the alerts with a verdict, TP / (TP + FP), per rule.",
            ["rule"],
            registry=r,
        )
        self.precision_by_sensor = Gauge(
            "telemon_alert_precision_by_sensor", "Precision of the alerts per sensor.", ["sensor"], registry=r
        )
        self.precision_by_cohort = Gauge(
            "telemon_alert_precision_by_cohort",
            "Precision of the alerts per cohort (label=value of the cohort rules' labels).",
            ["cohort"],
            registry=r,
        )
        self.delay_by_cohort = Gauge(
            "telemon_alert_detection_delay_seconds",
            "Median detection delay per cohort: a true positive's firing time minus the fault's onset its "
            "verdict gives.",
            ["cohort"],
            registry=r,
        )
        self.judged = Gauge(
            "telemon_alert_verdicts",
            "Alerts held whose verdict is this one (the latest given), per rule.",
            ["rule", "verdict"],
            registry=r,
        )
        self.feedback_alerts = Gauge(
            "telemon_feedback_alerts", "Alert episodes held to join verdicts to.", registry=r
        )
        self.feedback_waiting = Gauge(
            "telemon_feedback_waiting", "Verdicts read before their alert, waiting for it.", registry=r
        )
        self._precision_children: dict[Gauge, set[str]] = {}
        # fleet.span: the partial aggregates of the merged fleet view (monitor.serve.fleetspan).
        self.span_records = Counter(
            "telemon_fleet_span_records",
            "Records of kafka.fleet_topic: partial aggregates published by this replica, merged, left out "
            "as duplicates (offsets counted already) or malformed; the leaders' acknowledgements read.",
            ["outcome"],
            registry=r,
        )
        self.span_bytes = Counter(
            "telemon_fleet_span_published_bytes",
            "Bytes of the partial aggregates this replica published.",
            registry=r,
        )
        self.span_late = Counter(
            "telemon_fleet_span_late_scores",
            "Scores of partial aggregates that arrived for a closed window (left out of the merged view).",
            registry=r,
        )
        self.span_windows = Counter(
            "telemon_fleet_span_windows", "Windows of the merged fleet view closed and evaluated.", registry=r
        )
        self.span_partitions = Gauge(
            "telemon_fleet_span_partitions",
            "Readings partitions that contributed to the latest closed window of the merged view.",
            registry=r,
        )
        self.span_leader = Gauge(
            "telemon_fleet_span_leader",
            "1 on the replica that alerts on the merged view (the owner of readings partition 0).",
            registry=r,
        )
        for outcome in ("published", "merged", "duplicate", "malformed", "ack"):
            self.span_records.labels(outcome)

    def _precreate(self) -> None:
        """Children for every value of the fixed label sets (never per reading)."""
        self._readings: list[Counter] = []
        self._anomalies: list[Counter] = []
        self._river_anomalies: list[Counter] = []
        self._integrity: list[list[Counter]] = []
        for s in self.sensors:
            self._precreate_sensor(s)
        for reason in Reason:
            self.quarantined.labels(reason.value)
        for why in EVICTION_REASONS:
            self.evicted.labels(why)
        for v in feedback.VERDICTS:
            self.verdicts.labels(v)
            for rule in self.rules:
                self.judged.labels(rule, v)
        for reason in feedback.REASONS:
            self.feedback_invalid.labels(reason.value)
        for rule, severity in self.rules.items():
            self.firing.labels(rule, severity)
            for status in STATUSES:
                self.alerts.labels(rule, severity, status)

    def _precreate_sensor(self, s: str) -> None:
        self._readings.append(self.readings.labels(s))
        self._anomalies.append(self.anomalies.labels(s))
        self._river_anomalies.append(self.river_anomalies.labels(s))
        self._integrity.append([self.integrity.labels(s, c) for c in CHECKS])
        for outcome in RETRAIN_OUTCOMES:
            self.retrains.labels(s, outcome)
        for d in DETECTORS:
            for scope in SCOPES:
                self.drift.labels(d, scope, s)

    def record_channels(self, names: Sequence[str], free: int) -> None:
        """The catalog's sensors now (``names``, in index order: those this object was made with,
        then the channels registered since) and the room auto-registration has left; the new
        channels get their children (the sensor label's values grow by at most
        ``channels.auto_register``)."""
        new = tuple(names[len(self.sensors) :])
        if new:
            self.sensors += new
            for s in new:
                self._precreate_sensor(s)
            self.scores.add_values(new)
            self._retrained = np.concatenate([self._retrained, np.zeros(len(new), np.int64)])
            self._max_version = np.concatenate([self._max_version, np.ones(len(new), np.int64)])
            self.channels_registered.inc(len(new))
        self.channels_free.set(free)

    def _record_bias(self, cohort: str, sensor: str, sig: dict[str, float]) -> None:
        self.cohort_bias.labels(cohort, sensor).set(sig["bias"])
        if "bias_alert_ratio" in sig:
            self.cohort_alert_ratio.labels(cohort, sensor).set(sig["bias_alert_ratio"])
        if "bias_score_shift" in sig:
            self.cohort_score_shift.labels(cohort, sensor).set(sig["bias_score_shift"])
        for test, name in (("alert_rate", "bias_alert_pvalue"), ("scores", "bias_score_pvalue")):
            if name in sig:
                self.cohort_bias_pvalue.labels(cohort, sensor, test).set(sig[name])

    def record_alerts(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            self.alerts.labels(a.rule, a.severity, a.status).inc()

    def record_batch(
        self, result: BatchResult, integrity: NDArray[np.int64], seconds: float, now: float | None = None
    ) -> None:
        """One processed batch; ``now`` (epoch seconds, default the wall clock) dates the event lag."""
        self.received.inc(int(result.valid.sum()) + len(result.dead_letters))
        self._record_sensors(result, integrity)
        for reason, n in result.rejected.items():
            self.quarantined.labels(reason).inc(n)
        for (detector, scope, sensor), n in result.drift.items():
            if n:
                self.drift.labels(detector, scope, sensor).inc(n)
        for sensor, (ks, psi) in result.fleet_stats.items():
            self.fleet_ks.labels(sensor).set(ks)
            self.fleet_psi.labels(sensor).set(psi)
        for (cohort, sensor), (ks, psi) in result.cohort_inputs.items():
            self.cohort_input_ks.labels(cohort, sensor).set(ks)
            self.cohort_input_psi.labels(cohort, sensor).set(psi)
        for (cohort, sensor), sig in result.bias.items():
            self._record_bias(cohort, sensor, sig)
        self.record_alerts(result.alerts)
        self._record_retrains(result)
        self._record_state_events(result)
        self.batch_seconds.observe(seconds)
        if result.event_ts.size:
            now_ms = (time.time() if now is None else now) * 1000.0
            self.event_lag.observe(np.maximum(now_ms - result.event_ts, 0.0) / 1000.0)

    def _record_state_events(self, result: BatchResult) -> None:
        for reason, n in result.evicted.items():
            self.evicted.labels(reason).inc(n)
        for counter, n in (
            (self.replayed, result.replayed),
            (self.strays, result.strays),
            (self.kafka_ts_ignored, result.kafka_ts_ignored),
        ):
            if n:
                counter.inc(n)

    def _record_sensors(self, result: BatchResult, integrity: NDArray[np.int64]) -> None:
        for i in range(min(len(result.valid), len(self.sensors))):  # a spare index counts nothing
            if result.valid[i]:
                self._readings[i].inc(int(result.valid[i]))
            if result.anomalies[i]:
                self._anomalies[i].inc(int(result.anomalies[i]))
            if result.river_anomalies[i]:
                self._river_anomalies[i].inc(int(result.river_anomalies[i]))
            for c in np.flatnonzero(integrity[i]).tolist():
                self._integrity[i][c].inc(int(integrity[i, c]))
        for sensor, scores in result.scores.items():
            self.scores.observe(scores, sensor)

    def _record_retrains(self, result: BatchResult) -> None:
        for e in result.audit:
            if e.kind in ("promoted", "rejected"):
                self.retrains.labels(e.sensor, e.kind).inc()
            if e.kind == "promoted":
                s = self.sensors.index(e.sensor)
                self._retrained[s] += e.version - e.previous  # the pair's serving version went up by this
                self._max_version[s] = max(self._max_version[s], e.version)
        for sensor, n in result.retrains_skipped.items():
            self.retrains.labels(sensor, "skipped").inc(n)

    def record_state(self, devices: int, bytes_: int, models: NDArray[np.int64] | None = None) -> None:
        """State size; ``models`` = models per sensor (pairs seen), which also dates the versions.

        Every model starts at version 1 and each retrain adds one, so the mean version of a
        sensor's models is ``1 + retrains / models``.
        """
        self.devices.set(devices)
        self.state_bytes.set(bytes_)
        if models is None:
            return
        for s, name in enumerate(self.sensors):
            n = int(models[s])
            self.models.labels(name).set(n)
            self.version_max.labels(name).set(int(self._max_version[s]) if n else 0)
            self.version_mean.labels(name).set(1 + self._retrained[s] / n if n else 0)

    def record_dead_letters_failed(self, n: int) -> None:
        if n:
            self.dead_letters_failed.inc(n)

    def record_device_cap(self, devices: int) -> None:
        self.device_cap.set(devices)

    def record_snapshot(self, bytes_: int | None) -> None:
        """A snapshot written (its size), or one that could not be (None; the writer logs why)."""
        if bytes_ is None:
            self.snapshot_write_errors.inc()
            return
        self.snapshots.inc()
        self.snapshot_bytes.inc(bytes_)

    def record_snapshot_error(self) -> None:
        self.snapshot_errors.inc()

    def record_stale_snapshot(self) -> None:
        self.stale_snapshots.inc()

    def record_restored(self, devices: int) -> None:
        self.restored.inc(devices)

    def record_restore(self, source: str, seconds: float) -> None:
        self.restores.labels(source).inc()
        self.restore_seconds.inc(seconds)

    def record_degraded(self, degraded: bool) -> None:
        self.degraded.set(int(degraded))

    def record_firing(self, firing: Mapping[str, int]) -> None:
        """Episodes firing now per rule (from :meth:`RuleEngine.firing_by_rule`)."""
        for rule, n in firing.items():
            self.firing.labels(rule, self.rules.get(rule, "")).set(n)

    def record_consumer(self, lags: Mapping[tuple[str, int], int], assigned: int) -> None:
        """Consumer lag of the partitions with a known lag; children of the others are removed."""
        self.partitions.set(assigned)
        children = {(topic, str(p)): lag for (topic, p), lag in lags.items()}
        for gone in self._lag_children - children.keys():
            self.consumer_lag.remove(*gone)
        for key, lag in children.items():
            self.consumer_lag.labels(*key).set(lag)
        self._lag_children = set(children)

    def record_span_published(self, records: int, size: int) -> None:
        """A batch's partial aggregates, produced to the fleet topic."""
        self.span_records.labels("published").inc(records)
        self.span_bytes.inc(size)

    def record_span_merged(
        self,
        merged: int,
        duplicates: int,
        malformed: int,
        acks: int,
        late: int,
        windows: int,
        partitions: int,
    ) -> None:
        """A turn of the merge: records merged, left out and acknowledgements read, late scores,
        windows closed."""
        self.span_records.labels("ack").inc(acks)
        self.span_records.labels("merged").inc(merged)
        self.span_records.labels("duplicate").inc(duplicates)
        self.span_records.labels("malformed").inc(malformed)
        self.span_late.inc(late)
        self.span_windows.inc(windows)
        if windows:
            self.span_partitions.set(partitions)

    def record_span_leader(self, leading: bool) -> None:
        self.span_leader.set(int(leading))

    def record_feedback(self, verdicts: Mapping[str, int], invalid: Mapping[str, int]) -> None:
        """Verdict records read (by verdict) and feedback records dead-lettered (by reason)."""
        for v, n in verdicts.items():
            self.verdicts.labels(v).inc(n)
        for reason, n in invalid.items():
            self.feedback_invalid.labels(reason).inc(n)

    def record_ledger(self, ledger: Ledger) -> None:
        """The ledger's precision per rule, sensor and cohort, and its verdicts per rule. A key
        gets a precision child once it has a TP or FP, and loses it when it has neither again."""
        by_rule = ledger.precision("rule")
        self._set_precision(self.precision, by_rule, self.rules.keys())
        self._set_precision(self.precision_by_sensor, ledger.precision("sensor"), self.sensors)
        by_cohort = ledger.precision("cohort")
        self._set_precision(self.precision_by_cohort, by_cohort, self.cohorts)
        self._set_children(self.delay_by_cohort, {r.key: r.delay_s for r in by_cohort}, self.cohorts)
        counted = {r.key: r for r in by_rule}
        for rule in self.rules:
            row = counted.get(rule)
            counts = (row.true_positive, row.false_positive, row.maintenance) if row else (0, 0, 0)
            for v, n in zip(feedback.VERDICTS, counts, strict=True):
                self.judged.labels(rule, v).set(n)
        self.feedback_alerts.set(ledger.alerts)
        self.feedback_waiting.set(ledger.waiting)

    def _set_precision(self, gauge: Gauge, rows: Sequence[PrecisionRow], known: Iterable[str]) -> None:
        self._set_children(gauge, {r.key: r.precision for r in rows}, known)

    def _set_children(self, gauge: Gauge, values: Mapping[str, float | None], known: Iterable[str]) -> None:
        """One child per known key with a value; children of keys that lost theirs are removed."""
        allowed = set(known)
        now = {key: v for key, v in values.items() if v is not None and key in allowed}
        for gone in self._precision_children.get(gauge, set()) - now.keys():
            gauge.remove(gone)
        for key, value in now.items():
            gauge.labels(key).set(value)
        self._precision_children[gauge] = set(now)
