"""Partition state through Kafka: the compacted changelog (:mod:`monitor.serve.changelog`) on a
real broker, and `telemon run` restoring a partition on a replica with an empty state folder (a
replica on another machine) from Kafka alone, its local snapshot a cache verified against it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from confluent_kafka import Producer

from monitor.errors import ConfigError, SnapshotError
from monitor.ingest import kafka
from monitor.serve import changelog
from monitor.serve.changelog import CHUNK_BYTES, Changelog, manifest_of, records
from monitor.settings import KafkaSettings
from tests.conftest import Readings, run_monitor, total

pytestmark = pytest.mark.integration

GROUP, TOPIC = "g", "t.readings"


def _publish(log: Changelog, data: bytes, offset: int) -> changelog.Manifest:
    m = manifest_of(GROUP, TOPIC, 1, offset, 1000 + offset, [data])
    log.publish(m, [data])
    return m


def test_a_snapshot_round_trips_in_chunks_and_the_latest_generation_wins(
    kafka_settings: KafkaSettings,
) -> None:
    changelog.ensure_topic(kafka_settings)
    log = Changelog(kafka_settings, GROUP, timeout_s=30)
    big = os.urandom(2 * CHUNK_BYTES + 10)  # three chunks
    first = _publish(log, big, 100)
    assert first.chunks == 3
    small = os.urandom(1000)
    second = _publish(log, small, 200)
    fresh = Changelog(kafka_settings, GROUP, timeout_s=30)  # another process: nothing in memory
    manifest, data = fresh.read(TOPIC, 1)
    assert manifest == second and data == small
    # The caller holding that snapshot already is told so, and gets no bytes.
    assert fresh.read(TOPIC, 1, have=hashlib.sha256(small).hexdigest()) == (second, None)
    # Another group's, or another partition's, state is not this one's.
    assert Changelog(kafka_settings, "other", timeout_s=30).read(TOPIC, 1) == (None, None)
    assert fresh.read(TOPIC, 2) == (None, None)


def test_a_writer_stopped_between_its_chunks_and_its_manifest_leaves_the_previous_snapshot(
    kafka_settings: KafkaSettings,
) -> None:
    changelog.ensure_topic(kafka_settings)
    log = Changelog(kafka_settings, GROUP, timeout_s=30)
    whole = _publish(log, b"whole" * 100, 10)
    torn = os.urandom(CHUNK_BYTES + 1)
    m = manifest_of(GROUP, TOPIC, 1, 20, 2000, [torn])
    producer = Producer(kafka.producer_config(kafka_settings))
    for key, value, headers in records(m, [torn], whole)[: m.chunks]:  # the chunks, not the manifest
        producer.produce(kafka_settings.state_topic, value, key, 1, headers=headers)
    producer.flush(30)
    assert Changelog(kafka_settings, GROUP, timeout_s=30).read(TOPIC, 1) == (whole, b"whole" * 100)
    # A manifest whose chunks are gone is refused, not half-restored.
    lost = manifest_of(GROUP, TOPIC, 1, 30, 3000, [b"x" * (CHUNK_BYTES + 5)])
    producer.produce(
        kafka_settings.state_topic, lost.encode(), changelog.partition_key(GROUP, TOPIC, 1).encode(), 1
    )
    producer.flush(30)
    with pytest.raises(SnapshotError, match="lacks 2 of its 2 chunks"):
        Changelog(kafka_settings, GROUP, timeout_s=30).read(TOPIC, 1)


def test_a_changelog_topic_that_deletes_is_refused(kafka_settings: KafkaSettings) -> None:
    s = kafka_settings
    kafka.ensure_topics(s, [s.readings_topic, s.state_topic])  # created by hand, cleanup.policy=delete
    with pytest.raises(ConfigError, match=r"cleanup\.policy=delete"):
        changelog.ensure_topic(s)


def test_the_changelog_topic_is_compacted_with_the_readings_partitions(kafka_settings: KafkaSettings) -> None:
    s = kafka_settings.model_copy(update={"partitions": 3})
    kafka.ensure_topics(s, [s.readings_topic])
    changelog.ensure_topic(kafka_settings)  # its own default would be 4
    assert kafka.topic_config(s, s.state_topic, "cleanup.policy") == "compact"
    assert Changelog(s, GROUP, timeout_s=30).partition_of(5) == 2


DEVICES, PARTITIONS = 6, 4


def test_a_replica_with_an_empty_folder_restores_every_partition_from_kafka(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    k = kafka_settings
    stream = Readings(k, DEVICES, PARTITIONS)
    stream.round(40)
    stream.flush()
    first = run_monitor(
        k, stream.ends, TELEMON_STATE_DIR=str(tmp_path / "a"), TELEMON_REGISTRY__SIGNING_KEY="k" * 32
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert total(first.samples, "telemon_state_restores_total", source="none") == PARTITIONS
    before = stream.valid
    stream.round(10)
    stream.flush()
    elsewhere = tmp_path / "b"  # another machine: nothing of the first replica's folder
    second = run_monitor(
        k, stream.ends, TELEMON_STATE_DIR=str(elsewhere), TELEMON_REGISTRY__SIGNING_KEY="k" * 32
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert total(second.samples, "telemon_state_restores_total", source="changelog") == PARTITIONS
    assert f"{DEVICES} device state(s) restored" in second.stderr
    # Every reading applied once: the restored state stopped where the first replica committed.
    assert total(second.samples, "telemon_readings_total") == stream.valid - before
    assert total(second.samples, "telemon_readings_replayed_total") == 0
    assert total(second.samples, "telemon_snapshot_errors_total") == 0
    # Its folder is now a cache of the changelog: a restart uses it, after checking its digest.
    cache = elsewhere / "snapshots" / k.group_id / k.readings_topic
    (cache / "0.snap").write_bytes((cache / "2.snap").read_bytes())  # a wrong cache is replaced
    os.mkfifo(cache / "3.snap.fifo")
    (cache / "3.snap").unlink()
    os.rename(cache / "3.snap.fifo", cache / "3.snap")  # an unreadable one is ignored
    before = stream.valid
    stream.round(10)
    stream.flush()
    third = run_monitor(
        k, stream.ends, TELEMON_STATE_DIR=str(elsewhere), TELEMON_REGISTRY__SIGNING_KEY="k" * 32
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert total(third.samples, "telemon_state_restores_total", source="cache") == 2
    assert total(third.samples, "telemon_state_restores_total", source="changelog") == 2
    assert "ignoring the local snapshot of" in third.stderr and "(a FIFO)" in third.stderr
    assert total(third.samples, "telemon_readings_total") == stream.valid - before
    assert total(third.samples, "telemon_snapshot_errors_total") == 0
