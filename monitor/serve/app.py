"""The composition root: settings -> pipeline, metrics, the HTTP endpoint and the Kafka service."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from monitor.errors import ConfigError
from monitor.govern import training
from monitor.govern.registry import open_registry, signing_key
from monitor.govern.replication import topic_configs
from monitor.govern.rules import load_rules
from monitor.ingest import kafka
from monitor.ingest.history import HistoryReader
from monitor.pipeline import Pipeline
from monitor.serve import changelog
from monitor.serve.feedback import FeedbackWorker
from monitor.serve.fleetspan import SpanWorker
from monitor.serve.health import Health, HttpEndpoint, make_app, server_tls_context
from monitor.serve.metrics import Metrics
from monitor.serve.service import Service
from monitor.settings import Settings

log = logging.getLogger(__name__)


def build_service(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    start: Mapping[tuple[str, int], int] | None = None,
) -> Service:
    """Everything the monitor needs, wired once; topics are created if missing. ``start``: where
    partitions the group never committed start (a shadow run's; default ``kafka.auto_offset_reset``).

    With ``metrics.enabled`` the endpoint (``/metrics``, ``/healthz``, ``/readyz``) starts serving
    at once: liveness holds from the start, readiness once the consumer has joined its group.
    """
    logging.getLogger("monitor").setLevel(settings.log_level)
    # Every file first (rules, cohorts, the signing key): a mistake there is reported before Kafka.
    catalog = settings.channels.catalog()
    rules = load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
    for note in rules.unknown_sensors(catalog.names):
        log.warning(
            "%s: %s (it applies once a channel of that name is registered)", settings.rules_file, note
        )
    history = HistoryReader(settings.kafka, settings.consume)  # a retrain's rows, re-read from the topic
    source = training.TopicSource(history, settings.retrain, settings.consume, catalog)
    pipeline = Pipeline(settings, rules, trainer=training.TrainingWorker(settings.retrain, source))
    signing_key(settings)
    k = settings.kafka
    outputs = [k.dead_letter_topic, k.alerts_topic, k.models_topic, k.audit_topic]
    if settings.registry.shared:
        outputs.append(k.artifacts_topic)
    configs = topic_configs(k) if settings.registry.shared else None
    kafka.ensure_topics(k, [k.readings_topic, k.feedback_topic, *outputs], configs=configs)
    if settings.state.changelog:
        changelog.ensure_topic(k)
    if settings.fleet.span:  # one partition: every replica merges the partials in one order
        kafka.ensure_topics(k, [k.fleet_topic], partitions=1)
    registry = CollectorRegistry() if registry is None else registry
    cohorts = [
        f"{label}={v}" for label in pipeline.cohort_labels for v in sorted(pipeline.labels.values(label))
    ]
    metrics = Metrics(registry, {r.name: r.severity for r in rules.rules}, pipeline.catalog.names, cohorts)
    health = Health(settings.metrics.liveness_timeout_s)
    endpoint = None
    if settings.metrics.enabled:
        m = settings.metrics
        tls = None if m.tls_files is None else server_tls_context(*m.tls_files)
        try:
            endpoint = HttpEndpoint(m.host, m.port, make_app(registry, health), tls)
        except OSError as exc:
            raise ConfigError(
                f"metrics: cannot listen on {m.host}:{m.port} ({exc.strerror or exc}): another process "
                "(another telemon?) has the port; set metrics.port (TELEMON_METRICS__PORT; 0: any free "
                "port) or metrics.enabled: false"
            ) from None
        url = f"{endpoint.scheme}://{m.host}:{endpoint.port}"
        log.info("metrics on %s/metrics (probes: /healthz, /readyz)", url)
    worker = FeedbackWorker(settings, metrics, open_registry(settings)) if settings.feedback.enabled else None
    span = SpanWorker(settings, metrics, rules) if settings.fleet.span else None
    return Service(settings, pipeline, metrics, health, endpoint, worker, span, start)
