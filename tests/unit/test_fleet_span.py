"""A fleet that spans replicas (monitor.detect.span, monitor.detect.spandrift, monitor.serve.fleetspan):
partial aggregates add up to the same windows however the partitions are shared among replicas, the
merged view closes windows by event time, drops re-published and late partials, and the fleet rule
fires on it once, at the same window, for one replica or three."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.cli.broker import free_port
from monitor.detect import span, stats
from monitor.detect.spandrift import MergedDrift, ks_binned, psi_binned, psi_starts
from monitor.evaluation.replay import replay_messages
from monitor.govern.alerts import Alert
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.serve.fleetspan import Ack, MergedView, SpanWorker
from monitor.serve.metrics import Metrics
from monitor.settings import DriftSettings, Settings, load_settings
from producers.scenario import load_scenario
from producers.simulate import iter_messages

ROOT = Path(__file__).resolve().parents[2]
BINS, WINDOW, LATENESS = 50, 10_000, 20_000
PARTITIONS = 4
FLEET_RULE = """
rules:
  - name: fleet_score_drift
    scope: fleet
    when:
      all:
        - {signal: ks_drift, op: "==", value: 1}
        - {signal: psi_drift, op: "==", value: 1}
        - {signal: devices, op: ">=", value: 10}
    clear:
      any:
        - {signal: ks_drift, op: "==", value: 0}
        - {signal: psi_drift, op: "==", value: 0}
    for: 3
    cooldown_s: 600
    severity: critical
    actions: [alert]
