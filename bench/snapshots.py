"""What a partition snapshot costs: export + encode time (in the consume loop) and size per device,
and decode + import time (on assignment).

    .venv/bin/python -m bench.snapshots --devices 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.state_memory import batch
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.settings import load_settings
from monitor.state import snapshot
from monitor.state.snapshot import PartitionSnapshot

KEY = b"k" * 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=300, help="readings per device and sensor")
    args = parser.parse_args()
    settings = load_settings(None)
    pipeline = Pipeline(settings, load_rules(settings.rules_file))
    rng, seq = np.random.default_rng(0), [0] * args.devices
    for step in range(args.readings):
        pipeline.process(batch(args.devices, step, rng, seq))
    t0 = time.perf_counter()
    data = snapshot.encode(PartitionSnapshot("t", 0, 1, pipeline.export_partition(0)), KEY)
    t1 = time.perf_counter()
    restored = Pipeline(settings, load_rules(settings.rules_file))
    restored.import_partition(snapshot.decode(data, KEY).state)
    t2 = time.perf_counter()
    n = len(pipeline.store)
    print(f"{n} devices: snapshot {len(data) / n / 1024:.1f} KB/device, {len(data) / 2**20:.1f} MB")
    print(f"export+encode {(t1 - t0) * 1000:.0f} ms ({(t1 - t0) / n * 1e6:.0f} us/device)")
    print(f"decode+import {(t2 - t1) * 1000:.0f} ms ({(t2 - t1) / n * 1e6:.0f} us/device)")


if __name__ == "__main__":
    main()
