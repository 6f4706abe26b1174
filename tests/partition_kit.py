"""In-memory stand-ins for a partition of the readings topic, for the history reader and
`registry reproduce` (monitor.ingest.history's Partition and Reader protocols)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.errors import HistoryTimeout
from monitor.ingest.history import Partition

TOPIC = "telemon.readings"


@dataclass(frozen=True)
class Record:
    """The part of ``confluent_kafka.Message`` the reader uses."""

    value_: bytes | None
    key_: bytes | None
    offset_: int
    ts: int
    partition_: int = 0

    def value(self) -> bytes | None:
        return self.value_

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str | None:
        return TOPIC

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)


class MemoryPartition:
    """A partition held in a list; ``low`` is where retention has cut it, ``fetches`` records
    the ranges read."""

    def __init__(self, records: list[Record], low: int = 0, delay_s: float = 0.0) -> None:
        self.records, self.low, self.delay_s = records, low, delay_s
        self.fetches: list[tuple[int, int]] = []

    def watermarks(self, deadline: float) -> tuple[int, int]:
        return self.low, len(self.records)

    def fetch(
        self, start: int, end: int, deadline: float, keep: Callable[[Record], bool] | None = None
    ) -> list[Record]:
        self.fetches.append((start, end))
        time.sleep(self.delay_s)
        if time.monotonic() > deadline:
            raise HistoryTimeout(f"offsets {start}-{end - 1} still to read")
        return [m for m in self.records[max(start, self.low) : end] if keep is None or keep(m)]


class MemoryReader:
    def __init__(self, partition: Partition) -> None:
        self.part = partition
        self.closed = False

    def partition(self, topic: str, partition: int) -> Partition:
        return self.part

    def close(self) -> None:
        self.closed = True


class MemoryTopic:
    """A reader over several in-memory partitions: messages with ``partition()`` and ``offset()``,
    each partition's numbered from 0."""

    def __init__(self, messages: list[Record]) -> None:
        self.parts: dict[int, list[Record]] = {}
        for m in sorted(messages, key=lambda m: (m.partition() or 0, m.offset() or 0)):
            self.parts.setdefault(m.partition() or 0, []).append(m)

    def partition(self, topic: str, partition: int) -> Partition:
        return MemoryPartition(self.parts.get(partition, []))

    def close(self) -> None:
        pass
