"""Per-device state footprint: feed N devices x 6 sensors through the pipeline, print bytes/device.

    .venv/bin/python bench/state_memory.py --devices 500 --readings 300

Counts everything the monitor keeps per device (slab arrays, models, ADWINs, rule episodes) as the
growth of the process' resident memory, and the slab arrays alone from the state store. Batches
hold at most ``consume.batch_size`` readings, as in the service. A small pipeline (8 devices, 300
readings per pair, in batches as large) runs first and is dropped: what every process pays once
(loading the compiled kernels, the modules imported on first use, the allocators' working set
for a batch) is not counted per device.

The slab arrays are also broken down: the retraining ring, the pairs' ADWIN rows, the input drift
state and the device tier's joint model.

Resident memory also counts what the allocators keep after freeing it, which is noisy at a thousand
devices (megabytes either way from run to run): every figure is read after freed memory went back to
the system (:func:`monitor.serve.memory.release`, which the service calls after each snapshot), and
the last one before that too. ``--trace`` adds what Python and numpy hold allocated beyond the slab
arrays (tracemalloc: exact, and without memory maps, such as the larger slab arrays', or the native
buffers of extension objects, such as River models'), slower:

    .venv/bin/python -m bench.state_memory --devices 256 --readings 1500 --trace
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from pathlib import Path

import numpy as np

from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.schema import SENSORS, encode_reading
from monitor.serve import memory
from monitor.settings import load_settings
from monitor.state.store import MAPPED_BYTES, OBJECT_BYTES_PER_DEVICE, StateStore

START = 1_767_225_600_000


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def settled() -> int:
    """Resident memory once garbage is collected and freed memory went back to the system."""
    gc.collect()
    memory.release()
    return rss()


def batch(devices: int, step: int, rng: np.random.Generator, seq: list[int]) -> list[ReplayMessage]:
    out = []
    ts = START + step * 1000
    for d in range(devices):
        dev = f"dev-{d:06d}"
        for name, spec in SENSORS.items():
            mid = (spec.low + spec.high) / 2 if not spec.is_vector else 0.0
            values = {k: float(mid + rng.normal(0, 1)) for k in spec.keys}
            seq[d] += 1
            out.append(ReplayMessage(dev.encode(), encode_reading(dev, name, ts, seq[d], values), ts, seq[d]))
    return out


#: Parts of the slab arrays, by the names of their arrays.
PARTS = {
    "retraining ring": ("raw", "raw_n", "raw_off", "raw_ts", "raw_last_off", "raw_last_ts"),
    "ADWIN rows": ("adwin_sums", "adwin_counts"),
    "input drift": ("in_n", "in_edges", "in_ref", "in_cur", "peer_n", "peer_cur"),
    "joint model": ("joint_in", "joint_fresh", "joint_n", "joint_dims", "joint_run", "joint_learned",
                    "joint_mean", "joint_cov", "joint_inv", "joint_frames", "joint_anomalies", "joint_max"),
}  # fmt: skip


def parts(st: StateStore) -> str:
    """The bytes per device of each of :data:`PARTS`."""
    arrays = {name: a for slab in st.slabs for name, a in slab.arrays.items()}
    return ", ".join(
        f"{part} {sum(arrays[n].nbytes for n in names if n in arrays) // st.capacity:,}"
        for part, names in PARTS.items()
    )


def process(pipeline: Pipeline, readings: list[ReplayMessage], size: int) -> None:
    """``readings`` in batches of at most ``size``."""
    for i in range(0, len(readings), size):
        pipeline.process(readings[i : i + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--readings", type=int, default=300, help="readings per (device, sensor)")
    ap.add_argument("--trace", action="store_true", help="also count allocations with tracemalloc")
    args = ap.parse_args()
    settings = load_settings(Path("configs/monitor.yaml"))
    size = settings.consume.batch_size
    warm, warm_seq = Pipeline(settings, load_rules(Path("configs/rules.yaml"))), [0] * 8
    readings = [m for step in range(300) for m in batch(8, step, np.random.default_rng(step), warm_seq)]
    process(warm, readings, size)
    del warm, readings
    pipeline = Pipeline(settings, load_rules(Path("configs/rules.yaml")))
    rng = np.random.default_rng(0)
    seq = [0] * args.devices
    if args.trace:
        tracemalloc.start()
    empty = settled()
    process(pipeline, batch(args.devices, 0, rng, seq), size)
    before = settled()
    for step in range(1, args.readings):
        process(pipeline, batch(args.devices, step, rng, seq), size)
    gc.collect()
    kept = rss()
    grown = settled() - before
    st = pipeline.store
    print(f"devices: {len(st)}  readings per pair: {args.readings}")
    print(f"slab arrays: {st.array_bytes_per_device():,} bytes/device (capacity {st.capacity})")
    print(f"  of which: {parts(st)}")
    print(f"resident growth after the first batch: {grown / len(st):,.0f} bytes/device (models, ADWINs, ...)")
    total = (rss() - empty) / len(st)
    print(
        f"resident growth from an empty pipeline: {total:,.0f} bytes/device, "
        f"{total - st.array_bytes_per_device():,.0f} beyond the slab arrays "
        f"({(kept - empty) / len(st):,.0f} before freed memory went back)"
    )
    print(
        f"the memory budget counts {st.bytes_per_device():,} bytes/device (slab arrays + "
        f"{OBJECT_BYTES_PER_DEVICE:,} for the objects): {pipeline.max_devices:,} devices in "
        f"state.memory_budget_mb {settings.state.memory_budget_mb:g}"
    )
    print(f"process resident memory: {rss() / 1e6:,.1f} MB")
    if args.trace:
        arrays = [a for slab in st.slabs for a in slab.arrays.values()]
        heap = sum(a.nbytes for a in arrays if a.nbytes < MAPPED_BYTES)  # traced (not in maps)
        traced = (tracemalloc.get_traced_memory()[0] - heap) / len(st)
        print(f"allocated beyond the slab arrays (tracemalloc): {traced:,.0f} bytes/device")


if __name__ == "__main__":
    main()
