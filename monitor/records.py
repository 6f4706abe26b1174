"""The small frozen records the stages pass downstream (and the service delivers).

A stage builds them and never changes them; none holds a reference into a stage's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from monitor.schema import Rejection, SensorSpec


class Message(Protocol):
    """What the pipeline needs of a Kafka message (``confluent_kafka.Message`` fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Rollback:
    """A rule asked to serve a pair's previous version again (the service loads it, verified)."""

    device_id: str
    sensor: str
    rule: str
    alert_id: str
    version: int  # serving when the rule fired: a later promotion supersedes the request


@dataclass(frozen=True, slots=True)
class Scored:
    """One applied reading: its score and squared distance (``None`` while the model warms up),
    and its novelty level (``None`` while the novelty stage is off)."""

    device_id: str
    sensor: str
    ts: int
    score: float | None
    distance: float | None
    anomalous: bool
    level: float | None = None
    #: The device's joint model, when this reading closed a scored frame: its T^2 and dimensions.
    joint_distance: float | None = None
    joint_dims: int = 0
    joint_anomalous: bool = False


@dataclass(frozen=True, slots=True)
class Eviction:
    """A wave of forgotten devices: ``idle`` ones of a partition whose clock passed their last
    message by ``state.evict_idle_s``, or, at the device cap, the ones read least recently."""

    reason: str  # "idle" or "capacity"
    devices: int
    partition: int | None  # idle: the partition whose clock decided
    clock_ms: int  # idle: that partition's clock (0 for capacity)


@dataclass(frozen=True, slots=True)
class Stray:
    """A device read from another partition than the one its state belongs to (a producer that
    does not key by device id, or a forged record)."""

    device_id: str
    home: int  # the partition its state belongs to (where it was first read)
    partition: int


@dataclass(frozen=True, slots=True)
class Registration:
    """A channel registered automatically (``channels.auto_register``) on its first reading, the
    message of which is named."""

    spec: SensorSpec
    device_id: str
    topic: str | None
    partition: int | None
    offset: int | None
