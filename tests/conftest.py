"""Shared fixtures: a clean environment for every test and a real broker for integration tests."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from monitor.cli.broker import free_port
from monitor.ingest.kafka import ensure_topics
from monitor.schema import encode_reading
from monitor.settings import KafkaSettings
from tests import brokers
from tests.brokers import Broker
from tests.chaos_harness import committed

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's TELEMON_* variables."""
    for name in list(os.environ):
        if name.startswith("TELEMON_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _log_levels() -> Iterator[None]:
    """A test that runs ``main()`` with ``--log-level`` (or a ``log_level`` setting) leaves the
    levels of the root and ``monitor`` loggers as they were."""
    loggers = [logging.getLogger(), logging.getLogger("monitor")]
    levels = [lg.level for lg in loggers]
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


def pytest_report_header(config: pytest.Config) -> str:
    """Which broker the integration tests will run against (tests/brokers.py)."""
    return f"kafka: {brokers.planned()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which broker(s) the session started, with their addresses."""
    for line in brokers.started or ["none started (no test needed one)"]:
        terminalreporter.write_line(f"kafka: {line}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker on free loopback ports for the whole session: Apache Kafka (a single KRaft
    node), or the embedded broker with ``TEST_BROKER=embedded`` (tests/brokers.py)."""
    with brokers.session_broker(tmp_path_factory.mktemp("kafka")) as b:
        yield b


@pytest.fixture
def kafka_settings(broker: Broker) -> KafkaSettings:
    """Kafka settings on the session broker with topic and group names unique to this test."""
    return unique_kafka_settings(broker)


def telemon_process(kafka: KafkaSettings, *args: str, **env: str) -> subprocess.Popen[str]:
    """``telemon ARGS`` as a real process, its kafka settings (and ``env``) from the environment."""
    environ = dict(os.environ) | env
    for key, value in kafka.model_dump(exclude_none=True).items():
        if isinstance(value, str | int):
            environ[f"TELEMON_KAFKA__{key.upper()}"] = str(value)
    cmd = [sys.executable, "-m", "monitor.cli.main", *args]
    return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tool(name: str) -> str:
    """The path of a command the tests need; a missing one fails the test, never skips it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: `make test` installs it (scripts/test-services)")
    return path


def read_topic(kafka: KafkaSettings, topic: str, idle_s: float = 3.0) -> list[Message]:
    """Every message of ``topic`` (no consumer group: assigned partitions from the beginning)."""
    c = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": "reader", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(kafka.partitions)])
    out: list[Message] = []
    try:
        while batch := c.consume(1000, idle_s):
            out.extend(m for m in batch if m.error() is None)
    finally:
        c.close()
    return out


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """The samples of a live ``/metrics``, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


@dataclass
class Readings:
    """Writes valid temperature readings of ``dev-00`` .. ``dev-NN`` to the readings topic, device
    ``i`` on partition ``i % partitions`` (explicitly: no partitioner involved), one a second
    over the last hour, and keeps count of what it sent."""

    kafka: KafkaSettings
    devices: int
    partitions: int
    valid: int = 0  # valid readings sent
    ends: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        ensure_topics(self.kafka, [self.kafka.readings_topic])
        conf = {"bootstrap.servers": self.kafka.bootstrap_servers, "message.max.bytes": 20_000_000}
        self.producer = Producer(conf)
        self.seq = [0] * self.devices
        self.rng = np.random.default_rng(3)

    def send(self, value: bytes | None, key: bytes | None, partition: int, timestamp: int = 0) -> None:
        """Any message, at its partition's next offset (``timestamp``: its Kafka timestamp)."""
        extra = {"timestamp": timestamp} if timestamp else {}
        self.producer.produce(self.kafka.readings_topic, value, key, partition, **extra)
        self.ends[partition] = self.ends.get(partition, 0) + 1

    def reading(self, d: int) -> bytes:
        """Device ``d``'s next reading (not sent)."""
        self.seq[d] += 1
        ts = self.now_ms - 3_600_000 + self.seq[d] * 1000
        value = {"value": round(21.0 + 0.2 * float(self.rng.standard_normal()), 3)}
        return encode_reading(f"dev-{d:02d}", "temperature", ts, self.seq[d], value)

    def valid_reading(self, d: int, partition: int | None = None, timestamp: int = 0) -> None:
        where = d % self.partitions if partition is None else partition
        self.send(self.reading(d), f"dev-{d:02d}".encode(), where, timestamp)
        self.valid += 1

    def round(self, readings: int) -> None:
        """``readings`` readings of every device, interleaved."""
        for _ in range(readings):
            for d in range(self.devices):
                self.valid_reading(d)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@dataclass
class Finished:
    """A `telemon run` process that consumed a stream: what it exported, said and returned."""

    samples: Samples  # /metrics once every message was committed (empty if it died first)
    alive: bool  # still running then
    returncode: int  # after SIGTERM
    stderr: str


def wait_committed(
    kafka: KafkaSettings, ends: dict[int, int], proc: subprocess.Popen[str], timeout: float = 90
) -> None:
    """Until the group committed ``ends`` (partition -> next offset); fails if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while committed(kafka, list(ends)) != ends:
        assert proc.poll() is None, "the monitor exited"
        assert time.monotonic() < deadline, f"not committed within {timeout}s"
        time.sleep(0.3)


def run_monitor(
    kafka: KafkaSettings,
    ends: dict[int, int],
    *args: str,
    timeout: float = 90,
    then: Callable[[], None] | None = None,
    **env: str,
) -> Finished:
    """``telemon run ARGS`` until the group committed ``ends`` (partition -> next offset), then
    SIGTERM. ``then``, if given, runs once the group committed ``ends`` and may produce more
    (updating ``ends`` in place): the service then runs until it committed those too."""
    port = free_port()
    proc = telemon_process(kafka, "run", *args, TELEMON_METRICS__PORT=str(port), **env)
    try:
        deadline = time.monotonic() + timeout
        for step in (then, None):
            while committed(kafka, list(ends)) != ends and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
            if step is None:
                break
            step()
        alive = proc.poll() is None
        samples = scrape(port) if alive else {}
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=60)  # reaped, pipes closed, even when the run failed
    return Finished(samples, alive, proc.returncode, stderr)


def unique_kafka_settings(broker: Broker) -> KafkaSettings:
    n = next(_counter)
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"telemon-test-{n}",
        readings_topic=f"t{n}.readings",
        dead_letter_topic=f"t{n}.dlq",
        alerts_topic=f"t{n}.alerts",
        truth_topic=f"t{n}.truth",
        models_topic=f"t{n}.models",
        audit_topic=f"t{n}.audit",
        feedback_topic=f"t{n}.feedback",
        state_topic=f"t{n}.state",
        artifacts_topic=f"t{n}.artifacts",
        fleet_topic=f"t{n}.fleet",
        partitions=4,
        session_timeout_ms=3000,
    )


# --- Alertmanager -------------------------------------------------------------------------------

ALERTMANAGER_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


@dataclass
class AlertmanagerProcess:
    """A real Alertmanager on a free loopback port (no clustering, a throw-away storage path)."""

    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_alertmanager(
    workdir: Path, timeout_s: float = 20.0, config_text: str = ALERTMANAGER_CONFIG
) -> AlertmanagerProcess:
    """Start Alertmanager in ``workdir`` and wait for ``/-/ready``; fail (never skip) without it."""
    binary = tool("prometheus-alertmanager")
    config = workdir / "alertmanager.yml"
    config.write_text(config_text, encoding="utf-8")
    port, log = free_port(), workdir / "alertmanager.log"
    args = [f"--config.file={config}", f"--storage.path={workdir / 'data'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT)
    am = AlertmanagerProcess(f"http://127.0.0.1:{port}", log, proc)
    deadline = time.monotonic() + timeout_s
    while not am.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            am.stop()
            pytest.fail(f"Alertmanager did not become ready on port {port}:\n{log.read_text()}")
        time.sleep(0.1)
    return am


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerProcess]:
    """One Alertmanager for the session: tests tell their alerts apart by their own labels."""
    am = start_alertmanager(tmp_path_factory.mktemp("alertmanager"))
    try:
        yield am
    finally:
        am.stop()
