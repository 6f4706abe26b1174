"""telemon against a naive per-record River pipeline and the consume + decode floor, in one run.

    .venv/bin/python bench/compare.py                      # 100 and 10,000 devices, 3 rounds
    .venv/bin/python bench/compare.py --fleets 100:60 --rounds 1

An embedded broker is started, and for each fleet (``DEVICES:SIMULATED_SECONDS``) the seeded
simulator pre-produces one stream (6 sensors per device, a planted drift). Three contenders then
consume that same stream from the beginning, each as a fresh consumer group, interleaved over
``--rounds`` rounds:

- ``floor``: consume in batches and decode every batch with one typed msgspec call (what no
  monitor can beat);
- ``naive``: the per-record pipeline a River user would write (``bench/naive.py``): pydantic per
  message, a MinMax + HalfSpaceTrees model per device, an ADWIN per (device, sensor), KS and PSI
  every 32 scores, a labelled Prometheus counter per reading, a commit per batch. Its
  HalfSpaceTrees take ~1.2 MB a device, so it runs only for fleets up to ``--naive-max-devices``;
- ``telemon``: ``telemon run`` as a process, its CPU time read from ``/proc`` between joining the
  group and committing the last offset, its resident memory per device then (snapshots being
  encoded and what the allocators have not handed back yet included), and again :data:`SETTLE_S`
  later, once the idle service has snapshotted every partition (and so handed freed memory back).

CPU per reading is the median over the rounds. Then, on the first fleet, telemon is fed a live
stream paced at half of its measured maximum rate (the wall-clock rate at which it worked off the
pre-produced stream, broker and all on the same cores), with spikes planted to raise alerts after
a warm-up (the group join, the models' warm-up, the backlog of the join worked off: a third of the
run, then on until the readings are scored within half a second): produce -> score is read off
``telemon_event_lag_seconds`` for the readings scored after the warm-up (p99 interpolated within
its buckets, as ``histogram_quantile`` does), produce -> alert from each alert record's Kafka
timestamp minus the event time of the reading that completed its evaluation. The last line sums it
up (the resident memory of the largest fleet, at the last commit and settled)::

    ratio_vs_naive=X ratio_vs_floor=Y p99_score_ms=Z p99_alert_ms=W rss_kb_per_device=V
    rss_settled_kb_per_device=U  (on the same line)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.naive import NaivePipeline
from monitor.cli.broker import EmbeddedBroker, free_port
from monitor.common import packaged
from monitor.govern.alerts import decode as decode_alert
from monitor.ingest.kafka import ensure_topics
from monitor.schema import SENSORS, Reading, encode_reading
from monitor.settings import KafkaSettings
from producers.scenario import load_scenario
from producers.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
BATCH = 5000
#: Seconds after the last commit until the settled resident memory is read: past the default
#: ``state.snapshot_interval_s`` (10), so every partition changed by the stream is snapshotted.
SETTLE_S = 15.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Stream:
    kafka: KafkaSettings
    devices: int
    messages: int
    ends: dict[int, int]  # partition -> next offset


def produce_stream(bootstrap: str, devices: int, seconds: float, partitions: int) -> Stream:
    name = f"cmp-{devices}-{os.getpid()}"
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        readings_topic=f"{name}.readings",
        truth_topic=f"{name}.truth",
        partitions=partitions,
        session_timeout_ms=3000,
    )
    drift = {
        "kind": "abrupt_shift",
        "device": 1,
        "sensor": "temperature",
        "start_s": seconds / 2,
        "magnitude": 5.0,
    }
    scenario = load_scenario(
        packaged.config("scenarios/demo.yaml"),
        devices=devices,
        duration_s=seconds,
        malformed=0,
        events=[drift],
    )
    report = simulate(kafka, scenario)
    ends = {p: o + 1 for p, o in report.last_offsets.items()}
    return Stream(kafka, devices, report.readings_sent, ends)


def _consumer(stream: Stream, group: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": stream.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 5,
            "queued.max.messages.kbytes": 65536,
        }
    )
    c.assign([TopicPartition(stream.kafka.readings_topic, p, OFFSET_BEGINNING) for p in stream.ends])
    return c


def _consume_all(stream: Stream, group: str, handle: Callable[[list[bytes]], None], commit: bool) -> float:
    """CPU seconds of this process to consume the whole stream through ``handle``."""
    c = _consumer(stream, group)
    seen, began = 0, time.process_time()
    try:
        while seen < stream.messages:
            batch = [m for m in c.consume(BATCH, 0.2) if m.error() is None]
            if batch:
                handle([m.value() or b"" for m in batch])
                seen += len(batch)
                if commit:
                    c.commit(asynchronous=False)
        return time.process_time() - began
    finally:
        c.close()


_BATCH_DECODER = msgspec.json.Decoder(list[Reading])


def run_floor(stream: Stream, round_: int) -> float:
    def decode(values: list[bytes]) -> None:
        _BATCH_DECODER.decode(b"[" + b",".join(values) + b"]")

    return _consume_all(stream, f"floor-{round_}", decode, commit=False)


def run_naive(stream: Stream, round_: int) -> float:
    pipeline = NaivePipeline()
    return _consume_all(stream, f"naive-{round_}", pipeline.process, commit=True)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _committed(stream: Stream, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": stream.kafka.bootstrap_servers, "group.id": group})
    try:
        tps = [TopicPartition(stream.kafka.readings_topic, p) for p in stream.ends]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


@dataclass
class Telemon:
    proc: subprocess.Popen[bytes]
    port: int
    state: tempfile.TemporaryDirectory[str]
    group: str
    alerts_topic: str

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.state.cleanup()


def start_telemon(stream: Stream, name: str) -> Telemon:
    state, port = tempfile.TemporaryDirectory(prefix="telemon-cmp-"), free_port()
    k = stream.kafka
    env = dict(os.environ) | {
        "TELEMON_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "TELEMON_KAFKA__READINGS_TOPIC": k.readings_topic,
        "TELEMON_KAFKA__GROUP_ID": name,
        "TELEMON_KAFKA__SESSION_TIMEOUT_MS": "3000",
        "TELEMON_KAFKA__PARTITIONS": str(k.partitions),
        "TELEMON_METRICS__PORT": str(port),
        "TELEMON_STATE_DIR": state.name,
        "TELEMON_STATE__MEMORY_BUDGET_MB": "8192",
        "TELEMON_LOG_LEVEL": "WARNING",
    }
    for topic in ("dead_letter", "alerts", "models", "audit"):
        env[f"TELEMON_KAFKA__{topic.upper()}_TOPIC"] = f"{name}.{topic}"
    cmd = [sys.executable, "-m", "monitor.cli.main", "run", "--config", str(ROOT / "configs/monitor.yaml")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Telemon(proc, port, state, name, f"{name}.alerts")
    deadline = time.monotonic() + 120
    while not _http_ok(f"http://127.0.0.1:{port}/readyz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            t.stop()
            raise RuntimeError("telemon run did not become ready")
        time.sleep(0.05)
    return t


@dataclass(frozen=True)
class ServiceRun:
    cpu_s: float  # from joining the group to the last commit
    wall_s: float
    kb_per_device: float  # resident memory grown over that time, per device
    settled_kb_per_device: float  # the same, SETTLE_S later


def run_telemon(stream: Stream, round_: int) -> ServiceRun:
    t = start_telemon(stream, f"telemon-{stream.devices}-{round_}-{os.getpid()}")
    try:
        cpu0, rss0, began = _proc_cpu_s(t.proc.pid), _rss_kb(t.proc.pid), time.monotonic()
        while _committed(stream, t.group) != stream.ends:
            if t.proc.poll() is not None:
                raise RuntimeError("telemon run exited")
            time.sleep(0.05)
        wall = time.monotonic() - began
        kb = (_rss_kb(t.proc.pid) - rss0) / stream.devices
        cpu = _proc_cpu_s(t.proc.pid) - cpu0
        time.sleep(SETTLE_S)
        return ServiceRun(cpu, wall, kb, (_rss_kb(t.proc.pid) - rss0) / stream.devices)
    finally:
        t.stop()


# --- latency at half of the maximum rate ---------------------------------------------------------


#: The warm-up of the paced run ends once a second's readings were scored this fast (p99).
CAUGHT_UP_S = 0.5


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """``histogram_quantile``: ``buckets`` are (upper bound, cumulative count), +Inf last."""
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def _lag_buckets(port: int) -> list[tuple[float, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith("telemon_event_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out.append((float(le), float(line.rsplit(" ", 1)[1])))
    return out


def _floor_lags(bootstrap: str, topic: str, partitions: int, warm_s: float, stop: Any, out: Any) -> None:
    """In a process of its own: consume ``topic`` as the floor does, and put the p99 of now - ts
    (ms) of the readings consumed after ``warm_s`` on ``out`` once ``stop`` is set."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "floor-live",
            "fetch.queue.backoff.ms": 5,
            "fetch.wait.max.ms": 100,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    began, lags = time.monotonic(), []
    while not stop.is_set():
        values = [m.value() or b"" for m in c.consume(BATCH, 0.1) if m.error() is None]
        if values:
            now = time.time() * 1000
            readings = _BATCH_DECODER.decode(b"[" + b",".join(values) + b"]")
            if time.monotonic() - began > warm_s:
                lags.extend(now - r.ts for r in readings)
    c.close()
    out.put(float(np.percentile(lags, 99)) if lags else float("nan"))


