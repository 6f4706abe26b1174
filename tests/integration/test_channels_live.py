"""A declared channel, and one registered on its first reading, through `telemon run` over a real
broker: scored, alerted, counted, and their bad readings (and an undeclared sensor's)
dead-lettered with their reasons."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from monitor.ingest.kafka import ensure_topics
from monitor.schema import encode_reading
from monitor.settings import KafkaSettings, load_settings
from tests.conftest import read_topic, run_monitor, total

pytestmark = pytest.mark.integration

CURRENT = {"name": "current", "unit": "A", "low": 0, "high": 50, "resolution": 0.00001}
RULES = """
rules:
  - name: current_spikes
    scope: device
    sensors: [current]
    when: {signal: anomaly_rate, op: ">", value: 0.05}
    severity: critical
    actions: [alert]
"""


def test_a_declared_channel_is_monitored_end_to_end(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    catalog = load_settings(None, channels={"declare": [CURRENT]}).channels.catalog()
    ensure_topics(kafka_settings, [kafka_settings.readings_topic])
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    rng, start = np.random.default_rng(5), int(time.time() * 1000) - 3_600_000
    ends: dict[int, int] = {}

    def send(value: bytes, partition: int) -> None:
        producer.produce(kafka_settings.readings_topic, value, b"pump-1", partition)
        ends[partition] = ends.get(partition, 0) + 1

    for i in range(400):
        amps = 2.0 + float(rng.normal(0, 3e-4)) + (0.01 if 300 <= i < 305 else 0.0)  # 33 sigma
        send(
            encode_reading("pump-1", "current", start + i * 1000, i + 1, {"value": amps}, catalog=catalog), 0
        )
    send(encode_reading("pump-1", "current", start + 401_000, 401, {"value": 60.0}, catalog=catalog), 0)
    send(encode_reading("pump-1", "voltage", start + 402_000, 402, {"value": 1.0}, "V", catalog), 0)
    assert producer.flush(30) == 0

    done = run_monitor(
        kafka_settings,
        ends,
        TELEMON_CHANNELS__DECLARE=json.dumps([CURRENT]),
        TELEMON_RULES_FILE=str(rules),
        TELEMON_STATE_DIR=str(tmp_path / "state"),
    )
    assert done.alive and done.returncode == 0, done.stderr
    assert total(done.samples, "telemon_readings_total", sensor="current") == 400
    assert total(done.samples, "telemon_anomalies_total", sensor="current") >= 5
    assert total(done.samples, "telemon_messages_quarantined_total", reason="out_of_range") == 1
    assert total(done.samples, "telemon_messages_quarantined_total", reason="unknown_sensor") == 1

    alerts = [json.loads(m.value()) for m in read_topic(kafka_settings, kafka_settings.alerts_topic)]
    firing = [a for a in alerts if a["status"] == "firing"]
    assert [(a["rule"], a["device_id"], a["sensor"]) for a in firing] == [
        ("current_spikes", "pump-1", "current")
    ]
    reasons = sorted(
        dict(m.headers() or [])["telemon.reason"].decode()
        for m in read_topic(kafka_settings, kafka_settings.dead_letter_topic)
    )
    assert reasons == ["out_of_range", "unknown_sensor"]


AUTO_RULES = """
rules:
  - name: co2_spikes
    scope: device
    sensors: [co2]
    when: {signal: anomaly_rate, op: ">", value: 0.05}
    severity: critical
    actions: [alert]
"""


def test_a_channel_registered_on_its_first_reading_is_monitored_end_to_end(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """With room for one channel, an undeclared co2 is registered on its first reading and then
    scored, alerted and counted like a declared one; a co2 reading in another unit is a
    channel_mismatch, and a second unknown sensor finds the room used up."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(AUTO_RULES)
    ensure_topics(kafka_settings, [kafka_settings.readings_topic])
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    rng, start = np.random.default_rng(6), int(time.time() * 1000) - 3_600_000
    ends: dict[int, int] = {}

    def send(sensor: str, i: int, values: dict[str, float], unit: str) -> None:
        value = encode_reading("room-1", sensor, start + i * 1000, i, values, unit)
        producer.produce(kafka_settings.readings_topic, value, b"room-1", 0)
        ends[0] = ends.get(0, 0) + 1

    for i in range(1, 401):
        ppm = 412.0 + float(rng.normal(0, 1.0)) + (40.0 if 300 <= i < 305 else 0.0)  # 40 sigma
        send("co2", i, {"value": ppm}, "ppm")
    send("co2", 401, {"value": 0.04}, "%")
    send("voltage", 402, {"value": 3.3}, "V")
    assert producer.flush(30) == 0

    done = run_monitor(
        kafka_settings,
        ends,
        TELEMON_CHANNELS__AUTO_REGISTER="1",
        TELEMON_RULES_FILE=str(rules),
        TELEMON_STATE_DIR=str(tmp_path / "state"),
    )
    assert done.alive and done.returncode == 0, done.stderr
    assert "channel co2 registered automatically: axes value; unit 'ppm'" in done.stderr
    assert total(done.samples, "telemon_channels_registered_total") == 1
    assert total(done.samples, "telemon_channels_auto_free") == 0
    assert total(done.samples, "telemon_readings_total", sensor="co2") == 400
    assert total(done.samples, "telemon_anomalies_total", sensor="co2") >= 5
    alerts = [json.loads(m.value()) for m in read_topic(kafka_settings, kafka_settings.alerts_topic)]
    firing = [(a["rule"], a["device_id"], a["sensor"]) for a in alerts if a["status"] == "firing"]
    assert firing == [("co2_spikes", "room-1", "co2")]
    reasons = sorted(
        dict(m.headers() or [])["telemon.reason"].decode()
        for m in read_topic(kafka_settings, kafka_settings.dead_letter_topic)
    )
    assert reasons == ["channel_mismatch", "unknown_sensor"]
