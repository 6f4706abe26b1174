"""A pair's past readings, read back from the readings topic: the training data of a retrain.

The readings topic is keyed by device id, so a pair's readings lie in one partition, interleaved
with the other devices' of that partition. :func:`read_pair` reads backwards from the reading that
triggered the retrain: it seeks to an estimate of where the wanted number of the pair's readings
starts (from the density of the pair's offsets in the ring buffer), and widens the range towards
the low watermark until it has them, the partition's start is reached, or the time budget runs
out. Every message of the device goes through the service's decoder and integrity checks
(:class:`PairFilter`): a record that fails them is skipped and counted, never an error.

:class:`KafkaPartition` reads with a consumer of its own that never joins the service's group
(``assign()``, no ``subscribe()``, nothing committed), reading committed records only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from numpy.typing import NDArray

from monitor import schema
from monitor.errors import HistoryTimeout, HistoryUnavailable, KafkaUnavailable
from monitor.ingest import kafka
from monitor.records import Message
from monitor.settings import ConsumeSettings, KafkaSettings

#: Most messages one ``consume()`` call returns, and how long it waits to fill up: it returns
#: what has arrived by then (the range's last messages are never a full batch).
BATCH, WAIT_S = 2000, 0.02
#: Slack on the estimated range: the pair's rate varies against the other devices'.
SLACK = 1.25


@dataclass(frozen=True)
class PairReadings:
    """A pair's readings in stream order: values (n x k), offsets, event times; and the device's
    records in the range read that failed the checks."""

    rows: NDArray[np.float64]
    offsets: NDArray[np.int64]
    timestamps: NDArray[np.int64]
    skipped: int
    low: int  # the partition's low watermark when read

    def __len__(self) -> int:
        return len(self.offsets)

    def last(self, n: int) -> PairReadings:
        return PairReadings(self.rows[-n:], self.offsets[-n:], self.timestamps[-n:], self.skipped, self.low)


class Partition(Protocol):
    """One partition of the readings topic as the reader sees it."""

    def watermarks(self, deadline: float) -> tuple[int, int]:
        """The low and high watermark; :class:`HistoryUnavailable` if they cannot be had in time."""
        ...

    def fetch(
        self, start: int, end: int, deadline: float, keep: Callable[[Message], bool] | None = None
    ) -> list[Message]:
        """The messages from offset ``start`` up to (not including) ``end`` that ``keep`` accepts
        (default: all), in offset order; :class:`HistoryTimeout` at ``deadline``
        (``time.monotonic()``)."""
        ...


class Reader(Protocol):
    """Gives the partitions to read (:class:`HistoryReader`: over Kafka)."""

    def partition(self, topic: str, partition: int) -> Partition: ...

    def close(self) -> None: ...


class PairFilter:
    """The service's checks of one device's messages, in stream order: the decoder (keys, types,
    ranges, units; the service's :mod:`monitor.schema` with its catalog), a timestamp no further
    ahead of its Kafka timestamp than ``consume.max_future_ms``, and the integrity check that drops
    a reading whose ``seq`` repeats the device's previous one (a duplicate)."""

    def __init__(
        self, consume: ConsumeSettings, catalog: schema.Catalog, device_id: str, sensor: str
    ) -> None:
        self.consume, self.catalog = consume, catalog
        self.device_id, self.sensor = device_id, sensor
        self.key = device_id.encode()

    def mine(self, m: Message) -> bool:
        """A message the device may have sent (its key, or no key): the ones worth decoding."""
        key = m.key()
        return key is None or key == self.key

    def select(self, messages: Sequence[Message], low: int) -> PairReadings:
        c = self.consume
        mine = [m for m in messages if self.mine(m)]
        decoded = schema.decode_batch(
            [m.value() for m in mine], [m.key() for m in mine], c.max_message_bytes, None, c.require_key,
            self.catalog,
        )  # fmt: skip
        rows: list[tuple[float, ...]] = []
        offsets: list[int] = []
        stamps: list[int] = []
        skipped, last_seq = 0, None
        for m, r in zip(mine, decoded, strict=True):
            if isinstance(r, schema.Rejection) or self._future(r, m):
                skipped += m.key() is not None  # a keyless record of another device is not ours
                continue
            if r.device_id != self.device_id or r.seq == last_seq:
                continue
            last_seq = r.seq
            if r.sensor == self.sensor:
                rows.append(r.features())
                offsets.append(int(m.offset() or 0))
                stamps.append(r.ts)
        k = len(self.catalog.by_name[self.sensor].keys) if self.sensor in self.catalog.by_name else 1
        values = np.array(rows, np.float64).reshape(len(rows), len(rows[0]) if rows else k)
        return PairReadings(values, np.array(offsets, np.int64), np.array(stamps, np.int64), skipped, low)

    def _future(self, r: schema.ReadingLike, m: Message) -> bool:
        ahead, kafka_ts = self.consume.max_future_ms, m.timestamp()[1]
        return bool(ahead) and kafka_ts > 0 and r.ts > kafka_ts + ahead


def span_for(readings: int, density: float) -> int:
    """Offsets that hold about ``readings`` of a pair whose readings are ``density`` of its
    partition's messages."""
    return max(64, math.ceil(readings / max(density, 1e-6) * SLACK))


def read_pair(
    source: Partition, pair: PairFilter, last_offset: int, want: int, density: float, deadline: float
) -> PairReadings:
    """The pair's last ``want`` readings at or before ``last_offset`` (fewer if the partition does
    not hold that many any more), reading backwards in widening ranges until ``deadline``.

    Which readings it returns depends on the messages alone, never on the ranges read: the
    device's duplicates are dropped in stream order within the readings returned."""
    low, high = source.watermarks(deadline)
    end = min(last_offset + 1, high)
    if end <= low:
        held = f"offsets {low}-{high - 1}"
        raise HistoryUnavailable(f"the partition holds {held} only, not {last_offset} (retention)")
    start = max(low, end - span_for(want, density))
    messages = source.fetch(start, end, deadline, pair.mine)
    found = pair.select(messages, low)
    while len(found) < want and start > low:
        wider = max(low, start - span_for(want - len(found), density))
        messages = source.fetch(wider, start, deadline, pair.mine) + messages
        start, found = wider, pair.select(messages, low)
    return found.last(want)


class KafkaPartition:
    """:class:`Partition` over one consumer of a reader's (one per training worker): it is
    assigned the partition to read, never subscribed, commits nothing, reads committed records."""

    def __init__(self, consumer: Consumer, topic: str, partition: int) -> None:
        self.consumer, self.tp = consumer, TopicPartition(topic, partition)
        self.scanned = 0  # messages read in the ranges fetched (kept or not)

    def watermarks(self, deadline: float) -> tuple[int, int]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HistoryTimeout("no time left to ask for the watermarks")
        try:
            low, high = self.consumer.get_watermark_offsets(self.tp, timeout=left, cached=False)
        except KafkaException as exc:
            where = f"{self.tp.topic}[{self.tp.partition}]"
            raise HistoryUnavailable(f"cannot read {where}: {exc.args[0].str()}") from None
        return int(low), int(high)

    def fetch(
        self, start: int, end: int, deadline: float, keep: Callable[[Message], bool] | None = None
    ) -> list[Message]:
        c = self.consumer
        c.assign([TopicPartition(self.tp.topic, self.tp.partition, start)])
        out: list[Message] = []
        while start < end:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HistoryTimeout(f"offsets {start}-{end - 1} still to read")
            for m in c.consume(BATCH, timeout=min(left, WAIT_S)):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise HistoryUnavailable(f"reading {self.tp.topic}[{self.tp.partition}]: {err.str()}")
                offset = int(m.offset() or 0)
                if m.partition() != self.tp.partition or m.topic() != self.tp.topic or offset < start:
                    continue  # left over from an earlier assignment
                if offset >= end:
                    return out
                self.scanned += 1
                if keep is None or keep(m):
                    out.append(m)
                start = offset + 1
        return out


class HistoryReader:
    """Reads pairs' past readings from the readings topic for the training worker (one consumer,
    made at the first read and kept)."""

    def __init__(self, k: KafkaSettings, consume: ConsumeSettings) -> None:
        self.kafka, self.consume = k, consume
        self._consumer: Consumer | None = None

    def partition(self, topic: str, partition: int) -> KafkaPartition:
        if self._consumer is None:
            overrides = {
                "group.id": f"{self.kafka.group_id}.history",  # never joined: assign() only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.queue.backoff.ms": 1,
                "fetch.wait.max.ms": 50,
            }
            try:
                self._consumer = Consumer(kafka.consumer_config(self.kafka, **overrides))
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot create the history consumer: {exc}") from None
        return KafkaPartition(self._consumer, topic, partition)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
