"""The composition root: settings -> pipeline, metrics and the Kafka service."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from monitor import kafka
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.rules import load_rules
from monitor.service import Service
from monitor.settings import Settings

log = logging.getLogger(__name__)


def build_service(settings: Settings, registry: CollectorRegistry | None = None) -> Service:
    """Everything the monitor needs, wired once; topics are created if missing."""
    logging.getLogger("monitor").setLevel(settings.log_level)
    rules = load_rules(settings.rules_file)
    k = settings.kafka
    kafka.ensure_topics(k, [k.readings_topic, k.dead_letter_topic, k.alerts_topic, k.models_topic])
    metrics = Metrics(registry or CollectorRegistry())
    if settings.metrics.enabled:
        metrics.serve(settings.metrics.host, settings.metrics.port)
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
    return Service(settings, Pipeline(settings, rules), metrics)
