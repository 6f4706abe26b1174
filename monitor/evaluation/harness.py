"""``telemon evaluate``: detection quality of the live pipeline on labelled streams.

Three inputs, one report each:

- a simulator scenario: its ground truth labels every planted event; detections are the alerts
  the rules raise (device scope). Anomaly windows (every planted event, fault or drift) give
  precision, recall, F1, delays per kind and false alarms per device-day; drift kinds also give
  change-detection delays, missed and false detections;
- the NAB corpus: each series is scored reading by reading and scored as NAB defines it;
- any CSV with a timestamp column, value columns and a 0/1 label column: labelled runs of 1s are
  the anomaly windows, detections are the alerts.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from scipy.stats import chi2

from monitor.evaluation import baselines, nab
from monitor.evaluation.quality import Detection, Key, LabelledEvent, anomaly_quality, drift_quality
from monitor.evaluation.replay import Replay, Series, device_id, replay_messages, replay_series
from monitor.govern.alerts import Alert
from monitor.govern.rules import RuleSet
from monitor.govern.rules.model import COHORT_INPUT_SIGNALS, GROUP_INPUT_SIGNALS, INPUT_SIGNALS
from monitor.records import Scored
from monitor.schema import Catalog, Reading, decode
from monitor.settings import Settings
from producers.scenario import Scenario, truth_records
from producers.simulate import stream

#: Planted events that change a pair's distribution for good (scored as changes too).
DRIFT_KINDS: Final = frozenset({"gradual_drift", "abrupt_shift", "calibration_offset", "variance_increase"})
DRIFT_DETECTOR_SIGNALS: Final = (
    frozenset({"ks_stat", "ks_pvalue", "ks_drift", "psi", "psi_drift", "adwin_detections", "adwin_drift"})
    | INPUT_SIGNALS
    | GROUP_INPUT_SIGNALS
    | COHORT_INPUT_SIGNALS
)
#: A detection this long after an event's end still counts for it (evaluation runs every
#: ``check_every`` readings, up to 32 s at 1 Hz).
GRACE_MS: Final = 60_000


def detections(alerts: Iterable[Alert]) -> list[Detection]:
    """Device-scope alert firings, the monitor's detections."""
    return [
        Detection((a.device_id, a.sensor), a.ts, a.rule)
        for a in alerts
        if a.status == "firing" and a.scope == "device"
    ]


def observed(trace: Sequence[Scored]) -> tuple[dict[Key, tuple[int, int]], dict[Key, np.ndarray]]:
    """Per key: the observed span and the sorted reading timestamps."""
    times: defaultdict[Key, list[int]] = defaultdict(list)
    for s in trace:
        times[(s.device_id, s.sensor)].append(s.ts)
    index = {k: np.sort(np.asarray(v, np.int64)) for k, v in times.items()}
    return {k: (int(v[0]), int(v[-1])) for k, v in index.items()}, index


def drift_rules(rules: RuleSet) -> frozenset[str]:
    """Rules that watch the drift detectors (KS, PSI, ADWIN on the scores; KS, PSI on the inputs):
    their firings are drift detections."""
    return frozenset(r.name for r in rules.rules if r.when.signal_names() & DRIFT_DETECTOR_SIGNALS)


def quality_report(replay: Replay, events: Sequence[LabelledEvent], rules: RuleSet) -> dict[str, Any]:
    """Anomaly windows over every labelled event (any alert detects), and change detection over
    the drift kinds (only drift-rule alerts detect)."""
    spans, index = observed(replay.trace)
    found = detections(replay.alerts)
    anomaly = anomaly_quality(events, found, grace_ms=GRACE_MS, stream_span=spans, readings_index=index)
    changes = [e for e in events if e.kind in DRIFT_KINDS]
    names = drift_rules(rules)
    drift = drift_quality(changes, [d for d in found if d.rule in names], horizon_ms=None)
    return {
        "messages": replay.messages,
        "quarantined": replay.quarantined,
        "alerts_firing": len(found),
        "anomaly": anomaly.to_dict(),
        "drift": drift.to_dict(),
    }


