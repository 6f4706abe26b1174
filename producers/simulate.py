"""Publish a scenario's readings and ground truth to Kafka, in event-time order.

The stream is a pure function of the scenario (:func:`iter_messages`): tick by tick in event
time, within a tick devices in index order, within a device sensors in ``SENSOR_NAMES`` order.
Each device numbers its readings with ``seq`` = 0, 1, 2, ... across all its sensors. A reading
lost to a ``dropout`` event keeps its number (the monitor sees the gap); the scenario's
``malformed`` messages are extra messages that carry the number of the reading they precede and
do not advance it, so the dead-letter demo causes no sequence gaps. A sample the device skips
(``sampling_rate_change``) takes no number; a ``reboot`` restarts the device's numbering at 0.
Clock skew, duplicates and late delivery are applied in transit (:mod:`producers.transport`).

:func:`simulate` publishes that stream (key = device id, Kafka timestamp = the true reading time, which
is the reading's ``ts`` unless a ``clock_skew`` event moves it) plus one
ground-truth record per event, produced when the stream reaches the event's start.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec
import numpy as np
from confluent_kafka import Producer

from monitor.errors import KafkaUnavailable
from monitor.ingest.kafka import (
    DeliveryTracker,
    ensure_topics,
    flush,
    produce,
    producer_config,
)
from monitor.schema import SCHEMA_VERSION, SENSOR_NAMES, SENSORS, encode_reading
from monitor.settings import KafkaSettings
from producers.fleet import Fleet, IntArray, SensorStream, build_injectors, sample_offsets_ms
from producers.scenario import Scenario, TruthRecord, truth_records
from producers.transport import Transport

#: Every this many messages: serve delivery reports, check for failures, report progress.
PROGRESS_EVERY: Final = 10_000
FLUSH_TIMEOUT_S: Final = 60.0
#: The malformed variants, cycled in this order; the comment is the monitor's rejection reason.
MALFORMED_KINDS: Final = (
    "truncated_json",  # invalid_json
    "unknown_sensor",  # unknown_sensor
    "wrong_unit",  # wrong_unit
    "out_of_range",  # out_of_range
    "non_finite",  # non_finite: a number JSON cannot hold as a finite double
    "missing_field",  # missing_field: no "ts"
)
_WRONG_UNITS: Final = {
    "accelerometer": "g",
    "gyroscope": "deg/s",
    "magnetometer": "gauss",
    "humidity": "%",
    "pressure": "Pa",
    "temperature": "degF",
}


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What one :func:`simulate` run delivered (every count is acknowledged by the broker)."""

    readings_sent: int
    malformed_sent: int
    truth_events: int
    last_offsets: dict[int, int]  # readings topic: partition -> offset of the last message
    duration_s: float  # wall clock

    @property
    def readings_per_s(self) -> float:
        return self.readings_sent / self.duration_s if self.duration_s > 0 else math.inf


class Message(NamedTuple):
    """One message for the readings topic."""

    key: bytes
    value: bytes
    ts: int
    malformed: bool


class _Slot(NamedTuple):
    """One scheduled reading; ``values`` is None when it is lost in transit or not taken."""

    device: int
    sensor: str
    ts: int  # the true sample time, the Kafka timestamp
    seq: int
    values: list[float] | None
    reading_ts: int  # the device's clock: ts plus any clock skew


def iter_messages(scenario: Scenario) -> Iterator[tuple[bytes, bytes, int]]:
    """The readings topic's messages as ``(key, value, timestamp_ms)``, without Kafka."""
    for msg in stream(scenario):
        yield msg.key, msg.value, msg.ts


def stream(scenario: Scenario) -> Iterator[Message]:
    """The readings topic's messages, each flagged whether it is deliberately malformed."""
    ids = scenario.device_ids()
    keys = [i.encode() for i in ids]
    bad_at = _malformed_positions(scenario.malformed, _slot_count(scenario))
    bad = 0
    transport = Transport[Message](scenario)
    for index, slot in enumerate(_slots(scenario, transport)):
        while bad < len(bad_at) and bad_at[bad] == index:
            kind = MALFORMED_KINDS[bad % len(MALFORMED_KINDS)]
            value = _malformed_value(kind, ids[slot.device], slot)
            yield Message(keys[slot.device], value, slot.ts, True)
            bad += 1
        if slot.values is not None:
            values = dict(zip(SENSORS[slot.sensor].keys, slot.values, strict=True))
            value = encode_reading(ids[slot.device], slot.sensor, slot.reading_ts, slot.seq, values)
            message = Message(keys[slot.device], value, slot.ts, False)
            offset = slot.ts - scenario.start_ts
            yield from transport.deliver(slot.device, slot.sensor, offset, message)
    yield from transport.flush()


