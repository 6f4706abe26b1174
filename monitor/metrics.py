"""Every Prometheus metric telemon exports, declared here and only here.

The registry is injected (tests build a fresh ``CollectorRegistry``). Domain code never touches
``prometheus_client``: the service calls :meth:`Metrics.record_batch` once per batch. Label values
come from small fixed sets (sensor kinds, reasons, checks, detectors, rule names); never device ids.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

import monitor
from monitor.pipeline import BatchResult
from monitor.schema import SENSOR_NAMES
from monitor.state import CHECKS

SCORE_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)


class ScoreHistogram(Collector):
    """Anomaly-score histogram per sensor, updated with one ``numpy`` call per batch."""

    def __init__(self, buckets: tuple[float, ...] = SCORE_BUCKETS) -> None:
        self.edges = np.asarray(buckets)
        self.counts = np.zeros((len(SENSOR_NAMES), len(buckets)), np.int64)  # cumulative
        self.sums = np.zeros(len(SENSOR_NAMES))

    def observe(self, sensor: int, scores: NDArray[np.float64]) -> None:
        self.counts[sensor] += (scores[None, :] <= self.edges[:, None]).sum(axis=1)
        self.sums[sensor] += float(scores.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(
            "telemon_anomaly_score", "Anomaly score of scored readings (0..1).", labels=["sensor"]
        )
        for i, name in enumerate(SENSOR_NAMES):
            buckets = [(f"{e:g}", float(c)) for e, c in zip(self.edges, self.counts[i], strict=True)]
            buckets.append(("+Inf", float(self.counts[i, -1])))
            fam.add_metric([name], buckets, float(self.sums[i]))
        yield fam


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.readings = Counter("telemon_readings", "Valid readings received.", ["sensor"], registry=r)
        self.quarantined = Counter(
            "telemon_messages_quarantined", "Messages sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.anomalies = Counter("telemon_anomalies", "Readings scored as anomalous.", ["sensor"], registry=r)
        self.integrity = Counter(
            "telemon_integrity_events", "Data-integrity check events.", ["sensor", "check"], registry=r
        )
        self.drift = Counter(
            "telemon_drift_detections",
            "Drift detections by detector (ks, psi, adwin) and scope (device, fleet).",
            ["detector", "scope", "sensor"],
            registry=r,
        )
        self.fleet_ks = Gauge("telemon_fleet_ks_statistic", "Fleet KS statistic.", ["sensor"], registry=r)
        self.fleet_psi = Gauge("telemon_fleet_psi", "Fleet PSI.", ["sensor"], registry=r)
        self.alerts = Counter(
            "telemon_alerts", "Alert records published.", ["rule", "severity", "status"], registry=r
        )
        self.retrains = Counter(
            "telemon_retrains", "Models retrained and swapped in.", ["sensor"], registry=r
        )
        self.batch_seconds = Histogram(
            "telemon_batch_duration_seconds",
            "Time to process and deliver one batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.devices = Gauge("telemon_devices", "Devices with state in this process.", registry=r)
        self.state_bytes = Gauge("telemon_state_bytes", "Bytes of per-device state arrays.", registry=r)
        self.build = Gauge("telemon_build_info", "Build information.", ["version"], registry=r)
        self.build.labels(monitor.__version__).set(1)
        self.scores = ScoreHistogram()
        r.register(self.scores)
        # Children for the fixed label sets, created once (never per reading).
        self._readings = [self.readings.labels(s) for s in SENSOR_NAMES]
        self._anomalies = [self.anomalies.labels(s) for s in SENSOR_NAMES]
        self._integrity = [[self.integrity.labels(s, c) for c in CHECKS] for s in SENSOR_NAMES]

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def record_batch(self, result: BatchResult, integrity: NDArray[np.int64], seconds: float) -> None:
        self._record_sensors(result, integrity)
        for reason, n in result.rejected.items():
            self.quarantined.labels(reason).inc(n)
        for (detector, scope, sensor), n in result.drift.items():
            if n:
                self.drift.labels(detector, scope, sensor).inc(n)
        for sensor, (ks, psi) in result.fleet_stats.items():
            self.fleet_ks.labels(sensor).set(ks)
            self.fleet_psi.labels(sensor).set(psi)
        for a in result.alerts:
            self.alerts.labels(a.rule, a.severity, a.status).inc()
        for v in result.versions:
            self.retrains.labels(v.sensor).inc()
        self.batch_seconds.observe(seconds)

    def _record_sensors(self, result: BatchResult, integrity: NDArray[np.int64]) -> None:
        for i in range(len(SENSOR_NAMES)):
            if result.valid[i]:
                self._readings[i].inc(int(result.valid[i]))
            if result.anomalies[i]:
                self._anomalies[i].inc(int(result.anomalies[i]))
            for c in np.flatnonzero(integrity[i]).tolist():
                self._integrity[i][c].inc(int(integrity[i, c]))
        for sensor, scores in result.scores.items():
            self.scores.observe(sensor, scores)

    def record_state(self, devices: int, bytes_: int) -> None:
        self.devices.set(devices)
        self.state_bytes.set(bytes_)
