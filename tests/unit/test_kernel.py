"""The compiled loop and the Python path apply a stream to the same state and the same outputs.

A simulated fleet with every planted event of the demo scenario (drift, spikes, stuck sensors,
gaps, duplicates, malformed messages), plus replays and readings astray, goes through one pipeline
with the kernel and one that applies every reading in Python, in batches of several sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules, parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.settings import load_settings
from producers.scenario import load_scenario
from producers.simulate import iter_messages
from tests.unit.test_pipeline import FakeMessage

ROOT = Path(__file__).resolve().parents[2]


def _messages() -> list[FakeMessage | ReplayMessage]:
    scenario = load_scenario(ROOT / "configs/scenarios/demo.yaml", seed=3, devices=10, duration_s=900)
    msgs: list[FakeMessage | ReplayMessage] = [
        ReplayMessage(key, value, ts, i) for i, (key, value, ts) in enumerate(iter_messages(scenario))
    ]
    replayed = msgs[1000:1200]  # re-delivered after a crash: skipped by the offset guard
    astray = [
        FakeMessage(m.value(), m.key(), 3, 10_000 + i, m.timestamp()[1])
        for i, m in enumerate(msgs[2000:2050])
    ]
    return [*msgs[:3000], *replayed, *astray, *msgs[3000:]]


def _run(
    compiled: bool, batch: int, limit: int | None = None, cohorts: Path | None = None, follow: bool = True
) -> tuple[Pipeline, list[BatchResult]]:
    """``follow``: the pair models with a trend and clipped learning; False: as configured by
    default (the level alone, flagged readings skipped), so that models stuck after a change are
    retrained and the candidates promoted (the promotion path runs too)."""
    model: dict[str, object] = {"clip_anomalies": True, "trend": 0.3} if follow else {}
    if cohorts is None:
        settings = load_settings(ROOT / "configs/monitor.yaml", model=model)
        rules = ROOT / "configs/rules.yaml"
    else:  # every scope and action; cohorts by firmware (every device) and site (some)
        settings = load_settings(ROOT / "configs/monitor.yaml", cohorts_file=str(cohorts), model=model)
        rules = ROOT / "configs/rules-governance.yaml"
    p = Pipeline(settings, load_rules(rules), trace=True, compiled=compiled)
    msgs = _messages()[:limit]
    return p, [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def _outputs(results: list[BatchResult]) -> tuple[object, ...]:
    return (
        [a.alert_id + a.status for r in results for a in r.alerts],
        [(e.kind, e.device_id, e.sensor, e.version, e.action, e.reason) for r in results for e in r.audit],
        [(v.device_id, v.sensor, v.version) for r in results for v in r.versions],
        [t for r in results for t in r.trace],
        sum(r.replayed for r in results),
        sum(r.strays for r in results),
        sum(int(r.anomalies.sum()) for r in results),
    )


@pytest.mark.parametrize(
    ("batch", "limit", "follow"), [(1, 4000, True), (97, None, False), (5000, None, True)]
)
def test_the_kernel_and_the_python_path_agree(batch: int, limit: int | None, follow: bool) -> None:
    """One message a batch over the stream's start (replays and strays included), larger
    batches over all of it; models that follow changes, and models that wait for a retrain."""
    (kp, kernel_results), (pp, python_results) = (
        _run(True, batch, limit, follow=follow),
        _run(False, batch, limit, follow=follow),
    )
    assert _outputs(kernel_results) == _outputs(python_results)
    ks, ps = (
        kp.store.export(sorted(kp.store.slots.values())),
        pp.store.export(sorted(pp.store.slots.values())),
    )
    assert ks.device_ids == ps.device_ids
    for name, arr in ks.arrays.items():
        np.testing.assert_array_equal(arr, ps.arrays[name], err_msg=name)
    assert ks.versions == ps.versions


def test_cohorts_and_every_action_agree_too(tmp_path: Path) -> None:
    cohorts = tmp_path / "cohorts.yaml"
    cohorts.write_text(
        "".join(
            f"dev-{i:04d}: {{firmware: '{1 + i % 2}.0'" + (", site: plant-a}\n" if i < 6 else "}\n")
            for i in range(10)
        )
    )
    (kp, kernel_results), (pp, python_results) = (
        _run(True, 500, None, cohorts),
        _run(False, 500, None, cohorts),
    )
    assert _outputs(kernel_results) == _outputs(python_results)
    assert set(kp.cohort_groups) == {"firmware=1.0", "firmware=2.0", "site=plant-a"}
    pairs = [(kp.fleet, pp.fleet)] + [(g, pp.cohort_groups[k]) for k, g in kp.cohort_groups.items()]
    for kg, pg in pairs:  # the pooled detectors hold the same state
        assert (kg.n, kg.since_eval, kg.anomalies, kg.score_sum, kg.adwin_hits) == (
            pg.n, pg.since_eval, pg.anomalies, pg.score_sum, pg.adwin_hits
        )  # fmt: skip
        for name in ("ref", "cur", "edges", "frac", "input_sum"):
            np.testing.assert_array_equal(getattr(kg, name), getattr(pg, name), err_msg=name)
        assert [[a.total for a in row] for row in kg.input_adwins] == [
            [a.total for a in row] for row in pg.input_adwins
        ]
    assert min(min(g.n) for g, _ in pairs) > 2500  # every group's windows filled and rolled


TOGGLING = """
rules:
  - {name: fleet_toggle, scope: fleet, when: {signal: ks_stat, op: ">", value: 0.05}, for: 1}
  - {name: cohort_toggle, scope: cohort, cohort: firmware, for: 1,
     when: {signal: ks_stat, op: ">", value: 0.1}}
  - {name: pair_toggle, scope: device, when: {signal: anomaly_rate, op: ">", value: 0}, for: 1}
