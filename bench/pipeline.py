"""CPU per reading of the pipeline alone (decode to alerts, no Kafka, no service) on the demo
scenario, in batches as the service takes them: the part of ``telemon run`` the kernels speed up.

    .venv/bin/python -m bench.pipeline --devices 100 --seconds 400 --runs 3
    .venv/bin/python -m bench.pipeline --config configs/river.yaml   # with its River tier
    .venv/bin/python -m bench.pipeline --fleet-span   # and the partial aggregates of fleet.span

Prints each run and the fastest (this machine's other load only ever slows a run down).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from monitor.detect import span
from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.settings import load_settings
from producers.scenario import load_scenario
from producers.simulate import iter_messages

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--seconds", type=int, default=400, help="simulated seconds (the demo's events need 400)"
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "configs/monitor.yaml",
        help="monitor config (its rules_file too)",
    )
    parser.add_argument(
        "--fleet-span", action="store_true", help="fleet.span on: also count the partials' records and bytes"
    )
    args = parser.parse_args()
    scenario = load_scenario(
        ROOT / "configs/scenarios/demo.yaml", seed=3, devices=args.devices, duration_s=args.seconds
    )
    msgs = [ReplayMessage(k, v, ts, i) for i, (k, v, ts) in enumerate(iter_messages(scenario))]
    settings = load_settings(args.config, **({"fleet": {"span": True}} if args.fleet_span else {}))
    rules = load_rules(settings.rules_file)
    best = float("inf")
    for run in range(1, args.runs + 1):
        pipeline = Pipeline(settings, rules)
        partials: list[span.Partial] = []
        began = time.process_time()
        for i in range(0, len(msgs), args.batch_size):
            partials += pipeline.process(msgs[i : i + args.batch_size]).span
        us = (time.process_time() - began) / len(msgs) * 1e6
        best = min(best, us)
        print(f"run {run}: {len(msgs):,} readings, {us:.2f} us CPU per reading")
        if partials:
            size = sum(len(span.encode(p, settings.fleet.bins)) for p in partials)
            each, per_reading = size / len(partials), size / len(msgs)
            print(f"  {len(partials)} partials, {each:,.0f} bytes each, {per_reading:.2f} per reading")
    print(f"fastest: {best:.2f} us CPU per reading")


if __name__ == "__main__":
    main()