"""


@dataclass(frozen=True)
class Msg:
    """The part of a Kafka message the pipeline and the fleet worker use."""

    payload: bytes | None
    key_: bytes | None
    partition_: int
    offset_: int
    ts: int

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str:
        return "readings"

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def error(self) -> None:
        return None


def collect(rng: np.random.Generator, partitions: list[int], ts0: int, n: int) -> span.Collector:
    """A collector fed ``n`` seeded scores per partition (devices d-<p>-<0..4>), in one batch."""
    c = span.Collector(WINDOW, BINS, WINDOW + LATENESS)
    part = np.repeat(np.array(partitions, np.int64), n)
    ts = ts0 + np.tile(np.arange(n, dtype=np.int64) * 100, len(partitions))
    c.mark(part, np.tile(np.arange(n, dtype=np.int64), len(partitions)), ts)
    scores = rng.random(len(part))
    devices = span.device_hashes([f"d-{p}-{i % 5}" for i, p in enumerate(part.tolist())])
    c.add("*", "temperature", part, ts, scores, scores > 0.99, devices)
    return c


# --- partials and their merge -------------------------------------------------------------------


def test_a_partial_survives_its_encoding() -> None:
    c = collect(np.random.default_rng(1), [0, 2], 0, 300)
    for part in c.take():
        back = span.decode(span.encode(part, BINS), BINS)
        assert back is not None
        assert (back.partition, back.since, back.upto, back.watermark) == (
            part.partition,
            part.since,
            part.upto,
            part.watermark,
        )
        assert back.devices == part.devices
        for key, cell in part.cells.items():
            got = back.cells[key]
            assert (got.n, got.anomalies, got.score_sum) == (cell.n, cell.anomalies, cell.score_sum)
            assert got.hist.tolist() == cell.hist.tolist()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[1,0,0,0,0,50,[],[]]",
        b"[2,0,0,5,0,50,[],[]]",
        b'[1,0,0,5,0,50,[[0,"*","t",3,0,1.0,[99,3]]],[]]',
    ],
)
def test_records_that_are_not_partials_of_this_format_are_refused(raw: bytes) -> None:
    assert span.decode(raw, BINS) is None


def test_the_merge_does_not_depend_on_how_replicas_share_the_partitions() -> None:
    rng = np.random.default_rng(7)
    scores = {p: rng.random(400) for p in range(PARTITIONS)}

    def partials(groups: list[list[int]]) -> list[span.Partial]:
        out = []
        for group in groups:
            for lo in range(0, 400, 100):  # batches of 100 readings per partition
                c = span.Collector(WINDOW, BINS, WINDOW + LATENESS)
                for p in group:
                    ts = np.arange(lo, lo + 100, dtype=np.int64) * 100
                    part = np.full(100, p, np.int64)
                    c.mark(part, np.arange(lo, lo + 100, dtype=np.int64), ts)
                    dev = span.device_hashes([f"d{p}-{i % 3}" for i in range(lo, lo + 100)])
                    s = scores[p][lo : lo + 100]
                    c.add("*", "temperature", part, ts, s, s > 0.95, dev)
                out += c.take()
        return out

    def merged(parts: list[span.Partial]) -> list[tuple[int, int, int, list[int], dict[str, int]]]:
        m = span.Merger(WINDOW, LATENESS, BINS, expected=frozenset(range(PARTITIONS)))
        windows = m.add_all(parts)
        m.watermarks = {p: 10**9 for p in m.watermarks}  # the end of the stream: close the rest
        windows += m.close()
        return [
            (w.start, c.n, c.anomalies, c.hist.tolist(), w.devices) for w in windows for c in w.cells.values()
        ]

    one = merged(partials([[0, 1, 2, 3]]))
    assert len(one) == 4 and all(devices == {"*": 12} for *_, devices in one)
    # The replicas' batches reach the topic interleaved (each replica publishes its partitions'
    # partials of a batch together), in whatever order they happen to run.
    a, b, c = partials([[0, 1]]), partials([[2]]), partials([[3]])
    batches = [[a[2 * i : 2 * i + 2] for i in range(4)], [[p] for p in b], [[p] for p in c]]
    for first in range(3):
        order = batches[first:] + batches[:first]
        interleaved = [p for i in range(4) for replica in order for p in replica[i]]
        assert merged(interleaved) == one


def test_a_window_closes_when_every_live_partition_passed_its_end() -> None:
    m = span.Merger(WINDOW, LATENESS, BINS, expected=frozenset({0, 1}))
    hist = np.zeros(BINS, np.int64)
    hist[0] = 1

    def part(p: int, since: int, wm: int) -> span.Partial:
        """One score of partition ``p`` in the window of its watermark ``wm``, its last."""
        w = wm - wm % WINDOW if wm % WINDOW else wm - WINDOW
        return span.Partial(p, since, since + 1, wm, {(w, "*", "t"): span.Cell(1, 0, 0.0, hist.copy())})

    assert m.add_all([part(1, 0, 9_000)]) == []  # partition 0 not heard yet: held (LATENESS at most)
    assert m.add_all([part(1, 1, 12_000)]) == []
    assert m.add_all([part(0, 0, 5_000)]) == []  # partition 0 still in window 0
    closed = m.add_all([part(0, 1, 10_000)])
    assert [(w.start, w.cells[("*", "t")].n, w.partitions) for w in closed] == [(0, 3, 2)]
    # Partition 1 re-publishes offsets it published (a batch re-delivered after a crash): dropped.
    m.add_all([part(1, 1, 12_000)])
    assert m.duplicates == 1
    # A partition that falls silent holds windows back for LATENESS of event time only.
    stuck = span.Partial(2, 0, 1, 15_000, {(10_000, "*", "t"): span.Cell(1, 0, 0.0, hist.copy())})
    assert m.add_all([stuck]) == []
    assert [w.start for w in m.add_all([part(1, 2, 15_000 + LATENESS + 1)])] == [10_000]
    m.add_all([part(2, 1, 16_000)])  # its window closed without it: late, left out
    assert m.late == 1


# --- the merged detectors ------------------------------------------------------------------------


def test_binned_ks_is_within_one_bin_of_the_exact_statistic() -> None:
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.05, 0.2):
        ref, cur = rng.random(3000), np.clip(rng.random(3000) + shift, 0, 1 - 1e-9)
        exact = float(stats.ks_2samp_batch(ref[None, :], cur[None, :])[0][0])
        h = [np.bincount((x * BINS).astype(np.int64), minlength=BINS) for x in (ref, cur)]
        binned = ks_binned(*h)
        bound = max(h[0].max() / h[0].sum(), h[1].max() / h[1].sum())
        assert binned <= exact + 1e-12 and exact - binned <= bound


def test_psi_bins_are_the_reference_quantiles() -> None:
    ref = np.array([10, 10, 10, 10, 10, 10, 10, 10, 10, 10], np.int64)
    starts = psi_starts(ref, 5)
    assert starts.tolist() == [0, 2, 4, 6, 8]
    assert psi_binned(ref, ref, starts) == 0.0
    assert psi_binned(ref, np.array([0, 0, 0, 0, 0, 0, 0, 0, 50, 50]), starts) > 1


def test_merged_drift_flags_a_shift_of_the_scores_only() -> None:
    cfg = DriftSettings(fleet_reference_size=1000, fleet_window_size=1000)
    rng = np.random.default_rng(5)
    det = MergedDrift(cfg, BINS)

    def window(shift: float) -> span.Cell:
        x = np.clip(rng.random(500) * (1 - shift) + shift, 0, 1 - 1e-9)
        return span.Cell(
            500, int((x > 0.99).sum()), float(x.sum()), np.bincount((x * BINS).astype(int), minlength=BINS)
        )

    quiet = [det.push(window(0.0), 20) for _ in range(8)]
    assert "ks_drift" not in quiet[1] and all(s.get("ks_drift", 0) == 0 for s in quiet)
    moved = [det.push(window(0.5), 20) for _ in range(3)]
    assert moved[-1]["ks_drift"] == 1 and moved[-1]["psi_drift"] == 1 and moved[-1]["devices"] == 20


# --- one replica or three, through the pipeline -----------------------------------------------


def fleet_settings(tmp_path: Path, **overrides: Any) -> Settings:
    (tmp_path / "rules.yaml").write_text(FLEET_RULE)
    return load_settings(
        ROOT / "configs/monitor.yaml",
        rules_file=str(tmp_path / "rules.yaml"),
        fleet={"span": True, "window_s": 30, "lateness_s": 60},
        drift={"fleet_reference_size": 1000, "fleet_window_size": 1000},
        feedback={"enabled": False},
        **overrides,
    )


def stream(devices: int = 12, seconds: int = 600, drift_s: int = 360) -> list[Msg]:
    """A seeded fleet whose every device's temperature steps up by 3 degC at ``drift_s``."""
    events = [
        {"kind": "abrupt_shift", "device": d, "sensor": "temperature", "start_s": drift_s, "magnitude": 3.0}
        for d in range(devices)
    ]
    rates = {"accelerometer": 1, "gyroscope": 1, "magnetometer": 1}
    scenario = load_scenario(
        ROOT / "configs/scenarios/demo.yaml",
        devices=devices,
        duration_s=seconds,
        seed=5,
        events=events,
        malformed=0,
        rates_hz=rates,
    )
    ends = [0] * PARTITIONS
    out = []
    for key, value, ts in iter_messages(scenario):
        p = zlib.crc32(key) % PARTITIONS
        out.append(Msg(value, key, p, ends[p], ts))
        ends[p] += 1
    return out


