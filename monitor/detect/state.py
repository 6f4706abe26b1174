"""The detect stage's per-pair state: the pair's model, score windows, PSI bins, interval counts,
novelty state, input-drift state (:mod:`monitor.detect.inputs`), and the pair's ADWIN (two rows,
:mod:`monitor.detect.adwin`).

The model of a pair is two rows of the slab, so that the batch kernel updates it in place:
``model`` = ``[n, mean x 3, var x 3]`` (scalar sensors use the first of each three) and
``model_params`` = ``[k, fading, var_fading, resolution]`` (``k`` = 0: no model yet).
:meth:`DetectState.model` and :meth:`DetectState.set_model` convert from and to the River-API
:class:`~monitor.detect.model.AdaptiveGaussian` that training, shadowing and the registry use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from monitor.detect import adwin, inputs
from monitor.detect.model import AdaptiveGaussian
from monitor.errors import ConversionError
from monitor.settings import DriftSettings
from monitor.state.store import Columns, DeviceStates, Slab


class DetectState(Slab):
    """Arrays per pair."""

    model: NDArray[np.float64]
    model_params: NDArray[np.float64]
    n_scored: NDArray[np.int64]
    since_eval: NDArray[np.int32]
    anomalies: NDArray[np.int32]
    streak: NDArray[np.int32]  # consecutive anomalous readings, up to the latest
    adwin_hits: NDArray[np.int32]
    score_sum: NDArray[np.float32]
    score_count: NDArray[np.int32]
    ref: NDArray[np.uint16]  # scores quantised to 1/65535 (see drift.quantise)
    cur: NDArray[np.uint16]
    edges: NDArray[np.float64]  # float64: a score on an edge must bin the same way every time
    ref_frac: NDArray[np.float32]
    novelty: NDArray[np.float64]  # the novelty stage's per-pair state (monitor.detect.novelty)
    adwin_sums: NDArray[np.float64]  # the pair's ADWIN (monitor.detect.adwin)
    adwin_counts: NDArray[np.uint8]
    # Input drift (monitor.detect.inputs): per pair, and per axis of the device.
    in_n: NDArray[np.int64]
    in_edges: NDArray[np.float32]
    in_ref: NDArray[np.uint16]
    in_cur: NDArray[np.uint8]
    peer_n: NDArray[np.int64]
    peer_cur: NDArray[np.uint8]
    local = inputs.LOCAL

    def __init__(
        self,
        n_sensors: int,
        settings: DriftSettings,
        novelty_size: int = 0,
        input_columns: Columns | None = None,
    ) -> None:
        self.settings = settings
        self.novelty_size = novelty_size  # floats of novelty-stage state per pair (0: the stage is off)
        # inputs.columns(...) of the deployment (default: input drift off, one counter per pair)
        self.input_columns = input_columns or {"in_n": ((n_sensors,), np.int64, 0)}
        super().__init__(n_sensors)

    def columns(self) -> Columns:
        d, p = self.settings, (self.n_sensors,)
        return {
            "model": ((*p, 7), np.float64, 0),
            "model_params": ((*p, 4), np.float64, 0),
            "n_scored": (p, np.int64, 0),
            "since_eval": (p, np.int32, 0),
            "anomalies": (p, np.int32, 0),
            "streak": (p, np.int32, 0),
            "adwin_hits": (p, np.int32, 0),
            "score_sum": (p, np.float32, 0),
            "score_count": (p, np.int32, 0),
            "ref": ((*p, d.reference_size), np.uint16, 0),
            "cur": ((*p, d.window_size), np.uint16, 0),
            "edges": ((*p, d.psi_bins - 1), np.float64, 0),
            "ref_frac": ((*p, d.psi_bins), np.float32, 0),
            "novelty": ((*p, self.novelty_size), np.float64, 0),
            "adwin_sums": ((*p, adwin.SUMS), np.float64, 0),
            "adwin_counts": ((*p, adwin.COUNTS), np.uint8, 0),
            **self.input_columns,
        }

    def load_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        """Objects of snapshots from before models and ADWINs were slab rows: converted."""
        for j, slot in enumerate(slots):
            for s, m in enumerate(states.models[j] if states.models else ()):
                if m is not None:
                    self.set_model(slot, s, m)
            for s, a in enumerate(states.adwins[j] if states.adwins else ()):
                if a is not None:
                    adwin.from_river(a, self.adwin_sums[slot, s], self.adwin_counts[slot, s])

    def mismatch(self, states: DeviceStates) -> str | None:
        """Also: a River ADWIN of an older snapshot that :func:`monitor.detect.adwin.from_river`
        cannot convert."""
        why = super().mismatch(states)
        if why is not None or not states.adwins:
            return why
        sums, counts = np.zeros(adwin.SUMS, np.float64), np.zeros(adwin.COUNTS, np.uint8)
        try:
            for row in states.adwins:
                for a in row:
                    if a is not None:
                        adwin.from_river(a, sums, counts)
        except (ConversionError, AttributeError, TypeError) as exc:
            return f"a River ADWIN it holds cannot be converted ({exc})"
        return None

    def has_model(self, slot: int, s: int) -> bool:
        return bool(self.model_params[slot, s, 0])

    def model_of(self, slot: int, s: int) -> AdaptiveGaussian | None:
        """A copy of the pair's model (None before its first reading)."""
        k, fading, var_fading, resolution = self.model_params[slot, s].tolist()
        if not k:
            return None
        row, k = self.model[slot, s], int(k)
        m = AdaptiveGaussian(k, fading, var_fading, resolution)
        m.set_state([float(row[0]), *row[1 : 1 + k].tolist(), *row[4 : 4 + k].tolist()])
        return m

    def set_model(self, slot: int, s: int, m: AdaptiveGaussian) -> None:
        """Serve (a copy of) ``m`` for the pair."""
        k, state = m.n_features, m.state()
        self.model_params[slot, s] = (k, m.fading, m.var_fading, m.resolution)
        row = self.model[slot, s]
        row[:] = 0
        row[0] = state[0]
        row[1 : 1 + k] = state[1 : 1 + k]
        row[4 : 4 + k] = state[1 + k : 1 + 2 * k]

    def adwin_update(self, slot: int, s: int, x: float) -> bool:
        """One value into the pair's ADWIN; True when it detects a change."""
        return adwin.update(
            self.adwin_sums[slot, s], self.adwin_counts[slot, s], x, self.settings.adwin_delta
        )

    def reset_interval(self, slot: int, s: int) -> None:
        """A new evaluation interval: its counts start again."""
        self.since_eval[slot, s] = 0
        self.anomalies[slot, s] = 0
        self.adwin_hits[slot, s] = 0

    def reset_detectors(self, slot: int, s: int) -> None:
        """Forget the score history of a pair: a new model starts a new reference."""
        self.reset_interval(slot, s)
        self.streak[slot, s] = 0
        self.n_scored[slot, s] = 0
        self.score_sum[slot, s] = 0
        self.score_count[slot, s] = 0
        self.adwin_sums[slot, s] = 0
        self.adwin_counts[slot, s] = 0
        self.in_n[slot, s] = 0  # the input reference starts again too
