"""The report's tables from its records: model lineage, cohort comparison, feedback precision.

The feedback tables are a first version over the verdicts of the feedback topic (joined to the
alerts by ``alert_id``); they have the columns of the feedback ledger's, so it can replace them.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from monitor.analyze.feedback import Verdict
from monitor.analyze.ledger import AlertRecord, Dimension, Ledger, PrecisionRow
from monitor.detect.cohorts import load_cohorts
from monitor.errors import InvalidInput, RegistryError
from monitor.govern.registry import open_registry
from monitor.report.records import Episode, Json, Table
from monitor.settings import Settings

log = logging.getLogger(__name__)

FEEDBACK_COLUMNS = ("", "alerts", "verdicts", "true", "false", "maintenance", "precision", "median delay (s)")
#: The ledger's dimensions a report breaks precision and false alarms down by, with their titles.
FEEDBACK_DIMENSIONS: dict[str, Dimension] = {
    "rule": "rule",
    "sensor": "sensor",
    "cohort": "cohort",
    "model version": "version",
    "integrity state": "integrity",
}
#: A cohort whose alert count is this unlikely under the fleet's rate (one-sided binomial) is flagged.
COHORT_ALPHA = 0.01


def iso(ms: int) -> str:
    """UTC epoch ms as ISO-8601 to the second.

    >>> iso(1767225600000)
    '2026-01-01 00:00:00Z'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- lineage ----------------------------------------------------------------------------------------


def lineage(settings: Settings, versions: Sequence[Json], audit: Sequence[Json]) -> list[Json]:
    """Per model version: what the registry's signed manifest records (the models topic's record
    when the registry cannot be read here), and the audit events about it."""
    manifests = _manifests(settings, versions)
    out = []
    for v in sorted(
        versions, key=lambda v: (str(v.get("device_id")), str(v.get("sensor")), v.get("version", 0))
    ):
        ref = (v.get("device_id"), v.get("sensor"), v.get("version"))
        manifest = manifests.get(ref)
        events = [e for e in audit if (e.get("device_id"), e.get("sensor"), e.get("version")) == ref]
        out.append({"model": manifest["model"] if manifest else v, "manifest": manifest, "events": events})
    return out


def _manifests(settings: Settings, versions: Sequence[Json]) -> dict[tuple[object, ...], Json]:
    if not versions:
        return {}
    import msgspec

    try:
        registry = open_registry(settings, create_key=False)
        found: dict[tuple[object, ...], Json] = {}
        for v in versions:
            ref = (v["device_id"], v["sensor"], v["version"])
            found[ref] = msgspec.to_builtins(registry.manifest(*ref))
        return found
    except (RegistryError, InvalidInput, OSError, KeyError) as exc:
        log.warning("lineage from the models topic (the registry could not be read: %s)", exc)
        return {}


# --- cohorts ----------------------------------------------------------------------------------------


def cohorts(
    settings: Settings, episodes: Sequence[Episode], devices: Mapping[str, int], since: int, until: int
) -> Table | None:
    """Alert rate per device-hour of each cohort (device labels of ``cohorts_file``, and of the
    alerts' ``cohorts``) against the fleet's, with a one-sided binomial test of its share of the
    alerts against its share of the devices. ``None`` without labels."""
    labels = _device_labels(settings, episodes)
    fired = Counter(e.device_id for e in episodes if e.scope == "device" and e.fired is not None)
    total, fleet = sum(fired.values()), len(devices)
    if not labels or not fleet:
        return None
    hours = max(until - since, 1) / 3_600_000
    members: defaultdict[str, set[str]] = defaultdict(set)
    for device in devices:
        for label, value in labels.get(device, {}).items():
            members[f"{label}={value}"].add(device)
    rows = []
    for cohort, ds in sorted(members.items()):
        n = sum(fired[d] for d in ds)
        p = _binomial_p(n, total, len(ds) / fleet)
        rows.append((cohort, len(ds), n, n / (len(ds) * hours), total / (fleet * hours), p, p < COHORT_ALPHA))
    columns = ("cohort", "devices", "alerts", "alerts/device-hour", "fleet", "p-value", "flagged")
    note = (
        f"firing device alerts per device-hour; p-value: one-sided binomial test of the cohort's share of "
        f"the {total} alerts against its share of the {fleet} devices; flagged below {COHORT_ALPHA}"
    )
    return Table("Cohorts", columns, rows, note)


def _device_labels(settings: Settings, episodes: Iterable[Episode]) -> dict[str, dict[str, str]]:
    try:
        labels = {d: dict(ls) for d, ls in load_cohorts(settings.cohorts_file).items()}
    except InvalidInput as exc:
        log.warning("cohorts: %s", exc)
        labels = {}
    for e in episodes:
        extra = e.last.get("cohorts")
        if isinstance(extra, dict):
            labels.setdefault(e.device_id, {}).update({str(k): str(v) for k, v in extra.items()})
    return labels


def _binomial_p(k: int, n: int, p: float) -> float:
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(k, n, p, alternative="greater").pvalue)


# --- feedback ---------------------------------------------------------------------------------------


def feedback(episodes: Sequence[Episode], verdicts: Sequence[Json]) -> tuple[list[Table], list[Table]]:
    """Precision tables and false-alarm breakdowns of the episodes' latest records joined to the
    verdicts by the ledger the service keeps (:mod:`monitor.analyze.ledger`); both empty without
    verdicts. Records that do not decode are left out."""
    if not verdicts:
        return [], []
    records = [r for r in (_decoded(e.last, AlertRecord) for e in episodes) if r is not None]
    judged = [v for v in (_decoded(v, Verdict) for v in verdicts) if v is not None]
    ledger = Ledger.from_records(records, judged)
    precision = [
        Table(
            f"Precision by {name}", (name, *FEEDBACK_COLUMNS[1:]), [_cells(r) for r in ledger.precision(by)]
        )
        for name, by in FEEDBACK_DIMENSIONS.items()
    ]
    breakdown = [
        Table(
            f"False alarms by {name}",
            (name, "false alarms", "share"),
            [(f.key, f.false_positive, f.share) for f in ledger.breakdown(by)],
        )
        for name, by in {**FEEDBACK_DIMENSIONS, "hour (UTC)": "hour"}.items()
    ]
    return precision, breakdown


def _cells(r: PrecisionRow) -> tuple[object, ...]:
    return r.key, r.alerts, r.judged, r.true_positive, r.false_positive, r.maintenance, r.precision, r.delay_s


_T = TypeVar("_T")


def _decoded(record: Json, kind: type[_T]) -> _T | None:
    try:
        return msgspec.convert(record, kind)
    except msgspec.ValidationError:
        return None
