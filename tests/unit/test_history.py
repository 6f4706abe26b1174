"""A retrain's rows re-read from the readings topic (monitor.ingest.history, training.source): the
pair's readings found among other devices' by widening reads, bad records skipped and counted,
and the ring buffer as the fallback when retention took the range, the read times out or no
broker answers."""

from __future__ import annotations

import time

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from monitor.detect.model import AdaptiveGaussian
from monitor.govern import training
from monitor.ingest.history import HistoryReader, PairFilter, Partition, read_pair
from monitor.schema import DEFAULT_CATALOG, encode_reading
from monitor.settings import ConsumeSettings, KafkaSettings, RetrainSettings
from tests.partition_kit import TOPIC, MemoryPartition, MemoryReader, Record

DEV, SENSOR = "dev-0001", "temperature"
T0 = 1_767_225_600_000
BASE = {"fading": 0.05, "var_fading": 0.005, "resolution": 0.01, "trend": 0.3}


def stream(ticks: int, devices: int = 5, bad_every: int = 0) -> list[Record]:
    """``devices`` devices, each sending a temperature and a humidity reading per tick; with
    ``bad_every``, every so many ticks dev-0001 also sends a record that fails the checks."""
    out: list[Record] = []
    seq = dict.fromkeys(range(devices), 0)

    def add(value: bytes | None, key: bytes | None, ts: int) -> None:
        out.append(Record(value, key, len(out), ts))

    for t in range(ticks):
        ts = T0 + 1000 * t
        for d in range(devices):
            dev = f"dev-{d:04d}"
            for sensor, value in (("temperature", 20.0 + d + 0.001 * t), ("humidity", 40.0)):
                seq[d] += 1
                add(encode_reading(dev, sensor, ts, seq[d], {"value": value}), dev.encode(), ts)
            if bad_every and d == 1 and t % bad_every == 0:
                add(b'{"device_id": "dev-0001", "sensor": "temperature"}', dev.encode(), ts)
    return out


def pair_filter(device: str = DEV) -> PairFilter:
    return PairFilter(ConsumeSettings(), DEFAULT_CATALOG, device, SENSOR)


def ring_job(records: list[Record], window: int = 32) -> training.TrainingJob:
    """The job the governor builds from the ring: the pair's last ``window`` readings."""
    got = read_pair(
        MemoryPartition(records), pair_filter(), len(records) - 1, window, 1.0, time.monotonic() + 5
    )
    incumbent = AdaptiveGaussian.fit([tuple(r) for r in got.rows.tolist()], **BASE)
    return training.TrainingJob(
        device_id=DEV, sensor=SENSOR, rows=got.rows.astype(np.float32), offsets=got.offsets,
        timestamps=got.timestamps, topic=TOPIC, partition=0, incumbent=incumbent, incumbent_version=1,
        base_params=BASE, anomaly_threshold=0.9999, flagged="clip", seed=7, trigger_rule="score_drift",
        trigger_alert_id="a1b2",
    )  # fmt: skip


def source(part: Partition, want: int = 512, timeout_s: float = 5.0) -> training.TopicSource:
    retrain = RetrainSettings(history_readings=want, history_timeout_s=timeout_s)
    return training.TopicSource(MemoryReader(part), retrain, ConsumeSettings(), DEFAULT_CATALOG)


# --- reading ------------------------------------------------------------------------------------------


def test_reads_the_pairs_last_readings_backwards_in_widening_ranges() -> None:
    records = stream(300)
    part = MemoryPartition(records)
    # A density ten times too high: the first range holds a tenth of what is wanted.
    got = read_pair(part, pair_filter(), len(records) - 1, 200, 1.0, time.monotonic() + 5)
    assert len(got) == 200 and got.skipped == 0
    assert len(part.fetches) > 1  # widened
    assert all(a[0] == b[1] for a, b in zip(part.fetches, part.fetches[1:], strict=False))  # no overlap
    mine = [r for r in records if r.key_ == DEV.encode() and b"temperature" in (r.value_ or b"")]
    assert_array_equal(got.offsets, [r.offset_ for r in mine[-200:]])
    assert_array_equal(got.rows[:, 0], [21.0 + 0.001 * t for t in range(100, 300)])
    assert got.timestamps[-1] == T0 + 299_000


def test_the_readings_do_not_depend_on_the_first_estimate() -> None:
    records = stream(200)
    last = len(records) - 1
    ends = [
        read_pair(MemoryPartition(records), pair_filter(), last, 150, d, time.monotonic() + 5)
        for d in (1.0, 0.1, 0.001)
    ]
    for got in ends[1:]:
        assert_array_equal(got.offsets, ends[0].offsets)
        assert_array_equal(got.rows, ends[0].rows)


