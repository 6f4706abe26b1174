"""Tests for per-partition state: export/import, snapshot files, re-delivery, eviction."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from river import drift

from monitor.detect import adwin
from monitor.errors import SnapshotError
from monitor.govern import training
from monitor.govern.registry import ModelVersion
from monitor.govern.rules import load_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.records import Message
from monitor.schema import MAX_AXES
from monitor.settings import load_settings
from monitor.state import snapshot
from monitor.state.snapshot import PartitionSnapshot, SnapshotStore
from tests.partition_kit import MemoryTopic
from tests.unit.test_pipeline import DRIFT, MODEL, RULES, TOPIC, FakeMessage, _gaussian_stream, _run

KEY = b"k" * 32


def _pipeline(**state: float) -> Pipeline:
    settings = load_settings(None, drift=DRIFT, model=MODEL, state=state)
    return Pipeline(settings, load_rules(RULES))


def _snapshots(p: Pipeline, offsets: dict[int, int]) -> list[PartitionSnapshot]:
    out = []
    for part, next_offset in offsets.items():
        out.append(PartitionSnapshot(TOPIC, part, next_offset, p.export_partition(part)))
    return out


def _next_offsets(results: list[BatchResult]) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for r in results:
        offsets.update({p: o for (_t, p), o in r.offsets.items()})
    return offsets


def _alert_ids(results: list[BatchResult]) -> set[tuple[str, str]]:
    return {(a.alert_id, a.status) for r in results for a in r.alerts}


def _decisions(results: list[BatchResult]) -> list[tuple[str, str, int, str]]:
    return [(e.kind, e.device_id, e.version, e.reason) for r in results for e in r.audit]


def restored_against_oracle(
    make: Callable[[], Pipeline], stream: Sequence[Message], cut: int
) -> tuple[list[BatchResult], list[BatchResult], list[BatchResult]]:
    """Run ``stream`` whole (the oracle), and again stopped after ``cut`` messages, snapshotted,
    restored into a new pipeline and run on; assert the same state and alerts. Returns the oracle's
    results and the interrupted run's before and after the cut."""
    oracle = make()
    oracle_results = _run(oracle, stream, batch=50)
    first = make()
    before = _run(first, stream[:cut], batch=50)
    snaps = [snapshot.decode(snapshot.encode(s, KEY), KEY) for s in _snapshots(first, _next_offsets(before))]
    second = make()
    for s in snaps:
        second.import_partition(s.state)
    after = _run(second, stream[cut:], batch=70)
    end = _next_offsets(oracle_results)
    assert snapshot.fingerprints(_snapshots(second, end)) == snapshot.fingerprints(_snapshots(oracle, end))
    assert _alert_ids(before) | _alert_ids(after) == _alert_ids(oracle_results)
    return oracle_results, before, after


@pytest.mark.parametrize("cut", [150, 260, 290, 330, 390])
def test_restored_state_continues_exactly_like_an_uninterrupted_run(cut: int) -> None:
    """The oracle property: stop anywhere, snapshot, restore elsewhere, go on -> same state, alerts,
    versions and audit records as a run that never stopped (dev-1 drifts at 200: the cuts fall
    before it, around its alert, while its retrain is pending or shadowed, and after)."""
    stream = _gaussian_stream(450, devices=4, shift_device=1)
    oracle_results, before, after = restored_against_oracle(_pipeline, stream, cut * 4)
    assert _decisions(before) + _decisions(after) == _decisions(oracle_results)
    assert [v.version for r in oracle_results for v in r.versions if v.device_id == "dev-1"] == [1, 2]


@pytest.mark.parametrize("cut", [260, 290, 330])
def test_a_retrain_reading_the_topic_restores_and_decides_like_an_uninterrupted_run(cut: int) -> None:
    """A job whose rows come from the readings topic is resubmitted on restore and reads the same
    rows (up to the same newest offset): the same versions and decisions as a run that never stopped."""
    stream = _gaussian_stream(450, devices=4, shift_device=1)

    def make() -> Pipeline:
        settings = load_settings(None, drift=DRIFT, model=MODEL, retrain={"history_readings": 128})
        catalog = settings.channels.catalog()
        source = training.TopicSource(MemoryTopic(list(stream)), settings.retrain, settings.consume, catalog)
        return Pipeline(
            settings, load_rules(RULES), trainer=training.TrainingWorker(settings.retrain, source)
        )

    oracle_results, before, after = restored_against_oracle(make, stream, cut * 4)
    assert _decisions(before) + _decisions(after) == _decisions(oracle_results)
    versions = _retrained(before + after)
    assert versions and all(v.source == "topic" and v.trained_on.readings == 128 for v in versions)
    assert versions == _retrained(oracle_results)