class ReadingsTee:
    """Passes messages through, keeping the values and times of the valid readings per (device,
    sensor), in stream order, for the baselines (compact arrays: a clean fleet has millions)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.ts: defaultdict[Key, array[int]] = defaultdict(lambda: array("q"))
        self.values: defaultdict[Key, array[float]] = defaultdict(lambda: array("d"))

    def __call__(
        self, items: Iterable[tuple[bytes | None, bytes | None, int]]
    ) -> Iterator[tuple[bytes | None, bytes | None, int]]:
        for key, value, ts in items:
            r = decode(value, key, catalog=self.catalog)
            if isinstance(r, Reading):
                self.ts[(r.device_id, r.sensor)].append(r.ts)
                self.values[(r.device_id, r.sensor)].extend(r.features())
            yield key, value, ts

    def channels(self, name: baselines.Name) -> list[baselines.Channel]:
        out = []
        for key, ts in self.ts.items():
            axes = self.catalog.by_name[key[1]].keys
            values = np.frombuffer(self.values[key], np.float64).reshape(-1, len(axes))
            scores, flags = baselines.run(name, values, axes)
            out.append(baselines.Channel(key, key[1], np.frombuffer(ts, np.int64), scores, flags))
        return out


def baseline_quality(
    name: baselines.Name, tee: ReadingsTee, events: Sequence[LabelledEvent]
) -> dict[str, Any]:
    """A baseline's anomaly-window quality on the readings a replay read (per (device, sensor)
    key, as the alerts are scored)."""
    channels = tee.channels(name)
    spans = {c.key: (int(c.ts.min()), int(c.ts.max())) for c in channels if len(c.ts)}
    index = {c.key: np.sort(c.ts) for c in channels}
    found = baselines.detections(channels, name)
    anomaly = anomaly_quality(events, found, grace_ms=GRACE_MS, stream_span=spans, readings_index=index)
    return {"detector": name, "alerts_firing": len(found), "anomaly": anomaly.to_dict()}


def evaluate_scenario(
    settings: Settings, rules: RuleSet, scenario: Scenario, compare: Sequence[baselines.Name] = ()
) -> dict[str, Any]:
    """Replay the scenario's exact byte stream and score the alerts against its ground truth; with
    ``compare``, score the baselines on the readings the replay accepted too."""
    tee = ReadingsTee(settings.channels.catalog())
    messages = ((m.key, m.value, m.ts) for m in stream(scenario))
    replay = replay_messages(settings, rules, tee(messages) if compare else messages)
    events = [
        LabelledEvent((t["device_id"], t["sensor"]), t["kind"], t["start_ts"], t["end_ts"])
        for t in truth_records(scenario)
    ]
    report = {"scenario": scenario.name, **quality_report(replay, events, rules)}
    if compare:
        report["baselines"] = {name: baseline_quality(name, tee, events) for name in compare}
    return report


NAB_SENSOR: Final = "temperature"  # NAB values are unitless: scored as one scalar sensor per file


#: NAB's anomaly_score of a row: its surprise -log10(P(chi2 >= d2)) / SURPRISE_SCALE, capped at 1. A
#: monotone function of the live model's distance that, unlike the [0, 1] score, does not round
#: to 1.0 for every strong outlier (NAB ranks rows by score to choose its thresholds).
SURPRISE_SCALE: Final = 20.0


def surprise(distance: np.ndarray, k: int) -> np.ndarray:
    """-log10 of the chi-square tail probability of each distance, / SURPRISE_SCALE, in [0, 1]."""
    out: np.ndarray = np.clip(-chi2.logsf(distance, k) / np.log(10) / SURPRISE_SCALE, 0.0, 1.0)
    return out + 0.0  # no negative zeros in the results files


def nab_scores(settings: Settings, rules: RuleSet, files: Sequence[nab.CorpusFile]) -> list[np.ndarray]:
    """Per NAB file, every row's anomaly score under the live pipeline: its novelty level when the
    novelty stage is on, else the surprise of the model's distance (0 while warming up)."""
    series = [
        Series(f.key, (f.timestamps.astype("datetime64[ms]").astype(np.int64)).tolist(), f.values.tolist())
        for f in files
    ]
    replay = replay_series(settings, rules, series, NAB_SENSOR)
    by_device: defaultdict[str, list[float]] = defaultdict(list)
    novelty = settings.novelty.enabled
    for s in replay.trace:
        value = s.level if novelty else s.distance
        by_device[s.device_id].append(0.0 if value is None else value)
    if novelty:
        return [np.asarray(by_device[device_id(f.key)]) for f in files]
    k = len(settings.channels.catalog().by_name[NAB_SENSOR].keys)
    return [surprise(np.asarray(by_device[device_id(f.key)]), k) for f in files]


def nab_baseline_scores(name: baselines.Name, files: Sequence[nab.CorpusFile]) -> list[np.ndarray]:
    """Per NAB file, a baseline's row scores: the 3-sigma rule's flags (1.0 or 0.0: a rule, its
    threshold is not NAB's to optimise), HalfSpaceTrees' scores (NAB picks the threshold, as for
    every scoring detector). The warm-up is NAB's probationary period (rows NAB does not score),
    not :data:`~monitor.evaluation.baselines.WARMUP`, which is longer than some files' period."""
    out = []
    for f in files:
        warmup = nab.probation_length(len(f.values))
        values = f.values.reshape(-1, 1)
        if name == "3sigma":
            out.append((baselines.three_sigma(values, warmup) > baselines.SIGMA).astype(np.float64))
        else:
            out.append(baselines.half_space_trees(values, ["value"], warmup)[0])
    return out


def evaluate_nab(
    settings: Settings,
    rules: RuleSet,
    root: Path,
    out: Path | None,
    compare: Sequence[baselines.Name] = (),
) -> dict[str, Any]:
    """Score the NAB corpus as NAB defines it; write per-file results CSVs under ``out`` (a
    baseline's under ``out/NAME``)."""
    files = list(nab.load_corpus(root).values())
    profiles = nab.load_profiles(root / "config" / "profiles.json")
    report = _nab_report(files, nab_scores(settings, rules, files), profiles, out)
    for name in compare:
        where = None if out is None else out / name
        report.setdefault("baselines", {})[name] = _nab_report(
            files, nab_baseline_scores(name, files), profiles, where
        )
    return report | {"published": nab.PUBLISHED}


def _nab_report(
    files: Sequence[nab.CorpusFile], scores: Sequence[np.ndarray], profiles: Any, out: Path | None
) -> dict[str, Any]:
    corpus = [f.series(nab.round_as_published(s)) for f, s in zip(files, scores, strict=True)]
    results = nab.score_corpus(corpus, profiles)
    if out is not None:
        for f, series in zip(files, corpus, strict=True):
            nab.write_results_csv(out / f.key, series, f.values)
    return {
        "files": len(files),
        "rows": int(sum(len(f.values) for f in files)),
        "profiles": {name: dataclasses.asdict(r) for name, r in results.items()},
    }
