"""Drift of the inputs (monitor.detect.inputs): the binned statistics against scipy, the frozen
bins, renewal on promotion, snapshots, a gradual drift the score windows miss, a device against
its fleet, and the memory it takes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from monitor.detect import inputs, stats
from monitor.govern.alerts import Alert
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import SENSOR_INDEX
from monitor.settings import load_settings
from monitor.state.store import AXES as DEVICE_AXES
from tests.unit.test_pipeline import Stream

TEMP = SENSOR_INDEX["temperature"]

RULES = """
rules:
  - {name: input_shift, scope: device, when: {signal: input_drift, op: "==", value: 1},
     clear: {signal: input_drift, op: "==", value: 0}, for: 1}
  - {name: peer_shift, scope: device, when: {signal: peer_drift, op: "==", value: 1},
     clear: {signal: peer_drift, op: "==", value: 0}, for: 1}
  - {name: fleet_inputs, scope: fleet, when: {signal: input_adwin_drift, op: "==", value: 1}, for: 1}
  - {name: score_shift, scope: device, for: 1,
     when: {all: [{signal: ks_drift, op: "==", value: 1}, {signal: psi_drift, op: "==", value: 1}]}}
"""


def _pipeline(**input_settings: Any) -> Pipeline:
    settings = load_settings(
        None,
        inputs={"fleet_reference_size": 400, "fleet_window_size": 400} | input_settings,
        model={"warmup": 50, "retrain_window": 32},
        drift={"fleet_check_every": 50},
    )
    return Pipeline(settings, parse_rules(RULES))


def _stream(levels: list[list[float]], noise: float = 0.1, seed: int = 0) -> list[Any]:
    """Temperature readings of one device per row of ``levels`` (the mean of each reading),
    interleaved, one per second each."""
    rng, stream, out = np.random.default_rng(seed), Stream(), []
    for i in range(len(levels[0])):
        for d, row in enumerate(levels):
            out.append(stream.reading(d, i, row[i] + noise * rng.standard_normal()))
    return out


def _run(p: Pipeline, msgs: list[Any], batch: int = 500) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def _firing(results: Iterable[BatchResult], rule: str) -> list[Alert]:
    return [a for r in results for a in r.alerts if a.rule == rule and a.status == "firing"]


# --- the binned statistics ------------------------------------------------------------------------


def _counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_ks_and_psi_equal_scipy_when_every_value_has_its_own_bin(seed: int) -> None:
    """Integers 0..9 and edges between them: the binned statistic is the exact one."""
    rng = np.random.default_rng(seed)
    ref, cur = rng.integers(0, 10, 96), rng.integers(0, 10, 96) + (seed == 2)
    edges = np.arange(9) + 0.5
    d, psi = inputs._compare(_counts(ref, edges), 96, _counts(cur, edges), 96)
    exact = sps.ks_2samp(ref, cur, method="asymp")
    assert d == pytest.approx(exact.statistic, rel=1e-12)
    assert stats.ks_pvalue(d, 96, 96) == pytest.approx(exact.pvalue, rel=1e-9)
    fractions = stats.bin_fractions(
        edges[None, :].astype(np.float64), np.vstack([ref, cur]).astype(float)[:1]
    )
    cur_frac = stats.bin_fractions(edges[None, :].astype(np.float64), cur[None, :].astype(float))
    assert psi == pytest.approx(float(stats.psi(fractions, cur_frac)[0]), rel=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_binned_ks_is_a_lower_bound_of_the_exact_statistic(shift: float) -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(size=200), rng.normal(shift, size=100)
    edges = np.quantile(ref, np.arange(1, 10) / 10)
    d, _ = inputs._compare(_counts(ref, edges), 200, _counts(cur, edges), 100)
    exact = sps.ks_2samp(ref, cur).statistic
    assert d <= exact
    assert d >= exact - 0.1 - 1e-12 if shift else True  # deciles: at most a bin's mass below it


@pytest.mark.parametrize("x", [0.0, 0.05, 0.3, 0.5, 0.8, 0.99, 1.0, 1.2, 1.8, 2.5, 4.0, 7.0])
def test_the_peer_p_value_is_scipy_s_kolmogorov(x: float) -> None:
    assert inputs.kolmogorov(x) == pytest.approx(float(special.kolmogorov(x)), rel=1e-9, abs=1e-15)


def test_frozen_edges_are_the_quantiles_of_the_reference() -> None:
    values = np.random.default_rng(1).normal(20, 3, 96).astype(np.float32).astype(np.float64)
    edges = np.zeros(9, np.float32)
    inputs._freeze(values, edges)
    np.testing.assert_allclose(edges, np.quantile(values, np.arange(1, 10) / 10), rtol=1e-6)
    tied = np.array([1.0] * 90 + [2.0] * 6)
    inputs._freeze(tied, edges)
    assert (np.diff(edges) >= 0).all() and edges[0] == 1.0  # duplicate edges: empty bins


def test_a_value_on_an_edge_falls_in_the_lower_bin() -> None:
    edges = np.array([1.0, 2.0, 2.0, 3.0], np.float32)
    assert [inputs._bin(edges, np.float32(v)) for v in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 9.0)] == [
        0, 0, 1, 1, 3, 3, 4,
    ]  # fmt: skip


# --- the pipeline ---------------------------------------------------------------------------------


def _shift(p: Pipeline, slot: int = 0) -> tuple[inputs.Shift | None, inputs.Shift | None]:
    out = inputs.new_out()
    inputs.measure(slot, TEMP, p._inputs, p._input_arrays(), out)
    return inputs.compare(out, ("value",), p.settings.inputs)


def test_the_signals_are_those_of_the_records() -> None:
    """The pipeline's shortcut gives the signals the per-axis records give."""
    p = _pipeline()
    levels = [[21.0] * 300 + [21.0 + 0.01 * i for i in range(300)], [21.0] * 600, [21.05] * 600]
    _run(p, _stream(levels))
    out = inputs.new_out()
    for slot in range(3):
        inputs.measure(slot, TEMP, p._inputs, p._input_arrays(), out)
        shift, peer = inputs.compare(out, ("value",), p.settings.inputs)
        assert shift is not None and peer is not None
        assert inputs.signals(out, p.settings.inputs) == shift.signals("input") | peer.signals("peer")
    accel = SENSOR_INDEX["accelerometer"]
    inputs.measure(0, accel, p._inputs, p._input_arrays(), out)
    assert inputs.signals(out, p.settings.inputs) == {}  # no accelerometer readings