def _retrained(results: list[BatchResult]) -> list[ModelVersion]:
    """The candidates registered, without the wall-clock seconds their jobs took."""
    clock = ("duration_s", "read_s")
    return [
        msgspec.structs.replace(v, metrics={k: x for k, x in v.metrics.items() if k not in clock})
        for r in results
        for v in r.versions
        if v.version > 1
    ]


def _river_adwin(sums: np.ndarray, counts: np.ndarray, delta: float) -> drift.ADWIN:
    """The River ADWIN whose state is the rows ``sums`` and ``counts`` (River 0.26's layout)."""
    m, rows = adwin.MAX_BUCKETS, adwin.ROWS
    top = max([i for i in range(rows) if counts[2 + i]], default=0)
    raw = struct.pack("<diQdddddd", delta, adwin.CLOCK, m, 5.0, 10.0, *sums[:3], 0.0)
    raw += struct.pack("<iiiiQ", 0, 0, int(counts[0]), 0, top + 1)
    for i in range(top + 1):
        totals = [*sums[3 + i * m : 3 + (i + 1) * m], 0.0]
        v0 = 3 + rows * m + (i - 1) * m
        variances = [*(sums[v0 : v0 + m] if i else [0.0] * m), 0.0]
        raw += struct.pack("<QQQ6dQ6d", m, int(counts[2 + i]), m + 1, *totals, m + 1, *variances)
    raw += struct.pack("<diQii", delta, adwin.CLOCK, m, 5, 10)
    a = drift.ADWIN(delta=delta)
    a._helper.__setstate__(raw)
    a._drift_detected = bool(counts[1])
    return a


@pytest.mark.parametrize("cut", [260, 390])
def test_a_snapshot_with_river_adwins_converts_and_continues_exactly(cut: int) -> None:
    """A snapshot written when the pairs' ADWINs were River objects (no ADWIN arrays) loads into
    the same rows, and the run goes on as one that never stopped."""
    stream = _gaussian_stream(450, devices=4, shift_device=1)
    oracle = _pipeline()
    oracle_results = _run(oracle, stream, batch=50)
    first = _pipeline()
    before = _run(first, stream[: cut * 4], batch=50)
    delta = first.settings.drift.adwin_delta
    snaps = []
    for s in _snapshots(first, _next_offsets(before)):
        d = s.state.devices
        sums, counts = d.arrays.pop("adwin_sums"), d.arrays.pop("adwin_counts")
        assert (sums[:, :, 2] > 0).any()
        d.adwins = [
            [
                _river_adwin(sums[j, k], counts[j, k], delta) if sums[j, k, 2] else None
                for k in range(len(sums[j]))
            ]
            for j in range(len(sums))
        ]
        snaps.append(snapshot.decode(snapshot.encode(s, KEY), KEY))
    second = _pipeline()
    for s in snaps:
        assert second.mismatch(s.state) is None
        second.import_partition(s.state)
    for s in _snapshots(second, _next_offsets(before)):  # the same rows as River's state
        d = s.state.devices
        (orig,) = [o for o in _snapshots(first, _next_offsets(before)) if o.partition == s.partition]
        np.testing.assert_array_equal(d.arrays["adwin_sums"], orig.state.devices.arrays["adwin_sums"])
        np.testing.assert_array_equal(d.arrays["adwin_counts"], orig.state.devices.arrays["adwin_counts"])
    after = _run(second, stream[cut * 4 :], batch=70)
    end = _next_offsets(oracle_results)
    assert snapshot.fingerprints(_snapshots(second, end)) == snapshot.fingerprints(_snapshots(oracle, end))
    assert _alert_ids(before) | _alert_ids(after) == _alert_ids(oracle_results)


