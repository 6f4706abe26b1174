"""The pipeline's compiled inner loop: a batch's readings, in stream order, over the stages' slabs.

:func:`run` applies readings ``start, start + 1, ...`` the way :meth:`monitor.pipeline.Pipeline`
applies one in Python (re-delivery guard, integrity checks, the retraining ring, the pair model,
its score windows), and returns where it stopped and why:

- :data:`EVALUATE`: the reading before the returned index completed its pair's evaluation
  interval, or made it urgent (it ended a data gap, or a run of ``urgent_streak`` anomalous
  readings; its inputs' KS and PSI are in ``input_out``: :func:`monitor.detect.inputs.measure`);
  the pipeline evaluates the pair (KS, PSI, rules, actions) and calls again;
- :data:`PYTHON`: the reading at the returned index is not applied: its device is new, it was
  read on another partition than its state's, or its pair has a retrain or shadow under way.
  The pipeline applies it in Python and calls again at the next one;
- :data:`END`: every reading is applied.

A scored reading's inputs go to their drift windows and the fleet's (:func:`monitor.detect.inputs.step`).
Each applied reading then goes to its device's joint model (:func:`monitor.detect.joint.step`),
which may close and score a frame.

What a reading feeds into the pooled (fleet, cohort) detectors, its trace record and the freezing
of a completed reference are left to the pipeline, from the per-reading outputs. The arithmetic is
the Python path's, in the same order and with the same roundings, so the results of a stream do
not depend on which path applied a reading (``tests/unit/test_kernel.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from monitor.detect import inputs, joint
from monitor.detect.kernels import distance, keep_worst, learn, nudge, score
from monitor.govern.state import low32
from monitor.ingest.integrity import CLOCK_SKEW, DUPLICATE, GAP, INTERVAL_WEIGHT, OUT_OF_ORDER, STUCK

END, EVALUATE, PYTHON = 0, 1, 2
#: Per-reading outcome (``status``): not applied, applied while the model warms up, scored, scored
#: and completing its pair's reference window (whose PSI bins the pipeline then freezes).
SKIPPED, WARMING, SCORED, COMPLETED = 0, 1, 2, 3
QUANTUM = 65535.0
#: What the pair model does with a flagged reading (``model.flagged``), as the kernel's config holds it.
FLAGGED = {"skip": 0, "learn": 1, "clip": 2}
SKIP, LEARN, CLIP = FLAGGED["skip"], FLAGGED["learn"], FLAGGED["clip"]


@njit(cache=True)
def run(  # noqa: C901 - one loop in stream order is the point: each branch is a step of the Python path
    start: int,
    readings: tuple[Any, ...],
    slot_of: Any,
    config: tuple[Any, ...],
    state: tuple[Any, ...],
    out: tuple[Any, ...],
    joint_config: tuple[Any, ...],
    joint_state: tuple[Any, ...],
    input_config: tuple[Any, ...],
    input_state: tuple[Any, ...],
    input_out: Any,
) -> tuple[int, int]:
    """Apply readings from ``start`` until a stop (see the module docstring): ``(index, why)``.
    The tuples hold the readings' columns, the settings, the slabs' arrays (numba takes arrays,
    not objects) and the outputs, in the order :meth:`monitor.pipeline.Pipeline` builds them."""
    dev, sensor, k, ts, seq, offset, has_offset, part, kafka_ts, plausible, vals, watermark = readings
    gap_factor, stuck_n, max_skew, warmup, thresholds, flagged, check_every, tick0 = config[:8]
    urgent_streak, urgent_gap, first_axis = config[8:]
    (
        home,
        touched,
        last_seq,
        last_offset,
        last_seen,
        last_ts,
        interval,
        stuck_run,
        integrity,
        last_vals,
        events,
        quarantined,
        raw_n,
        raw,
        raw_off,
        raw_ts,
        raw_last_off,
        raw_last_ts,
        model,
        params,
        base,
        n_scored,
        since_eval,
        anomalies,
        streak,
        score_sum,
        score_count,
        why,
        why_at,
        ref,
        cur,
        python_pairs,
    ) = state
    (
        valid,
        anomalies_out,
        replayed,
        status,
        out_score,
        out_d2,
        out_anom,
        frame,
        frame_d2,
        frame_p,
        frame_anom,
    ) = out
    n_ref, n_cur, window = ref.shape[2], cur.shape[2], raw.shape[2]
    for i in range(start, len(dev)):
        slot, s = slot_of[dev[i]], sensor[i]
        if slot < 0 or (has_offset[i] and part[i] != home[slot]) or python_pairs[slot, s]:
            return i, PYTHON
        valid[s] += 1
        touched[slot] = tick0 + i + 1
        # The re-delivery guard.
        seen = kafka_ts[i] if plausible[i] else watermark[i]
        if seen > last_seen[slot]:
            last_seen[slot] = seen
        if has_offset[i]:
            if offset[i] <= last_offset[slot]:
                replayed[0] += 1
                continue
            last_offset[slot] = offset[i]
        # Sequence checks.
        last = last_seq[slot]
        if seq[i] == last:
            integrity[slot, s, DUPLICATE] += 1
            events[s, DUPLICATE] += 1
            continue
        if seq[i] < last:
            integrity[slot, s, OUT_OF_ORDER] += 1
            events[s, OUT_OF_ORDER] += 1
        last_seq[slot] = seq[i]
        f, kk = vals[i], k[i]
        # Gap, stuck-at and clock-skew checks.
        urgent = False
        prev = last_ts[slot, s]
        if prev:
            dt = ts[i] - prev
            usual = np.float64(interval[slot, s])
            if usual > 0 and dt > gap_factor * usual:
                integrity[slot, s, GAP] += 1
                events[s, GAP] += 1
                urgent = urgent_gap
            elif dt > 0:
                interval[slot, s] = dt if usual == 0 else usual + INTERVAL_WEIGHT * (dt - usual)
        last_ts[slot, s] = ts[i]
        same = True
        for j in range(kk):
            if last_vals[slot, s, j] != f[j]:
                same = False
        if same:
            stuck_run[slot, s] += 1
            if stuck_run[slot, s] == stuck_n - 1:
                integrity[slot, s, STUCK] += 1
                events[s, STUCK] += 1
        else:
            stuck_run[slot, s] = 0
            for j in range(kk):
                last_vals[slot, s, j] = f[j]
        if max_skew and kafka_ts[i] > 0 and abs(ts[i] - kafka_ts[i]) > max_skew:
            integrity[slot, s, CLOCK_SKEW] += 1
            events[s, CLOCK_SKEW] += 1
        # The retraining ring.
        r, a = raw_n[slot, s] % window, first_axis[s]
        for j in range(kk):
            raw[slot, a + j, r] = f[j]
        o = offset[i] if has_offset[i] else 0
        raw_off[slot, s, r] = low32(o)
        raw_ts[slot, s, r] = low32(ts[i])
        raw_last_off[slot, s] = o
        raw_last_ts[slot, s] = ts[i]
        raw_n[slot, s] += 1
        since_eval[slot, s] += 1
        # The pair model.
        row, par = model[slot, s], params[slot, s]
        if par[0] == 0:
            par[0], par[1], par[2], par[3], par[4] = kk, base[s, 0], base[s, 1], base[s, 2], base[s, 3]
        if row[0] < warmup:
            learn(row, kk, par[1], par[2], par[4], f)
            status[i] = WARMING
            streak[slot, s] = 0
        else:
            d2 = distance(row, kk, par[3], f)
            keep_worst(row, kk, par[3], f, d2, ts[i], why[slot, s], why_at[slot, s])
            threshold = thresholds[kk]
            if quarantined[slot]:
                pass
            elif d2 <= threshold or flagged == LEARN:
                learn(row, kk, par[1], par[2], par[4], f)
            elif flagged == CLIP:
                nudge(row, kk, par[1], f, math.sqrt(threshold / d2))
            sc = score(d2, kk)
            status[i], out_score[i], out_d2[i] = SCORED, sc, d2
            if d2 > threshold:
                out_anom[i] = True
                anomalies[slot, s] += 1
                anomalies_out[s] += 1
                streak[slot, s] += 1
                if streak[slot, s] == urgent_streak:
                    urgent = True
            else:
                streak[slot, s] = 0
            # The score windows.
            nn = n_scored[slot, s]
            q = np.rint(sc * QUANTUM)
            if nn < n_ref:
                ref[slot, s, nn] = q
                if nn + 1 == n_ref:
                    status[i] = COMPLETED
            else:
                cur[slot, s, (nn - n_ref) % n_cur] = q
            n_scored[slot, s] = nn + 1
            score_sum[slot, s] = score_sum[slot, s] + np.float32(sc)
            score_count[slot, s] += 1
            # Its inputs' drift windows, and the fleet's.
            inputs.step(slot, s, f, raw, raw_n, input_config, input_state)
        # The device's joint model.
        frame[i], frame_d2[i], frame_p[i], frame_anom[i] = joint.step(
            slot, s, ts[i], last_vals, quarantined, joint_config, joint_state
        )
        if since_eval[slot, s] >= check_every or urgent:
            inputs.measure(slot, s, input_config, input_state, input_out)
            return i + 1, EVALUATE
    return len(dev), END
