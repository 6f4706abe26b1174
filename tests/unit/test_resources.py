"""Bounded resources: metric series and state do not grow with the number of devices seen."""

from __future__ import annotations

import platform

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.govern.rules import load_rules
from monitor.ingest.state import IngestState
from monitor.pipeline import Pipeline
from monitor.serve import memory
from monitor.serve.metrics import Metrics
from monitor.settings import load_settings
from monitor.state.store import MAPPED_BYTES, StateStore
from tests.unit.test_pipeline import DRIFT, MODEL, RULES, _gaussian_stream, _run


def _series(devices: int) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    pipeline = Pipeline(load_settings(None, drift=DRIFT, model=MODEL), load_rules(RULES))
    registry = CollectorRegistry()
    metrics = Metrics(registry, {r.name: r.severity for r in pipeline.engine.rules.rules})
    for result in _run(pipeline, _gaussian_stream(300, devices=devices, shift_device=1), batch=500):
        metrics.record_batch(result, pipeline.integrity.take_events(), 0.01)
        metrics.record_firing(pipeline.engine.firing_by_rule())
    return {(s.name, tuple(sorted(s.labels.items()))) for f in registry.collect() for s in f.samples}


def test_metric_series_do_not_depend_on_the_number_of_devices() -> None:
    assert _series(3) == _series(40)


def test_state_stays_within_max_devices_under_churn() -> None:
    settings = load_settings(None, drift=DRIFT, model=MODEL, state={"max_devices": 20})
    pipeline = Pipeline(settings, load_rules(RULES))
    evicted = 0
    for wave in range(10):  # 10 waves of 15 new devices each
        stream = _gaussian_stream(5, devices=15, seed=wave)
        for m in stream:
            object.__setattr__(m, "key_", f"w{wave}-{m.key_.decode()}".encode())
            object.__setattr__(m, "payload", m.payload.replace(b'"dev-', f'"w{wave}-dev-'.encode()))
        evicted += sum(r.evicted["capacity"] for r in _run(pipeline, stream, batch=75))
        assert len(pipeline.store) <= 20
    assert evicted == 150 - 20
    assert pipeline.store.capacity == 64  # released slots are reused: the slabs never grew


def test_slabs_keep_their_rows_when_they_grow_and_new_rows_start_at_their_fill_values() -> None:
    store = StateStore(capacity=2)
    ingest = store.add(IngestState(3))
    first = store.slot("dev-0", 0)
    ingest.last_seq[first] = 7
    ingest.last_vals[first] = 1.5
    slots = [store.slot(f"dev-{i}", 0) for i in range(1, 5000)]  # grows past MAPPED_BYTES
    assert store.capacity == 8192 and ingest.last_vals.nbytes >= MAPPED_BYTES
    assert ingest.last_seq[first] == 7 and (ingest.last_vals[first] == 1.5).all()
    assert (ingest.last_seq[slots] == -1).all() and np.isnan(ingest.last_vals[slots]).all()
    assert (ingest.last_seq[store.used :] == -1).all() and (store.partition[store.used :] == -1).all()
    assert (ingest.integrity[slots] == 0).all()


def test_freed_memory_goes_back_to_the_system_with_glibc() -> None:
    freed = [bytearray(2048) for _ in range(20_000)]
    del freed
    assert (memory._malloc_trim() is not None) == (platform.libc_ver()[0] == "glibc")
    assert memory.release() in (True, False)