def _live_topic(k: KafkaSettings, suffix: str) -> KafkaSettings:
    """A new, empty readings topic beside the pre-produced stream's, for a paced run."""
    live = KafkaSettings(
        bootstrap_servers=k.bootstrap_servers,
        readings_topic=f"{k.readings_topic}.{suffix}",
        partitions=k.partitions,
    )
    ensure_topics(live, [live.readings_topic])
    return live


def floor_latency(stream: Stream, rate: float, seconds: float) -> float:
    """p99 produce -> consume ms of the floor (consume + decode, nothing else) for a live stream
    paced as for telemon, after the same fixed warm-up: what the broker and the client allow."""
    live = _live_topic(stream.kafka, "floor")
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    args = (live.bootstrap_servers, live.readings_topic, live.partitions, seconds / 3, stop, out)
    child = ctx.Process(target=_floor_lags, args=args)
    child.start()
    try:
        Pacer(live, stream.devices, rate).run(seconds, spikes=False)
        time.sleep(2)
        stop.set()
        return float(out.get(timeout=60))
    finally:
        child.join(10)


def paced_latency(stream: Stream, rate: float, seconds: float) -> tuple[float, float, int]:
    """(p99 produce -> score ms, p99 produce -> alert ms, alerts) for a live stream at ``rate``.

    A warm-up comes first (the group join, the models' warm-up, and working off what queued up
    meanwhile): a third of the run, then on until a second of readings was scored within
    :data:`CAUGHT_UP_S` at the 99th percentile (at most ``seconds`` more). Produce -> score counts
    the readings scored after it, and the planted spikes (so the alerts) begin after it."""
    live = _live_topic(stream.kafka, "live")
    t = start_telemon(Stream(live, stream.devices, 0, {}), f"latency-{os.getpid()}")
    try:
        pacer = Pacer(live, stream.devices, rate)
        began = time.monotonic()
        pacer.run(seconds / 3, spikes=False)
        warm = _lag_buckets(t.port)
        while time.monotonic() - began < seconds * 4 / 3:
            pacer.run(1.0, spikes=False)
            last, warm = warm, _lag_buckets(t.port)
            second = [(le, n - n0) for (le, n), (_, n0) in zip(warm, last, strict=True)]
            if second and second[-1][1] and _quantile(second, 0.99) <= CAUGHT_UP_S:
                break
        warm_s = time.monotonic() - began
        pacer.run(seconds * 2 / 3, spikes=True)
        time.sleep(3)
        steady = [(le, n - n0) for (le, n), (_, n0) in zip(_lag_buckets(t.port), warm, strict=True)]
    finally:
        t.stop()
    delays = _alert_delays(live, t.alerts_topic)
    score = 1000 * _quantile(steady, 0.99) if steady and steady[-1][1] else float("nan")
    alert = float(np.percentile(delays, 99)) if delays else float("nan")
    print(
        f"  paced {pacer.sent:,} readings at {rate:,.0f}/s: {warm_s:.0f} s of warm-up, then "
        f"{seconds * 2 / 3:g} s measured: {len(delays)} alert records"
    )
    return score, alert, len(delays)


