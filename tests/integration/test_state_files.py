"""`telemon run` restarted over a state folder an attacker (or a careless operator) can write to,
with the folder as the only state (``state.changelog: false``; tests/integration/test_changelog.py
has the changelog's cases):
the generated signing key survives restarts, a snapshot copied over another partition's is refused,
an older one copied back is reported and its serving versions follow the registry's audit trail,
a FIFO at a snapshot path blocks nothing, and SIGTERM always ends the process in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.cli.broker import EmbeddedBroker, free_port
from monitor.detect.model import AdaptiveGaussian
from monitor.govern.registry import ModelVersion, TrainingData, open_registry
from monitor.settings import KafkaSettings, load_settings
from monitor.state.snapshot import SnapshotStore
from tests.apache_kafka import ApacheKafka
from tests.conftest import Finished, Readings, run_monitor, telemon_process, total, unique_kafka_settings

pytestmark = pytest.mark.integration

DEVICES, PARTITIONS = 6, 4  # dev-01 and dev-05 on partition 1, dev-02 alone on partition 2


@dataclass
class Restarts:
    kafka: KafkaSettings
    state: Path
    first: Finished
    second: Finished  # after `telemon registry promote dev-01 temperature 2` while stopped
    third: Finished  # after partition 2's snapshot copied over 0's, 1's older one back, a FIFO at 3's
    third_readings: int

    def snapshot_path(self, partition: int) -> Path:
        return (
            self.state / "snapshots" / self.kafka.group_id / self.kafka.readings_topic / f"{partition}.snap"
        )


def _register_v2(state: Path) -> None:
    """A second version of dev-01/temperature in the registry, then promoted from the command line."""
    registry = open_registry(load_settings(state_dir=str(state)), create_key=False)
    model = AdaptiveGaussian.fit([(21.0,), (21.2,), (20.9,)], resolution=0.01)
    data = TrainingData("t.readings", 1, 0, 2, 3, 1, 2)
    version = ModelVersion(
        "dev-01", "temperature", 2, 1, data, {}, model.params(), "", "", "0+test", "test", 2
    )
    registry.register(version, model)
    promote = [sys.executable, "-m", "monitor.cli.main", "registry", "promote", "dev-01", "temperature", "2"]
    env = dict(os.environ, TELEMON_STATE_DIR=str(state))
    done = subprocess.run(
        [*promote, "--reason", "validated offline"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def restarts(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Restarts:
    kafka = unique_kafka_settings(broker)
    state = tmp_path_factory.mktemp("state")
    env = {"TELEMON_STATE_DIR": str(state), "TELEMON_STATE__CHANGELOG": "false"}  # the files alone
    stream = Readings(kafka, DEVICES, PARTITIONS)
    stream.round(40)
    stream.flush()
    first = run_monitor(kafka, stream.ends, **env)
    r = Restarts(kafka, state, first, first, first, 0)
    older = r.snapshot_path(1).read_bytes()
    _register_v2(state)
    stream.round(40)
    stream.flush()
    r.second = run_monitor(kafka, stream.ends, **env)
    r.snapshot_path(0).write_bytes(r.snapshot_path(2).read_bytes())
    r.snapshot_path(1).write_bytes(older)
    r.snapshot_path(3).unlink()
    os.mkfifo(r.snapshot_path(3))
    before = stream.valid
    stream.round(20)
    stream.flush()
    r.third = run_monitor(kafka, stream.ends, **env)
    r.third_readings = stream.valid - before
    return r


def test_the_generated_key_is_kept_in_the_state_folder_and_restores_state(restarts: Restarts) -> None:
    key = restarts.state / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert f"generated {key}" in restarts.first.stderr
    assert "generated" not in restarts.second.stderr
    assert f"{DEVICES} device state(s) restored" in restarts.second.stderr
    assert total(restarts.second.samples, "telemon_snapshot_errors_total") == 0


def test_a_promotion_made_while_stopped_serves_after_the_restart(restarts: Restarts) -> None:
    assert "dev-01/temperature now serves v2 (as the audit trail says)" in restarts.second.stderr


def test_every_run_stays_up_and_exits_cleanly(restarts: Restarts) -> None:
    for run in (restarts.first, restarts.second, restarts.third):
        assert run.alive and run.returncode == 0, run.stderr[-3000:]


def test_a_snapshot_copied_over_another_partition_and_a_fifo_are_refused(restarts: Restarts) -> None:
    third = restarts.third
    assert total(third.samples, "telemon_snapshot_errors_total") == 2
    assert "partition 2, not of" in third.stderr and "(copied over it?)" in third.stderr
    assert "not a regular file (a FIFO)" in third.stderr
    # Nothing was skipped: every new reading of every partition was read and applied once.
    assert total(third.samples, "telemon_readings_total") == restarts.third_readings
    assert total(third.samples, "telemon_readings_replayed_total") == 0


def test_an_older_snapshot_is_reported_and_serves_the_audit_trails_versions(restarts: Restarts) -> None:
    third = restarts.third
    assert total(third.samples, "telemon_snapshots_stale_total") == 1
    assert "the snapshot of " in third.stderr and "/1 is older than the last one written" in third.stderr
    assert "dev-01/temperature now serves v2 (as the audit trail says)" in third.stderr
    key = (restarts.state / "signing.key").read_bytes().rstrip()
    store = SnapshotStore(restarts.snapshot_path(1).parents[1], key, restarts.kafka.group_id)
    snap = store.load(restarts.kafka.readings_topic, 1)
    assert snap is not None
    devices = snap.state.devices
    assert devices.versions == {(devices.device_ids.index("dev-01"), 5): 2}  # temperature: sensor 5


def test_production_settings_without_a_key_refuse_to_start(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    proc = telemon_process(
        kafka_settings,
        "run",
        TELEMON_STATE_DIR=str(tmp_path),
        TELEMON_REGISTRY__GENERATE_KEY="false",
        TELEMON_METRICS__PORT=str(free_port()),
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "no signing key: set registry.signing_key (TELEMON_REGISTRY__SIGNING_KEY)" in stderr
    assert "Traceback" not in stderr


def test_sigterm_ends_the_process_in_time_even_with_its_broker_frozen(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        kafka = unique_kafka_settings(broker)
        stream = Readings(kafka, DEVICES, PARTITIONS)
        stream.round(5)
        stream.flush()
        proc = telemon_process(
            kafka,
            "run",
            TELEMON_STATE_DIR=str(tmp_path / "state"),
            TELEMON_METRICS__PORT=str(free_port()),
            # Below the client's 3 s request timeout (the tests' session timeout): closing the
            # consumer still waits on the frozen broker when the bound is up (with 4 s, the client
            # once gave up at 3 s and the process stopped cleanly first).
            TELEMON_CONSUME__SHUTDOWN_TIMEOUT_S="1.5",
        )
        pid = broker.pid
        try:
            while not (tmp_path / "state" / "snapshots").is_dir():
                assert proc.poll() is None
                time.sleep(0.2)
            time.sleep(1)
            os.kill(pid, signal.SIGSTOP)
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
            took = time.monotonic() - stopping
        finally:
            os.kill(pid, signal.SIGCONT)
            proc.kill()
    # Closing the consumer waits on the frozen broker: the watchdog ends the process instead.
    assert proc.returncode == 1, stderr
    assert "still running 1.5s after SIGTERM: exiting now" in stderr
    assert took < 15, f"{took:.1f}s"  # the 1.5 s bound plus slack, against librdkafka's 60 s waits
