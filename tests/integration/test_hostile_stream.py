"""`telemon run` against a readings topic an attacker can write to: oversized records, forged Kafka
timestamps, a device's reading on the wrong partition, a keyless message and escaped duplicate keys,
all between valid readings. The service stays up, applies every valid reading once, keeps every
device, and dead-letters, counts and logs each bad record.
"""

from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from monitor.cli.broker import free_port
from monitor.evaluation.replay import ReplayMessage
from monitor.ingest.kafka import DeliveryTracker, ensure_topics, flush
from monitor.records import DeadLetter
from monitor.schema import Reason, Rejection
from monitor.serve import deadletters
from monitor.serve.deadletters import DeadLetterProducer
from monitor.settings import KafkaSettings
from tests.apache_kafka import ApacheKafka
from tests.chaos_harness import committed
from tests.conftest import (
    Finished,
    Readings,
    read_topic,
    run_monitor,
    scrape,
    telemon_process,
    total,
    unique_kafka_settings,
    wait_committed,
)

pytestmark = pytest.mark.integration

DEVICES = 20
PARTITIONS = 4  # device i lives on partition i % 4
DAY_MS = 86_400_000


def craft(s: Readings) -> dict[str, bytes]:
    """The hostile part of the stream, sent once the service committed a first round (so that
    every device's state has its home partition before a reading goes astray, whatever order
    the partitions are fetched in); the oversized values it holds by device."""
    poison: dict[str, bytes] = {}
    for _ in range(300):  # dev-01 pushes partition 1's offsets far past partition 0's
        s.valid_reading(1)
    for d, size in ((0, 1 << 20), (1, 10 << 20)):  # too large for the dead-letter topic as they are
        poison[f"dev-{d:02d}"] = value = b'{"device_id": "' + b"x" * size + b'"}'
        s.send(value, f"dev-{d:02d}".encode(), d % PARTITIONS)
    s.valid_reading(2, timestamp=s.now_ms + 3 * DAY_MS)  # beyond consume.max_future_ms: ignored
    s.valid_reading(3, timestamp=s.now_ms + DAY_MS // 2)  # within it, and far past evict_idle_s
    s.valid_reading(4, partition=1)  # dev-04 lives on partition 0: one reading astray, at offset ~455
    s.send(s.reading(6), None, 6 % PARTITIONS)  # no key
    s.send(s.reading(7).replace(b'{"value":', b'{"v\\u0061lue":1.0,"value":'), b"dev-07", 3)
    s.send(s.reading(8).replace(b'{"device_id":', b'{"dev\\u0069ce_id":"dev-09","device_id":'), b"dev-08", 0)
    s.round(30)  # dev-04's readings on partition 0 now have offsets below the stray's
    s.flush()
    return poison


@dataclass
class Outcome:
    stream: Readings
    poison: dict[str, bytes]
    run: Finished
    dead_letters: list[Message]


@pytest.fixture(scope="module")
def outcome(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    kafka = unique_kafka_settings(broker)
    stream = Readings(kafka, DEVICES, PARTITIONS)
    poison: dict[str, bytes] = {}
    stream.round(30)
    stream.flush()
    state = str(tmp_path_factory.mktemp("state"))
    run = run_monitor(
        kafka,
        stream.ends,
        then=lambda: poison.update(craft(stream)),
        TELEMON_STATE_DIR=state,
        TELEMON_STATE__EVICT_IDLE_S="3600",
    )
    return Outcome(stream, poison, run, read_topic(kafka, kafka.dead_letter_topic))


def test_the_service_stays_up_and_commits_everything(outcome: Outcome) -> None:
    assert outcome.run.alive, outcome.run.stderr[-3000:]
    assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
    assert committed(outcome.stream.kafka, list(outcome.stream.ends)) == outcome.stream.ends


def test_every_valid_reading_is_applied_once(outcome: Outcome) -> None:
    s = outcome.run.samples
    assert total(s, "telemon_readings_total") == outcome.stream.valid
    assert total(s, "telemon_readings_replayed_total") == 0
    assert total(s, "telemon_integrity_events_total", check="duplicate") == 0


def test_forged_kafka_timestamps_evict_nothing(outcome: Outcome) -> None:
    s = outcome.run.samples
    assert total(s, "telemon_devices") == DEVICES
    assert total(s, "telemon_devices_evicted_total") == 0
    assert total(s, "telemon_kafka_timestamps_ignored_total") == 1  # the one three days ahead


def test_a_reading_on_the_wrong_partition_is_applied_counted_and_logged_once(outcome: Outcome) -> None:
    assert total(outcome.run.samples, "telemon_readings_astray_total") == 1
    assert outcome.run.stderr.count("device dev-04 read from partition 1, its state is on partition 0") == 1


def test_bad_records_are_dead_lettered_with_their_reasons(outcome: Outcome) -> None:
    s = outcome.run.samples
    assert total(s, "telemon_messages_quarantined_total", reason="oversize") == 2
    assert total(s, "telemon_messages_quarantined_total", reason="missing_key") == 1
    assert total(s, "telemon_messages_quarantined_total", reason="duplicate_key") == 2
    reasons = sorted(dict(m.headers() or [])["telemon.reason"].decode() for m in outcome.dead_letters)
    assert reasons == ["duplicate_key", "duplicate_key", "missing_key", "too_large", "too_large"]


def test_records_too_large_to_dead_letter_are_truncated_with_size_and_digest(outcome: Outcome) -> None:
    large = [m for m in outcome.dead_letters if dict(m.headers() or [])["telemon.reason"] == b"too_large"]
    assert len(large) == 2
    for m in large:
        h = dict(m.headers() or [])
        original = outcome.poison[(m.key() or b"").decode()]
        assert h["telemon.original_reason"] == b"oversize"
        assert int(h["telemon.original_bytes"]) == len(original)
        assert h["telemon.sha256"].decode() == hashlib.sha256(original).hexdigest()
        value = m.value() or b""
        assert 0 < len(value) <= 512 * 1024 and original.startswith(value)
        assert h["telemon.topic"].decode() == outcome.stream.kafka.readings_topic
        assert int(h["telemon.offset"]) >= 0


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_a_flood_of_new_device_ids_stays_within_the_memory_budget(
    broker: ApacheKafka, tmp_path: Path
) -> None:
    kafka, budget_mb, flood = unique_kafka_settings(broker), 16, 30_000
    stream = Readings(kafka, 8, PARTITIONS)
    stream.round(10)
    stream.flush()
    port = free_port()
    env = {"TELEMON_STATE_DIR": str(tmp_path), "TELEMON_STATE__MEMORY_BUDGET_MB": str(budget_mb)}
    proc = telemon_process(kafka, "run", TELEMON_METRICS__PORT=str(port), **env)
    try:
        wait_committed(kafka, stream.ends, proc)
        before = _rss_mb(proc.pid)
        for i in range(flood):  # one reading each from 30,000 devices never seen before
            device = f"flood-{i:05d}"
            stream.send(
                stream.reading(0).replace(b'"dev-00"', f'"{device}"'.encode()), device.encode(), i % 4
            )
        stream.flush()
        wait_committed(kafka, stream.ends, proc)
        grown = _rss_mb(proc.pid) - before
        samples = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    cap = total(samples, "telemon_device_cap")
    assert 0 < cap < flood / 10
    assert total(samples, "telemon_devices") <= cap
    assert total(samples, "telemon_devices_evicted_total", reason="capacity") >= flood + 8 - cap
    assert grown < budget_mb + 48, f"resident memory grew by {grown:.0f} MB for a {budget_mb} MB budget"


def _dead_letter(size: int, key: bytes = b"dev-00") -> DeadLetter:
    message = ReplayMessage(key, b"x" * size, 0, 7)
    return DeadLetter(message, Rejection(Reason.OVERSIZE, f"{size} bytes"))


@pytest.mark.parametrize(("max_message_bytes", "delivered", "failed"), [(8192, 1, 0), (1000, 0, 1)])
def test_a_dead_letter_the_producer_refuses_is_cut_again_or_given_up(
    kafka_settings: KafkaSettings, max_message_bytes: int, delivered: int, failed: int
) -> None:
    ensure_topics(kafka_settings, [kafka_settings.dead_letter_topic])
    conf = {"bootstrap.servers": kafka_settings.bootstrap_servers, "message.max.bytes": max_message_bytes}
    tracker = DeliveryTracker()
    dlq = DeadLetterProducer(Producer(conf), tracker, kafka_settings.dead_letter_topic, 65_536)
    dlq.produce([_dead_letter(30_000, b"k" * 900)])  # fits the dead-letter limit, not the producer
    flush(dlq.producer, tracker, 10)
    assert (tracker.delivered, dlq.take_failed()) == (delivered, failed)
    if delivered:
        (m,) = read_topic(kafka_settings, kafka_settings.dead_letter_topic)
        assert dict(m.headers() or [])["telemon.reason"] == b"too_large"
        assert len(m.value() or b"") + len(m.key() or b"") <= deadletters.MIN_KEPT_BYTES
