"""The simulator against a real Kafka-protocol broker: everything produced arrives, exactly once."""

from __future__ import annotations

import time
from collections import Counter

import msgspec
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from monitor.ingest.kafka import client_config
from monitor.settings import KafkaSettings
from producers.scenario import Scenario, truth_records
from producers.simulate import PROGRESS_EVERY, iter_messages, simulate

pytestmark = [pytest.mark.integration, pytest.mark.quick]  # quick: passes on the embedded broker too

Record = tuple[bytes | None, bytes | None, int]


def _consume(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 60.0) -> list[Record]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived (or time runs out)."""
    consumer = Consumer(
        client_config(kafka)
        | {
            "group.id": f"{kafka.group_id}-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    # Assigning every partition from the start skips the group join (seconds on each call).
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(err.str())
                if err is None:
                    out.append((msg.key(), msg.value(), msg.timestamp()[1]))
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        out.extend((m.key(), m.value(), m.timestamp()[1]) for m in consumer.consume(1000, timeout=0.5))
    finally:
        consumer.close()
    return out


def _scenario(**extra: object) -> Scenario:
    events = [
        {
            "kind": "gradual_drift",
            "device": 1,
            "sensor": "temperature",
            "start_s": 5,
            "duration_s": 5,
            "magnitude": 6,
        },
        {"kind": "dropout", "device": 2, "sensor": "accelerometer", "start_s": 2, "duration_s": 3},
    ]
    return Scenario.model_validate(
        {"name": "it", "seed": 5, "devices": 3, "duration_s": 15, "malformed": 7, "events": events} | extra
    )


def test_simulate_delivers_every_message_and_the_truth(kafka_settings: KafkaSettings) -> None:
    scenario = _scenario()
    expected = list(iter_messages(scenario))
    seen: list[int] = []
    report = simulate(kafka_settings, scenario, progress=seen.append)

    assert report.malformed_sent == 7
    assert report.readings_sent + report.malformed_sent == len(expected)
    assert report.truth_events == 2
    assert seen[-1] == len(expected)
    assert sum(off + 1 for off in report.last_offsets.values()) == len(expected)

    got = _consume(kafka_settings, kafka_settings.readings_topic, len(expected))
    assert Counter(got) == Counter(expected)  # same keys, bytes and timestamps; no loss, no dups

    truth = _consume(kafka_settings, kafka_settings.truth_topic, 2)
    decoded = [msgspec.json.decode(value or b"null") for _, value, _ in truth]
    assert sorted(decoded, key=lambda r: r["start_ts"]) == truth_records(scenario)
    assert {(key, ts) for key, _, ts in truth} == {
        (r["device_id"].encode(), r["start_ts"]) for r in truth_records(scenario)
    }


def test_realtime_paces_to_the_wall_clock(kafka_settings: KafkaSettings) -> None:
    scenario = Scenario(seed=1, devices=2, duration_s=1.5)
    report = simulate(kafka_settings, scenario, realtime=True)
    assert report.duration_s >= 1.3  # the last tick is at 1.4 s of event time


def test_interrupted_run_still_flushes_what_it_produced(kafka_settings: KafkaSettings) -> None:
    scenario = Scenario(seed=2, devices=50, duration_s=20)  # 28,000 readings

    def interrupt(sent: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(kafka_settings, scenario, progress=interrupt)
    got = _consume(kafka_settings, kafka_settings.readings_topic, PROGRESS_EVERY)
    assert len(got) == PROGRESS_EVERY
    assert Counter(got) == Counter(list(iter_messages(scenario))[:PROGRESS_EVERY])