def _former_layouts(p: Pipeline, arrays: dict[str, np.ndarray]) -> None:
    """An export's arrays as format 1 held them: the retraining ring per sensor with ``MAX_AXES``
    columns and full offsets (-1 where unused) and timestamps; the joint model's full matrices;
    the input references' counts as float32."""
    gov, wrap = p.govern_state, 2**32
    raw, n = arrays["raw"], arrays["raw_n"]
    old = np.zeros((len(raw), len(gov.axes), gov.retrain_window, MAX_AXES), np.float32)
    for s, k in enumerate(gov.axes):
        first = gov.first_axis[s]
        old[:, s, :, :k] = raw[:, first : first + k, :].transpose(0, 2, 1)
    arrays["raw"] = old
    for name in ("raw_off", "raw_ts"):
        latest = arrays.pop(name.replace("raw_", "raw_last_"))[..., None]
        full = latest + (arrays[name] - latest + wrap // 2) % wrap - wrap // 2
        unused = np.arange(gov.retrain_window) >= n[..., None]
        arrays[name] = np.where(unused, -1 if name == "raw_off" else 0, full).astype(np.int64)
    rows, cols = np.triu_indices(p.joint_state.dims)
    for name in ("joint_cov", "joint_inv"):
        full = np.zeros((len(raw), p.joint_state.dims, p.joint_state.dims))
        full[:, rows, cols] = full[:, cols, rows] = arrays[name]
        arrays[name] = full
    arrays["in_ref"] = arrays["in_ref"].astype(np.float32)


@pytest.mark.parametrize("cut", [260, 330])
def test_a_format_1_snapshot_converts_and_continues_exactly(
    cut: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot of the slabs' former layouts (format 1) loads, and the run goes on as one that
    never stopped (the cuts fall while dev-1's retrain, which reads the ring, is pending)."""
    stream = _gaussian_stream(450, devices=4, shift_device=1)
    oracle = _pipeline()
    oracle_results = _run(oracle, stream, batch=50)
    first = _pipeline()
    before = _run(first, stream[: cut * 4], batch=50)
    monkeypatch.setattr(snapshot, "FORMAT", 1)
    snaps = []
    for s in _snapshots(first, _next_offsets(before)):
        _former_layouts(first, s.state.devices.arrays)
        snaps.append(snapshot.decode(snapshot.encode(s, KEY), KEY))
    second = _pipeline()
    for s in snaps:
        assert second.mismatch(s.state) is None
        second.import_partition(s.state)
    after = _run(second, stream[cut * 4 :], batch=70)
    end = _next_offsets(oracle_results)
    assert snapshot.fingerprints(_snapshots(second, end)) == snapshot.fingerprints(_snapshots(oracle, end))
    assert _alert_ids(before) | _alert_ids(after) == _alert_ids(oracle_results)
    assert _decisions(before) + _decisions(after) == _decisions(oracle_results)


def test_a_snapshot_with_an_unconvertible_adwin_is_a_mismatch() -> None:
    snap = _one_snapshot()
    d = snap.state.devices
    del d.arrays["adwin_sums"], d.arrays["adwin_counts"]
    d.adwins = [[drift.ADWIN(clock=1)] for _ in d.device_ids]
    old = snapshot.decode(snapshot.encode(snap, KEY), KEY)
    why = _pipeline().mismatch(old.state)
    assert why is not None and why.startswith(
        "a River ADWIN it holds cannot be converted (an ADWIN with clock"
    )


def test_a_snapshot_can_hold_a_retrain_in_progress() -> None:
    stream = _gaussian_stream(300, devices=4, shift_device=1)
    p = _pipeline()
    results = _run(p, stream[: 290 * 4], batch=50)
    (snap,) = [s for s in _snapshots(p, _next_offsets(results)) if s.partition == 1]
    assert [g["kind"] for g in snap.state.governance] in (["due"], ["shadow"])


def test_redelivered_readings_are_skipped_not_flagged_as_duplicates() -> None:
    stream = _gaussian_stream(100, devices=2)
    p = _pipeline()
    _run(p, stream, batch=40)
    again = p.process(stream[60:120])
    assert again.replayed == 60
    assert again.valid.sum() == 60  # still valid readings, counted as received
    assert not p.ingest_state.integrity.any()
    assert p.integrity.take_events()[:, 2].sum() == 0  # no "duplicate" events


def test_restart_offsets_accepts_a_recreated_log() -> None:
    p = _pipeline()
    _run(p, _gaussian_stream(60, devices=2), batch=30)
    fresh = [
        FakeMessage(m.payload, m.key_, m.partition_, i, m.ts)
        for i, m in enumerate(_gaussian_stream(61, devices=2)[-2:])
    ]
    assert p.process(fresh[:1]).replayed == 1
    p.restart_offsets(0)
    assert p.process(fresh[:1]).replayed == 0


def test_dropping_a_partition_frees_its_slots_for_reuse() -> None:
    p = _pipeline()
    _run(p, _gaussian_stream(60, devices=4), batch=100)
    assert p.drop_partition(0) == 2
    assert sorted(p.store.slots) == ["dev-1", "dev-3"]
    before = p.store.used
    _run(p, _gaussian_stream(10, devices=4), batch=100)  # dev-0 and dev-2 come back
    assert p.store.used == before and len(p.store) == 4
    slot = p.store.slots["dev-0"]
    assert p.govern_state.raw_n[slot].sum() == 10  # fresh state, not the dropped one


def _one_partition(messages: list[FakeMessage]) -> list[FakeMessage]:
    """The messages on partition 0, offsets renumbered."""
    return [replace(m, partition_=0, offset_=i) for i, m in enumerate(messages)]


def test_idle_devices_are_evicted_in_their_partitions_kafka_time() -> None:
    p = _pipeline(evict_idle_s=30)
    stream = _one_partition(_gaussian_stream(100, devices=2))  # one reading per second per device
    quiet = _one_partition([m for m in stream if m.key_ == b"dev-0" or m.ts < stream[0].ts + 20_000])
    results = _run(p, quiet, batch=10)
    assert sum(r.evicted["idle"] for r in results) == 1
    assert [(w.reason, w.devices, w.partition) for r in results for w in r.evictions] == [("idle", 1, 0)]
    assert list(p.store.slots) == ["dev-0"]


def test_a_silent_partition_does_not_age_the_devices_of_another() -> None:
    p = _pipeline(evict_idle_s=30)
    stream = _gaussian_stream(100, devices=2)  # dev-0 on partition 0, dev-1 on partition 1
    quiet = [m for m in stream if m.key_ == b"dev-0" or m.ts < stream[0].ts + 20_000]
    assert sum(r.evicted["idle"] for r in _run(p, quiet, batch=10)) == 0
    assert sorted(p.store.slots) == ["dev-0", "dev-1"]


def test_state_is_capped_by_evicting_the_least_recently_read() -> None:
    p = _pipeline(max_devices=3)
    stream = _gaussian_stream(5, devices=5)
    again = next(m for m in stream[5:] if m.key_ == b"dev-1")
    result = p.process([*stream[:5], again])  # dev-3 evicts dev-0, dev-4 dev-1, dev-1 then dev-2
    assert result.evicted["capacity"] == 3
    assert sorted(p.store.slots) == ["dev-1", "dev-3", "dev-4"]
    assert [(w.reason, w.devices) for w in result.evictions] == [("capacity", 1)] * 3


def _one_snapshot() -> PartitionSnapshot:
    p = _pipeline()
    results = _run(p, _gaussian_stream(80, devices=2), batch=80)
    return _snapshots(p, _next_offsets(results))[0]


def test_store_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, KEY)
    assert store.load(TOPIC, 0) is None
    snap = _one_snapshot()
    store.save(snap)
    store.save(snap)
    loaded = store.load(TOPIC, 0)
    assert loaded is not None and loaded.next_offset == snap.next_offset
    assert snapshot.fingerprints([loaded]) == snapshot.fingerprints([snap])
    assert sorted(p.name for p in (tmp_path / TOPIC).iterdir()) == ["0.head", "0.snap"]  # no leftovers


def test_a_snapshot_copied_over_another_partitions_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, KEY, "g1")
    snap = _one_snapshot()
    store.save(snap)
    store.path(TOPIC, 2).write_bytes(store.path(TOPIC, 0).read_bytes())
    with pytest.raises(SnapshotError, match=r"snapshot of group 'g1', topic '.*', partition 0, not of .*, 2"):
        store.load(TOPIC, 2)


def test_a_snapshot_of_another_group_is_refused(tmp_path: Path) -> None:
    SnapshotStore(tmp_path, KEY, "g1").save(_one_snapshot())
    with pytest.raises(SnapshotError, match="group 'g1'"):
        SnapshotStore(tmp_path, KEY, "g2").load(TOPIC, 0)


def test_an_older_snapshot_than_the_last_written_is_reported(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, KEY, "g1")
    snap = _one_snapshot()
    store.save(snap)
    older = store.path(TOPIC, 0).read_bytes()
    snap.next_offset += 10
    store.save(snap)
    assert store.load(TOPIC, 0).older_than is None  # type: ignore[union-attr]
    store.path(TOPIC, 0).write_bytes(older)  # a backup copied back
    loaded = store.load(TOPIC, 0)
    assert loaded is not None and loaded.older_than is not None
    assert loaded.older_than.next_offset == loaded.next_offset + 10


def test_a_snapshot_signed_with_another_key_says_so(tmp_path: Path) -> None:
    SnapshotStore(tmp_path, KEY).save(_one_snapshot())
    with pytest.raises(SnapshotError, match="signed with another key: key id"):
        SnapshotStore(tmp_path, b"y" * 32).load(TOPIC, 0)


def test_a_fifo_at_a_snapshot_path_is_refused_at_once(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, KEY)
    store.path(TOPIC, 0).parent.mkdir(parents=True)
    os.mkfifo(store.path(TOPIC, 0))
    with pytest.raises(OSError, match="not a regular file"):
        store.load(TOPIC, 0)


@pytest.mark.parametrize("where", ["header", "mac", "arrays", "objects"])
def test_tampered_snapshot_is_refused(where: str) -> None:
    data = bytearray(snapshot.encode(_one_snapshot(), KEY))
    header_end = 16 + int.from_bytes(data[8:16], "big")
    pos = {"header": 30, "mac": header_end + 3, "arrays": len(data) // 2, "objects": len(data) - 3}[where]
    data[pos] ^= 0x01
    with pytest.raises(SnapshotError):
        snapshot.decode(bytes(data), KEY)


def test_snapshot_signed_with_another_key_is_refused() -> None:
    data = snapshot.encode(_one_snapshot(), KEY)
    with pytest.raises(SnapshotError, match="signature"):
        snapshot.decode(data, b"x" * 32)


def test_signed_snapshot_with_a_malicious_pickle_is_still_refused() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    snap = _one_snapshot()
    snap.state.devices.adwins = [[Evil()]]
    with pytest.raises(SnapshotError, match=r"refusing to unpickle (posix|os)\.system"):
        snapshot.decode(snapshot.encode(snap, KEY), KEY)


def test_truncated_or_foreign_files_are_refused() -> None:
    data = snapshot.encode(_one_snapshot(), KEY)
    for bad in (data[:-10], b"hello", pickle.dumps({"a": 1})):
        with pytest.raises(SnapshotError):
            snapshot.decode(bad, KEY)


def test_export_copies_arrays() -> None:
    p = _pipeline()
    _run(p, _gaussian_stream(60, devices=2), batch=60)
    states = p.export_partition(0).devices
    before = states.arrays["raw_n"].copy()
    _run(p, _gaussian_stream(70, devices=2)[120:], batch=60)
    assert np.array_equal(states.arrays["raw_n"], before)


def test_a_snapshot_taken_with_other_state_shapes_is_ignored_not_fatal(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from monitor.serve.metrics import Metrics
    from monitor.serve.partitions import Partitions

    def partitions(novelty: bool) -> Partitions:
        settings = load_settings(
            None, drift=DRIFT, model=MODEL, state_dir=str(tmp_path), novelty={"enabled": novelty}
        )
        pipeline = Pipeline(settings, load_rules(RULES))
        return Partitions(settings, pipeline, Metrics(CollectorRegistry()), KEY)

    before = partitions(novelty=False)
    _run(before.pipeline, _gaussian_stream(40, devices=2))
    before.store.save(_snapshots(before.pipeline, {0: 80})[0])
    snap = before._load(TOPIC, 0)
    assert snap is not None and snap.state.devices.device_ids

    after = partitions(novelty=True)  # the novelty stage turned on: its state slab is new
    assert after.pipeline.store.mismatch(snap.state.devices) == (
        "novelty has per-device shape (6, 0), this configuration (6, 157)"
    )
    assert after._load(TOPIC, 0) is None  # rebuilt from the committed offset, as a corrupt one
    assert after.metrics.registry.get_sample_value("telemon_snapshot_errors_total") == 1


def test_the_writer_encodes_the_state_as_it_was_when_submitted(tmp_path: Path) -> None:
    from monitor.state.snapshot import SnapshotWriter

    p = _pipeline()
    results = _run(p, _gaussian_stream(60, devices=2), batch=60)
    expected = snapshot.fingerprints(_snapshots(p, _next_offsets(results)))
    sizes: list[int | None] = []
    store = SnapshotStore(tmp_path, KEY, "g")
    writer = SnapshotWriter(store, lambda _t, _p, size: sizes.append(size))
    for snap in _snapshots(p, _next_offsets(results)):
        writer.submit(snap)
    _run(p, _gaussian_stream(70, devices=2)[120:], batch=60)  # the loop goes on meanwhile
    writer.drain()
    assert snapshot.fingerprints(store) == expected
    assert sorted(sizes) == sorted((tmp_path / TOPIC / f"{i}.snap").stat().st_size for i in (0, 1))

    (tmp_path / "blocked").write_text("")  # a file where the topic's folder would go
    writer.submit(replace(_snapshots(p, {0: 1})[0], topic="blocked"))
    writer.close()  # the failure is reported, not raised
    assert sizes[2:] == [None] and writer.errors == 1


def test_a_due_partition_waits_while_the_writer_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copy of the state at a time; after each snapshot, freed memory goes back."""
    from prometheus_client import CollectorRegistry

    from monitor.serve import memory
    from monitor.serve.metrics import Metrics
    from monitor.serve.partitions import Partitions

    settings = load_settings(
        None, drift=DRIFT, model=MODEL, state_dir=str(tmp_path), state={"snapshot_interval_s": 0.5}
    )
    parts = Partitions(settings, _pipeline(), Metrics(CollectorRegistry()), KEY)
    results = _run(parts.pipeline, _gaussian_stream(40, devices=2))
    gate, released = threading.Event(), []
    monkeypatch.setattr(memory, "release", lambda: released.append(gate.wait(10)))
    for p, offset in _next_offsets(results).items():
        parts.positions[(TOPIC, p)] = offset
        parts.dirty[(TOPIC, p)] = time.monotonic() - 1 - p  # partition 1 due first
    parts.snapshot_due()
    parts.snapshot_due()  # the writer is still busy with partition 1's
    assert list(parts.dirty) == [(TOPIC, 0)] and not released
    gate.set()
    parts.writer.drain()
    parts.snapshot_due()
    parts.writer.close()
    assert not parts.dirty and released == [True, True]
    assert parts.metrics.registry.get_sample_value("telemon_snapshots_total") == 2


class _SlowCoordinator:
    """A consumer whose committed() fails with ``codes`` first, then answers."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)

    def committed(self, asked: list[Any], timeout: float) -> list[Any]:
        if self.codes:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(self.codes.pop(0)))
        return asked


def test_committed_offsets_are_asked_again_while_the_broker_times_out_then_a_clear_error(
    tmp_path: Path,
) -> None:
    from confluent_kafka import KafkaError, TopicPartition
    from prometheus_client import CollectorRegistry

    from monitor.errors import KafkaUnavailable
    from monitor.serve.metrics import Metrics
    from monitor.serve.partitions import COMMITTED_ATTEMPTS, Partitions

    settings = load_settings(None, drift=DRIFT, model=MODEL, state_dir=str(tmp_path))
    parts = Partitions(settings, _pipeline(), Metrics(CollectorRegistry()), KEY)
    tps = [TopicPartition(TOPIC, 0)]
    slow = _SlowCoordinator(*[KafkaError._TIMED_OUT] * (COMMITTED_ATTEMPTS - 1))
    assert parts._committed(slow, tps)[0].partition == 0  # type: ignore[arg-type]
    for codes in ([KafkaError._TIMED_OUT] * COMMITTED_ATTEMPTS, [KafkaError._DESTROY]):
        with pytest.raises(KafkaUnavailable, match="committed offsets of 1 assigned partition"):
            parts._committed(_SlowCoordinator(*codes), tps)  # type: ignore[arg-type]
    parts.writer.close()