class Pacer:
    """Readings of ``devices`` x 6 sensors with ts = now, at ``rate``; with spikes, every tenth
    device's accelerometer jumps far out of its range of noise (anomaly alerts)."""

    def __init__(self, k: KafkaSettings, devices: int, rate: float) -> None:
        self.topic, self.devices, self.rate = k.readings_topic, devices, rate
        self.producer = Producer({"bootstrap.servers": k.bootstrap_servers, "linger.ms": 1})
        self.rng = np.random.default_rng(0)
        self.seq, self.sent = [0] * devices, 0

    def run(self, seconds: float, spikes: bool) -> None:
        sensors, began, start = list(SENSORS.values()), time.monotonic(), self.sent
        while (elapsed := time.monotonic() - began) < seconds:
            while self.sent < start + int(elapsed * self.rate):
                d, spec = (self.sent // len(sensors)) % self.devices, sensors[self.sent % len(sensors)]
                mid = 0.0 if spec.is_vector else (spec.low + spec.high) / 2
                spike = 40.0 if spikes and spec.name == "accelerometer" and d % 10 == 0 else 0.0
                values = {key: float(mid + spike + self.rng.normal(0, 0.1)) for key in spec.keys}
                self.seq[d] += 1
                device = f"live-{d:05d}"
                ts = int(time.time() * 1000)
                self._produce(encode_reading(device, spec.name, ts, self.seq[d], values), device.encode())
                self.sent += 1
            self.producer.poll(0)
            time.sleep(0.001)
        self.producer.flush(30)

    def _produce(self, value: bytes, key: bytes) -> None:
        """Produce, waiting for the broker while the client's queue is full (after a stall of this
        process, the readings it owes come in a burst larger than the queue)."""
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.05)


