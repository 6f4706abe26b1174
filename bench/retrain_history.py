"""Retrain time with the training window re-read from Apache Kafka: the pair's last
``retrain.history_readings`` readings found among the other devices' on its partition, decoded and
checked, then the search, held-out test and refit, as the training worker runs them. Runs under
``scripts/test-services`` (Apache Kafka's jars)::

    scripts/test-services .venv/bin/python -m bench.retrain_history --devices 20 --seconds 900

Publishes the demo scenario (every device sends 6 sensors: 28 messages a second), then, for each
sensor and history size, times ``--runs`` retrains of ``dev-0007`` through one reader (one
consumer, as one worker keeps): the read (``TopicSource.window``), the training (``run_job``) and
both, with the messages the read went through. Prints the median and the slowest of each; the
first read of the process (connecting the consumer) is printed apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from monitor.detect.model import AdaptiveGaussian
from monitor.govern import training
from monitor.ingest.history import HistoryReader, KafkaPartition, PairFilter, Partition, read_pair
from monitor.settings import ConsumeSettings, KafkaSettings, RetrainSettings, Settings
from producers.scenario import load_scenario
from producers.simulate import simulate
from tests.apache_kafka import ApacheKafka

DEVICE = "dev-0007"
RING = 32


class CountingReader:
    """The reader, keeping the partition of the latest read (it counts the messages it read)."""

    def __init__(self, reader: HistoryReader) -> None:
        self.reader = reader
        self.last: KafkaPartition | None = None

    def partition(self, topic: str, partition: int) -> Partition:
        self.last = self.reader.partition(topic, partition)
        return self.last

    def close(self) -> None:
        self.reader.close()


def ring_job(reader: HistoryReader, settings: Settings, sensor: str, partition: int) -> training.TrainingJob:
    """The job the governor would build: the pair's last 32 readings (the ring), a serving model."""
    k, consume = settings.kafka, settings.consume
    pair = PairFilter(consume, settings.channels.catalog(), DEVICE, sensor)
    part = reader.partition(k.readings_topic, partition)
    high = part.watermarks(time.monotonic() + 10)[1]
    got = read_pair(part, pair, high - 1, RING, 0.001, time.monotonic() + 60)
    spec = settings.channels.catalog().by_name[sensor]
    base = {"fading": 0.05, "var_fading": 0.005, "resolution": spec.resolution, "trend": spec.trend}
    return training.TrainingJob(
        device_id=DEVICE, sensor=sensor, rows=got.rows, offsets=got.offsets, timestamps=got.timestamps,
        topic=k.readings_topic, partition=partition,
        incumbent=AdaptiveGaussian.fit([tuple(r) for r in got.rows.tolist()], **base), incumbent_version=1,
        base_params=base, anomaly_threshold=0.9999, flagged="clip", seed=7, trigger_rule="score_drift",
        trigger_alert_id="0" * 16,
    )  # fmt: skip


def time_one(
    source: training.TopicSource, job: training.TrainingJob, retrain: RetrainSettings
) -> list[float]:
    """Seconds to read, to train, and in all; rows trained on."""
    t0 = time.perf_counter()
    sourced = source.window(job)
    t1 = time.perf_counter()
    assert sourced.job.source == "topic", sourced.note
    assert training.run_job(sourced.job, retrain).candidate is not None
    t2 = time.perf_counter()
    return [t1 - t0, t2 - t1, t2 - t0, float(len(sourced.job.rows))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=900, help="simulated seconds of the stream")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--history", default="128,512,2048", help="history_readings sizes, comma-separated")
    parser.add_argument("--sensors", default="temperature,accelerometer")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ApacheKafka(Path(tmp)) as broker:
        k = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=args.partitions)
        settings = Settings(kafka=k)
        scenario = load_scenario(
            Path("configs/scenarios/demo.yaml"), devices=args.devices, duration_s=args.seconds, malformed=0
        )
        began = time.perf_counter()
        report = simulate(k, scenario)
        print(f"published {report.readings_sent:,} readings in {time.perf_counter() - began:.1f}s")
        reader = CountingReader(HistoryReader(k, ConsumeSettings()))
        partition = _partition_of(reader.reader, k)
        print(f"{DEVICE} is on partition {partition} of {args.partitions}, with {args.devices} devices")
        first = True
        for sensor in args.sensors.split(","):
            job = ring_job(reader.reader, settings, sensor, partition)
            for history in (int(h) for h in args.history.split(",")):
                retrain = RetrainSettings(history_readings=history, history_timeout_s=8)
                source = training.TopicSource(reader, retrain, ConsumeSettings(), settings.channels.catalog())
                if first:
                    cold = time_one(source, job, retrain)
                    print(f"first read of the process (consumer connecting): read {cold[0]:.3f}s")
                    first = False
                runs = np.array([time_one(source, job, retrain) for _ in range(args.runs)])
                _print(sensor, history, runs, reader.last.scanned if reader.last else 0)
        reader.close()


def _partition_of(reader: HistoryReader, k: KafkaSettings) -> int:
    """The partition holding DEVICE's readings (the producer's partitioner chose it)."""
    for p in range(k.partitions):
        part = reader.partition(k.readings_topic, p)
        high = part.watermarks(time.monotonic() + 10)[1]
        for m in part.fetch(max(0, high - 2000), high, time.monotonic() + 30):
            if m.key() == DEVICE.encode():
                return p
    raise SystemExit(f"{DEVICE} sent nothing")


def _print(sensor: str, history: int, runs: np.ndarray, messages: int) -> None:
    med = [statistics.median(runs[:, i]) for i in range(3)]
    worst = runs[:, :3].max(axis=0)
    print(
        f"{sensor:<13} history {history:>5}: {int(runs[0, 3]):>5} rows from {messages:>7,} messages; "
        f"read {med[0]:.3f}s, train {med[1]:.3f}s, retrain {med[2]:.3f}s median "
        f"(slowest {worst[2]:.3f}s of {len(runs)})"
    )


if __name__ == "__main__":
    main()