def test_the_windows_fill_in_order_and_compare_once_full() -> None:
    p, msgs = _pipeline(), _stream([[21.0] * 300])
    _run(p, msgs[: 50 + 96 + 95])  # warm-up, reference, all but one of the current window
    assert int(p.detect_state.in_n[0, TEMP]) == 96 + 95
    assert _shift(p)[0] is None
    _run(p, msgs[50 + 96 + 95 : 50 + 96 + 96])
    shift, _ = _shift(p)
    assert shift is not None and shift.worst.axis == "value"
    assert shift.worst.ks_pvalue > 1e-3 and not shift.signals("input")["input_drift"]


def test_a_gradual_drift_of_the_inputs_is_caught_where_the_scores_stay_calibrated() -> None:
    """The pair model follows a ramp of 0.01 noise std per reading (its level memory is ~20
    readings): its scores stay calibrated, so KS and PSI on the scores stay quiet; the inputs
    leave their reference's range and the input detector fires."""
    n = 1200
    ramp = [21.0 + 0.001 * max(0, i - 400) for i in range(n)]
    p = _pipeline()
    results = _run(p, _stream([ramp]))
    assert not _firing(results, "score_shift")
    fired = _firing(results, "input_shift")
    assert fired and fired[0].ts < 1_700_000_000_000 + 800 * 1000  # within 400 s of the ramp's start
    assert fired[0].signals["input_psi"] > 0.5


def test_a_promotion_renews_the_input_reference() -> None:
    p = _pipeline()
    _run(p, _stream([[21.0] * 400 + [23.0] * 400]))
    shift, _ = _shift(p)
    assert shift is not None and shift.signals("input")["input_drift"] == 1.0
    model = p.detect_state.model_of(0, TEMP)
    assert model is not None and p.install("dev-0", "temperature", model, 2)  # as a promotion does
    assert int(p.detect_state.in_n[0, TEMP]) == 0 and _shift(p)[0] is None
    stream = _stream([[23.0] * 1200], seed=3)[800:]  # seq 800.. : after the readings applied
    _run(p, stream)
    shift, _ = _shift(p)
    assert shift is not None and shift.signals("input")["input_drift"] == 0.0
    assert shift.worst.ks_pvalue > 1e-3


