"""The detect stage's per-pair state: the pair's model, score windows, PSI bins, interval counts,
novelty state, input-drift state (:mod:`monitor.detect.inputs`), and the pair's ADWIN (two rows,
:mod:`monitor.detect.adwin`).

The model of a pair is two rows of the slab, so that the batch kernel updates it in place:
``model`` = ``[n, level x 3, var x 3, trend x 3]`` (scalar sensors use the first of each three) and
``model_params`` = ``[k, fading, var_fading, resolution, trend]`` (``k`` = 0: no model yet).
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
from monitor.state.store import PAIRS, Columns, DeviceStates, Slab


class DetectState(Slab):
    """Arrays per pair."""

    model: NDArray[np.float64]
    model_params: NDArray[np.float64]
    rate_level: NDArray[np.float64]  # the model's level where the current rate window opened
    rate_ts: NDArray[np.int64]  # and the event time it opened at (0: none since the model began)
    rate: NDArray[np.float32]  # the level's speed over the latest complete window (-1: none yet)
    n_scored: NDArray[np.int64]
    since_eval: NDArray[np.int32]
    anomalies: NDArray[np.int32]
    streak: NDArray[np.int32]  # consecutive anomalous readings, up to the latest
    adwin_hits: NDArray[np.int32]
    score_sum: NDArray[np.float32]
    score_count: NDArray[np.int32]
    # The interval's most distant reading, for an alert's explanation (kernels.keep_worst):
    # [x x 3, forecast x 3, spread x 3], and [its distance, its event time] (0, 0: none yet).
    why: NDArray[np.float64]
    why_at: NDArray[np.float64]
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
        dims: int = 0,
    ) -> None:
        self.settings = settings
        self.novelty_size = novelty_size  # floats of novelty-stage state per pair (0: the stage is off)
        # inputs.columns(...) of the deployment (default: input drift off, one counter per pair)
        self.input_columns = input_columns or {"in_n": ((PAIRS,), np.int64, 0)}
        super().__init__(n_sensors, dims)  # dims: the catalog's axes (the inputs' per-axis arrays)

    def columns(self) -> Columns:
        d, p = self.settings, (PAIRS,)
        return {
            "model": ((*p, MODEL_WIDTHS["model"]), np.float64, 0),
            "model_params": ((*p, MODEL_WIDTHS["model_params"]), np.float64, 0),
            "rate_level": ((*p, 3), np.float64, 0),
            "rate_ts": (p, np.int64, 0),
            "rate": (p, np.float32, -1),
            "n_scored": (p, np.int64, 0),
            "since_eval": (p, np.int32, 0),
            "anomalies": (p, np.int32, 0),
            "streak": (p, np.int32, 0),
            "adwin_hits": (p, np.int32, 0),
            "score_sum": (p, np.float32, 0),
            "score_count": (p, np.int32, 0),
            "why": ((*p, 3 * 3), np.float64, 0),
            "why_at": ((*p, 2), np.float64, 0),
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

    def load(self, slots: Sequence[int], states: DeviceStates) -> None:
        _widen(states)
        super().load(slots, states)

    def mismatch(
        self, states: DeviceStates, n_sensors: int | None = None, dims: int | None = None
    ) -> str | None:
        """Also: a River ADWIN of an older snapshot that :func:`monitor.detect.adwin.from_river`
        cannot convert."""
        _widen(states)
        why = super().mismatch(states, n_sensors, dims)
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
        k, fading, var_fading, resolution, trend = self.model_params[slot, s].tolist()
        if not k:
            return None
        row, k = self.model[slot, s], int(k)
        m = AdaptiveGaussian(k, fading, var_fading, resolution, trend)
        m.set_state(
            [float(row[0]), *row[1 : 1 + k].tolist(), *row[4 : 4 + k].tolist(), *row[7 : 7 + k].tolist()]
        )
        return m

    def set_model(self, slot: int, s: int, m: AdaptiveGaussian) -> None:
        """Serve (a copy of) ``m`` for the pair."""
        k, state = m.n_features, m.state()
        self.model_params[slot, s] = (k, m.fading, m.var_fading, m.resolution, m.trend)
        row = self.model[slot, s]
        row[:] = 0
        row[0] = state[0]
        row[1 : 1 + k] = state[1 : 1 + k]
        row[4 : 4 + k] = state[1 + k : 1 + 2 * k]
        row[7 : 7 + k] = state[1 + 2 * k : 1 + 3 * k]

    def level_rate(self, slot: int, s: int, ts: int, warmup: int, window_ms: int) -> float | None:
        """How fast the model's level moved over the pair's latest complete window of at least
        ``window_ms`` of event time: its largest change over the axes, per second. A window closes
        at the first call ``window_ms`` after it opened (``ts``: the call's event time) and the
        next opens there. None while the model warms up and until its first window closed."""
        k, row = int(self.model_params[slot, s, 0]), self.model[slot, s]
        if not k or row[0] < warmup:
            return None
        level, then = row[1 : 1 + k], int(self.rate_ts[slot, s])
        if then == 0 or ts < then or ts - then >= window_ms:
            if 0 < then < ts:
                change = float(np.max(np.abs(level - self.rate_level[slot, s, :k])))
                self.rate[slot, s] = change * 1000.0 / (ts - then)
            self.rate_level[slot, s, :k], self.rate_ts[slot, s] = level, ts
        r = float(self.rate[slot, s])
        return r if r >= 0 else None

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
        self.why_at[slot, s] = 0.0

    def reset_detectors(self, slot: int, s: int) -> None:
        """Forget the score history of a pair: a new model starts a new reference."""
        self.reset_interval(slot, s)
        self.streak[slot, s] = 0
        self.rate_ts[slot, s] = 0
        self.rate[slot, s] = -1
        self.n_scored[slot, s] = 0
        self.score_sum[slot, s] = 0
        self.score_count[slot, s] = 0
        self.adwin_sums[slot, s] = 0
        self.adwin_counts[slot, s] = 0
        self.in_n[slot, s] = 0  # the input reference starts again too


#: Widths of the model rows; a snapshot from before the trend has 7 and 4.
MODEL_WIDTHS = {"model": 10, "model_params": 5}


def _widen(states: DeviceStates) -> None:
    """Model rows of a snapshot from before the trend (``[n, level x 3, var x 3]`` and ``[k,
    fading, var_fading, resolution]``): padded with zeros, so their models go on without a trend."""
    for name, width in MODEL_WIDTHS.items():
        arr = states.arrays.get(name)
        if arr is not None and arr.shape[-1] < width:
            pad = np.zeros((*arr.shape[:-1], width - arr.shape[-1]), arr.dtype)
            states.arrays[name] = np.concatenate([arr, pad], axis=-1)