def test_bad_records_of_the_device_are_skipped_and_counted_never_fatal() -> None:
    records = stream(100, bad_every=10)
    dev = DEV.encode()
    records.append(Record(b"\xff not json", dev, len(records), T0))  # undecodable
    records.append(Record(b"{}", b"dev-0002", len(records), T0))  # another device's: not counted
    ts = T0 + 100_000  # a repeated seq: the device's duplicate, dropped like the service drops it
    repeat = encode_reading(DEV, SENSOR, ts, 201, {"value": 99.0})
    records += [Record(repeat, dev, len(records), ts), Record(repeat, dev, len(records) + 1, ts)]
    got = read_pair(
        MemoryPartition(records), pair_filter(), len(records) - 1, 1000, 0.1, time.monotonic() + 5
    )
    assert got.skipped == 11  # ten records without values, one not JSON
    assert len(got) == 101 and got.rows[-1, 0] == 99.0 and got.rows[-2, 0] != 99.0


def test_a_reading_further_ahead_of_its_kafka_time_than_max_future_is_skipped() -> None:
    records = stream(20)
    far = T0 + 20_000 + 3_600_000
    records.append(
        Record(encode_reading(DEV, SENSOR, far, 999, {"value": 5.0}), DEV.encode(), len(records), T0)
    )
    pair = PairFilter(ConsumeSettings(max_future_ms=60_000), DEFAULT_CATALOG, DEV, SENSOR)
    got = read_pair(MemoryPartition(records), pair, len(records) - 1, 100, 0.1, time.monotonic() + 5)
    assert got.skipped == 1 and len(got) == 20


# --- the source a job trains on ------------------------------------------------------------------------


def test_a_job_trains_on_the_topic_readings_up_to_its_newest() -> None:
    records = stream(600)
    job = ring_job(records)
    sourced = source(MemoryPartition(records)).window(job)
    assert sourced.job.source == "topic" and sourced.note == "" and len(sourced.job.rows) == 512
    assert sourced.job.offsets[-1] == job.offsets[-1]
    assert_array_equal(sourced.job.offsets[-32:], job.offsets)


def test_the_worker_result_is_the_ring_jobs_with_the_topic_window() -> None:
    records = stream(600)
    job = ring_job(records)
    worker = training.TrainingWorker(RetrainSettings(), source(MemoryPartition(records)))
    worker.submit(job)
    assert worker.wait(30)
    (result,) = worker.poll()
    assert worker.close(30) and worker.source is not None
    assert result.job is job and result.ok and result.window is not None
    assert result.window.source == "topic" and result.window.training_data().readings == 512
    # The same rows and seed give the same candidate: the result does not depend on when it ran.
    again = training.run_sourced(job, source(MemoryPartition(records)).window(job), RetrainSettings())
    assert again.candidate is not None and result.candidate is not None
    assert again.candidate.dump() == result.candidate.dump()


def test_retention_past_the_ring_falls_back_to_the_ring_and_says_why() -> None:
    records = stream(600)
    job = ring_job(records)
    cut = int(job.offsets[10])  # the topic no longer holds the ring's first readings
    sourced = source(MemoryPartition(records, low=cut)).window(job)
    assert sourced.job is job and sourced.job.source == "buffer"
    assert "retention" in sourced.note and "ring buffer used" in sourced.note
    gone = source(MemoryPartition(records, low=len(records))).window(job)
    assert gone.job is job and "retention" in gone.note


def test_retention_that_leaves_more_than_the_ring_trains_on_what_is_left() -> None:
    records = stream(600)
    job = ring_job(records)
    cut = len(records) - 1000  # 100 ticks of 10 messages: 100 of the pair's readings left
    sourced = source(MemoryPartition(records, low=cut)).window(job)
    assert sourced.job.source == "topic" and len(sourced.job.rows) == 100
    assert sourced.note == f"100 of 512 readings: the partition starts at {cut}"


def test_a_read_past_its_time_budget_falls_back_to_the_ring() -> None:
    records = stream(600)
    job = ring_job(records)
    sourced = source(MemoryPartition(records, delay_s=0.2), timeout_s=0.1).window(job)
    assert sourced.job is job and "took longer than 0.1s" in sourced.note


def test_no_broker_falls_back_to_the_ring() -> None:
    records = stream(100)
    job = ring_job(records)
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # nothing listens on the discard port
    retrain = RetrainSettings(history_timeout_s=1.0)
    reader = HistoryReader(kafka, ConsumeSettings())
    sourced = training.TopicSource(reader, retrain, ConsumeSettings(), DEFAULT_CATALOG).window(job)
    reader.close()
    assert sourced.job is job and sourced.job.source == "buffer" and "ring buffer used" in sourced.note


def test_history_readings_zero_keeps_the_ring() -> None:
    records = stream(100)
    job = ring_job(records)
    part = MemoryPartition(records)
    sourced = source(part, want=0).window(job)
    assert sourced.job is job and part.fetches == []


def test_history_readings_has_a_hard_cap() -> None:
    with pytest.raises(ValueError, match="less than or equal to 8192"):
        RetrainSettings(history_readings=100_000)
