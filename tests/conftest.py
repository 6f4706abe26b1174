"""Shared fixtures: a clean environment for every test and a real broker for integration tests."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.broker import EmbeddedBroker
from monitor.settings import KafkaSettings

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's TELEMON_* variables."""
    for name in list(os.environ):
        if name.startswith("TELEMON_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Kafka-protocol broker on a free loopback port for the whole session."""
    log_file = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as b:
        yield b


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    """Kafka settings on the session broker with topic and group names unique to this test."""
    return unique_kafka_settings(broker)


def telemon_process(kafka: KafkaSettings, *args: str, **env: str) -> subprocess.Popen[str]:
    """``telemon ARGS`` as a real process, its kafka settings (and ``env``) from the environment."""
    environ = dict(os.environ) | env
    for key, value in kafka.model_dump(exclude_none=True).items():
        if isinstance(value, str | int):
            environ[f"TELEMON_KAFKA__{key.upper()}"] = str(value)
    cmd = [sys.executable, "-m", "monitor.cli", *args]
    return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def unique_kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    n = next(_counter)
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"telemon-test-{n}",
        readings_topic=f"t{n}.readings",
        dead_letter_topic=f"t{n}.dlq",
        alerts_topic=f"t{n}.alerts",
        truth_topic=f"t{n}.truth",
        models_topic=f"t{n}.models",
        partitions=4,
        session_timeout_ms=3000,
    )