def test_a_device_offset_from_its_fleet_is_a_peer_drift_and_only_it() -> None:
    levels = [[21.0] * 700 for _ in range(8)]
    levels[5] = [21.5] * 700  # five noise std above its peers, all along: no input drift
    p = _pipeline()
    results = _run(p, _stream(levels))
    assert {a.device_id for a in _firing(results, "peer_shift")} == {"dev-5"}
    assert not _firing(results, "input_shift")
    slot = p.store.slots["dev-5"]
    _, peer = _shift(p, slot)
    assert peer is not None and peer.worst.ks_stat > 0.6, peer  # binned: at most 7/8 here


def test_a_fleet_wide_drift_of_the_inputs_moves_the_fleet_s_adwin_on_interval_means() -> None:
    """Every device's temperature ramps from reading 600 on: the means of the fleet's inputs per
    evaluation interval (100 readings) move, and its ADWIN says so; before, nothing fires."""
    ramp = [21.0 + 0.002 * max(0, i - 600) for i in range(1200)]
    p = _pipeline()
    results = _run(p, _stream([ramp] * 8))
    fired = _firing(results, "fleet_inputs")
    assert fired and all(a.ts > 1_700_000_000_000 + 600 * 1000 for a in fired)
    assert fired[0].signals["input_adwin_detections"] >= 1
    assert {a.sensor for a in fired} == {"temperature"}
    p = _pipeline()
    assert not _firing(_run(p, _stream([[21.0] * 1200] * 8)), "fleet_inputs")  # a steady fleet


def test_input_drift_can_be_turned_off() -> None:
    p = _pipeline(enabled=False)
    assert p.detect_state.in_edges.shape[1] == 0
    results = _run(p, _stream([[21.0] * 400 + [23.0] * 400]))
    assert not _firing(results, "input_shift") and not _firing(results, "fleet_inputs")
    assert int(p.fleet_inputs.n.sum()) == 0 and not p.fleet.axes


def test_a_snapshot_carries_the_input_state_and_an_older_one_loads_it_empty() -> None:
    p = _pipeline()
    _run(p, _stream([[21.0] * 400]))
    state = p.export_partition(0)
    assert {"in_n", "in_edges", "in_ref", "in_cur"} <= set(state.devices.arrays)
    assert not {"peer_n", "peer_cur"} & set(state.devices.arrays)  # in this process' fleet bins
    q = _pipeline()
    assert q.mismatch(state) is None
    q.import_partition(state)
    for name in ("in_n", "in_edges", "in_ref", "in_cur"):
        np.testing.assert_array_equal(q.detect_state.arrays[name][0], p.detect_state.arrays[name][0])
    for name in ("in_n", "in_edges", "in_ref", "in_cur"):  # a snapshot from before input drift
        del state.devices.arrays[name]
    r = _pipeline()
    assert r.mismatch(state) is None
    r.import_partition(state)
    assert int(r.detect_state.in_n[0].sum()) == 0  # the reference starts again


def test_the_input_state_takes_about_2_5_kb_per_device() -> None:
    p = _pipeline()
    columns, det = inputs.columns(p.settings.inputs), p.detect_state
    per_device = sum(
        int(np.prod(det.shape(shape))) * np.dtype(dtype).itemsize for shape, dtype, _ in columns.values()
    )
    # per axis (12): edges, reference counts, its ring, the fleet-bins ring (two a byte); per sensor
    # (6): two counters
    assert per_device == 12 * (9 * 4 + 10 * 2 + 96 + 48) + 6 * 2 * 8 == 2496
    assert p.store.array_bytes_per_device() <= 16 * 1024


def test_the_fleet_bins_ring_keeps_two_bin_indices_a_byte_up_to_16_bins() -> None:
    ring = np.zeros(3, np.uint8)
    for i, b in enumerate([15, 0, 7, 9, 1]):
        inputs._put(ring, i, b, True)
    assert ring.tolist() == [15, 7 + 16 * 9, 1]
    inputs._put(ring, 0, 3, True)  # a place is overwritten, its neighbour kept
    assert ring.tolist() == [3, 7 + 16 * 9, 1]
    assert inputs._counts(ring, 16, 5, True).tolist() == [1, 1, 0, 1, 0, 0, 0, 1, 0, 1, *[0] * 6]
    wide = load_settings(None, inputs={"bins": 17})
    assert inputs.columns(wide.inputs)["peer_cur"][0] == (DEVICE_AXES, 96)
