"""What each signal a rule may read means, and its unit: the reference of the rules' signals.

:data:`DESCRIPTIONS` holds one entry per signal of :data:`monitor.govern.rules.model.SIGNALS`
(a unit test keeps the two in step); the documentation's signal reference is generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class SignalDoc:
    """A signal's meaning, and the unit of its value."""

    meaning: str
    unit: str


_COUNT: Final = "count"
_SHARE: Final = "fraction 0..1"
_FLAG: Final = "0 or 1"
_PVALUE: Final = "p-value 0..1"
_KS: Final = "KS statistic 0..1"
_PSI: Final = "PSI, >= 0"

_INPUT_KS = (
    "binned KS statistic of the pair's latest inputs against its frozen input reference, on the axis "
    "with the largest statistic"
)
_PEER = (
    "the pair's latest inputs against the fleet's latest inputs of the sensor (this device against its peers)"
)
_COHORT_INPUT = "the cohort's share of the fleet's latest inputs against the rest's, at the same time"
_BIAS = "the cohort against the rest of the fleet over the latest closed window of `bias.window_s`"

DESCRIPTIONS: Final[dict[str, SignalDoc]] = {
    # The score stream, in every scope.
    "readings": SignalDoc("scored readings in the interval", _COUNT),
    "anomalies": SignalDoc("readings scored over `model.anomaly_threshold` in the interval", _COUNT),
    "anomaly_rate": SignalDoc("`anomalies` over `readings`", _SHARE),
    "score_mean": SignalDoc(
        "mean anomaly score of the interval (0.5 for calibrated normal data; absent without scores)",
        "score 0..1",
    ),
    "adwin_detections": SignalDoc("ADWIN changes detected in the score stream in the interval", _COUNT),
    "adwin_drift": SignalDoc("1 when ADWIN detected a change in the interval", _FLAG),
    "ks_stat": SignalDoc("KS statistic of the current scores against the frozen reference scores", _KS),
    "ks_pvalue": SignalDoc("p-value of `ks_stat` (for the windows' effective sizes)", _PVALUE),
    "ks_drift": SignalDoc("1 when `ks_pvalue` < `drift.ks_alpha`", _FLAG),
    "psi": SignalDoc("PSI of the current scores on the frozen reference bins", _PSI),
    "psi_drift": SignalDoc("1 when `psi` > `drift.psi_threshold`", _FLAG),
    # Data integrity, per pair.
    "stuck_at": SignalDoc(
        "stuck-at events of the pair in the interval (`integrity.stuck_run` identical readings)", _COUNT
    ),
    "gap": SignalDoc("data gaps of the pair in the interval (`integrity.gap_factor`)", _COUNT),
    "duplicate": SignalDoc("duplicate readings of the pair in the interval", _COUNT),
    "out_of_order": SignalDoc("readings of the pair out of order in the interval", _COUNT),
    "clock_skew": SignalDoc(
        "readings of the pair whose clock is off by more than `integrity.max_clock_skew_ms`", _COUNT
    ),
    # The pair's state.
    "anomaly_streak": SignalDoc(
        "the pair's current run of consecutive anomalous readings (it goes on across intervals)", _COUNT
    ),
    "retraining": SignalDoc(
        "1 while a retrain of the pair is under way (training, its candidate in shadow, or a retry after "
        "a rejection scheduled)",
        _FLAG,
    ),
    "rate": SignalDoc(
        "for a channel with a `max_rate`: how fast the pair model's level moved over the latest complete "
        "`model.rate_window_s` of event time (its largest axis), over `max_rate` (> 1: faster than "
        "plausible); absent until a window closed",
        "ratio, >= 0",
    ),
    # The device tier.
    "device_frames": SignalDoc("frames of the device's joint model in the interval", _COUNT),
    "device_anomalies": SignalDoc(
        "frames the joint model flagged mostly because of this channel, in the interval", _COUNT
    ),
    "device_anomaly_rate": SignalDoc("`device_anomalies` over `device_frames`", _SHARE),
    "device_score": SignalDoc(
        "the largest joint-model frame score of the interval (calibrated like a pair score)", "score 0..1"
    ),
    # The River tiers.
    "river_readings": SignalDoc(
        "readings the pair's River tier scored in the interval (absent for a pair no tier scores)", _COUNT
    ),
    "river_anomalies": SignalDoc("readings the River tier's filter flagged in the interval", _COUNT),
    "river_anomaly_rate": SignalDoc("`river_anomalies` over `river_readings`", _SHARE),
    "river_score": SignalDoc(
        "the interval's largest River score (absent when none was scored)",
        "the model's own scale (HalfSpaceTrees, GaussianScorer: 0..1)",
    ),
    # Drift of the inputs, per pair.
    "input_ks_stat": SignalDoc(_INPUT_KS, _KS),
    "input_ks_pvalue": SignalDoc("p-value of `input_ks_stat`", _PVALUE),
    "input_psi": SignalDoc("the largest PSI over the pair's axes, inputs against their reference", _PSI),
    "input_drift": SignalDoc(
        "1 when on some axis the KS p-value < `inputs.ks_alpha` and the PSI > `inputs.psi_threshold`", _FLAG
    ),
    "peer_ks_stat": SignalDoc(f"binned KS statistic, worst axis: {_PEER}", _KS),
    "peer_ks_pvalue": SignalDoc("p-value of `peer_ks_stat`", _PVALUE),
    "peer_psi": SignalDoc(f"the largest PSI over the axes: {_PEER}", _PSI),
    "peer_drift": SignalDoc("1 when some axis drifts against the peers (as `input_drift`)", _FLAG),
    # Over a group: the fleet, a cohort.
    "devices": SignalDoc(
        "the devices whose scores feed the fleet's (or the cohort's) windows in this replica", _COUNT
    ),
    "lag": SignalDoc(
        "the consumer's lag, summed over the replica's partitions, as of its last batch", "messages"
    ),
    "input_adwin_detections": SignalDoc(
        "ADWIN changes in the mean of an input axis per evaluation interval, over the group's pooled "
        "inputs, counted over the sensor's axes",
        _COUNT,
    ),
    "input_adwin_drift": SignalDoc("1 when `input_adwin_detections` > 0", _FLAG),
    "cohort_input_ks_stat": SignalDoc(f"binned KS statistic of the worst axis: {_COHORT_INPUT}", _KS),
    "cohort_input_ks_pvalue": SignalDoc(
        "p-value of `cohort_input_ks_stat` for the two sides' effective sizes", _PVALUE
    ),
    "cohort_input_psi": SignalDoc(f"the largest PSI over the axes: {_COHORT_INPUT}", _PSI),
    "cohort_input_drift": SignalDoc(
        "1 when some axis of the cohort's inputs drifts against the rest's", _FLAG
    ),
    # Cohort bias.
    "bias_alert_ratio": SignalDoc(
        f"{_BIAS}: the cohort's alerts per reading over the rest's (each count plus 0.5)", "ratio, > 0"
    ),
    "bias_alert_pvalue": SignalDoc(
        "exact test of two Poisson rates on the alerts (two-sided; present once the window holds "
        "`bias.min_alerts` alerts of the sensor)",
        _PVALUE,
    ),
    "bias_score_shift": SignalDoc(
        f"{_BIAS}: the median device mean score minus the rest's (> 0: the cohort looks more anomalous)",
        "score difference -1..1",
    ),
    "bias_score_pvalue": SignalDoc(
        "Mann-Whitney test over devices of the scores (two-sided; present once each side has "
        "`bias.min_devices` devices)",
        _PVALUE,
    ),
    "bias": SignalDoc("1 when a present bias p-value is under `bias.alpha`", _FLAG),
    "bias_devices": SignalDoc("devices of the cohort in the bias window", _COUNT),
    "bias_readings": SignalDoc("readings of the cohort in the bias window", _COUNT),
    "bias_alerts": SignalDoc("alerts of the cohort in the bias window", _COUNT),
}