def _alert_delays(k: KafkaSettings, topic: str) -> list[float]:
    c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": f"lat-{os.getpid()}"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(k.partitions)])
    out = []
    try:
        while batch := c.consume(1000, 3.0):
            for m in batch:
                if m.error() is None:
                    a = decode_alert(m.value() or b"")
                    out.append(float(m.timestamp()[1] - a.ts))
    finally:
        c.close()
    return out


# --- the run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleets", nargs="+", default=["100:60", "10000:3"], metavar="DEVICES:SECONDS")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--naive-max-devices", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=30.0, help="paced run (0: skip)")
    ap.add_argument("--paced-rate", type=float, help="readings/s of the paced run (default: half the max)")
    args = ap.parse_args(argv)
    fleets = [tuple(map(float, f.split(":"))) for f in args.fleets]
    rows: dict[tuple[int, str], list[float]] = {}
    rss: dict[int, list[float]] = {}
    settled: dict[int, list[float]] = {}
    rates: dict[int, list[float]] = {}  # readings/s of telemon working off the pre-produced stream
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.rounds} round(s), embedded broker")
    with EmbeddedBroker() as broker:
        streams = [produce_stream(broker.bootstrap_servers, int(d), s, args.partitions) for d, s in fleets]
        for s in streams:
            print(f"  stream: {s.devices:,} devices, {s.messages:,} readings on {len(s.ends)} partitions")
        for r in range(args.rounds):
            for s in streams:
                rows.setdefault((s.devices, "floor"), []).append(run_floor(s, r) / s.messages)
                if s.devices <= args.naive_max_devices:
                    rows.setdefault((s.devices, "naive"), []).append(run_naive(s, r) / s.messages)
                run = run_telemon(s, r)
                rows.setdefault((s.devices, "telemon"), []).append(run.cpu_s / s.messages)
                rss.setdefault(s.devices, []).append(run.kb_per_device)
                settled.setdefault(s.devices, []).append(run.settled_kb_per_device)
                rates.setdefault(s.devices, []).append(s.messages / run.wall_s)
        print("\n| devices | pipeline | CPU per reading | readings/s (one core) |")
        print("| --- | --- | --- | --- |")
        median = {key: statistics.median(v) for key, v in rows.items()}
        for (devices, name), cpu in sorted(median.items()):
            print(f"| {devices:,} | {name} | {cpu * 1e6:,.1f} us | {1 / cpu:,.0f} |")
        for devices, kbs in sorted(rss.items()):
            kb, rate = statistics.median(kbs), statistics.median(rates[devices])
            print(f"| {devices:,} | telemon resident memory | {kb:,.1f} KB per device | |")
            kb = statistics.median(settled[devices])
            print(
                f"| {devices:,} | telemon resident memory, {SETTLE_S:g} s later | {kb:,.1f} KB per device | |"
            )
            print(f"| {devices:,} | telemon working off the backlog (wall clock) | | {rate:,.0f} |")
        first = streams[0]
        tele = median[(first.devices, "telemon")]
        score = alert = float("nan")
        if args.latency_seconds > 0:
            rate = args.paced_rate or 0.5 * statistics.median(rates[first.devices])
            floor = floor_latency(first, rate, args.latency_seconds)
            print(f"  the floor, paced so: p99 produce -> consume {floor:,.0f} ms (the broker's own latency)")
            score, alert, _ = paced_latency(first, rate, args.latency_seconds)
    naive = median.get((first.devices, "naive"), float("nan"))
    largest = max(rss)
    print(
        f"ratio_vs_naive={naive / tele:.2f} ratio_vs_floor={median[(first.devices, 'floor')] / tele:.3f} "
        f"p99_score_ms={score:.0f} p99_alert_ms={alert:.0f} "
        f"rss_kb_per_device={statistics.median(rss[largest]):.1f} "
        f"rss_settled_kb_per_device={statistics.median(settled[largest]):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
