"""What a partition snapshot costs: the copy taken in the consume loop, the encoding and writing
done by the writer thread, the size per device, decode + import time (on assignment), and the
consume loop's batch times with and without a snapshot being written meanwhile; with ``--kafka``,
putting the snapshot on the changelog topic of an Apache Kafka started for it and restoring it
from there (the run goes through ``scripts/test-services``, which fetches Kafka's jars).

    .venv/bin/python -m bench.snapshots --devices 10000
    scripts/test-services .venv/bin/python -m bench.snapshots --devices 10000 --batches 0 --kafka
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.state_memory import batch
from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.serve import changelog
from monitor.settings import KafkaSettings, load_settings
from monitor.state import snapshot
from monitor.state.snapshot import PartitionSnapshot, SnapshotStore, SnapshotWriter
from tests.apache_kafka import ApacheKafka

KEY = b"k" * 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=60, help="readings per device and sensor first")
    parser.add_argument("--batches", type=int, default=200, help="batches timed in each phase")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--kafka", action="store_true", help="also time the changelog on Apache Kafka")
    args = parser.parse_args()
    settings = load_settings(None)
    pipeline = Pipeline(settings, load_rules(settings.rules_file))
    rng, seq = np.random.default_rng(0), [0] * args.devices
    for step in range(args.readings):
        pipeline.process(batch(args.devices, step, rng, seq))
    n = len(pipeline.store)

    t0 = time.perf_counter()
    snap = PartitionSnapshot("t", 0, 1, pipeline.export_partition(0))
    objects = snapshot.pickle_objects(snap.state.devices)
    t1 = time.perf_counter()
    data = snapshot.encode(snap, KEY, objects)
    t2 = time.perf_counter()
    restored = Pipeline(settings, load_rules(settings.rules_file))
    restored.import_partition(snapshot.decode(data, KEY).state)
    t3 = time.perf_counter()
    print(f"{n} devices: snapshot {len(data) / n / 1024:.1f} KB/device, {len(data) / 2**20:.1f} MB")
    print(f"in the loop: export {(t1 - t0) * 1000:.0f} ms ({(t1 - t0) / n * 1e6:.1f} us/device)")
    print(f"writer thread: encode+sign {(t2 - t1) * 1000:.0f} ms ({(t2 - t1) / n * 1e6:.1f} us/device)")
    print(f"on assignment: decode+import {(t3 - t2) * 1000:.0f} ms ({(t3 - t2) / n * 1e6:.1f} us/device)")
    if args.kafka:
        changelog_times(data, n)
    if args.batches:
        loop_times(args, pipeline, rng, seq, n)


def loop_times(
    args: argparse.Namespace, pipeline: Pipeline, rng: np.random.Generator, seq: list[int], n: int
) -> None:
    """The loop's batch times, first alone, then with the partition snapshotted as soon as the
    writer has finished the previous one (far more often than state.snapshot_interval_s would)."""
    step = args.readings
    pending: list[ReplayMessage] = []

    def next_batch() -> list[ReplayMessage]:
        nonlocal step, pending
        while len(pending) < args.batch_size:
            pending += batch(args.devices, step, rng, seq)
            step += 1
        out, pending = pending[: args.batch_size], pending[args.batch_size :]
        return out

    with tempfile.TemporaryDirectory() as tmp:
        writer = SnapshotWriter(SnapshotStore(Path(tmp), KEY))
        for label, snapshots in (("no snapshot", False), ("snapshotting", True)):
            times, taken = [], 0
            for _ in range(args.batches):
                msgs = next_batch()
                start = time.perf_counter()
                pipeline.process(msgs)
                if snapshots and writer.idle():
                    writer.submit(PartitionSnapshot("t", 0, step, pipeline.export_partition(0)))
                    taken += 1
                times.append(time.perf_counter() - start)
            ms = np.array(times) * 1000
            print(
                f"loop, {label}: batch p50 {np.percentile(ms, 50):.1f} ms p99 {np.percentile(ms, 99):.1f} ms "
                f"max {ms.max():.1f} ms ({taken} snapshots of {n} devices written meanwhile)"
            )
        writer.close()


def changelog_times(data: bytes, devices: int) -> None:
    """Publish ``data`` (a snapshot) to a changelog on a fresh Apache Kafka, then restore it."""
    with tempfile.TemporaryDirectory() as tmp, ApacheKafka(Path(tmp)) as broker:
        k = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=1)
        changelog.ensure_topic(k)
        log = changelog.Changelog(k, "bench", timeout_s=60)
        log.partition_of(0)
        for attempt in range(2):  # the second time, over the first one's records
            m = changelog.manifest_of("bench", "t", 0, attempt, 1, [data])
            t0 = time.perf_counter()
            log.publish(m, [data])
            t1 = time.perf_counter()
            _, back = changelog.Changelog(k, "bench", timeout_s=60).read("t", 0)
            t2 = time.perf_counter()
            assert back == data
            print(
                f"changelog ({m.chunks} chunks of <= 512 KiB, write {attempt + 1}): "
                f"publish+ack {(t1 - t0) * 1000:.0f} ms, read back {(t2 - t1) * 1000:.0f} ms "
                f"({(t2 - t1) / devices * 1e6:.1f} us/device)"
            )


if __name__ == "__main__":
    main()
