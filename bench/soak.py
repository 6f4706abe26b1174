"""Memory under device churn: a fleet whose devices come and go, with eviction on; prints the
process' resident memory and the state size as the run goes on (it should level off).

    .venv/bin/python bench/soak.py --live 2000 --minutes 60 --churn 0.02

Each simulated minute every live device sends one reading per sensor; a ``churn`` fraction of
the fleet is replaced by new device ids (the old ones go silent and are evicted after
``state.evict_idle_s``). Reading values follow a slow random walk.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from bench.state_memory import rss
from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.schema import SENSORS, encode_reading
from monitor.settings import load_settings

START = 1_767_225_600_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--live", type=int, default=2000, help="devices sending at any time")
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes")
    parser.add_argument("--churn", type=float, default=0.02, help="fraction of devices replaced per minute")
    parser.add_argument("--idle", type=float, default=600, help="state.evict_idle_s")
    args = parser.parse_args()
    settings = load_settings(None, state={"evict_idle_s": args.idle})
    pipeline = Pipeline(settings, load_rules(settings.rules_file))
    rng = np.random.default_rng(0)
    ids = list(range(args.live))
    next_id, seq, offset = args.live, dict.fromkeys(ids, 0), 0
    began, base = time.monotonic(), rss()
    print("minute  devices_seen  devices_kept  evicted  state_MB  rss_MB")
    evicted = 0
    for minute in range(args.minutes):
        for _ in range(int(args.churn * args.live)):  # replace some devices with new ones
            gone = ids.pop(int(rng.integers(len(ids))))
            seq.pop(gone)
            ids.append(next_id)
            seq[next_id] = 0
            next_id += 1
        ts = START + minute * 60_000
        batch = []
        for d in ids:
            dev = f"dev-{d:07d}"
            seq[d] += 1
            for name, spec in SENSORS.items():
                mid = 0.0 if spec.is_vector else (spec.low + spec.high) / 2
                values = {k: float(mid + rng.normal(0, 1)) for k in spec.keys}
                raw = encode_reading(dev, name, ts, seq[d], values)
                batch.append(ReplayMessage(dev.encode(), raw, ts, offset))
                offset += 1
        evicted += sum(pipeline.process(batch).evicted.values())
        if minute % max(args.minutes // 12, 1) == 0 or minute == args.minutes - 1:
            gc.collect()
            st = pipeline.store
            state_mb = st.array_bytes_per_device() * st.capacity / 2**20
            print(
                f"{minute:6d}  {next_id:12d}  {len(st):12d}  {evicted:7d}  {state_mb:8.1f}  "
                f"{(rss() - base) / 2**20:6.1f}",
                flush=True,
            )
    print(f"{time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()