"""


@pytest.mark.parametrize("batch", [97, 500])
def test_pooled_alerts_come_in_stream_order_among_the_pairs(tmp_path: Path, batch: int) -> None:
    """The pooled detectors are evaluated after the kernel's run, their alerts put back in order."""
    cohorts = tmp_path / "cohorts.yaml"
    cohorts.write_text("".join(f"dev-{i:04d}: {{firmware: '{1 + i % 2}.0'}}\n" for i in range(10)))
    settings = load_settings(ROOT / "configs/monitor.yaml", cohorts_file=str(cohorts))
    msgs, runs = _messages(), []
    for compiled in (True, False):
        p = Pipeline(settings, parse_rules(TOGGLING), compiled=compiled)
        results = [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]
        runs.append([(a.rule, a.device_id, a.alert_id, a.status) for r in results for a in r.alerts])
    assert runs[0] == runs[1]
    assert {rule for rule, *_ in runs[0]} == {"fleet_toggle", "cohort_toggle", "pair_toggle"}


def test_the_stream_exercises_every_path() -> None:
    p, results = _run(True, 500, follow=False)
    outputs = _outputs(results)
    assert outputs[4] == 200 and outputs[5] == 50  # replays skipped, strays applied
    assert any(e[0] == "promoted" for e in outputs[1]) and outputs[6] > 0  # retrains, anomalies
    assert p.ingest_state.integrity.sum() >= 0 and len(p.store) == 10


INPUTS = """
rules:
  - {name: input_toggle, scope: device, when: {signal: input_ks_stat, op: ">", value: 0.2}, for: 1}
  - {name: peer_toggle, scope: device, when: {signal: peer_psi, op: ">", value: 1.0}, for: 1}
"""


@pytest.mark.parametrize(("batch", "limit"), [(1, 30000), (97, None), (5000, None)])
def test_input_drift_agrees_between_the_paths_and_batch_sizes(batch: int, limit: int | None) -> None:
    """The input and peer signals, and the arrays behind them (the fleet's and those a snapshot
    leaves out too), whichever path applied a reading and however the stream is cut."""
    settings = load_settings(
        ROOT / "configs/monitor.yaml", inputs={"fleet_reference_size": 500, "fleet_window_size": 500}
    )
    msgs, runs = _messages()[:limit], []
    for compiled, size in ((True, batch), (False, batch), (True, 1000)):
        p = Pipeline(settings, parse_rules(INPUTS), compiled=compiled)
        results = [p.process(msgs[i : i + size]) for i in range(0, len(msgs), size)]
        alerts = [
            (a.rule, a.device_id, a.sensor, a.alert_id, a.status, a.signals)
            for r in results
            for a in r.alerts
        ]
        runs.append((alerts, p))
    (alerts, kp), (python_alerts, pp), (other_batches, _) = runs
    assert alerts == python_alerts
    assert alerts == other_batches[: len(alerts)]
    assert {rule for rule, *_ in alerts} == {"input_toggle", "peer_toggle"}
    for name in ("in_n", "in_edges", "in_ref", "in_cur", "peer_n", "peer_cur"):
        np.testing.assert_array_equal(
            kp.detect_state.arrays[name], pp.detect_state.arrays[name], err_msg=name
        )
    for k, q in zip(kp.fleet_inputs.arrays(), pp.fleet_inputs.arrays(), strict=True):
        np.testing.assert_array_equal(k, q)
