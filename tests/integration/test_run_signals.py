"""`telemon run` as a real process: it commits what it processed and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from monitor.cli.broker import free_port
from monitor.settings import KafkaSettings
from producers.scenario import load_scenario
from producers.simulate import simulate
from tests.chaos_harness import committed
from tests.conftest import telemon_process

pytestmark = [pytest.mark.integration, pytest.mark.quick]  # quick: passes on the embedded broker too


def test_run_commits_and_exits_zero_on_sigterm(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    scenario = load_scenario(Path("configs/scenarios/demo.yaml"), devices=3, duration_s=60, events=[])
    report = simulate(kafka_settings, scenario)
    proc = telemon_process(
        kafka_settings,
        *("run", "--config", "configs/monitor.yaml"),
        TELEMON_METRICS__PORT=str(free_port()),
        TELEMON_STATE_DIR=str(tmp_path),
    )
    expected = {p: o + 1 for p, o in report.last_offsets.items()}
    try:
        deadline = time.monotonic() + 60
        while committed(kafka_settings, list(expected)) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(kafka_settings, list(expected)) == expected
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr


def test_a_metrics_port_in_use_is_a_clean_start_up_error(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = telemon_process(
            kafka_settings, "run", TELEMON_METRICS__PORT=str(port), TELEMON_STATE_DIR=str(tmp_path)
        )
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f"metrics: cannot listen on 127.0.0.1:{port} (Address already in use)" in stderr
    assert "Traceback" not in stderr
