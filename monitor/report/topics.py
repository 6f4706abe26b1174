"""Read whole topics from the beginning, without a consumer group (nothing is committed).

A topic is read until nothing new arrived for ``idle_s`` or ``timeout_s`` passed. High watermarks
are not trusted to say where a topic ends (the embedded broker reports them too low); every
partition having reported its end only shortens the wait for more. Until every partition has
answered once (a message or its end), the wait is at least :data:`FIRST_ANSWER_S`: the first
fetch of a fresh client includes connecting and finding the partitions' leaders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from monitor.ingest.kafka import client_config, list_topics
from monitor.settings import KafkaSettings

OnMessage = Callable[[Message], None]
#: Once every partition reported its end: how long to wait for anything after it.
SETTLE_S = 0.2
#: How long a partition may take to answer its first fetch.
FIRST_ANSWER_S = 10.0


def _consumer(kafka: KafkaSettings) -> Consumer:
    conf = client_config(kafka) | {
        "group.id": f"{kafka.group_id}.report",  # required by the client; never joined or committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.queue.backoff.ms": 5,
    }
    return Consumer(conf)


def partitions(consumer: Consumer, kafka: KafkaSettings, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of the topics that exist; raises :class:`KafkaUnavailable` if the brokers do
    not answer within :data:`CONNECT_TIMEOUT_S`."""
    meta = list_topics(consumer, kafka)
    return [
        TopicPartition(t, p, OFFSET_BEGINNING)
        for t in topics
        if t in meta.topics and meta.topics[t].error is None
        for p in sorted(meta.topics[t].partitions)
    ]


def read(
    kafka: KafkaSettings,
    topics: Sequence[str],
    on_message: OnMessage,
    idle_s: float = 2.0,
    timeout_s: float = 600.0,
) -> list[str]:
    """Call ``on_message`` with every message of ``topics`` (absent topics are skipped); returns
    the topics that exist."""
    consumer = _consumer(kafka)
    try:
        assigned = partitions(consumer, kafka, topics)
        if not assigned:
            return []
        consumer.assign(assigned)
        _drain(consumer, len(assigned), on_message, idle_s, time.monotonic() + timeout_s)
        return sorted({tp.topic for tp in assigned})
    finally:
        consumer.close()


def _drain(consumer: Consumer, n: int, on_message: OnMessage, idle_s: float, deadline: float) -> None:
    ended: set[tuple[str, int]] = set()
    answered: set[tuple[str, int]] = set()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.consume(10_000, 0.1)
        now = time.monotonic()
        for m in batch:
            err, where = m.error(), (str(m.topic()), int(m.partition() or 0))
            if err is None:
                ended.discard(where)
                on_message(m)
                quiet_since = now
            elif err.code() != KafkaError._PARTITION_EOF:
                continue
            else:
                ended.add(where)
            answered.add(where)
        wait = SETTLE_S if len(ended) >= n else idle_s if len(answered) >= n else FIRST_ANSWER_S
        if now - quiet_since >= wait:
            return