def _offsets(scenario: Scenario) -> list[IntArray]:
    return [sample_offsets_ms(scenario.rate_hz(s), scenario.duration_s) for s in SENSOR_NAMES]


def _slot_count(scenario: Scenario) -> int:
    return scenario.devices * sum(len(o) for o in _offsets(scenario))


def _slots(scenario: Scenario, transport: Transport[Message]) -> Iterator[_Slot]:
    fleet = Fleet(scenario.devices, scenario.seed)
    injectors = build_injectors(scenario, fleet)
    offsets = _offsets(scenario)
    streams = [
        SensorStream(fleet.models[name], injectors[name], offsets[i], scenario.start_ts)
        for i, name in enumerate(SENSOR_NAMES)
    ]
    seq = [0] * scenario.devices
    for offset, due in _schedule(offsets):
        ts = scenario.start_ts + offset
        tick = [(SENSOR_NAMES[s], streams[s].next_readings()) for s in due]
        for device in range(scenario.devices):
            for sensor, readings in tick:
                values = readings[device]
                if not values:  # not taken: no message, no seq number
                    yield _Slot(device, sensor, ts, seq[device], None, ts)
                    continue
                if transport.reboots(device, sensor, offset):
                    seq[device] = 0
                reading_ts = ts + transport.skew_ms(device, sensor, offset)
                sent = None if math.isnan(values[0]) else values
                yield _Slot(device, sensor, ts, seq[device], sent, reading_ts)
                seq[device] += 1


def _schedule(offsets: Sequence[IntArray]) -> Iterator[tuple[int, list[int]]]:
    """Merge per-sensor sample times into ticks: ``(offset_ms, indices of the sensors due)``."""
    times = np.concatenate(offsets)
    sensors = np.repeat(np.arange(len(offsets)), [len(o) for o in offsets])
    order = np.argsort(times, kind="stable")  # stable: sensors stay in SENSOR_NAMES order
    sorted_times: list[int] = times[order].tolist()
    sorted_sensors: list[int] = sensors[order].tolist()
    first = 0
    for i in range(1, len(sorted_times) + 1):
        if i == len(sorted_times) or sorted_times[i] != sorted_times[first]:
            yield sorted_times[first], sorted_sensors[first:i]
            first = i


