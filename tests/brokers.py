"""The broker of the integration tests and the line that names it in the test report.

By default the session's broker is Apache Kafka (:class:`tests.apache_kafka.ApacheKafka`), the
broker deployments run. With ``TEST_BROKER=embedded`` it is the embedded broker (Tansu, in
memory: :class:`monitor.cli.broker.EmbeddedBroker`), which ``make test-quick`` runs the
integration tests marked ``quick`` against. Versions are read from what runs (Kafka's jar names,
``tansu --version``), never written down here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monitor.cli.broker import EmbeddedBroker, tansu_binary
from tests.apache_kafka import ApacheKafka, kafka_version

BROKER_ENV = "TEST_BROKER"
KINDS = ("kafka", "embedded")

Broker = ApacheKafka | EmbeddedBroker

started: list[str] = []  # a line per broker the session started, for the terminal summary


def broker_kind() -> str:
    kind = os.environ.get(BROKER_ENV, "kafka")
    if kind not in KINDS:
        raise ValueError(f"{BROKER_ENV}={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def tansu_version() -> str:
    """The embedded broker's version, as ``tansu --version`` prints it (``tansu 0.6.0``)."""
    done = subprocess.run([str(tansu_binary()), "--version"], capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def describe(broker: Broker) -> str:
    """Which broker, which version, where: one line for the test report."""
    if isinstance(broker, ApacheKafka):
        return broker.describe()
    return f"Tansu {tansu_version()} (the embedded broker, in memory, {broker.bootstrap_servers})"


def planned() -> str:
    """The broker the session will start, before it starts (no port yet)."""
    if broker_kind() == "embedded":
        return f"Tansu {tansu_version()} (the embedded broker, in memory; {BROKER_ENV}=embedded)"
    libs = os.environ.get("TEST_KAFKA_LIBS")
    if not libs or not (Path(libs) / ".complete").is_file():
        return "Apache Kafka, not prepared (TEST_KAFKA_LIBS unset: run through scripts/test-services)"
    return f"Apache Kafka {kafka_version(Path(libs))} (KRaft, one node, on free loopback ports)"


@contextmanager
def session_broker(workdir: Path) -> Iterator[Broker]:
    """The session's broker, running until the context exits; its line goes to :data:`started`."""
    broker: Broker
    if broker_kind() == "embedded":
        broker = EmbeddedBroker(log_file=workdir / "broker.log")
    else:
        broker = ApacheKafka(workdir)
    with broker:
        started.append(describe(broker))
        yield broker
