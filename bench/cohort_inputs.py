"""The cohorts' input comparison (``cohort_input_*``) on the simulator: how often it holds on a clean
fleet, how soon it catches a cohort-wide calibration offset, and what it costs.

    .venv/bin/python -m bench.cohort_inputs --devices 40 --seconds 1800 --cohorts 4 --offset 5

The clean fleet of ``configs/scenarios/clean.yaml`` (its seed), its devices labelled ``firmware``
1.0, 2.0, ... in turn, with ``configs/monitor.yaml`` and one cohort rule,
``cohort_input_drift == 1`` (``for: 1``). Then the same fleet with firmware 1.0's ``--sensor``
(temperature) offset by ``--offset`` from half-time on (``calibration_offset`` on each of its
devices). Prints, per sensor, the cohort comparisons made and those where the cohort drifted, the
rule's firings, how long after the offset the rule first fired on firmware 1.0's sensor, and the
CPU time of the comparisons (per comparison, and per reading with the ring's upkeep).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.detect.cohortinputs import CohortInputs
from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import parse_rules
from monitor.pipeline import Pipeline
from monitor.settings import load_settings
from producers.scenario import Scenario, load_scenario
from producers.simulate import iter_messages

ROOT = Path(__file__).resolve().parents[1]
RULES = """
rules:
  - {name: cohort_inputs, scope: cohort, cohort: firmware, for: 1,
     when: {signal: cohort_input_drift, op: "==", value: 1}}
"""


class Timed:
    """The comparisons made, by sensor (and those that drifted), and the CPU time in them and in
    the ring's upkeep."""

    def __init__(self, target: CohortInputs, names: tuple[str, ...]) -> None:
        self.names = names
        self.made: Counter[str] = Counter()
        self.drifted: Counter[tuple[str, str]] = Counter()  # (sensor, cohort)
        self.compare_s = self.push_s = self.total_s = 0.0
        target.compare = self._compare(target.compare)  # type: ignore[method-assign]
        target.push = self._push(target.push)  # type: ignore[method-assign]

    def _compare(self, compare: Callable[..., Any]) -> Callable[..., Any]:
        def timed(s: int, key: str, axes: tuple[str, ...]) -> Any:
            began = time.process_time()
            shift = compare(s, key, axes)
            self.compare_s += time.process_time() - began
            if shift is not None:
                self.made[self.names[s]] += 1
                self.drifted[(self.names[s], key)] += any(a.drifted for a in shift.axes)
            return shift

        return timed

    def _push(self, push: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            began = time.process_time()
            push(*args)
            self.push_s += time.process_time() - began

        return timed


def run(scenario: Scenario, cohorts: Path, batch: int) -> tuple[Pipeline, Timed, list[Any], int]:
    settings = load_settings(ROOT / "configs/monitor.yaml", cohorts_file=str(cohorts))
    pipeline = Pipeline(settings, parse_rules(RULES))
    assert pipeline.cohort_inputs is not None
    timed = Timed(pipeline.cohort_inputs, pipeline.catalog.names)
    msgs = [ReplayMessage(k, v, ts, i) for i, (k, v, ts) in enumerate(iter_messages(scenario))]
    alerts = []
    began = time.process_time()
    for i in range(0, len(msgs), batch):
        alerts += [a for a in pipeline.process(msgs[i : i + batch]).alerts if a.status == "firing"]
    timed.total_s = time.process_time() - began
    return pipeline, timed, alerts, len(msgs)


def report(title: str, timed: Timed, alerts: list[Any], readings: int) -> None:
    print(f"{title}: {readings:,} readings")
    for name in timed.names:
        fired = sum(a.sensor == name for a in alerts)
        drifted = {key: n for (sensor, key), n in sorted(timed.drifted.items()) if sensor == name and n}
        where = f" ({', '.join(f'{k}: {n}' for k, n in drifted.items())})" if drifted else ""
        made, n = timed.made[name], sum(drifted.values())
        print(f"  {name:<14} {made:>6} comparisons, {n:>5} drifted{where}, {fired} firings")
    made = sum(timed.made.values())
    each = timed.compare_s / made * 1e6 if made else 0.0
    per_reading = (timed.compare_s + timed.push_s) / readings * 1e6
    total = timed.total_s / readings * 1e6
    print(
        f"  CPU: {each:.0f} us per comparison; {per_reading:.3f} us per reading with the ring's upkeep, "
        f"of {total:.2f} us per reading for the whole pipeline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=1800)
    parser.add_argument("--cohorts", type=int, default=4, help="firmware versions, given in turn")
    parser.add_argument("--sensor", default="temperature", help="the sensor firmware 1.0's offset is on")
    parser.add_argument("--offset", type=float, default=5.0, help="added to its values (every axis)")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    clean = load_scenario(
        ROOT / "configs/scenarios/clean.yaml", devices=args.devices, duration_s=args.seconds
    )
    firmware = [
        f"{clean.device_id(d)}: {{firmware: '{1 + d % args.cohorts}.0'}}\n" for d in range(args.devices)
    ]
    start = args.seconds // 2
    event = {"kind": "calibration_offset", "sensor": args.sensor, "start_s": start, "magnitude": args.offset}
    offset = [event | {"device": d} for d in range(0, args.devices, args.cohorts)]
    with tempfile.TemporaryDirectory() as folder:
        cohorts = Path(folder) / "cohorts.yaml"
        cohorts.write_text("".join(firmware))
        _, timed, alerts, n = run(clean, cohorts, args.batch_size)
        report(f"clean fleet, {args.devices} devices, {args.cohorts} firmware cohorts", timed, alerts, n)
        shifted = Scenario.model_validate(clean.model_dump() | {"events": offset})
        _, timed, alerts, n = run(shifted, cohorts, args.batch_size)
    report(f"firmware 1.0's {args.sensor} {args.offset:+} from {start} s", timed, alerts, n)
    at = clean.start_ts + start * 1000
    after = [(a.ts - at) / 1000 for a in alerts if (a.device_id, a.sensor) == ("firmware=1.0", args.sensor)]
    after = [t for t in after if t >= 0]
    print(
        f"  first firing on firmware 1.0's {args.sensor}: {after[0]:.0f} s after the offset"
        if after
        else f"  no firing on firmware 1.0's {args.sensor} after the offset"
    )


if __name__ == "__main__":
    main()