def _malformed_positions(count: int, slots: int) -> list[int]:
    """Slot indices before which the malformed messages go: evenly spread over the stream."""
    return [(k + 1) * slots // (count + 1) for k in range(count)]


def _malformed_value(kind: str, device_id: str, slot: _Slot) -> bytes:
    """A deliberately invalid message value of the given :data:`MALFORMED_KINDS` variant."""
    spec = SENSORS[slot.sensor]
    mid = {k: round((spec.low + spec.high) / 2, 3) for k in spec.keys}
    if kind == "truncated_json":
        whole = encode_reading(device_id, slot.sensor, slot.ts, slot.seq, mid)
        return whole[: len(whole) // 2]
    if kind == "unknown_sensor":
        return encode_reading(device_id, "thermocouple", slot.ts, slot.seq, {"value": 1.0}, "degC")
    if kind == "wrong_unit":
        unit = _WRONG_UNITS[slot.sensor]
        return encode_reading(device_id, slot.sensor, slot.ts, slot.seq, mid, unit)
    if kind == "out_of_range":
        far = {k: spec.high * 2 for k in spec.keys}
        return encode_reading(device_id, slot.sensor, slot.ts, slot.seq, far)
    fields = {
        "device_id": device_id,
        "sensor": slot.sensor,
        "ts": slot.ts,
        "seq": slot.seq,
        "values": {k: msgspec.Raw(b"1e999") for k in spec.keys} if kind == "non_finite" else mid,
        "unit": spec.unit,
        "schema_version": SCHEMA_VERSION,
    }
    if kind == "missing_field":
        del fields["ts"]
    return msgspec.json.encode(fields)


class _Pacer:
    """Holds messages back until the wall clock reaches their event time (``realtime``)."""

    def __init__(self, producer: Producer, first_ts: int):
        self.producer = producer
        self.first_ts = first_ts
        self.began = time.monotonic()

    def wait(self, ts: int) -> None:
        delay = self.began + (ts - self.first_ts) / 1000 - time.monotonic()
        while delay > 0:
            self.producer.poll(delay)  # serves delivery reports while it waits
            delay = self.began + (ts - self.first_ts) / 1000 - time.monotonic()


@dataclass
class _Counts:
    readings: int = 0
    malformed: int = 0
    truth: int = 0


class _Publisher:
    """Produces the stream and the ground truth, checking deliveries as it goes."""

    def __init__(
        self,
        producer: Producer,
        kafka: KafkaSettings,
        scenario: Scenario,
        progress: Callable[[int], None] | None,
    ):
        self.producer = producer
        self.tracker = DeliveryTracker()
        self.kafka = kafka
        self.truth = deque(truth_records(scenario))
        self.progress = progress
        self.counts = _Counts()

    def run(self, messages: Iterator[Message], pacer: _Pacer | None) -> None:
        last_ts = -1
        for msg in messages:
            if msg.ts != last_ts:
                last_ts = msg.ts
                if pacer is not None:
                    pacer.wait(msg.ts)
                self._truth_until(msg.ts)
            self._reading(msg)
        self._truth_until(None)
        self._report_progress()

    def _reading(self, msg: Message) -> None:
        produce(
            self.producer,
            self.tracker,
            self.kafka.readings_topic,
            key=msg.key,
            value=msg.value,
            timestamp=msg.ts,
        )
        if msg.malformed:
            self.counts.malformed += 1
        else:
            self.counts.readings += 1
        if (self.counts.readings + self.counts.malformed) % PROGRESS_EVERY == 0:
            self.producer.poll(0)
            if self.tracker.errors:
                raise KafkaUnavailable(f"delivery failed: {self.tracker.errors[0]}")
            self._report_progress()

    def _truth_until(self, ts: int | None) -> None:
        """Produce the truth records of events that start at or before ``ts`` (None: all)."""
        while self.truth and (ts is None or self.truth[0]["start_ts"] <= ts):
            self._truth(self.truth.popleft())

    def _truth(self, record: TruthRecord) -> None:
        produce(
            self.producer,
            self.tracker,
            self.kafka.truth_topic,
            key=record["device_id"].encode(),
            value=msgspec.json.encode(record),
            timestamp=record["start_ts"],
        )
        self.counts.truth += 1

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.counts.readings + self.counts.malformed)


def starting_now(scenario: Scenario, now_ms: int | None = None) -> Scenario:
    """The scenario from the current second on, unless its file sets ``start_ts``. A paced stream
    stamped with the default fixed start would lie months in the past, where a Kafka topic's time
    retention (7 days by default) deletes it within minutes, and its event time would not be the
    wall clock it is paced to."""
    if "start_ts" in scenario.model_fields_set:
        return scenario
    now_ms = (time.time_ns() // 1_000_000_000) * 1000 if now_ms is None else now_ms
    return scenario.model_copy(update={"start_ts": now_ms})


def simulate(
    kafka: KafkaSettings,
    scenario: Scenario,
    *,
    realtime: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Publish the scenario to ``kafka.readings_topic`` and its truth to ``kafka.truth_topic``.

    ``realtime`` paces messages to the wall clock, and the stream starts now unless the scenario
    sets ``start_ts`` (:func:`starting_now`); otherwise they go as fast as the broker takes them
    (their timestamps are event time either way). ``progress`` receives the number of
    readings-topic messages produced so far, every :data:`PROGRESS_EVERY` and at the end.
    Raises :class:`KafkaUnavailable` if the broker is unreachable or any delivery fails.
    """
    began = time.monotonic()
    if realtime:
        scenario = starting_now(scenario)
    ensure_topics(kafka, [kafka.readings_topic, kafka.truth_topic])
    producer = Producer(producer_config(kafka))
    publisher = _Publisher(producer, kafka, scenario, progress)
    pacer = _Pacer(producer, scenario.start_ts) if realtime else None
    try:
        publisher.run(stream(scenario), pacer)
    finally:
        # On success and on interruption alike (the caller turns SIGINT/SIGTERM into
        # KeyboardInterrupt): whatever was produced is delivered, or the failure raised.
        flush(producer, publisher.tracker, FLUSH_TIMEOUT_S)
    offsets = publisher.tracker.last_offsets
    return SimulationReport(
        readings_sent=publisher.counts.readings,
        malformed_sent=publisher.counts.malformed,
        truth_events=publisher.counts.truth,
        last_offsets={p: o for (t, p), o in offsets.items() if t == kafka.readings_topic},
        duration_s=time.monotonic() - began,
    )
