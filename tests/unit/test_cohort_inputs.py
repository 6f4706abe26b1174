"""A cohort's inputs against the rest of the fleet's (monitor.detect.cohortinputs): the binned
statistics, the clustered effective size, a shifted cohort flagged and a clean one not, devices
that differ among themselves not taken for a cohort that differs, batch-size independence, the
rule signals, the metric, and what a restart keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor import schema
from monitor.detect import cohortinputs, inputs
from monitor.errors import ConfigError, RulesError
from monitor.govern.alerts import Alert
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import SENSOR_INDEX
from monitor.serve.metrics import Metrics
from monitor.settings import load_settings
from tests.unit.test_pipeline import FakeMessage, Stream

TEMP = SENSOR_INDEX["temperature"]
T0 = 1_700_000_000_000
RULES = """
rules:
  - {name: cohort_inputs, scope: cohort, cohort: firmware, for: 1,
     when: {signal: cohort_input_drift, op: "==", value: 1},
     clear: {signal: cohort_input_drift, op: "==", value: 0}}
"""
#: Sixteen devices: firmware 1.0 (dev-0..3), 2.0 (dev-4..7), the others unlabelled.
FIRMWARE = "".join(f"dev-{d}: {{firmware: '{1 + d // 4}.0'}}\n" for d in range(8))


def _pipeline(
    tmp_path: Path, cohorts: str = FIRMWARE, rules: str = RULES, room: int = 0, **inputs_: Any
) -> Pipeline:
    path = tmp_path / "cohorts.yaml"
    path.write_text(cohorts)
    settings = load_settings(
        None,
        cohorts_file=str(path),
        inputs={"fleet_reference_size": 400, "fleet_window_size": 400, "cohort_min_inputs": 50} | inputs_,
        model={"warmup": 50},
        drift={"fleet_check_every": 50},
        channels={"auto_register": room},
    )
    return Pipeline(settings, parse_rules(rules))


def _stream(levels: list[list[float]], noise: float = 0.1, seed: int = 0) -> list[FakeMessage]:
    """Temperature readings of one device per row of ``levels`` (each reading's mean), interleaved,
    one a second each."""
    rng, stream, out = np.random.default_rng(seed), Stream(), []
    for i in range(len(levels[0])):
        for d, row in enumerate(levels):
            out.append(stream.reading(d, i, row[i] + noise * rng.standard_normal()))
    return out


def _run(p: Pipeline, msgs: list[FakeMessage], batch: int = 500) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def _firing(results: list[BatchResult]) -> list[Alert]:
    return [a for r in results for a in r.alerts if a.status == "firing"]


# --- the statistics -------------------------------------------------------------------------------


def test_the_binned_statistics_are_those_of_a_pair_against_its_fleet() -> None:
    """Per axis, the cohort against the rest is :func:`inputs._compare` of their counts."""
    rng = np.random.default_rng(3)
    bins = rng.integers(0, 10, (3, 400)).astype(np.uint8)
    bins[1, :80] = 9  # the cohort's second axis sits high
    member = np.arange(400) < 80
    out = cohortinputs.split(bins, np.arange(400, dtype=np.int32), member, 10)
    for j in range(3):
        rest = np.bincount(bins[j, ~member], minlength=10)
        cohort = np.bincount(bins[j, member], minlength=10)
        expected = inputs._compare(rest, 320, cohort, 80)
        assert (out[j, cohortinputs.KS], out[j, cohortinputs.PSI]) == pytest.approx(expected, rel=1e-12)
    assert out[1, cohortinputs.KS] > 0.8 and out[1, cohortinputs.PSI] > 5 and out[0, cohortinputs.KS] < 0.2
    # One input per device: the sizes are the counts, the p-value Kolmogorov's for them.
    assert out[0, cohortinputs.COHORT_SIZE] == 80 and out[0, cohortinputs.REST_SIZE] == 320
    scaled = np.sqrt(80 * 320 / 400) * out[:, cohortinputs.KS]
    assert out[:, cohortinputs.PVALUE].tolist() == [inputs.kolmogorov(x) for x in scaled]


def _sizes(values: np.ndarray, devices: np.ndarray, member: np.ndarray) -> tuple[float, float]:
    out = cohortinputs.split(values.astype(np.uint8)[None, :], devices.astype(np.int32), member, 10)
    return float(out[0, cohortinputs.COHORT_SIZE]), float(out[0, cohortinputs.REST_SIZE])


def test_the_effective_size_counts_alike_devices_in_full_and_devices_apart_once() -> None:
    """Eight devices of 50 inputs each on either side: alike in the cohort, each at its own level
    in the rest."""
    rng = np.random.default_rng(4)
    devices = np.repeat(np.arange(16), 50)
    member = devices < 8
    alike = rng.integers(0, 10, 400)
    apart = np.clip(np.repeat(rng.integers(0, 10, 8), 50) + rng.integers(-1, 2, 400), 0, 9)
    values = np.concatenate([alike, apart])
    cohort, rest = _sizes(values, devices, member)
    assert cohort == pytest.approx(400, rel=0.15) and rest == pytest.approx(8, rel=0.15)
    assert _sizes(values, np.zeros(800), member) == (1.0, 1.0)  # one device a side: one input's worth
    assert _sizes(values, np.arange(800), member) == (400.0, 400.0)  # one input per device: all
    reused = np.where(member, 0, 0)  # one slot on both sides (reused in the window): two devices
    assert _sizes(values, reused, member) == (1.0, 1.0)


# --- the pipeline ---------------------------------------------------------------------------------


def _levels(shift_at: int = 600, n: int = 1200) -> list[list[float]]:
    """Sixteen devices at 21 degC; firmware 1.0's four rise by 0.5 (five noise std) at ``shift_at``."""
    rows = [[21.0] * n for _ in range(16)]
    for d in range(4):
        rows[d] = [21.0 + 0.5 * (i >= shift_at) for i in range(n)]
    return rows


def test_a_shifted_cohort_is_flagged_against_the_rest_and_a_clean_one_is_not(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    results = _run(p, _stream(_levels()))
    fired = _firing(results)
    assert {(a.rule, a.device_id, a.sensor) for a in fired} == {
        ("cohort_inputs", "firmware=1.0", "temperature")
    }
    assert fired[0].ts > T0 + 600 * 1000  # after the shift, not before
    assert fired[0].ts < T0 + 700 * 1000  # within a window (400 inputs: 25 s of 16 devices)
    assert fired[0].signals["cohort_input_psi"] > 0.5 and fired[0].signals["cohort_input_ks_pvalue"] < 1e-6
    assert p.cohort_inputs is not None
    shifted = p.cohort_inputs.compare(TEMP, "firmware=1.0", ("value",))
    assert shifted is not None and shifted.worst.ks_stat > 0.8 and shifted.worst.psi > 5  # the whole window
    clean = p.cohort_inputs.compare(TEMP, "firmware=2.0", ("value",))
    assert clean is not None and not clean.worst.drifted
    assert clean.worst.ks_pvalue > 1e-3  # the rest holds the shifted four, but differs among itself
    counted = sum(r.drift[("cohort_input", "cohort", "temperature")] for r in results)
    assert counted >= 1


def test_devices_that_differ_among_themselves_are_no_cohort_that_differs(tmp_path: Path) -> None:
    """Each device sits at its own level (offsets of 3 noise std): a cohort of four of them differs
    from the rest by the draw of its devices (here 0.4 higher on average, about 2.5 standard errors
    of a mean of four such devices). Counted as 100 and 300 independent inputs, its KS p-value
    would be far below ``ks_alpha``; counted as what four and twelve devices are worth, it is not."""
    offsets = np.random.default_rng(9).normal(0, 0.3, 16)
    offsets[:4] += 0.6
    levels = [[21.0 + float(o)] * 900 for o in offsets]
    p = _pipeline(tmp_path)
    assert not _firing(_run(p, _stream(levels)))
    assert p.cohort_inputs is not None
    shift = p.cohort_inputs.compare(TEMP, "firmware=1.0", ("value",))
    assert shift is not None and shift.worst.psi > 0.5  # a real difference of the samples...
    naive = inputs.kolmogorov(np.sqrt(100 * 300 / 400) * shift.worst.ks_stat)
    assert naive < 1e-6 < shift.worst.ks_pvalue  # ... not evidence of a cohort that differs


@pytest.mark.parametrize(("batch", "limit"), [(1, 11_000), (97, None)])
def test_the_comparison_does_not_depend_on_the_batch_size_or_the_path(
    tmp_path: Path, batch: int, limit: int | None
) -> None:
    msgs = _stream(_levels(shift_at=600, n=800))[:limit]
    runs = []
    for compiled, size in ((True, batch), (False, batch), (True, 1000)):
        p = _pipeline(tmp_path)
        p.compiled = compiled
        results = _run(p, msgs, size)
        alerts = [(a.alert_id, a.status, sorted(a.signals.items())) for r in results for a in r.alerts]
        runs.append((alerts, p))
    (alerts, kp), (python_alerts, pp), (other, op) = runs
    assert alerts and alerts == python_alerts == other
    for q in (pp, op):
        assert kp.cohort_inputs is not None and q.cohort_inputs is not None
        for name in ("n", "bins", "slot", "codes"):
            np.testing.assert_array_equal(getattr(kp.cohort_inputs, name), getattr(q.cohort_inputs, name))


# --- rules, metrics, settings, state --------------------------------------------------------------


def test_the_signals_belong_to_cohort_scope_only() -> None:
    for scope in ("device", "fleet"):
        with pytest.raises(RulesError, match="unknown signal 'cohort_input_drift' for scope"):
            parse_rules(RULES.replace("scope: cohort, cohort: firmware", f"scope: {scope}"))
    assert parse_rules(RULES).rules[0].when.signal_names() == {"cohort_input_drift"}


def test_the_metric_has_a_child_per_cohort_and_sensor_evaluated(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    results = _run(p, _stream(_levels(n=800)))
    registry = CollectorRegistry()
    metrics = Metrics(registry, {"cohort_inputs": "warning"}, p.catalog.names)
    for r in results:
        metrics.record_batch(r, np.zeros((len(p.catalog), 5), np.int64), 0.01)
    labels = {"cohort": "firmware=1.0", "sensor": "temperature"}
    assert registry.get_sample_value("telemon_cohort_input_ks_statistic", labels) > 0.8
    psi = registry.get_sample_value("telemon_cohort_input_psi", labels)
    assert (
        psi is not None
        and 0
        < registry.get_sample_value("telemon_cohort_input_psi", labels | {"cohort": "firmware=2.0"})
        < psi
    )
    counter = {"detector": "cohort_input", "scope": "cohort", "sensor": "temperature"}
    assert registry.get_sample_value("telemon_drift_detections_total", counter) >= 1
    assert registry.get_sample_value("telemon_drift_detections_total", counter | {"sensor": "humidity"}) == 0


def test_the_comparison_runs_for_the_labels_of_cohort_rules_that_read_it(tmp_path: Path) -> None:
    """Rules on other signals cost nothing; the evaluations of a label no rule compares carry no
    cohort_input_* signal."""
    other = "  - {name: by_site, scope: cohort, cohort: site, for: 1,\n"
    other += "     when: {signal: readings, op: '>', value: 0}}\n"
    assert _pipeline(tmp_path, rules="rules:\n" + other).cohort_inputs is None
    off = _pipeline(tmp_path, enabled=False)
    assert off.cohort_inputs is None
    assert not [a for r in _run(off, _stream(_levels(n=700))) for a in r.alerts]  # evaluated, quiet
    labels = "".join(f"dev-{d}: {{firmware: '{1 + d // 4}.0', site: s{d % 2}}}\n" for d in range(16))
    p = _pipeline(tmp_path, labels, RULES + other)
    alerts = [a for r in _run(p, _stream(_levels(n=700))) for a in r.alerts]
    assert {a.device_id for a in alerts if a.rule == "by_site"} == {"site=s0", "site=s1"}
    assert not [a for a in alerts if a.rule == "by_site" and "cohort_input_psi" in a.signals]
    assert [a for a in alerts if a.rule == "cohort_inputs" and "cohort_input_psi" in a.signals]
    with pytest.raises(ConfigError, match=r"inputs\.cohort_min_inputs: 201 leaves no room .* at most half"):
        _pipeline(tmp_path, cohort_min_inputs=201)


def test_the_ring_is_this_process_s_and_refills_after_a_restart(tmp_path: Path) -> None:
    """As the fleet's side of the input windows: a snapshot does not hold it; a restored process
    compares again once the peer bins are frozen and the window is full."""
    msgs = _stream(_levels(shift_at=0, n=700))
    p = _pipeline(tmp_path)
    _run(p, msgs[:8000])
    q = _pipeline(tmp_path)
    for partition in (0, 1):
        q.import_partition(p.export_partition(partition))
    assert q.cohort_inputs is not None and int(q.cohort_inputs.n.sum()) == 0
    fired = _firing(_run(q, msgs[8000:]))
    assert [a.device_id for a in fired] == ["firmware=1.0"]
    assert fired[0].ts > T0 + (8000 // 16 + 50) * 1000  # after the bins and a window anew


def _co2_and_temperature(levels: list[list[float]], seed: int = 0) -> list[FakeMessage]:
    """Per step and device of ``levels``: a reading of ``co2`` (a channel nobody declares, at the
    row's level) and a clean temperature at 21 degC."""
    rng, stream, out = np.random.default_rng(seed), Stream(), []
    for i in range(len(levels[0])):
        for d, row in enumerate(levels):
            dev, ts = f"dev-{d}", T0 + i * 1000
            co2 = round(row[i] + 0.1 * rng.standard_normal(), 4)
            temperature = round(21.0 + 0.1 * rng.standard_normal(), 4)
            for raw in (
                schema.encode_reading(dev, "co2", ts, 2 * i, {"value": co2}, "ppm"),
                schema.encode_reading(dev, "temperature", ts, 2 * i + 1, {"value": temperature}),
            ):
                out.append(stream.message(raw, dev.encode(), d % 2, ts))
    return out


def test_a_channel_registered_on_its_first_reading_is_compared_like_a_declared_one(tmp_path: Path) -> None:
    """``co2``, registered at a spare index (its rows where the fleet's peer bins keep them, three
    wide), is compared once registered: the shifted cohort flagged on it, the clean temperature
    beside it not; both paths and batch sizes keep the same ring."""
    msgs = _co2_and_temperature(_levels(shift_at=500, n=900))
    p = _pipeline(tmp_path, room=2)
    assert p.cohort_inputs is not None and p.cohort_inputs.bins.shape[0] == p.catalog.dims == 18
    fired = _firing(_run(p, msgs))
    co2 = p.catalog.index["co2"]
    assert {(a.rule, a.device_id, a.sensor) for a in fired} == {("cohort_inputs", "firmware=1.0", "co2")}
    assert fired[0].ts > T0 + 500 * 1000
    assert p.cohort_inputs.keys.tolist() == [3, 3, 3, 1, 1, 1, 1, 0] and p.cohort_inputs.offsets[co2] == 12
    shifted = p.cohort_inputs.compare(co2, "firmware=1.0", ("value",))
    assert shifted is not None and shifted.worst.drifted
    clean = p.cohort_inputs.compare(TEMP, "firmware=1.0", ("value",))
    assert clean is not None and not clean.worst.drifted
    rings = []
    for compiled, batch in ((True, 97), (False, 500)):
        q = _pipeline(tmp_path, room=2)
        q.compiled = compiled
        _run(q, msgs[:16_000], batch)
        assert q.cohort_inputs is not None
        rings.append([getattr(q.cohort_inputs, n) for n in ("n", "bins", "slot", "codes")])
    for a, b in zip(*rings, strict=True):
        np.testing.assert_array_equal(a, b)