def replicas(settings: Settings, messages: list[Msg], groups: list[list[int]]) -> list[list[span.Partial]]:
    """Each replica's partials, batch by batch: replica ``i`` reads the partitions ``groups[i]``."""
    rules = load_rules(settings.rules_file)
    out = []
    for group in groups:
        pipeline, mine, parts = Pipeline(settings, rules), [m for m in messages if m.partition_ in group], []
        for i in range(0, len(mine), 500):
            result = pipeline.process(mine[i : i + 500])
            assert not result.alerts  # fleet.span: no fleet alert of its own
            parts.append(result.span)
        out.append(parts)
    return out


def merged_alerts(settings: Settings, batches: list[list[span.Partial]]) -> list[Alert]:
    """The alerts of the leader's merged view over the partials, in the fleet topic's order."""
    worker = SpanWorker(settings, Metrics(CollectorRegistry()), load_rules(settings.rules_file))
    worker.lead(True)
    worker.view.merger.expected = frozenset(range(PARTITIONS))
    records = [span.encode(p, settings.fleet.bins) for parts in batches for p in parts]
    worker.read([Msg(r, None, 0, i, 0) for i, r in enumerate(records)])
    return list(worker.owed.values())


def test_the_fleet_rule_fires_once_on_the_merged_view_for_one_replica_or_three(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    messages = stream()
    [one] = replicas(settings, messages, [[0, 1, 2, 3]])
    three = replicas(settings, messages, [[0, 1], [2], [3]])
    # The replicas' batches reach the fleet topic as they run side by side on a live fleet: in
    # the order of their event times.
    interleaved = sorted((b for r in three for b in r if b), key=lambda b: max(p.watermark for p in b))
    alone, spread = merged_alerts(settings, one), merged_alerts(settings, interleaved)
    firing = [a for a in alone if a.status == "firing"]
    assert len(firing) == 1 and firing[0].rule == "fleet_score_drift" and firing[0].device_id == "*"
    assert firing[0].sensor == "temperature" and firing[0].ts > messages[0].ts + 360_000
    assert [(a.alert_id, a.status, a.ts) for a in spread] == [(a.alert_id, a.status, a.ts) for a in alone]


def test_partials_cost_a_few_kilobytes_per_batch_and_partition(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    [batches] = replicas(settings, stream(seconds=120, drift_s=60), [[0, 1, 2, 3]])
    sizes = [len(span.encode(p, settings.fleet.bins)) for parts in batches for p in parts]
    assert 0 < max(sizes) < 16_000


def test_what_a_leader_acknowledged_is_not_owed_by_the_others(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    [batches] = replicas(settings, stream(), [[0, 1, 2, 3]])
    worker = SpanWorker(settings, Metrics(CollectorRegistry()), load_rules(settings.rules_file))
    records = [span.encode(p, settings.fleet.bins) for parts in batches for p in parts]
    worker.read([Msg(r, None, 0, i, 0) for i, r in enumerate(records)])
    owed = list(worker.owed)
    assert [status for _, status in owed] == ["pending", "firing"]  # not the leader: nothing sent
    ack = Ack(acked=owed[:1])  # the leader delivered the pending record, not yet the firing one
    worker.read([Msg(msgspec.json.encode(ack), b"ack", 0, len(records), 0)])
    assert list(worker.owed) == owed[1:]  # were this replica to lead now, it would produce that one


def test_the_python_path_publishes_the_partials_of_the_compiled_one(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    rules, messages = load_rules(settings.rules_file), stream(seconds=150, drift_s=100)

    def cells(compiled: bool) -> dict[tuple[int, tuple[int, str, str]], tuple[int, int, list[int]]]:
        pipeline, out = Pipeline(settings, rules, compiled=compiled), {}
        for i in range(0, len(messages), 500):
            for part in pipeline.process(messages[i : i + 500]).span:
                for key, c in part.cells.items():
                    n, a, h = out.get((part.partition, key), (0, 0, [0] * settings.fleet.bins))
                    out[(part.partition, key)] = (n + c.n, a + c.anomalies, (np.array(h) + c.hist).tolist())
        return out

    compiled = cells(True)
    assert compiled and cells(False) == compiled


def test_a_replay_alerts_on_the_merged_view_as_the_live_leader(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    messages = stream()
    [live] = replicas(settings, messages, [[0, 1, 2, 3]])
    replay = replay_messages(
        settings, load_rules(settings.rules_file), [(m.key_, m.payload, m.ts) for m in messages]
    )
    key = [(a.alert_id, a.status, a.ts) for a in merged_alerts(settings, live)]
    assert key and [(a.alert_id, a.status, a.ts) for a in replay.alerts] == key


def test_cohorts_get_partials_of_their_own_devices(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    (tmp_path / "rules.yaml").write_text(
        FLEET_RULE
        + """
  - name: cohort_score_drift
    scope: cohort
    cohort: firmware
    when: {signal: psi_drift, op: "==", value: 1}
    severity: warning
    actions: [alert]
"""
    )
    firmware = {f"dev-{d:04d}": "2.0" if d < 4 else "1.0" for d in range(12)}
    (tmp_path / "cohorts.yaml").write_text(
        "".join(f"{d}: {{firmware: '{v}'}}\n" for d, v in firmware.items())
    )
    settings = settings.model_copy(update={"cohorts_file": tmp_path / "cohorts.yaml"})
    [batches] = replicas(settings, stream(seconds=120, drift_s=60), [[0, 1, 2, 3]])
    view = MergedView(settings, load_rules(settings.rules_file))
    windows = view.merger.add_all([p for parts in batches for p in parts])
    assert windows
    for w in windows:
        assert w.devices == {"*": 12, "firmware=1.0": 8, "firmware=2.0": 4}
        for sensor in {s for _, s in w.cells}:
            parts = [w.cells[(k, sensor)].n for k in ("firmware=1.0", "firmware=2.0")]
            assert sum(parts) == w.cells[("*", sensor)].n  # every device is in one cohort


def test_the_leader_posts_to_alertmanager_once_it_answers(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = fleet_settings(tmp_path, alerts={"alertmanager_url": nowhere, "timeout_s": 0.2})
    [batches] = replicas(settings, stream(), [[0, 1, 2, 3]])
    alerts = merged_alerts(settings, batches)
    worker = SpanWorker(settings, Metrics(CollectorRegistry()), load_rules(settings.rules_file))
    worker.unposted = list(alerts)
    worker._post()  # not the leader: nothing posted
    assert worker.unposted == alerts
    worker.lead(True)
    worker._post()  # nothing listens there: kept for the next turn
    assert worker.unposted == alerts
    posted: list[Alert] = []
    worker.sink = FakeSink(posted)  # type: ignore[assignment]
    worker._post()
    assert worker.unposted == [] and posted == alerts


@dataclass
class FakeSink:
    posted: list[Alert]

    def send(self, alerts: list[Alert]) -> int:
        self.posted += alerts
        return len(alerts)

    def heartbeat(self) -> int:
        return 0
