"""`processing.guarantee: exactly_once` on Apache Kafka: a batch's alerts are visible to
read_committed consumers once, with its offsets; a second process with the same transactional id
fences the first, which stops with a clear error rather than producing beside it. (kill -9 under
exactly_once: tests/integration/test_chaos.py.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from monitor.cli.broker import free_port
from monitor.settings import KafkaSettings
from tests.conftest import Readings, run_monitor, telemon_process, total, wait_committed

pytestmark = pytest.mark.integration

EOS = {"TELEMON_PROCESSING__GUARANTEE": "exactly_once", "TELEMON_REGISTRY__SIGNING_KEY": "k" * 32}


def test_a_run_commits_its_offsets_in_its_transactions(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    stream = Readings(kafka_settings, devices=4, partitions=4)
    stream.round(30)
    stream.flush()
    done = run_monitor(kafka_settings, stream.ends, TELEMON_STATE_DIR=str(tmp_path), **EOS)
    assert done.alive and done.returncode == 0, done.stderr[-3000:]
    assert "exactly_once: transactional id telemon-" in done.stderr
    assert total(done.samples, "telemon_readings_total") == stream.valid


def test_a_second_process_with_the_same_transactional_id_fences_the_first(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    env = EOS | {
        "TELEMON_PROCESSING__TRANSACTIONAL_ID": "replica-a",
        "TELEMON_STATE_DIR": str(tmp_path / "a"),
    }
    stream = Readings(kafka_settings, devices=4, partitions=4)
    stream.round(5)
    stream.flush()
    first = telemon_process(kafka_settings, "run", TELEMON_METRICS__PORT=str(free_port()), **env)
    wait_committed(kafka_settings, stream.ends, first)
    env["TELEMON_STATE_DIR"] = str(tmp_path / "b")
    second = telemon_process(kafka_settings, "run", TELEMON_METRICS__PORT=str(free_port()), **env)
    try:
        deadline = time.monotonic() + 60
        while first.poll() is None and time.monotonic() < deadline:
            stream.round(1)  # the first one's next transaction finds it fenced
            stream.flush()
            time.sleep(0.5)
        assert first.poll() == 1, "the fenced process kept running"
        _, stderr = first.communicate(timeout=30)
        assert "another process uses the same processing.transactional_id" in stderr, stderr[-2000:]
        assert "Traceback" not in stderr
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
