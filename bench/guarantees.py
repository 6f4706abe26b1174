"""Throughput of ``telemon run`` through Apache Kafka under each delivery guarantee: the same
seeded stream consumed by a fresh group with ``processing.guarantee`` at_least_once, then
exactly_once (changelog on for both), then at_least_once with ``state.changelog: false`` (the
snapshot folder alone), interleaved over ``--runs`` rounds. Runs under
``scripts/test-services`` (Apache Kafka's jars)::

    scripts/test-services .venv/bin/python -m bench.guarantees --devices 20 --seconds 300 --runs 3

Prints, per run, the readings, the seconds from the first commit to the last (start-up excluded),
readings per second over them, and the process's CPU microseconds per reading (start-up
included); then the best of each guarantee (other load only ever slows a run down).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tests import chaos_harness as chaos
from tests.apache_kafka import ApacheKafka

#: Each guarantee with the changelog, and at_least_once with the snapshot folder alone.
GUARANTEES = {
    "at_least_once": {},
    "exactly_once": chaos.EXACTLY_ONCE,
    "files_only": {"TELEMON_STATE__CHANGELOG": "false"},
}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a running process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(run: chaos.Run, expected: chaos.Offsets) -> tuple[float, float]:
    """(seconds from the first commit to the last, CPU seconds) of one run over the stream."""
    proc = run.start()
    while run.progress(expected) == 0:
        if proc.poll() is not None:
            raise RuntimeError(f"{run.name} exited: see {run.log}")
        time.sleep(0.05)
    first = time.monotonic()
    run.wait_committed(expected, timeout=600)
    seconds = time.monotonic() - first
    cpu = cpu_seconds(proc.pid)
    chaos.stop(proc)
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=300, help="simulated seconds of the stream")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ApacheKafka(Path(tmp)) as broker:
        print(f"kafka: {broker.describe()}")
        kafka = chaos.stream_settings(broker.bootstrap_servers, "bench-guarantees")
        expected = chaos.publish(kafka, chaos.scenario(args.devices, args.seconds))
        readings = sum(expected.values())
        best: dict[str, float] = {}
        for i in range(args.runs):
            for name, env in GUARANTEES.items():
                env = env | {
                    "TELEMON_STATE__SNAPSHOT_INTERVAL_S": "10",
                    "TELEMON_CONSUME__BATCH_SIZE": "5000",
                }
                run = chaos.Run(kafka, Path(tmp), name=f"{name}-{i}", env=env)
                seconds, cpu = one(run, expected)
                rate = readings / seconds
                best[name] = max(best.get(name, 0.0), rate)
                print(
                    f"{name:14} run {i + 1}: {readings} readings in {seconds:.2f}s: {rate:,.0f} readings/s, "
                    f"{cpu / readings * 1e6:.1f} us CPU per reading"
                )
        base = best["at_least_once"]
        for name, rate in best.items():
            print(f"best {name:14}: {rate:,.0f} readings/s ({rate / base - 1:+.1%} vs at_least_once)")


if __name__ == "__main__":
    main()
